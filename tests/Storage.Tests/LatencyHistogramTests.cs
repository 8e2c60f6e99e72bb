namespace CallState.Storage.Tests;

public sealed class LatencyHistogramTests
{
    [Fact]
    public void Bounds_rise_and_every_value_lands_within_an_eighth_of_its_bucket_bound()
    {
        var bounds = LatencyHistogram.UpperMicros;
        Assert.True(bounds.Zip(bounds.Skip(1)).All(p => p.First < p.Second));
        foreach (var micros in new long[] { 1, 7, 100, 999, 1_500, 65_000, 2_000_000 })
        {
            var histogram = new LatencyHistogram();
            histogram.Record(TimeSpan.FromMicroseconds(micros));
            var bound = Percentile(histogram.Snapshot().Counts, 1.0)!.Value;
            Assert.InRange(bound, micros, Math.Max(micros + 1, micros * 9 / 8 + 1));
        }
    }

    [Fact]
    public void Percentiles_of_the_difference_of_two_snapshots_cover_only_what_came_between()
    {
        var histogram = new LatencyHistogram();
        for (var i = 0; i < 100; i++)
        {
            histogram.Record(TimeSpan.FromSeconds(1));
        }

        var before = histogram.Snapshot().Counts;
        for (var i = 0; i < 98; i++)
        {
            histogram.Record(TimeSpan.FromMicroseconds(500));
        }

        histogram.Record(TimeSpan.FromMilliseconds(3));
        histogram.Record(TimeSpan.FromMilliseconds(40));
        var delta = histogram.Snapshot().Counts.Zip(before, (a, b) => a - b).ToArray();

        Assert.InRange(Percentile(delta, 0.5)!.Value, 500, 563);
        Assert.InRange(Percentile(delta, 0.99)!.Value, 3_000, 3_375);
        Assert.InRange(Percentile(delta, 1.0)!.Value, 40_000, 45_000);
        Assert.Null(Percentile(new long[delta.Length], 0.5));
    }

    /// <summary>
    /// The bucket bound at or above the <paramref name="quantile"/> of <paramref name="counts"/>, or null when empty: how
    /// a reader of two snapshots (the in-process benchmark bench/CallState.Benchmarks/HotKeyLoad.cs) reads their difference.
    /// </summary>
    private static long? Percentile(long[] counts, double quantile)
    {
        var total = counts.Sum();
        if (total == 0)
        {
            return null;
        }

        var rank = (long)Math.Ceiling(quantile * total);
        long seen = 0;
        for (var i = 0; i < counts.Length; i++)
        {
            seen += counts[i];
            if (seen >= rank)
            {
                return LatencyHistogram.UpperMicros[i];
            }
        }

        return LatencyHistogram.UpperMicros[^1];
    }
}
