using System.Globalization;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// <c>callstate calls end</c> on an answered call (docs/operations.md, "Ending a call"): an edge sends a BYE to each party
/// (both sipp ends receive it and answer 200, so both scenarios complete) and the call's slots are free afterwards. On a
/// standalone edge the edge of the process sends them; in a cluster the silo, which has no SIP stack, reaches the edge
/// through the edge registry (docs/architecture.md, "Ending a call from the admin API").
/// </summary>
[Collection(LoadTests.Name)]
public sealed class CallEndTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private readonly TempDirectory _temp = new("callstate-callend-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Calls_end_on_a_standalone_edge_sends_a_BYE_to_both_parties_and_frees_the_slot()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-m", "1"]);
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, uasPort);
        await using var uac = StartHungUpCaller(edge.SipPort, "petra");

        var callKey = await WaitForAnsweredCallAsync(edge.HttpPort, "user/petra");
        Assert.Equal("local", await WaitForEdgeAsync(edge.HttpPort));
        var end = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "calls", "end", callKey, "--json");
        output.WriteLine(end.ToString());
        Assert.True(end.ExitCode == 0, end.ToString());
        Assert.Equal("bye-sent", end.Json().GetProperty("outcome").GetString());
        Assert.Equal("local", end.Json().GetProperty("edge").GetString());

        await AssertBothPartiesHungUpAsync(uac, uas);
        await WaitForCountAsync(edge.HttpPort, "user/petra", 0);

        // The call is gone: a second end finds nothing (exit 1), and the audit names the first.
        var again = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "calls", "end", callKey);
        Assert.True(again.ExitCode == 1, again.ToString());
        var audit = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "audit", "--json");
        Assert.Contains(audit.Json().EnumerateArray(), e => e.GetProperty("action").GetString() == "calls.end" && e.GetProperty("target").GetString() == callKey
            && e.GetProperty("after").GetProperty("outcome").GetString() == "bye-sent");
    }

    [Fact]
    public async Task Calls_end_on_a_cluster_has_an_edge_send_a_BYE_to_both_parties_and_frees_the_slot()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, ["--CallState:Limits:Users:petra:Total=5"], silos: 1, edges: 1, uasScenario: "uas_rr.xml");
        var silo = rig.Silos[0];
        await using var uac = StartHungUpCaller(rig.Edges[0].SipPort, "petra", callee: "svc");

        var callKey = await WaitForAnsweredCallAsync(silo.Port, "user/petra");

        // The edge registers with the silos once its cluster client is up (until then an end answers 503 and changes
        // nothing): `cluster status` lists it.
        var edgeName = await WaitForEdgeAsync(silo.Port);
        Assert.StartsWith($"127.0.0.1:{rig.Edges[0].SipPort}/", edgeName, StringComparison.Ordinal);
        var end = await CliRunner.RunAsync(silo.Port, AdminTokens.Write, "calls", "end", callKey, "--json");
        output.WriteLine(end.ToString());
        Assert.True(end.ExitCode == 0, end + "\n" + rig.Describe());
        Assert.Equal("bye-sent", end.Json().GetProperty("outcome").GetString());
        Assert.Equal(edgeName, end.Json().GetProperty("edge").GetString());

        await AssertBothPartiesHungUpAsync(uac, rig.Uas);
        await WaitForCountAsync(silo.Port, "user/petra", 0);
        Assert.True(await rig.Edges[0].OutputContainsAsync($"Call {callKey} ended by the admin API", TimeSpan.FromSeconds(5)), rig.Describe());
    }

    [Fact]
    public async Task Calls_end_passes_over_a_frozen_edge_to_the_next_one()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, ["--CallState:Limits:Users:petra:Total=5"], silos: 1, edges: 2, uasScenario: "uas_rr.xml");
        var silo = rig.Silos[0];
        var edges = await WaitForEdgesAsync(silo.Port, 2);

        // The registry tries the edges in name order first: freeze that one (SIGSTOP, its connection to the gateway open),
        // and call through the other.
        var frozen = rig.Edges.FindIndex(e => edges[0].StartsWith($"127.0.0.1:{e.SipPort}/", StringComparison.Ordinal));
        var live = 1 - frozen;
        await using var uac = StartHungUpCaller(rig.Edges[live].SipPort, "petra", callee: "svc");
        var callKey = await WaitForAnsweredCallAsync(silo.Port, "user/petra");
        rig.PauseEdge(frozen);

        var end = await CliRunner.RunAsync(silo.Port, AdminTokens.Write, "calls", "end", callKey, "--json");
        output.WriteLine(end.ToString());
        Assert.True(end.ExitCode == 0, end + "\n" + rig.Describe());
        Assert.Equal("bye-sent", end.Json().GetProperty("outcome").GetString());
        Assert.Equal(edges[1], end.Json().GetProperty("edge").GetString());

        await AssertBothPartiesHungUpAsync(uac, rig.Uas);
        await WaitForCountAsync(silo.Port, "user/petra", 0);

        // The frozen edge is forgotten until it registers again.
        Assert.Equal([edges[1]], await WaitForEdgesAsync(silo.Port, 1));
        rig.ResumeEdge(frozen);
    }

    /// <summary>A caller that never hangs up (it waits for a BYE from the network and answers it): one call from <paramref name="user"/>.</summary>
    private Sipp StartHungUpCaller(int edgePort, string user, string callee = "bob") => Sipp.Start("uac", [
        $"127.0.0.1:{Port(edgePort)}", "-sf", RepoPaths.Scenario("uac_hung_up.xml"), "-inf", StandaloneEdge.UsersFile(_temp.Path, user), "-s", callee,
        "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-timeout", "60s", "-timeout_error", "-trace_msg"]);

    /// <summary>The caller's scenario completes only once a BYE reached it, the callee's once its own did (each answered 200).</summary>
    private async Task AssertBothPartiesHungUpAsync(Sipp uac, Sipp uas)
    {
        var caller = await uac.WaitAsync(TimeSpan.FromSeconds(40));
        var callee = await uas.WaitForStatsAsync(s => s.Successful + s.Failed >= 1, TimeSpan.FromSeconds(30));
        output.WriteLine($"uac {caller}; uas {callee}");
        Assert.True(caller.Successful == 1 && caller.Failed == 0, $"the caller got no BYE: {caller}\n{uac.Describe()}");
        Assert.True(callee.Successful == 1 && callee.Failed == 0, $"the callee got no BYE: {callee}\n{uas.Describe()}");
        Assert.Contains("BYE sip:", uac.Messages(), StringComparison.Ordinal);
    }

    /// <summary>Waits until <c>callstate cluster status --json</c> lists one edge that can end calls; its name.</summary>
    private static async Task<string> WaitForEdgeAsync(int port) => (await WaitForEdgesAsync(port, 1))[0];

    /// <summary>Waits until <c>callstate cluster status --json</c> lists <paramref name="count"/> edges that can end calls; their names in order.</summary>
    private static async Task<List<string>> WaitForEdgesAsync(int port, int count)
    {
        var deadline = DateTime.UtcNow + Deadline;
        var last = "";
        while (DateTime.UtcNow < deadline)
        {
            var status = await CliRunner.RunAsync(port, AdminTokens.Read, "cluster", "status", "--json");
            last = status.ToString();
            if (status.ExitCode == 0 && status.Json().TryGetProperty("edges", out var edges) && edges.GetArrayLength() == count)
            {
                return [.. edges.EnumerateArray().Select(e => e.GetString()!)];
            }

            await Task.Delay(250);
        }

        Assert.Fail($"not {count} edges registered with the silos within {Deadline}: {last}");
        return [];
    }

    /// <summary>Waits until <paramref name="limit"/> holds one call and that call is answered (confirmed); its key.</summary>
    private static async Task<string> WaitForAnsweredCallAsync(int port, string limit)
    {
        var deadline = DateTime.UtcNow + Deadline;
        var last = "";
        while (DateTime.UtcNow < deadline)
        {
            var list = await CliRunner.RunAsync(port, AdminTokens.Read, "calls", "list", "--limit", limit, "--json");
            last = list.ToString();
            if (list.ExitCode == 0 && list.Json().EnumerateArray().Select(c => c.GetProperty("callKey").GetString()!).SingleOrDefault() is { } key)
            {
                var show = await CliRunner.RunAsync(port, AdminTokens.Read, "calls", "show", key, "--json");
                last = show.ToString();
                if (show.ExitCode == 0 && show.Json().GetProperty("confirmed").GetBoolean())
                {
                    return key;
                }
            }

            await Task.Delay(250);
        }

        Assert.Fail($"no answered call on {limit} within {Deadline}: {last}");
        return "";
    }

    /// <summary>
    /// Waits until <c>callstate cac show --json</c> counts <paramref name="total"/> calls on <paramref name="key"/>; a key
    /// with no limit of its own that holds nothing is not listed, which counts as 0.
    /// </summary>
    private static async Task WaitForCountAsync(int port, string key, int total)
    {
        var deadline = DateTime.UtcNow + Deadline;
        var count = -1;
        do
        {
            var show = await CliRunner.RunAsync(port, AdminTokens.Read, "cac", "show", "--json");
            Assert.True(show.ExitCode == 0, show.ToString());
            count = show.Json().EnumerateArray().Where(e => e.GetProperty("key").GetString() == key).Select(e => e.GetProperty("total").GetInt32()).SingleOrDefault();
            if (count == total)
            {
                return;
            }

            await Task.Delay(250);
        }
        while (DateTime.UtcNow < deadline);
        Assert.Fail($"{key} still counts {count} calls, not {total}");
    }

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}
