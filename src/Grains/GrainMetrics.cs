using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace CallState.Grains;

/// <summary>What a limit activation holds right now, read by the capacity gauges when they are collected.</summary>
public interface ILimitUsage
{
    LimitKey Key { get; }

    /// <summary>Calls held (inbound and outbound).</summary>
    int InUse { get; }

    /// <summary>The most calls it may hold (its total, else inbound plus outbound); null when unlimited.</summary>
    int? Maximum { get; }
}

/// <summary>
/// Metrics of the grain runtime (meter <c>CallState.Silo</c>). No limit key becomes an attribute, except on the top-keys
/// gauge, which names at most <see cref="TopKeys"/> keys per silo (keys are unbounded; they belong in logs and the admin API).
/// </summary>
public sealed class GrainMetrics : IDisposable
{
    public const string MeterName = "CallState.Silo";

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly Counter<long> _admissions;
    private readonly Histogram<double> _admissionDuration;
    private readonly Counter<long> _reclaimed;
    private readonly Counter<long> _staleWrites;
    private readonly Counter<long> _idleRowsDeleted;
    private readonly Counter<long> _reservationsDropped;
    private readonly Counter<long> _shadowRefusals;
    private readonly ConcurrentDictionary<ILimitUsage, byte> _limits = new(ReferenceEqualityComparer.Instance);

    /// <summary>How many of the fullest keys the top-keys gauges name, per silo.</summary>
    public const int TopKeys = 10;

    private static readonly LimitKind[] Kinds = [LimitKind.User, LimitKind.Trunk, LimitKind.Key, LimitKind.Tenant];

    /// <summary>Creates the instruments from <paramref name="meterFactory"/>, or on a private meter when null.</summary>
    public GrainMetrics(IMeterFactory? meterFactory)
    {
        _ownsMeter = meterFactory is null;
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _admissions = _meter.CreateCounter<long>("callstate.admissions", "{call}", "Admission decisions by result and reason.");
        _admissionDuration = _meter.CreateHistogram<double>(
            "callstate.admission.duration",
            "s",
            "Time from admission request to durable answer.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] });
        _reclaimed = _meter.CreateCounter<long>("callstate.slots.reclaimed", "{slot}", "Slots released because their lease ran out.");
        _staleWrites = _meter.CreateCounter<long>("callstate.storage.stale_writes", "{write}", "Compare-and-set writes lost to another activation of the same grain (a duplicate or stale activation), by grain type.");
        _shadowRefusals = _meter.CreateCounter<long>("callstate.limit.shadow_refusals", "{call}", "Calls a limit in shadow mode let through that it would have refused, by limit kind and reason (docs/policies.md, \"Shadow mode\").");
        _idleRowsDeleted = _meter.CreateCounter<long>("callstate.limits.idle_rows_deleted", "{row}", "Stored rows of limits deleted because they held nothing and had nothing of their own to keep.");
        _reservationsDropped = _meter.CreateCounter<long>("callstate.limits.reservations_dropped", "{reservation}", "Reservations a limit dropped undecided because their admission had been given up (the edge's deadline passed) before their turn.");

        // Capacity, read from the limits active on this silo when collected (each key is active on one silo: the sum over
        // silos is the cluster's). Idle limits are not active, and hold nothing.
        _meter.CreateObservableGauge("callstate.limit.usage", () => PerKind(static l => l.InUse), "{call}",
            "Calls held by the limits active on this silo, by limit kind.");
        _meter.CreateObservableGauge("callstate.limit.capacity", () => PerKind(static l => l.Maximum ?? 0), "{call}",
            "The maxima of the limited keys active on this silo, by limit kind (unlimited keys add nothing).");
        _meter.CreateObservableGauge("callstate.limit.top.usage", () => Top(static l => l.InUse), "{call}",
            "Calls held by the fullest limited keys on this silo (at most " + TopKeys + "), by kind and key.");
        _meter.CreateObservableGauge("callstate.limit.top.utilization", () => Top(static l => (double)l.InUse / l.Maximum!.Value), "1",
            "Calls held over the maximum of the fullest limited keys on this silo (at most " + TopKeys + "), by kind and key.");
    }

    internal void Admission(AdmitStatus status, RejectReason reason, TimeSpan duration)
    {
        var result = new KeyValuePair<string, object?>("callstate.result", status switch
        {
            AdmitStatus.Admitted => "admitted",
            AdmitStatus.Rejected => "rejected",
            AdmitStatus.Duplicate => "duplicate",
            _ => "invalid",
        });
        _admissions.Add(1, result, new KeyValuePair<string, object?>("callstate.reason", reason.ToCode()));
        if (status != AdmitStatus.Invalid)
        {
            _admissionDuration.Record(duration.TotalSeconds, result);
        }
    }

    internal void Reclaimed(LimitKind kind, int count) =>
        _reclaimed.Add(count, new KeyValuePair<string, object?>(KindTag, LimitKey.Prefix(kind)));

    internal void ShadowRefusal(LimitKind kind, RejectReason reason) =>
        _shadowRefusals.Add(1, new KeyValuePair<string, object?>(KindTag, LimitKey.Prefix(kind)), new KeyValuePair<string, object?>("callstate.reason", reason.ToCode()));

    internal void StaleWrite(string grainType) => _staleWrites.Add(1, new KeyValuePair<string, object?>("callstate.grain.type", grainType));

    internal void IdleRowDeleted() => _idleRowsDeleted.Add(1);

    /// <summary>A limit dropped <paramref name="count"/> reservations whose admission had been given up.</summary>
    internal void ReservationsDropped(int count) => _reservationsDropped.Add(count);

    /// <summary>Counts <paramref name="limit"/> in the capacity gauges until <see cref="Untrack"/>.</summary>
    internal void Track(ILimitUsage limit) => _limits.TryAdd(limit, 0);

    internal void Untrack(ILimitUsage limit) => _limits.TryRemove(limit, out _);

    private Measurement<int>[] PerKind(Func<ILimitUsage, int> value)
    {
        Span<int> sums = stackalloc int[Kinds.Length];
        foreach (var (limit, _) in _limits)
        {
            sums[Array.IndexOf(Kinds, limit.Key.Kind)] += value(limit);
        }

        var measurements = new Measurement<int>[Kinds.Length];
        for (var i = 0; i < Kinds.Length; i++)
        {
            measurements[i] = new Measurement<int>(sums[i], new KeyValuePair<string, object?>(KindTag, LimitKey.Prefix(Kinds[i])));
        }

        return measurements;
    }

    /// <summary>
    /// The <see cref="TopKeys"/> fullest limited keys that hold calls: one pass over the active limits keeping the fullest
    /// in a bounded heap (no sort of every activation at each collection).
    /// </summary>
    private List<Measurement<T>> Top<T>(Func<ILimitUsage, T> value)
        where T : struct
    {
        var fullest = new PriorityQueue<ILimitUsage, double>(TopKeys + 1);
        foreach (var (limit, _) in _limits)
        {
            if (limit is { InUse: > 0, Maximum: > 0 and var maximum })
            {
                fullest.Enqueue(limit, (double)limit.InUse / maximum);
                if (fullest.Count > TopKeys)
                {
                    fullest.Dequeue();
                }
            }
        }

        var measurements = new List<Measurement<T>>(fullest.Count);
        while (fullest.TryDequeue(out var limit, out _))
        {
            measurements.Add(new Measurement<T>(value(limit),
                new KeyValuePair<string, object?>(KindTag, LimitKey.Prefix(limit.Key.Kind)),
                new KeyValuePair<string, object?>("callstate.limit.key", limit.Key.ToString())));
        }

        return measurements;
    }

    /// <summary>The attribute naming a limit's kind (user, trunk, key, tenant).</summary>
    public const string KindTag = "callstate.limit.kind";

    public void Dispose()
    {
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }
}
