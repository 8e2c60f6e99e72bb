using System.Net;
using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Orleans silos (Storage clustering) and edges connected to their gateways on loopback, with real PostgreSQL and sipp
/// through both edges: limits shared across edges, and faults (a silo killed, a silo paused until Orleans declares it
/// dead, PostgreSQL restarted, an edge killed, an edge started before any silo) under load, judged by an oracle fed by
/// what the callee saw.
/// </summary>
[Collection(LoadTests.Name)]
public sealed partial class ClusterTests(ITestOutputHelper output)
{
    private static readonly string[] Users = Enumerable.Range(1, 12).Select(i => "u" + i).ToArray();

    /// <summary>The confirmed lease of <see cref="LoadLimits"/>: the longest any slot can outlive its call.</summary>
    private static readonly TimeSpan ConfirmedLease = TimeSpan.FromSeconds(40);

    /// <summary>Each caller may have 3 calls up; the callee "svc" is not the limit under test.</summary>
    private static readonly string[] LoadLimits =
    [
        "--CallState:Limits:DefaultUser:Total=3",
        "--CallState:Limits:Users:svc:Total=100000",
        "--CallState:Grains:Leases:Early=00:00:20",
        $"--CallState:Grains:Leases:Confirmed={ConfirmedLease:c}",
    ];

    /// <summary>Calls per edge in one load batch (5 s at 20 calls/s); batches follow each other until the test stops them.</summary>
    private const int BatchCalls = 100;

    /// <summary>Bounds a load loop in count: 30 batches of 100 calls per edge (about 4 minutes).</summary>
    private const int MaxBatches = 30;

    /// <summary>Calls connected at the callee that show a load under way (about 3 s of it), before a fault is injected.</summary>
    private const int UnderWay = 30;

    /// <summary>How long a load may take to get under way (the rig is up: its silos and edges are ready).</summary>
    private static readonly TimeSpan LoadStart = TimeSpan.FromSeconds(60);

    /// <summary>The window, after a dead silo's grains may be active elsewhere, in which every caller connects a call again.</summary>
    private static readonly TimeSpan ServedWithin = TimeSpan.FromSeconds(9);

    /// <summary>How soon after PostgreSQL is back admissions must connect calls again.</summary>
    private static readonly TimeSpan Recovered = TimeSpan.FromSeconds(8);

    /// <summary>The window after <see cref="Recovered"/> in which more than 20 calls must connect (40 calls/s are offered).</summary>
    private static readonly TimeSpan RecoveredWindow = TimeSpan.FromSeconds(7);

    /// <summary>Bounds a load loop in time: no batch starts later than this after the first.</summary>
    private static readonly TimeSpan MaxLoad = TimeSpan.FromMinutes(4);

    [Fact]
    public async Task A_user_limit_of_10_offered_30_concurrent_calls_over_two_edges_connects_exactly_10()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, ["--CallState:Limits:Users:alice:Total=10", "--CallState:Limits:Users:svc:Total=1000"]);

        // 15 calls from alice through each edge, all within about a second, each held 6 s: 30 at once offered.
        await using var one = rig.StartCallers(rig.Edges[0], ["alice"], calls: 15, rate: 30, holdMs: 6000);
        await using var two = rig.StartCallers(rig.Edges[1], ["alice"], calls: 15, rate: 30, holdMs: 6000);
        var stats = await Task.WhenAll(one.WaitAsync(TimeSpan.FromSeconds(60)), two.WaitAsync(TimeSpan.FromSeconds(60)));
        var messages = one.Messages() + two.Messages();
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"edge 1 {stats[0]}; edge 2 {stats[1]}; oracle {oracle}; final answers {Finals(messages)}; silo exits {rig.SiloExits.Count}");

        Assert.True(stats.All(s => s.Successful == 15 && s.Failed == 0), one.Describe() + two.Describe() + rig.Describe());
        Assert.Equal(10, oracle.Calls);
        Assert.Equal(10, oracle.Peaks["alice"]);
        Assert.True(Count(messages, "SIP/2.0 486 Busy Here") == 20, $"20 calls should be refused with 486, final answers: {Finals(messages)}\n{rig.Describe()}");
        Assert.True(Count(rig.Edges[0].Output + rig.Edges[1].Output, "USER_TOTAL_LIMIT_REACHED") >= 20, rig.Describe());
        await AssertAllZeroAsync(rig, TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task A_caller_with_limit_2_offering_3_calls_through_each_edge_to_a_callee_with_limit_2_gets_exactly_2_connected()
    {
        await using var db = TestDatabase.Create("postgres");

        // Both are local users with limits, so every call needs a slot of user/carol (outbound) and of user/dave (inbound).
        await using var rig = await ClusterRig.StartAsync(db.Settings, ["--CallState:Limits:Users:carol:Total=2", "--CallState:Limits:Users:dave:Total=2"]);

        // 3 calls through each edge, started together and 10 ms apart, each held 8 s: all 6 overlap. Calls racing for the
        // same two limits could each take one slot and refuse each other; the refused one retries once in key order.
        await using var one = rig.StartCallers(rig.Edges[0], ["carol"], calls: 3, rate: 100, holdMs: 8000, limit: 3, callee: "dave");
        await using var two = rig.StartCallers(rig.Edges[1], ["carol"], calls: 3, rate: 100, holdMs: 8000, limit: 3, callee: "dave");
        var stats = await Task.WhenAll(one.WaitAsync(TimeSpan.FromSeconds(60)), two.WaitAsync(TimeSpan.FromSeconds(60)));
        var messages = one.Messages() + two.Messages();
        var oracle = CallOracle.From(rig.Uas.LogLines());
        var refused = Count(messages, "SIP/2.0 486 ") + Count(messages, "SIP/2.0 480 ");
        output.WriteLine($"edge 1 {stats[0]}; edge 2 {stats[1]}; oracle {oracle}; refused {refused}");

        Assert.True(stats.All(s => s.Successful == 3 && s.Failed == 0), one.Describe() + two.Describe() + rig.Describe());
        Assert.True(oracle.Calls == 2, $"min(offered 6, limit 2) = 2 calls should connect: {oracle}\n{rig.Describe()}");
        Assert.Equal(2, oracle.Peaks["carol"]);
        Assert.Equal(0, oracle.Unended);
        Assert.True(refused == 4, $"4 of 6 calls should be refused with 486 or 480, not {refused}\n{rig.Describe()}");
        Assert.Equal(0, Count(messages, "SIP/2.0 503 "));
        await AssertAllZeroAsync(rig, TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task A_silo_killed_under_load_hands_its_keys_over_and_no_caller_ever_exceeds_the_limit()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, LoadLimits);
        var clock = rig.UasClock;
        using var stopLoad = new CancellationTokenSource();
        var load = RunLoadAsync(rig, stopLoad.Token);
        TimeSpan killedAt, deadAt, servedAgain;
        try
        {
            await rig.WaitForCallsAsync(o => o.Calls >= UnderWay, LoadStart, "the load under way");
            killedAt = clock.Elapsed;
            rig.KillSilo(1);
            await rig.WaitMembershipStatusAsync(1, SiloStatus.Dead, ClusterRig.DeathDeclaration);
            deadAt = clock.Elapsed;

            // The load goes on until the callee has seen calls start past the window judged below.
            servedAgain = deadAt + ClusterRig.RecoveryDelay + TimeSpan.FromSeconds(3);
            var past = (servedAgain + ServedWithin).TotalMilliseconds;
            await rig.WaitForCallsAsync(o => o.Starts.Any(s => s.Tick > past), TimeSpan.FromSeconds(60), $"calls connected after {servedAgain + ServedWithin}");
        }
        finally
        {
            await stopLoad.CancelAsync();

            // The batch under way finishes (even when the test failed above), so no caller outlives the rig.
            await Task.WhenAny(load);
        }

        var result = await load;
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"killed at {killedAt}, declared dead at {deadAt} ({deadAt - killedAt} later); {result}; oracle {oracle}; silo exits {rig.SiloExits.Count}");

        AssertWithinLimit(oracle, 3, rig);

        // Every caller (a third of whose grains lived on the killed silo) connects calls again soon after Orleans declares
        // the silo dead: its grains are activated on the others, and admissions it cut are finished after RecoveryDelay.
        var (from, to) = (servedAgain.TotalMilliseconds, (servedAgain + ServedWithin).TotalMilliseconds);
        var late = Users.Where(u => !oracle.Starts.Any(s => s.User == u && s.Tick > from && s.Tick <= to)).ToList();
        Assert.True(late.Count == 0, $"no call connected between {servedAgain} and {servedAgain + ServedWithin} for {string.Join(", ", late)}\n{rig.Describe()}");
        await AssertAllZeroAsync(rig, TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_silo_paused_until_declared_dead_ends_itself_when_resumed_is_restarted_and_no_caller_ever_exceeds_the_limit()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, LoadLimits);
        var clock = rig.UasClock;
        var paused = rig.Silos[2];
        using var stopLoad = new CancellationTokenSource();
        var load = RunLoadAsync(rig, stopLoad.Token);
        TimeSpan pausedAt, deadAt, resumedAt, exitedAt, readyAt;
        SiloExit exit;
        SiloProcess restarted;
        try
        {
            await rig.WaitForCallsAsync(o => o.Calls >= UnderWay, LoadStart, "the load under way");
            pausedAt = clock.Elapsed;
            rig.PauseSilo(2);

            // Frozen with its sockets open, it answers no probe: the others vote it dead in the membership table.
            await rig.WaitMembershipStatusAsync(2, SiloStatus.Dead, ClusterRig.DeathDeclaration);
            deadAt = clock.Elapsed;
            rig.ResumeSilo(2);
            resumedAt = clock.Elapsed;

            // The resumed process still holds activations and serves its gateway until it reads that it is dead (Orleans
            // refreshes its view of the table at least once a minute); then it ends itself, and the supervisor starts a
            // new generation on the same ports.
            exit = await WaitForExitOfAsync(rig, paused.Id, TimeSpan.FromSeconds(100));
            exitedAt = exit.At;
            restarted = rig.Silos[2];
            await restarted.WaitReadyAsync(TimeSpan.FromSeconds(60));
            await rig.WaitMembershipStatusAsync(2, SiloStatus.Active, TimeSpan.FromSeconds(30));
            readyAt = clock.Elapsed;

            // Load goes on with the restarted silo in the cluster until calls connect again.
            var restartedMs = readyAt.TotalMilliseconds;
            await rig.WaitForCallsAsync(o => o.Starts.Count(s => s.Tick > restartedMs) >= UnderWay, TimeSpan.FromSeconds(60),
                "calls connected with the restarted silo in the cluster");
        }
        finally
        {
            rig.ResumeSilo(2);
            await stopLoad.CancelAsync();

            // The batch under way finishes (even when the test failed above), so no caller outlives the rig.
            await Task.WhenAny(load);
        }

        var result = await load;
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"paused at {pausedAt}, declared dead at {deadAt}, resumed at {resumedAt}, exited (code {exit.ExitCode}) at {exitedAt}, " +
            $"restarted (pid {restarted.Id}) and active at {readyAt}; {result}; oracle {oracle}; silo exits {rig.SiloExits.Count}");

        Assert.Equal(2, exit.Index);
        Assert.NotEqual(0, exit.ExitCode);
        Assert.Contains("I have been told I am dead", exit.Output, StringComparison.Ordinal);
        Assert.NotEqual(paused.Id, restarted.Id);
        Assert.Equal((paused.SiloPort, paused.GatewayPort, paused.Port), (restarted.SiloPort, restarted.GatewayPort, restarted.Port));
        AssertWithinLimit(oracle, 3, rig);

        // Every limit's activation is back to 0 (what admission decides on). Storage may still list holds the resumed silo
        // wrote in its last seconds that no activation knows (an open defect, reported here when it happens; see
        // docs/architecture.md "Known gaps"): they do not refuse anyone while the activation lives.
        var busy = await rig.WaitAllZeroAsync(ConfirmedLease + TimeSpan.FromSeconds(10), live: true);
        Assert.True(busy.Length == 0, $"limits still counting calls: {busy}");
        var stored = (await rig.TotalsAsync()).Where(t => t.Value != 0).Select(t => $"{t.Key}={t.Value}").ToList();
        output.WriteLine(stored.Count == 0 ? "storage back to 0 too" : $"stored holds no activation knows: {string.Join(", ", stored)}");
    }

    [Fact]
    public async Task PostgreSQL_restarted_under_load_fails_closed_with_503_recovers_by_itself_and_leaks_no_slot()
    {
        await using var postgres = await PostgresServer.StartAsync();
        string[] storage = ["--CallState:Storage:Provider=PostgreSql", $"--CallState:Storage:ConnectionString={postgres.ConnectionString}"];
        await using var rig = await ClusterRig.StartAsync(storage, LoadLimits);
        var clock = rig.UasClock;
        using var stopLoad = new CancellationTokenSource();
        var load = RunLoadAsync(rig, stopLoad.Token);
        TimeSpan stoppedAt, restartedAt;
        try
        {
            await rig.WaitForCallsAsync(o => o.Calls >= UnderWay, LoadStart, "the load under way");
            stoppedAt = clock.Elapsed;
            await postgres.StopServerAsync();

            // Down until an edge has refused a call for it (fail closed), then back.
            Assert.True(await WaitForOutputAsync(rig, "refused with 503", TimeSpan.FromSeconds(30)), "no edge refused a call while PostgreSQL was down\n" + rig.Describe());
            await postgres.StartServerAsync();
            restartedAt = clock.Elapsed;

            // The load goes on until the callee has seen calls start past the window judged below.
            var past = (restartedAt + Recovered + RecoveredWindow).TotalMilliseconds;
            await rig.WaitForCallsAsync(o => o.Starts.Any(s => s.Tick > past), TimeSpan.FromSeconds(60), "calls connected after the window");
        }
        finally
        {
            await stopLoad.CancelAsync();

            // The batch under way finishes (even when the test failed above), so no caller outlives the rig.
            await Task.WhenAny(load);
        }

        var result = await load;
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"PostgreSQL stopped at {stoppedAt}, started at {restartedAt}; {result}; oracle {oracle}; silo exits {rig.SiloExits.Count}");

        Assert.True(result.ServiceUnavailable > 0, "no call was refused with 503 while PostgreSQL was down");
        AssertWithinLimit(oracle, 3, rig);
        var (from, to) = ((restartedAt + Recovered).TotalMilliseconds, (restartedAt + Recovered + RecoveredWindow).TotalMilliseconds);
        Assert.True(oracle.Starts.Count(s => s.Tick > from && s.Tick <= to) > 20, $"calls did not connect again within {Recovered + RecoveredWindow} of the restart\n{rig.Describe()}");
        await AssertAllZeroAsync(rig, TimeSpan.FromSeconds(60));
    }

    [Fact]
    public async Task An_edge_killed_with_calls_up_has_its_slots_released_by_BYEs_through_the_other_edge_or_by_lease()
    {
        await using var db = TestDatabase.Create("postgres");

        // Both edges put edge 2 in Record-Route, as a load balancer's address would be: in-dialog requests avoid edge 1.
        await using var rig = await ClusterRig.StartAsync(db.Settings, LoadLimits, advertiseLast: true);
        await using var one = rig.StartCallers(rig.Edges[0], Users, calls: 120, rate: 20, holdMs: 3000);
        var before = await rig.WaitForCallsAsync(o => o.Calls >= UnderWay, LoadStart, "calls up through edge 1");
        rig.Edges[0].Kill();
        var stats = await one.WaitAsync(TimeSpan.FromSeconds(90));
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"{before.Calls} calls connected before the kill; edge 1 callers {stats}; oracle {oracle}");

        // Every call was offered; the ones sent to the dead edge failed; the ones connected before the kill that the
        // callee saw end had their BYE cross edge 2 and completed at the caller too.
        Assert.Equal(120, stats.Created);
        Assert.True(stats.Failed > 0, $"no call failed although edge 1 was killed: {stats}\n{one.Describe()}");
        Assert.True(stats.Successful >= oracle.Calls - oracle.Unended, $"{oracle.Calls - oracle.Unended} calls ended at the callee but {stats}\n{one.Describe()}");
        AssertWithinLimit(oracle, 3, rig);

        // Calls connected before the kill end with BYEs through edge 2; calls caught mid-setup are reclaimed by their early lease (20 s).
        await AssertAllZeroAsync(rig, TimeSpan.FromSeconds(45));
    }

    [Fact]
    public async Task An_edge_started_before_any_silo_refuses_calls_with_503_until_the_silos_start_then_becomes_ready_and_admits()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = ClusterRig.Create(db.Settings, ["--CallState:Limits:DefaultUser:Total=3", "--CallState:Limits:Users:svc:Total=1000"], silos: 2, edges: 1);
        rig.StartEdges();
        var edge = rig.Edges[0];
        Assert.True(await edge.OutputContainsAsync("SIP listening on", TimeSpan.FromSeconds(30)), edge.Output);

        // No gateway answers: the edge keeps trying, is not ready, and refuses calls (fail closed).
        Assert.Equal(HttpStatusCode.ServiceUnavailable, await edge.ReadinessAsync());
        await using (var early = rig.StartCallers(edge, ["erin"], calls: 2, rate: 10, holdMs: 1000, limit: 2))
        {
            var stats = await early.WaitAsync(TimeSpan.FromSeconds(60));
            var messages = early.Messages();
            output.WriteLine($"before the silos: {stats}");
            Assert.True(stats.Successful == 2 && stats.Failed == 0, early.Describe() + rig.Describe());
            Assert.Equal(2, Count(messages, "SIP/2.0 503 Service Unavailable"));
            Assert.Equal(2, Count(messages, "Reason: Q.850;cause=42"));
            Assert.Equal(2, Count(messages, "Retry-After: "));
        }

        Assert.Equal(0, CallOracle.From(rig.Uas.LogLines()).Calls);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, await edge.ReadinessAsync());
        Assert.False(edge.HasExited, edge.Output);

        await rig.StartSilosAsync();
        await rig.WaitEdgesReadyAsync(TimeSpan.FromSeconds(60));
        Assert.True(await edge.OutputContainsAsync("Connected to the cluster"), edge.Output);
        await using (var late = rig.StartCallers(edge, ["erin"], calls: 3, rate: 10, holdMs: 1000, limit: 3))
        {
            var stats = await late.WaitAsync(TimeSpan.FromSeconds(60));
            var messages = late.Messages();
            var oracle = CallOracle.From(rig.Uas.LogLines());
            output.WriteLine($"after the silos: {stats}; oracle {oracle}");
            Assert.True(stats.Successful == 3 && stats.Failed == 0, late.Describe() + rig.Describe());
            Assert.Equal(0, Count(messages, "SIP/2.0 503"));
            Assert.Equal(3, oracle.Calls);
        }

        await AssertAllZeroAsync(rig, TimeSpan.FromSeconds(15));
    }

    /// <summary>
    /// Calls from every user through both edges, in batches of <see cref="BatchCalls"/> per edge, until <paramref name="stop"/>
    /// (the batch under way finishes), <see cref="MaxBatches"/> or <see cref="MaxLoad"/>; every batch's calls must all
    /// complete (a refusal, 503 included, completes a call).
    /// </summary>
    private static async Task<LoadResult> RunLoadAsync(ClusterRig rig, CancellationToken stop)
    {
        var batches = 0;
        var serviceUnavailable = 0;
        var deadline = DateTime.UtcNow + MaxLoad;
        while (batches < MaxBatches && DateTime.UtcNow < deadline && !stop.IsCancellationRequested)
        {
            await using var one = rig.StartCallers(rig.Edges[0], Users, calls: BatchCalls, rate: 20, holdMs: 1500);
            await using var two = rig.StartCallers(rig.Edges[1], Users.Reverse(), calls: BatchCalls, rate: 20, holdMs: 1500);
            var stats = await Task.WhenAll(one.WaitAsync(TimeSpan.FromSeconds(90)), two.WaitAsync(TimeSpan.FromSeconds(90)));
            Assert.True(stats.All(s => s.Successful == BatchCalls && s.Failed == 0), $"batch {batches}:\n" + one.Describe() + two.Describe() + rig.Describe());
            batches++;
            serviceUnavailable += Count(one.Messages() + two.Messages(), "SIP/2.0 503 Service Unavailable");
        }

        return new LoadResult(batches, batches * BatchCalls * 2, serviceUnavailable);
    }

    /// <summary>What a load loop offered: batches, calls, and calls refused with 503 (fail closed).</summary>
    private sealed record LoadResult(int Batches, int Calls, int ServiceUnavailable)
    {
        public override string ToString() => $"{Batches} batches, {Calls} calls offered, {ServiceUnavailable} refused with 503";
    }

    /// <summary>Every stored limit back to 0 within <paramref name="timeout"/>; else fails with the held calls described in full.</summary>
    private static async Task AssertAllZeroAsync(ClusterRig rig, TimeSpan timeout)
    {
        var busy = await rig.WaitAllZeroAsync(timeout);
        Assert.True(busy.Length == 0, $"not back to 0 after {timeout}: {busy}");
    }

    private static async Task<bool> WaitForOutputAsync(ClusterRig rig, string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!rig.Edges.Any(e => e.Output.Contains(text, StringComparison.Ordinal)))
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            await Task.Delay(100);
        }

        return true;
    }

    private static async Task<SiloExit> WaitForExitOfAsync(ClusterRig rig, int processId, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (rig.SiloExits.FirstOrDefault(e => e.ProcessId == processId) is { } exit)
            {
                return exit;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"silo process {processId} did not exit within {timeout}:\n{rig.Describe()}");
    }

    private static void AssertWithinLimit(CallOracle oracle, int limit, ClusterRig rig)
    {
        var over = oracle.Peaks.Where(p => p.Key != "svc" && p.Value > limit).Select(p => $"{p.Key}={p.Value}").ToList();
        Assert.True(over.Count == 0, $"over the limit of {limit}: {string.Join(", ", over)}\n{rig.Describe()}");
        Assert.True(oracle.Peaks.Values.Any(v => v == limit), $"the load never reached the limit: {oracle}");
    }

    /// <summary>How many of each final answer to an INVITE the callers received, e.g. "200=10 486=20".</summary>
    private static string Finals(string messages) =>
        string.Join(" ", FinalAnswer().Matches(messages).GroupBy(m => m.Groups[1].Value).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key}={g.Count()}"));

    [GeneratedRegex(@"SIP/2\.0 ([2-6]\d\d) [^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*?CSeq: *\d+ INVITE")]
    private static partial Regex FinalAnswer();

    private static int Count(string text, string what)
    {
        var count = 0;
        for (var i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }
}
