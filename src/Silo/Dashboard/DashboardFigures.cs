using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace CallState.Silo.Dashboard;

/// <summary>
/// The figures the dashboard shows, read in process from the instruments <c>GET /metrics</c> exports (docs/operations.md,
/// "Metrics"): a <see cref="MeterListener"/> on the admission counters, the admission and storage-commit histograms and
/// the limit gauges. Counters are summed by result and reason; histograms go into log-spaced buckets (each 10% above the
/// one before, so a percentile is within 10% of the measured value) from which <see cref="Sample"/> reads the last
/// <see cref="Window"/> seconds. One instance per process, fed from the moment the process starts.
/// </summary>
public sealed class DashboardFigures : IDisposable
{
    /// <summary>Ticks (samples) over which latency percentiles are taken.</summary>
    public const int Window = 10;

    internal const string GrainAdmissions = "callstate.admissions";
    internal const string EdgeAdmissions = "callstate.sipedge.admissions";
    internal const string GrainLatency = "callstate.admission.duration";
    internal const string EdgeLatency = "callstate.sipedge.admission.duration";
    internal const string CommitLatency = "callstate.storage.commit.duration";
    internal const string LimitUsage = "callstate.limit.usage";
    internal const string LimitCapacity = "callstate.limit.capacity";

    private static readonly string[] OurMeters = ["CallState.Silo", "CallState.SipEdge", "CallState.Storage"];

    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<(string Instrument, string Result, string Reason), Box> _counters = new();
    private readonly Dictionary<string, Buckets> _histograms = new(StringComparer.Ordinal)
    {
        [GrainLatency] = new(),
        [EdgeLatency] = new(),
        [CommitLatency] = new(),
    };

    private readonly ConcurrentDictionary<(string Instrument, string Kind), long> _gauges = new();
    private readonly Lock _sampleLock = new();
    private Dictionary<(string, string, string), long> _previousCounts = [];
    private DateTimeOffset _previousAt;
    private readonly TimeProvider _time;

    public DashboardFigures(TimeProvider time)
        : this(time, OurMeters)
    {
    }

    /// <summary>Listens to the meters named <paramref name="meters"/> (tests use meters of their own).</summary>
    internal DashboardFigures(TimeProvider time, IReadOnlyCollection<string> meters)
    {
        _time = time;
        var names = meters.ToHashSet(StringComparer.Ordinal);
        _previousAt = time.GetUtcNow();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (names.Contains(instrument.Meter.Name)
                && instrument.Name is GrainAdmissions or EdgeAdmissions or GrainLatency or EdgeLatency or CommitLatency or LimitUsage or LimitCapacity)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Count(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => Gauge(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Record(instrument.Name, value, tags));
        _listener.Start();
    }

    /// <summary>
    /// The figures since the previous sample: admissions per second by result and reason (and their totals since start),
    /// latency percentiles over the last <see cref="Window"/> samples, and the limit gauges (this process's active limits).
    /// </summary>
    public FiguresDto Sample()
    {
        lock (_sampleLock)
        {
            // The observable gauges are read now, through this listener only.
            _listener.RecordObservableInstruments();
            var now = _time.GetUtcNow();
            var seconds = Math.Max((now - _previousAt).TotalSeconds, 0.001);
            var counts = _counters.ToDictionary(static c => (c.Key.Instrument, c.Key.Result, c.Key.Reason), static c => Volatile.Read(ref c.Value.Value));
            AdmissionRateDto[] Rates(string instrument) =>
            [
                .. counts.Where(c => c.Key.Item1 == instrument)
                    .Select(c => new AdmissionRateDto(c.Key.Item2, c.Key.Item3, Math.Round((c.Value - _previousCounts.GetValueOrDefault(c.Key)) / seconds, 2), c.Value))
                    .OrderBy(static r => r.Result, StringComparer.Ordinal).ThenBy(static r => r.Reason, StringComparer.Ordinal),
            ];

            var figures = new FiguresDto(
                Rates(GrainAdmissions),
                Rates(EdgeAdmissions),
                _histograms[GrainLatency].Sample(),
                _histograms[EdgeLatency].Sample(),
                _histograms[CommitLatency].Sample(),
                [
                    .. _gauges.Select(static g => g.Key.Kind).Distinct().Order(StringComparer.Ordinal)
                        .Select(kind => new ActiveLimitsDto(kind, _gauges.GetValueOrDefault((LimitUsage, kind)), _gauges.GetValueOrDefault((LimitCapacity, kind)))),
                ]);
            _previousCounts = counts;
            _previousAt = now;
            return figures;
        }
    }

    private void Count(string instrument, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        string result = "", reason = "";
        foreach (var tag in tags)
        {
            if (tag.Key == "callstate.result")
            {
                result = tag.Value as string ?? "";
            }
            else if (tag.Key == "callstate.reason")
            {
                reason = tag.Value as string ?? "";
            }
        }

        var box = _counters.GetOrAdd((instrument, result, reason), static _ => new Box());
        Interlocked.Add(ref box.Value, value);
    }

    private void Gauge(string instrument, int value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == Grains.GrainMetrics.KindTag && tag.Value is string kind)
            {
                _gauges[(instrument, kind)] = value;
            }
        }
    }

    private void Record(string instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (instrument == CommitLatency)
        {
            foreach (var tag in tags)
            {
                // Failed batches are counted by the writes metric, not timed here.
                if (tag.Key == "callstate.outcome" && tag.Value is string outcome && outcome != "committed")
                {
                    return;
                }
            }
        }

        if (_histograms.TryGetValue(instrument, out var buckets))
        {
            buckets.Add(value);
        }
    }

    public void Dispose() => _listener.Dispose();

    private sealed class Box
    {
        public long Value;
    }

    /// <summary>Counts of durations in log-spaced buckets, cumulative; each sample keeps a copy to take differences from.</summary>
    private sealed class Buckets
    {
        /// <summary>Lower edge of the first bucket (10 µs); shorter durations count in it.</summary>
        private const double Smallest = 0.00001;

        /// <summary>Each bucket's upper edge is 10% above its lower edge.</summary>
        private const double Growth = 1.1;

        /// <summary>Buckets up to about 20 s; longer durations count in the last.</summary>
        private const int Count = 160;

        private static readonly double LogGrowth = Math.Log(Growth);
        private readonly long[] _counts = new long[Count];
        private readonly Queue<long[]> _history = new();

        public void Add(double seconds)
        {
            var index = seconds <= Smallest ? 0 : (int)Math.Min(Count - 1, Math.Ceiling(Math.Log(seconds / Smallest) / LogGrowth));
            Interlocked.Increment(ref _counts[index]);
        }

        public LatencyDto Sample()
        {
            var now = new long[Count];
            for (var i = 0; i < Count; i++)
            {
                now[i] = Volatile.Read(ref _counts[i]);
            }

            // The counts as they were Window samples ago (zeros before that many samples): the window is the difference.
            _history.Enqueue(now);
            if (_history.Count > Window + 1)
            {
                _history.Dequeue();
            }

            var oldest = _history.Count > Window ? _history.Peek() : new long[Count];

            var window = new long[Count];
            long total = 0;
            for (var i = 0; i < Count; i++)
            {
                window[i] = now[i] - oldest[i];
                total += window[i];
            }

            return new LatencyDto(total, Percentile(window, total, 0.5), Percentile(window, total, 0.9), Percentile(window, total, 0.99), Percentile(window, total, 1));
        }

        /// <summary>The upper edge (ms) of the bucket holding the <paramref name="q"/> quantile; null without samples.</summary>
        private static double? Percentile(long[] window, long total, double q)
        {
            if (total == 0)
            {
                return null;
            }

            var rank = Math.Max(1, (long)Math.Ceiling(q * total));
            long seen = 0;
            for (var i = 0; i < window.Length; i++)
            {
                seen += window[i];
                if (seen >= rank)
                {
                    return Math.Round(Smallest * Math.Pow(Growth, i) * 1000, 3);
                }
            }

            return null;
        }
    }
}

/// <summary>Admissions of one result and reason: per second over the last sample, and in total since the process started.</summary>
public sealed record AdmissionRateDto(string Result, string Reason, double PerSecond, long Total);

/// <summary>Percentiles (ms, bucket upper edges) of the samples of the last <see cref="DashboardFigures.Window"/> seconds.</summary>
public sealed record LatencyDto(long Count, double? P50, double? P90, double? P99, double? Max);

/// <summary>The limit gauges of one kind: calls held and maxima of the limits active in this process.</summary>
public sealed record ActiveLimitsDto(string Kind, long InUse, long Capacity);

/// <summary>What <see cref="DashboardFigures.Sample"/> reads.</summary>
public sealed record FiguresDto(
    IReadOnlyList<AdmissionRateDto> Admissions,
    IReadOnlyList<AdmissionRateDto> EdgeAdmissions,
    LatencyDto AdmissionLatency,
    LatencyDto EdgeAdmissionLatency,
    LatencyDto CommitLatency,
    IReadOnlyList<ActiveLimitsDto> Active);
