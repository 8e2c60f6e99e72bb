using System.Text.Json.Serialization;

namespace CallState.Storage;

/// <summary>The counts of a <see cref="LatencyHistogram"/>: bucket i holds durations up to <see cref="UpperMicros"/>[i].</summary>
public sealed record LatencyHistogramDto(long[] UpperMicros, long[] Counts);

[JsonSerializable(typeof(LatencyHistogramDto))]
[JsonSourceGenerationOptions(System.Text.Json.JsonSerializerDefaults.Web)]
public sealed partial class LatencyHistogramJsonContext : JsonSerializerContext;

/// <summary>
/// Durations since start (admissions, storage commits), in log-linear buckets (8 per power of two, so any value is within 12.5% of its
/// bucket's bound) from 1 µs to about 137 s. Recording is one interlocked increment; a reader takes two snapshots and
/// reads percentiles of the difference, which is how a benchmark gets admission p50/p99 over one load step.
/// </summary>
public sealed class LatencyHistogram
{
    private const int SubBuckets = 8;
    private const int Powers = 28;

    /// <summary>Upper bound of every bucket, in microseconds.</summary>
    public static long[] UpperMicros { get; } = BuildBounds();

    private readonly long[] _counts = new long[UpperMicros.Length];


    public void Record(TimeSpan duration)
    {
        var micros = Math.Max(1L, (long)duration.TotalMicroseconds);
        var index = Array.BinarySearch(UpperMicros, micros);
        if (index < 0)
        {
            index = ~index;
        }

        Interlocked.Increment(ref _counts[Math.Min(index, _counts.Length - 1)]);
    }

    public LatencyHistogramDto Snapshot()
    {
        var counts = new long[_counts.Length];
        for (var i = 0; i < counts.Length; i++)
        {
            counts[i] = Interlocked.Read(ref _counts[i]);
        }

        return new LatencyHistogramDto(UpperMicros, counts);
    }

    private static long[] BuildBounds()
    {
        var bounds = new List<long>(SubBuckets * Powers);
        for (var power = 0; power < Powers; power++)
        {
            var low = 1L << power;
            for (var sub = 1; sub <= SubBuckets; sub++)
            {
                var bound = low + (low * sub / SubBuckets);
                if (bounds.Count == 0 || bound > bounds[^1])
                {
                    bounds.Add(bound);
                }
            }
        }

        return [.. bounds];
    }
}
