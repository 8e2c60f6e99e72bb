using System.Diagnostics;
using System.Globalization;
using CallState.Grains;

namespace CallState.Benchmarks;

/// <summary>
/// Durable admissions through the call-shard grains of one in-process Orleans silo: a fixed number of calls from a fixed
/// number of concurrent callers, each call admitted (<see cref="ICallShardGrain.AdmitAsync"/>) on a user and a trunk limit
/// and then ended (<see cref="ICallShardGrain.EndAsync"/>). Prints calls admitted per second, slot reservations per second,
/// admission latency percentiles, the rows written per call, and this process's CPU, allocation and GC per call. With
/// <c>--direct</c> the two limits are reserved and released straight from the callers, without the call's shard and
/// record: the difference is what they cost. Bounded in count; every call ends, so the run stops by itself.
/// <code>
/// admission [--storage sqlite|postgres|memory] [--postgres CONN] [--calls 20000] [--concurrency 64] [--users 1000] [--direct] [--set key=value]...
/// </code>
/// </summary>
internal static class AdmissionLoad
{
    public static async Task<int> RunAsync(string[] args)
    {
        var a = new BenchArgs(args);
        var storage = BenchSilo.ParseStorage(a.Text("--storage", "sqlite"));
        var calls = a.Int("--calls", 20000);
        var concurrency = a.Int("--concurrency", 64);
        var users = a.Int("--users", 1000);
        var direct = a.Flag("--direct");

        await using var silo = await BenchSilo.StartAsync(storage, a.Text("--postgres"), a.Settings()).ConfigureAwait(false);
        var before = silo.Store.Snapshot();
        var latencies = new double[calls];
        var next = -1;
        var failures = 0;
        var allocatedBefore = GC.GetTotalAllocatedBytes();
        var pauseBefore = GC.GetTotalPauseDuration();
        var gcBefore = GC.CollectionCount(0);
        var gen1Before = GC.CollectionCount(1);
        var gen2Before = GC.CollectionCount(2);
        var cpuBefore = Environment.CpuUsage.TotalTime;
        var total = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            int n;
            while ((n = Interlocked.Increment(ref next)) < calls)
            {
                var call = silo.Grains.GetCall("bench-" + n.ToString(CultureInfo.InvariantCulture));
                LimitRequest[] limits =
                [
                    new("user/u" + (n % users).ToString(CultureInfo.InvariantCulture), Direction.Outbound),
                    new("trunk/t" + (n % 10).ToString(CultureInfo.InvariantCulture), Direction.Outbound),
                ];
                var started = Stopwatch.GetTimestamp();
                if (direct)
                {
                    // The limit grains alone, without the call's shard and record: what those cost is the difference.
                    var callKey = "bench-" + n.ToString(CultureInfo.InvariantCulture);
                    var reserved = await Task.WhenAll(limits.Select(l => silo.Grains.GetGrain<ILimitGrain>(l.Key).TryReserveAsync(callKey, l.Direction, TimeSpan.FromMinutes(3), null))).ConfigureAwait(false);
                    latencies[n] = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                    if (!reserved.All(r => r.Admitted))
                    {
                        Interlocked.Increment(ref failures);
                    }

                    await Task.WhenAll(limits.Select(l => silo.Grains.GetGrain<ILimitGrain>(l.Key).ReleaseAsync(callKey))).ConfigureAwait(false);
                    continue;
                }

                var result = await call.AdmitAsync(limits).ConfigureAwait(false);
                latencies[n] = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                if (result.Status != AdmitStatus.Admitted)
                {
                    Interlocked.Increment(ref failures);
                }

                await call.EndAsync().ConfigureAwait(false);
            }
        })).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        total.Stop();
        var allocated = GC.GetTotalAllocatedBytes() - allocatedBefore;
        var pause = GC.GetTotalPauseDuration() - pauseBefore;
        var collections = GC.CollectionCount(0) - gcBefore;
        var cpu = Environment.CpuUsage.TotalTime - cpuBefore;
        var counts = silo.Store.Snapshot() - before;

        Array.Sort(latencies);
        var seconds = total.Elapsed.TotalSeconds;
        Console.WriteLine(Invariant($"storage={BenchSilo.Name(storage)} calls={calls} concurrency={concurrency} failures={failures} {BenchSilo.Machine()}"));
        Console.WriteLine(Invariant($"calls admitted and ended per second: {calls / seconds:F0}"));
        Console.WriteLine(Invariant($"slot reservations per second: {2 * calls / seconds:F0}"));
        Console.WriteLine(Invariant($"admission latency ms: p50={Percentile(latencies, 0.50):F2} p99={Percentile(latencies, 0.99):F2} max={latencies[^1]:F2}"));
        Console.WriteLine(Invariant($"rows written per call (admit+end, before the ended record's deletion): {(double)counts.Rows / calls:F2} (writes {(double)counts.Writes / calls:F2})"));
        Console.WriteLine(Invariant($"per call: CPU {cpu.TotalMicroseconds / calls:F0} us, allocated {allocated / 1024.0 / calls:F1} KB; GC: {collections} collections (gen1 {GC.CollectionCount(1) - gen1Before}, gen2 {GC.CollectionCount(2) - gen2Before}), paused {pause.TotalMilliseconds:F0} ms ({100 * pause / total.Elapsed:F1}% of the run)"));
        return failures == 0 ? 0 : 1;
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
