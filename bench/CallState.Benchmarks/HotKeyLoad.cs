using System.Diagnostics;
using System.Globalization;
using CallState.Grains;
using CallState.Storage;

namespace CallState.Benchmarks;

/// <summary>
/// Reserve+release pairs on limit grains through Orleans (<see cref="ILimitGrain.TryReserveAsync"/> then
/// <see cref="ILimitGrain.ReleaseAsync"/>, a distinct call key per pair) from a fixed number of concurrent callers, on one
/// limit key (the hot key: every call to one callee) or spread over many, for a fixed time or number of pairs, durable
/// (SQLite or PostgreSQL; memory for Orleans' own cost). Every pair is answered only once its writes are committed.
/// Prints, per run and as the median of the runs: pairs per second, pair and reservation latency percentiles, the
/// group commit's writes per batch and commit duration, and the rows written per pair.
/// <code>
/// hotkey [--storage sqlite|postgres|memory] [--postgres CONN] [--keys 1] [--callers 64] [--seconds 10] [--pairs N]
///        [--warmup 2] [--runs 3] [--set CallState:Grains:MaxTurnBatch=256]...
/// </code>
/// </summary>
internal static class HotKeyLoad
{
    public static async Task<int> RunAsync(string[] args)
    {
        var a = new BenchArgs(args);
        var storage = BenchSilo.ParseStorage(a.Text("--storage", "sqlite"));
        var keyCount = a.Int("--keys", 1);
        var callers = a.Int("--callers", 64);
        var seconds = a.Double("--seconds", 10);
        var maxPairs = a.Int("--pairs", int.MaxValue);
        var warmup = a.Double("--warmup", 2);
        var runs = a.Int("--runs", 3);
        var keys = keyCount == 1 ? ["user/hot"] : Enumerable.Range(0, keyCount).Select(i => "user/k" + i.ToString(CultureInfo.InvariantCulture)).ToArray();

        Console.WriteLine(Invariant($"hotkey: storage={BenchSilo.Name(storage)} keys={keyCount} callers={callers} seconds={seconds} pairs<={(maxPairs == int.MaxValue ? "-" : maxPairs)} warmup={warmup}s runs={runs} {BenchSilo.Machine()}"));
        Console.WriteLine("run,pairs,seconds,pairs_per_s,pair_p50_ms,pair_p99_ms,pair_max_ms,reserve_p50_ms,reserve_p99_ms,failures,writes_per_batch,commit_p50_ms,commit_p99_ms,limit_writes_per_pair,rows_per_pair,stale_writes,gc_pause_ms,gen0,gen2,cpu_us_per_pair,loadavg_1m");
        var results = new List<RunResult>();
        var failed = false;
        for (var run = 1; run <= runs; run++)
        {
            await using var silo = await BenchSilo.StartAsync(storage, a.Text("--postgres"), a.Settings()).ConfigureAwait(false);
            var grains = keys.Select(k => silo.Grains.GetGrain<ILimitGrain>(k)).ToArray();

            // Warm-up (not counted): activations, storage connections, JIT and tiering.
            if (warmup > 0)
            {
                await DriveAsync(grains, callers, TimeSpan.FromSeconds(warmup), int.MaxValue, "w" + run.ToString(CultureInfo.InvariantCulture)).ConfigureAwait(false);
            }

            var countsBefore = silo.Store.Snapshot();
            var pauseBefore = GC.GetTotalPauseDuration();
            var gen0Before = GC.CollectionCount(0);
            var gen2Before = GC.CollectionCount(2);
            var cpuBefore = Environment.CpuUsage.TotalTime;
            var commitBefore = CommitSnapshot.Of(silo.GroupCommit);
            var result = await DriveAsync(grains, callers, TimeSpan.FromSeconds(seconds), maxPairs, "r" + run.ToString(CultureInfo.InvariantCulture)).ConfigureAwait(false);
            var commit = CommitSnapshot.Of(silo.GroupCommit) - commitBefore;
            var counts = silo.Store.Snapshot() - countsBefore;
            result = result with
            {
                WritesPerBatch = commit.Batches > 0 ? (double)commit.Writes / commit.Batches : double.NaN,
                CommitP50 = commit.Percentile(0.50),
                CommitP99 = commit.Percentile(0.99),
                LimitWritesPerPair = (double)counts.Limit.Writes / Math.Max(1, result.Pairs),
                RowsPerPair = (double)counts.Rows / Math.Max(1, result.Pairs),
                StaleWrites = counts.Limit.Stale,
                GcPause = (GC.GetTotalPauseDuration() - pauseBefore).TotalMilliseconds,
                Gen0 = GC.CollectionCount(0) - gen0Before,
                Gen2 = GC.CollectionCount(2) - gen2Before,
                CpuPerPair = (Environment.CpuUsage.TotalTime - cpuBefore).TotalMicroseconds / Math.Max(1, result.Pairs),
            };
            results.Add(result);
            failed |= result.Failures > 0;
            Console.WriteLine(Invariant($"{run},{result.Pairs},{result.Seconds:F2},{result.PairsPerSecond:F0},{result.PairP50:F2},{result.PairP99:F2},{result.PairMax:F2},{result.ReserveP50:F2},{result.ReserveP99:F2},{result.Failures},{result.WritesPerBatch:F1},{result.CommitP50:F2},{result.CommitP99:F2},{result.LimitWritesPerPair:F3},{result.RowsPerPair:F2},{result.StaleWrites},{result.GcPause:F0},{result.Gen0},{result.Gen2},{result.CpuPerPair:F1},{BenchSilo.LoadAverage(1)}"));
        }

        Console.WriteLine(Invariant($"median,{Median(results, r => r.Pairs):F0},{Median(results, r => r.Seconds):F2},{Median(results, r => r.PairsPerSecond):F0},{Median(results, r => r.PairP50):F2},{Median(results, r => r.PairP99):F2},{Median(results, r => r.PairMax):F2},{Median(results, r => r.ReserveP50):F2},{Median(results, r => r.ReserveP99):F2},{results.Sum(r => r.Failures)},{Median(results, r => r.WritesPerBatch):F1},{Median(results, r => r.CommitP50):F2},{Median(results, r => r.CommitP99):F2},{Median(results, r => r.LimitWritesPerPair):F3},{Median(results, r => r.RowsPerPair):F2},{results.Sum(r => r.StaleWrites)},{Median(results, r => r.GcPause):F0},{Median(results, r => r.Gen0):F0},{Median(results, r => r.Gen2):F0},{Median(results, r => r.CpuPerPair):F1},-"));
        Console.WriteLine("pair = TryReserveAsync then ReleaseAsync (each answered after its durable write); commit_* = the store's group commit (one transaction per batch; bucket bounds, within 12.5%); rows = grain rows + item rows committed; gc_* = this process's garbage collections during the measured interval; cpu_us_per_pair = this process's CPU time (all threads: callers, Orleans, the grain, the store's client side) per pair, not counting a PostgreSQL server's; loadavg_1m = the machine's at the end of the run (this run included).");
        return failed ? 1 : 0;
    }

    /// <summary>Runs <paramref name="callers"/> loops of reserve+release pairs until <paramref name="duration"/> or <paramref name="maxPairs"/>.</summary>
    private static async Task<RunResult> DriveAsync(ILimitGrain[] grains, int callers, TimeSpan duration, int maxPairs, string prefix)
    {
        var next = -1;
        var failures = 0;
        var pairLatencies = new List<long>[callers];
        var reserveLatencies = new List<long>[callers];
        var clock = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, callers).Select(w => Task.Run(async () =>
        {
            var pairs = pairLatencies[w] = new List<long>(1 << 14);
            var reserves = reserveLatencies[w] = new List<long>(1 << 14);
            int n;
            while (clock.Elapsed < duration && (n = Interlocked.Increment(ref next)) < maxPairs)
            {
                var grain = grains[n % grains.Length];
                var callKey = prefix + "-" + n.ToString(CultureInfo.InvariantCulture);
                var started = Stopwatch.GetTimestamp();
                var outcome = await grain.TryReserveAsync(callKey, Direction.Inbound, TimeSpan.FromMinutes(3), null).ConfigureAwait(false);
                var reserved = Stopwatch.GetTimestamp();
                var released = outcome.Admitted && await grain.ReleaseAsync(callKey).ConfigureAwait(false);
                var ended = Stopwatch.GetTimestamp();
                reserves.Add(reserved - started);
                pairs.Add(ended - started);
                if (!released)
                {
                    Interlocked.Increment(ref failures);
                }
            }
        })).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        var elapsed = clock.Elapsed.TotalSeconds;

        var pairsSorted = Sorted(pairLatencies);
        var reservesSorted = Sorted(reserveLatencies);
        return new RunResult(
            pairsSorted.Length,
            elapsed,
            pairsSorted.Length / elapsed,
            Percentile(pairsSorted, 0.50),
            Percentile(pairsSorted, 0.99),
            pairsSorted.Length == 0 ? double.NaN : Milliseconds(pairsSorted[^1]),
            Percentile(reservesSorted, 0.50),
            Percentile(reservesSorted, 0.99),
            failures);
    }

    private static long[] Sorted(List<long>[] perWorker)
    {
        var all = perWorker.SelectMany(l => l).ToArray();
        Array.Sort(all);
        return all;
    }

    private static double Percentile(long[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : Milliseconds(sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)]);

    private static double Milliseconds(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    private static double Median(List<RunResult> results, Func<RunResult, double> value)
    {
        var sorted = results.Select(value).Order().ToArray();
        return sorted.Length == 0 ? double.NaN : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private sealed record RunResult(
        int Pairs,
        double Seconds,
        double PairsPerSecond,
        double PairP50,
        double PairP99,
        double PairMax,
        double ReserveP50,
        double ReserveP99,
        int Failures)
    {
        public double WritesPerBatch { get; init; }

        public double CommitP50 { get; init; }

        public double CommitP99 { get; init; }

        public double LimitWritesPerPair { get; init; }

        public double RowsPerPair { get; init; }

        public long StaleWrites { get; init; }

        public double GcPause { get; init; }

        public int Gen0 { get; init; }

        public int Gen2 { get; init; }

        public double CpuPerPair { get; init; }
    }
}

/// <summary>The group commit's counters at one moment; two snapshots subtract to the batches and commit times of an interval.</summary>
internal readonly record struct CommitSnapshot(long Batches, long Writes, long[] CommitCounts)
{
    public static CommitSnapshot Of(GroupCommitter? commit) =>
        commit is null ? new(0, 0, []) : new(commit.BatchCount, commit.WriteCount, commit.CommitDurations.Snapshot().Counts);

    public static CommitSnapshot operator -(CommitSnapshot a, CommitSnapshot b) =>
        new(a.Batches - b.Batches, a.Writes - b.Writes, b.CommitCounts.Length == 0 ? a.CommitCounts : a.CommitCounts.Zip(b.CommitCounts, (x, y) => x - y).ToArray());

    /// <summary>The commit duration at quantile <paramref name="q"/> in ms (a bucket's upper bound), or NaN when nothing committed.</summary>
    public double Percentile(double q)
    {
        var total = CommitCounts.Sum();
        if (total == 0)
        {
            return double.NaN;
        }

        var rank = (long)Math.Ceiling(q * total);
        long seen = 0;
        for (var i = 0; i < CommitCounts.Length; i++)
        {
            seen += CommitCounts[i];
            if (seen >= rank)
            {
                return LatencyHistogram.UpperMicros[i] / 1000.0;
            }
        }

        return LatencyHistogram.UpperMicros[^1] / 1000.0;
    }
}
