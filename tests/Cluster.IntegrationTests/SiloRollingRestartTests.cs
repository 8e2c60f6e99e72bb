using System.Globalization;
using System.Text;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// What Kubernetes does to the silos in a rolling update (docs/reliability.md, "Rolling restart of the silos"): three
/// silo processes on PostgreSQL (storage clustering), two edges that are Orleans clients of all three gateways, and sipp
/// load through both edges with every caller limited to 2 calls. The silos are restarted one at a time as a StatefulSet
/// does it: SIGTERM (Orleans' graceful shutdown: the silo's grains deactivate and activate again on the others), the
/// process exits by itself within the grace period, a new process starts in its place, and the next silo is stopped
/// only once the new one is active in the membership table and both edges are connected to its gateway again. Judged
/// from outside: the callee's log, replayed, never shows a caller above its limit, every call that reached the callee
/// ends there normally, and every count returns to 0. Refusals (486 at the limit, 503 while admission fails closed) are
/// allowed; over-admission and leaked slots are not.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class SiloRollingRestartTests(ITestOutputHelper output)
{
    /// <summary>Every caller's limit (DefaultUser); the callee is unlimited.</summary>
    private const int Limit = 2;

    /// <summary>Kubernetes' default terminationGracePeriodSeconds: a silo still running after it would be SIGKILLed.</summary>
    private static readonly TimeSpan GracePeriod = TimeSpan.FromSeconds(30);

    /// <summary>From a new silo process's start until it is ready, active in the table and every edge's client reaches it.</summary>
    private static readonly TimeSpan RejoinDeadline = TimeSpan.FromSeconds(90);

    /// <summary>Calls per second per edge, each held this long; 4 callers share them, so each is offered about 4 calls at once (2 edges).</summary>
    private const double Rate = 4;

    private const int HoldMs = 2000;

    /// <summary>Bounds the load: at most this many calls per edge (300 s at <see cref="Rate"/>); the test stops it after the roll.</summary>
    private const int MaxCallsPerEdge = 1200;

    private static readonly string[] Users = ["l1", "l2", "l3", "l4"];

    private static readonly string[] Settings =
    [
        $"--CallState:Limits:DefaultUser:Total={Limit}",
        "--CallState:Limits:Users:svc:Total=100000",
    ];

    [Fact]
    public async Task Rolling_restart_of_every_silo_under_load_never_exceeds_a_limit_and_every_count_returns_to_0()
    {
        using var dir = new TempDirectory("callstate-roll-");
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, Settings);
        var callers = new List<Sipp>();
        var steps = new List<RollStep>();
        try
        {
            for (var edge = 0; edge < rig.Edges.Count; edge++)
            {
                callers.Add(StartCaller(rig, dir.Path, edge));
            }

            var seen = (await rig.WaitForCallsAsync(o => o.Calls >= 20, TimeSpan.FromSeconds(60), "20 calls at the callee before the roll")).Calls;
            for (var index = 0; index < rig.Silos.Count; index++)
            {
                // Each silo is stopped with calls flowing: 10 more have reached the callee since the previous step.
                var before = seen;
                seen = (await rig.WaitForCallsAsync(o => o.Calls >= before + 10, TimeSpan.FromSeconds(60), $"10 more calls before silo{index} is stopped")).Calls;
                steps.Add(await RollAsync(rig, index, callers));
                output.WriteLine(steps[^1].ToString());
            }

            // The cluster admits again after the roll, then the callers stop placing calls and finish the ones under way.
            var afterRoll = seen;
            await rig.WaitForCallsAsync(o => o.Calls >= afterRoll + 10, TimeSpan.FromSeconds(60), "10 more calls after the roll");
            foreach (var caller in callers)
            {
                caller.Quit();
            }

            var results = new List<(SippStats Stats, Dictionary<string, long> Counts)>();
            foreach (var caller in callers)
            {
                results.Add((await caller.WaitAsync(TimeSpan.FromSeconds(90)), caller.Counts()));
            }

            // Every call that reached the callee ended there with its BYE (the callee's scenario also ends after its wait).
            var ended = await rig.WaitForCallsAsync(o => o.Unended == 0, TimeSpan.FromSeconds(40), "every call at the callee ended by its BYE");
            var callee = await rig.Uas.WaitForStatsAsync(s => s.Successful + s.Failed >= s.Created, TimeSpan.FromSeconds(40));

            // Every count back to 0: as each limit's activation counts it (what admission decides on), and as stored.
            var leaked = await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(60), live: true);
            var stored = await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(30));

            var summary = Summarize(steps, results, ended, callee, leaked, stored);
            output.WriteLine(summary);

            var excesses = CallOracle.Excesses(rig.Uas.LogLines(), Limit);
            Assert.True(excesses.Count == 0, $"callers over their limit of {Limit} at the callee:\n{string.Join("\n", excesses)}\n{summary}\n{rig.Describe()}");
            Assert.True(leaked.Length == 0, $"limits still counting calls after the roll (activations): {leaked}\n{summary}\n{rig.Describe()}");
            Assert.True(stored.Length == 0, $"limits still counting calls after the roll (storage): {stored}\n{summary}");
            Assert.True(callee.Failed == 0 && callee.Successful == callee.Created, $"calls that reached the callee did not end normally: {callee}\n{rig.Uas.Describe()}");
            Assert.True(results.All(r => r.Stats.Failed == 0), $"calls failed at a caller:\n{summary}\n{string.Join("\n", callers.Select(c => c.Describe()))}");

            // Not vacuous: callers reached their limit and were refused at it, and calls were admitted while each silo was away.
            Assert.True(ended.Peaks.Values.Any(v => v == Limit), $"no caller ever reached its limit: {ended}");
            Assert.True(results.Sum(r => Refusals(r.Counts, "486")) > 0, $"no call was refused at a limit:\n{summary}");
            foreach (var step in steps)
            {
                Assert.True(step.AdmittedDuring > 0, $"no call reached the callee while silo{step.Index} was restarted:\n{summary}");
            }
        }
        finally
        {
            foreach (var caller in callers)
            {
                await caller.DisposeAsync();
            }

            if (Environment.GetEnvironmentVariable("CALLSTATE_ROLL_LOGS") is { Length: > 0 } logs)
            {
                rig.SaveLogs(logs);
            }
        }
    }

    /// <summary>
    /// One step of the roll: SIGTERM to silo <paramref name="index"/>, its exit within the grace period, a new process on
    /// its ports, ready, active in the membership table, and reached again by every edge's client.
    /// </summary>
    private static async Task<RollStep> RollAsync(ClusterRig rig, int index, List<Sipp> callers)
    {
        var clock = rig.UasClock;
        var gatewaysBefore = rig.Edges.Select(e => Occurrences(e.Output, AllGateways(rig))).ToArray();
        var countsBefore = SumCounts(callers);

        var terminated = clock.Elapsed;
        var old = rig.TerminateSilo(index);
        int exitCode;
        try
        {
            exitCode = await old.WaitForExitAsync(GracePeriod);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"silo{index} (pid {old.Id}) still running {GracePeriod.TotalSeconds} s after SIGTERM:\n{rig.Describe()}");
            throw;
        }

        var exited = clock.Elapsed;
        Assert.True(exitCode == 0, $"silo{index} exited {exitCode} after SIGTERM:\n{old.Output}");

        var silo = rig.RestartSilo(index);
        await silo.WaitReadyAsync(RejoinDeadline);
        var ready = clock.Elapsed;
        await rig.WaitMembershipStatusAsync(index, SiloStatus.Active, RejoinDeadline - (ready - exited));
        var active = clock.Elapsed;

        // Each edge logs its count of live gateways when it changes: all of them again, once more than before the stop.
        var deadline = DateTime.UtcNow + RejoinDeadline - (active - exited);
        for (var edge = 0; edge < rig.Edges.Count; edge++)
        {
            while (Occurrences(rig.Edges[edge].Output, AllGateways(rig)) <= gatewaysBefore[edge])
            {
                Assert.True(DateTime.UtcNow < deadline, $"edge{edge} never reconnected to the gateway of the restarted silo{index} within {RejoinDeadline.TotalSeconds} s:\n{rig.Describe()}");
                await Task.Delay(100);
            }
        }

        var seen = clock.Elapsed;
        var countsAfter = SumCounts(callers);
        var admitted = CallOracle.From(rig.Uas.LogLines()).Starts.Count(s => s.Tick >= terminated.TotalMilliseconds && s.Tick <= seen.TotalMilliseconds);
        return new RollStep(index, old.Id, silo.Id, terminated, exited - terminated, ready - exited, active - exited, seen - exited,
            admitted,
            Delta(countsAfter, countsBefore, "486"), Delta(countsAfter, countsBefore, "503"));
    }

    /// <summary>One caller process per edge: <see cref="Rate"/> calls per second from the users in turn, each held <see cref="HoldMs"/>.</summary>
    private static Sipp StartCaller(ClusterRig rig, string dir, int edge)
    {
        var users = Path.Combine(dir, $"users-{edge.ToString(CultureInfo.InvariantCulture)}.csv");

        // The second edge takes the users in the other order, so both edges ask for the same limits at once.
        File.WriteAllText(users, "SEQUENTIAL\n" + string.Join("\n", edge == 0 ? Users : Users.Reverse()) + "\n");
        return Sipp.Start($"uac@edge{edge.ToString(CultureInfo.InvariantCulture)}", [
            $"127.0.0.1:{Port(rig.Edges[edge].SipPort)}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", "svc",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(MaxCallsPerEdge),
            "-r", Rate.ToString(CultureInfo.InvariantCulture), "-l", "100", "-d", Port(HoldMs),

            // Bounded: a call waits 20 s for an answer at most; the whole run ends well past the longest roll.
            "-recv_timeout", "20s", "-timeout", "480s", "-timeout_error", "-trace_counts", "-default_behaviors", "all,-abortunexp"]);
    }

    private static string Summarize(List<RollStep> steps, List<(SippStats Stats, Dictionary<string, long> Counts)> results, CallOracle oracle,
        SippStats callee, string leaked, string stored)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"rolling restart: 3 silos (PostgreSQL), 2 edges, {Rate} calls/s of {HoldMs} ms per edge, callers limited to {Limit}");
        text.AppendLine("| silo | SIGTERM at (s) | to exit (s) | exit to ready (s) | exit to active (s) | exit to both edges connected (s) | calls reaching the callee meanwhile | 486 / 503 meanwhile |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---|");
        foreach (var step in steps)
        {
            text.AppendLine(step.ToString());
        }

        var created = results.Sum(r => r.Stats.Created);
        var failed = results.Sum(r => r.Stats.Failed);
        var busy = results.Sum(r => Refusals(r.Counts, "486"));
        var closed = results.Sum(r => Refusals(r.Counts, "503"));
        var other = results.Sum(r => r.Counts.Where(c => c.Key.EndsWith("_Recv", StringComparison.Ordinal) && IsRefusal(c.Key)).Sum(c => c.Value)) - busy - closed;
        text.AppendLine(CultureInfo.InvariantCulture, $"callers: {created} calls placed, {oracle.Calls} reached the callee, {busy} refused 486 (limit), {closed} refused 503, {other} other refusals, {failed} failed");
        text.AppendLine(CultureInfo.InvariantCulture, $"callee: {callee}; oracle: {oracle}");
        text.AppendLine(CultureInfo.InvariantCulture, $"counts after the roll: activations {(leaked.Length == 0 ? "all 0" : leaked)}; storage {(stored.Length == 0 ? "all 0" : stored)}");
        return text.ToString();
    }

    private static bool IsRefusal(string column) => column.Contains("_4", StringComparison.Ordinal) || column.Contains("_5", StringComparison.Ordinal);

    private static Dictionary<string, long> SumCounts(List<Sipp> callers)
    {
        var sum = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (key, value) in callers.SelectMany(c => c.Counts()))
        {
            sum[key] = sum.GetValueOrDefault(key) + value;
        }

        return sum;
    }

    private static long Delta(Dictionary<string, long> after, Dictionary<string, long> before, string code) => Refusals(after, code) - Refusals(before, code);

    private static long Refusals(Dictionary<string, long> counts, string code) =>
        counts.Where(c => c.Key.EndsWith($"_{code}_Recv", StringComparison.Ordinal)).Sum(c => c.Value);

    private static string AllGateways(ClusterRig rig) => $"Connected to {rig.Silos.Count.ToString(CultureInfo.InvariantCulture)} silo gateways";

    private static int Occurrences(string text, string line)
    {
        var count = 0;
        for (var at = text.IndexOf(line, StringComparison.Ordinal); at >= 0; at = text.IndexOf(line, at + line.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);

    /// <summary>One silo's restart, times on the callee's clock (durations from the old process's exit).</summary>
    private sealed record RollStep(int Index, int OldPid, int NewPid, TimeSpan Terminated, TimeSpan ToExit, TimeSpan ToReady, TimeSpan ToActive,
        TimeSpan ToEdges, int AdmittedDuring, long Busy, long Closed)
    {
        public override string ToString() =>
            $"| silo{Index} (pid {OldPid} -> {NewPid}) | {S(Terminated)} | {S(ToExit)} | {S(ToReady)} | {S(ToActive)} | {S(ToEdges)} | {AdmittedDuring} | {Busy} / {Closed} |";

        private static string S(TimeSpan t) => t.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture);
    }
}
