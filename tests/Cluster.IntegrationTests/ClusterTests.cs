using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Three silos and two edges on loopback with real PostgreSQL and sipp through both edges: limits shared across edges,
/// and faults (a silo killed, a silo paused past the failure timeout, PostgreSQL restarted, an edge killed) under load,
/// judged by an oracle fed by what the callee saw.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class ClusterTests(ITestOutputHelper output)
{
    private static readonly string[] Users = Enumerable.Range(1, 12).Select(i => "u" + i).ToArray();

    /// <summary>Each caller may have 3 calls up; the callee "svc" is not the limit under test.</summary>
    private static readonly string[] LoadLimits =
    [
        "--CallState:Limits:DefaultUser:Total=3",
        "--CallState:Limits:Users:svc:Total=100000",
        "--CallState:Runtime:Leases:Early=00:00:20",
        "--CallState:Runtime:Leases:Confirmed=00:00:40",
    ];

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
        output.WriteLine($"edge 1 {stats[0]}; edge 2 {stats[1]}; oracle {oracle}");

        Assert.True(stats.All(s => s.Successful == 15 && s.Failed == 0), one.Describe() + two.Describe() + rig.Describe());
        Assert.Equal(10, oracle.Calls);
        Assert.Equal(10, oracle.Peaks["alice"]);
        Assert.Equal(20, Count(messages, "SIP/2.0 486 Busy Here"));
        Assert.True(Count(rig.Edges[0].Output + rig.Edges[1].Output, "USER_TOTAL_LIMIT_REACHED") >= 20, rig.Describe());
        Assert.Equal("", await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(15)));
    }

    [Fact]
    public async Task A_silo_killed_under_load_hands_its_keys_over_and_no_caller_ever_exceeds_the_limit()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, LoadLimits);
        var clock = rig.UasClock;
        await using var one = rig.StartCallers(rig.Edges[0], Users, calls: 300, rate: 20, holdMs: 1500);
        await using var two = rig.StartCallers(rig.Edges[1], Users.Reverse(), calls: 300, rate: 20, holdMs: 1500);

        await Task.Delay(TimeSpan.FromSeconds(5));
        var killedAt = clock.Elapsed;
        rig.Silos[1].Kill();
        var stats = await Task.WhenAll(one.WaitAsync(TimeSpan.FromSeconds(90)), two.WaitAsync(TimeSpan.FromSeconds(90)));
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"edge 1 {stats[0]}; edge 2 {stats[1]}; oracle {oracle}");

        Assert.True(stats.All(s => s.Successful == 300 && s.Failed == 0), one.Describe() + two.Describe() + rig.Describe());
        AssertWithinLimit(oracle, 3, rig);

        // Every caller (a third of whose grains lived on the killed silo) connects calls again within the failure timeout plus a few seconds.
        var servedAgain = killedAt + ClusterRig.FailureTimeout + TimeSpan.FromSeconds(3);
        var late = Users.Where(u => !oracle.Starts.Any(s => s.User == u && s.Tick > servedAgain.TotalMilliseconds)).ToList();
        Assert.True(late.Count == 0, $"no call connected after {servedAgain} for {string.Join(", ", late)}\n{rig.Describe()}");
        Assert.Equal("", await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task A_silo_paused_past_the_failure_timeout_admits_nothing_on_stale_state_when_it_resumes()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, LoadLimits);
        await using var one = rig.StartCallers(rig.Edges[0], Users, calls: 300, rate: 20, holdMs: 1500);
        await using var two = rig.StartCallers(rig.Edges[1], Users.Reverse(), calls: 300, rate: 20, holdMs: 1500);

        await Task.Delay(TimeSpan.FromSeconds(4));
        rig.Silos[2].Pause();
        await Task.Delay(ClusterRig.FailureTimeout + TimeSpan.FromSeconds(3));
        rig.Silos[2].Resume();
        var stats = await Task.WhenAll(one.WaitAsync(TimeSpan.FromSeconds(90)), two.WaitAsync(TimeSpan.FromSeconds(90)));
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"edge 1 {stats[0]}; edge 2 {stats[1]}; oracle {oracle}");

        Assert.True(stats.All(s => s.Successful == 300 && s.Failed == 0), one.Describe() + two.Describe() + rig.Describe());
        AssertWithinLimit(oracle, 3, rig);
        Assert.Contains("was declared dead", rig.Silos[2].Output, StringComparison.Ordinal);
        Assert.Equal("", await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task PostgreSQL_restarted_under_load_fails_closed_with_503_recovers_by_itself_and_leaks_no_slot()
    {
        await using var postgres = await PostgresServer.StartAsync();
        string[] storage = ["--CallState:Storage:Provider=PostgreSql", $"--CallState:Storage:ConnectionString={postgres.ConnectionString}"];
        await using var rig = await ClusterRig.StartAsync(storage, LoadLimits);
        var clock = rig.UasClock;
        await using var one = rig.StartCallers(rig.Edges[0], Users, calls: 400, rate: 20, holdMs: 1500);
        await using var two = rig.StartCallers(rig.Edges[1], Users.Reverse(), calls: 400, rate: 20, holdMs: 1500);

        await Task.Delay(TimeSpan.FromSeconds(4));
        await postgres.StopServerAsync();
        await Task.Delay(TimeSpan.FromSeconds(5));
        await postgres.StartServerAsync();
        var restartedAt = clock.Elapsed;
        var stats = await Task.WhenAll(one.WaitAsync(TimeSpan.FromSeconds(120)), two.WaitAsync(TimeSpan.FromSeconds(120)));
        var messages = one.Messages() + two.Messages();
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"edge 1 {stats[0]}; edge 2 {stats[1]}; oracle {oracle}; 503s {Count(messages, "SIP/2.0 503")}");

        Assert.True(stats.All(s => s.Successful == 400 && s.Failed == 0), one.Describe() + two.Describe() + rig.Describe());
        Assert.True(Count(messages, "SIP/2.0 503 Service Unavailable") > 0, "no call was refused with 503 while PostgreSQL was down");
        AssertWithinLimit(oracle, 3, rig);
        var recovered = restartedAt + ClusterRig.FailureTimeout + TimeSpan.FromSeconds(5);
        Assert.True(oracle.Starts.Count(s => s.Tick > recovered.TotalMilliseconds) > 20, $"calls did not connect again after the restart\n{rig.Describe()}");
        Assert.Equal("", await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(60)));
    }

    [Fact]
    public async Task An_edge_killed_with_calls_up_has_its_slots_released_by_BYEs_through_the_other_edge_or_by_lease()
    {
        await using var db = TestDatabase.Create("postgres");

        // Both edges put edge 2 in Record-Route, as a load balancer's address would be: in-dialog requests avoid edge 1.
        await using var rig = await ClusterRig.StartAsync(db.Settings, LoadLimits, advertiseLast: true);
        await using var one = rig.StartCallers(rig.Edges[0], Users, calls: 120, rate: 20, holdMs: 3000);
        await Task.Delay(TimeSpan.FromSeconds(4));
        rig.Edges[0].Kill();
        var stats = await one.WaitAsync(TimeSpan.FromSeconds(90));
        var oracle = CallOracle.From(rig.Uas.LogLines());
        output.WriteLine($"edge 1 callers {stats}; oracle {oracle}");

        Assert.True(oracle.Calls > 10, rig.Describe());
        AssertWithinLimit(oracle, 3, rig);

        // Calls connected before the kill end with BYEs through edge 2; calls caught mid-setup are reclaimed by their early lease (20 s).
        Assert.Equal("", await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(45)));
    }

    private static void AssertWithinLimit(CallOracle oracle, int limit, ClusterRig rig)
    {
        var over = oracle.Peaks.Where(p => p.Key != "svc" && p.Value > limit).Select(p => $"{p.Key}={p.Value}").ToList();
        Assert.True(over.Count == 0, $"over the limit of {limit}: {string.Join(", ", over)}\n{rig.Describe()}");
        Assert.True(oracle.Peaks.Values.Any(v => v == limit), $"the load never reached the limit: {oracle}");
    }

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
