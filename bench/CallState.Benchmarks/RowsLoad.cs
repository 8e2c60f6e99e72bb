using System.Diagnostics;
using System.Globalization;
using CallState.Grains;

namespace CallState.Benchmarks;

/// <summary>
/// Durable rows written per call: N calls through <see cref="ICallShardGrain"/>, each on two limits (the caller's outbound
/// user limit <c>user/u&lt;n % users&gt;</c> and the callee's inbound one, <c>user/service</c>, shared by every call as in the
/// SIP benchmarks), in phases: every call admitted, then every call confirmed, then every call ended (which deletes its
/// record). Counts the rows committed through the store
/// in each phase (<see cref="CountingStateStore"/>: a write is one grain row plus one row per item, a delete one row).
/// With <c>--concurrency 1</c> no two operations share a limit's turn, so it shows the rows of one call alone; with more
/// callers the hot callee limit decides several operations per write. With <c>--refused N</c> (and <c>user/service</c> given
/// a total of <c>--calls</c>, <c>--set CallState:Limits:Users:service:Total=1000</c>), N more calls on the same limits are
/// refused after the admit phase: what a flood past a limit costs storage, per refused call. At the end it prints how many
/// limit rows are still stored once every call has ended.
/// <code>
/// rows [--storage sqlite|postgres|memory] [--postgres CONN] [--calls 1000] [--concurrency 1] [--users 100] [--refused 0] [--set key=value]...
/// </code>
/// </summary>
internal static class RowsLoad
{
    public static async Task<int> RunAsync(string[] args)
    {
        var a = new BenchArgs(args);
        var storage = BenchSilo.ParseStorage(a.Text("--storage", "sqlite"));
        var calls = a.Int("--calls", 1000);
        var concurrency = a.Int("--concurrency", 1);
        var users = a.Int("--users", 100);
        var refused = a.Int("--refused", 0);
        var settings = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var (key, value) in a.Settings())
        {
            settings[key] = value;
        }

        await using var silo = await BenchSilo.StartAsync(storage, a.Text("--postgres"), settings).ConfigureAwait(false);
        var callGrains = Enumerable.Range(0, calls).Select(n => silo.Grains.GetCall("rows-" + n.ToString(CultureInfo.InvariantCulture))).ToArray();
        var failures = 0;

        Console.WriteLine(Invariant($"rows: storage={BenchSilo.Name(storage)} calls={calls} concurrency={concurrency} limits per call=2 (user/u<n % {users}> outbound, user/service inbound) {BenchSilo.Machine()}"));
        Console.WriteLine("phase,calls,rows_per_call,call_rows,limit_rows,limit_items,writes_per_call,limit_writes_per_call,deletes_per_call,stale_writes,reads_per_call,seconds");
        var total = default(StoreCounts);

        total += await PhaseAsync("admit", silo, calls, concurrency, async n =>
        {
            LimitRequest[] limits =
            [
                new("user/u" + (n % users).ToString(CultureInfo.InvariantCulture), Direction.Outbound),
                new("user/service", Direction.Inbound),
            ];
            if ((await callGrains[n].AdmitAsync(limits).ConfigureAwait(false)).Status != AdmitStatus.Admitted)
            {
                Interlocked.Increment(ref failures);
            }
        }).ConfigureAwait(false);

        if (refused > 0)
        {
            // Not in the total (that is per admitted call): printed per refused call.
            await PhaseAsync("refused", silo, refused, concurrency, async n =>
            {
                LimitRequest[] limits =
                [
                    new("user/u" + (n % users).ToString(CultureInfo.InvariantCulture), Direction.Outbound),
                    new("user/service", Direction.Inbound),
                ];
                if ((await silo.Grains.GetCall("refused-" + n.ToString(CultureInfo.InvariantCulture)).AdmitAsync(limits).ConfigureAwait(false)).Status != AdmitStatus.Rejected)
                {
                    Interlocked.Increment(ref failures);
                }
            }).ConfigureAwait(false);
        }

        total += await PhaseAsync("confirm", silo, calls, concurrency, async n =>
        {
            if (!await callGrains[n].ConfirmAsync().ConfigureAwait(false))
            {
                Interlocked.Increment(ref failures);
            }
        }).ConfigureAwait(false);

        total += await PhaseAsync("end", silo, calls, concurrency, async n =>
        {
            if (!await callGrains[n].EndAsync().ConfigureAwait(false))
            {
                Interlocked.Increment(ref failures);
            }
        }).ConfigureAwait(false);

        // A call's record is deleted when it ends: none may be left.
        var left = (await silo.Store.ReadAllAsync(GrainTypes.Call, CancellationToken.None).ConfigureAwait(false)).Count;
        var limitRows = (await silo.Store.ReadAllAsync(GrainTypes.Limit, CancellationToken.None).ConfigureAwait(false)).Count;
        Print("total", calls, total, double.NaN);
        Console.WriteLine(Invariant($"limit rows still stored after every call ended: {limitRows}"));
        if (left > 0)
        {
            Console.WriteLine(Invariant($"{left} call records were still stored after every call ended"));
        }

        Console.WriteLine("rows = grain rows + item rows + deletes committed; call_rows = call records written or deleted; limit_rows = limit grain rows written (an items-only write checks its row without writing it); limit_items = held-call items written or deleted with them.");
        return failures == 0 && left == 0 ? 0 : 1;
    }

    /// <summary>Runs <paramref name="operation"/> for every call and prints the rows it wrote.</summary>
    private static async Task<StoreCounts> PhaseAsync(string name, BenchSilo silo, int calls, int concurrency, Func<int, Task> operation)
    {
        var before = silo.Store.Snapshot();
        var clock = Stopwatch.StartNew();
        var next = -1;
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            int n;
            while ((n = Interlocked.Increment(ref next)) < calls)
            {
                await operation(n).ConfigureAwait(false);
            }
        })).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        var counts = silo.Store.Snapshot() - before;
        Print(name, calls, counts, clock.Elapsed.TotalSeconds);
        return counts;
    }

    private static void Print(string phase, int calls, StoreCounts c, double seconds)
    {
        double PerCall(long value) => (double)value / calls;
        Console.WriteLine(Invariant(
            $"{phase},{calls},{PerCall(c.Rows):F2},{PerCall(c.Call.Rows):F2},{PerCall(c.Limit.Writes + c.Limit.Deletes):F2},{PerCall(c.Limit.Items):F2},{PerCall(c.Writes):F2},{PerCall(c.Limit.Writes + c.Limit.ItemsOnly):F2},{PerCall(c.Call.Deletes + c.Limit.Deletes):F2},{c.Call.Stale + c.Limit.Stale},{PerCall(c.Reads):F2},{seconds:F2}"));
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
