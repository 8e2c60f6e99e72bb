using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>Tests that run real processes under load: one at a time, so they do not compete for the two cores.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class LoadTests
{
    public const string Name = "load";
}

/// <summary>
/// sipp UAC -> SIP edge process -> sipp UAS over loopback, with scenarios that honour Record-Route so ACK and BYE
/// cross the edge. Counts come from sipp's own statistics, at the caller and at the callee.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class SipProxyInteropTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan RunLimit = TimeSpan.FromSeconds(90);

    private readonly TempDirectory _temp = new("callstate-interop-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("u1")]
    [InlineData("t1")]
    public async Task Five_hundred_calls_through_the_edge_all_succeed(string transport)
    {
        var (stats, callee) = await RunAsync("uac_rr.xml", "uas_rr.xml", transport, calls: 500, rate: 100, lossPercent: 0);
        Assert.Equal(500, stats.Successful);
        Assert.Equal(0, stats.Failed);
        Assert.Equal(0, stats.Unexpected);

        // Judged at the callee too: every call went through (INVITE, ACK and BYE each crossed the edge).
        Assert.Equal(500, callee.Successful);
        Assert.Equal(0, callee.Failed);
    }

    [Fact]
    public async Task Calls_cancelled_while_ringing_complete_cleanly()
    {
        var (stats, callee) = await RunAsync("uac_cancel.xml", "uas_ringing.xml", "u1", calls: 50, rate: 25, lossPercent: 0);
        Assert.Equal(50, stats.Successful);
        Assert.Equal(0, stats.Failed);
        Assert.Equal(0, stats.Unexpected);

        // The callee's scenario completes a call only when the CANCEL reaches it and its 487 is ACKed: a CANCEL that the
        // edge answered itself (487 after 64*T1) and never forwarded fails here.
        Assert.Equal(50, callee.Successful);
        Assert.Equal(0, callee.Failed);
    }

    [Fact]
    public async Task With_ten_percent_loss_on_both_ends_every_call_completes_through_retransmissions()
    {
        var (stats, callee) = await RunAsync("uac_rr.xml", "uas_rr.xml", "u1", calls: 200, rate: 50, lossPercent: 10);

        // At most one call in a run may give up after every retransmission of its BYE met the loss on both sipp ends.
        Assert.Equal(200, stats.Successful + stats.Failed);
        Assert.InRange(stats.Failed, 0, 1);
        Assert.InRange(callee.Successful, 199, 200);
    }

    [Fact]
    public async Task The_scenarios_work_without_the_edge()
    {
        // Proves the harness: the same caller and callee talking directly.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = StartUas("uas_rr.xml", "u1", uasPort, 0);
        await using var uac = StartUac("uac_rr.xml", "u1", uasPort, calls: 20, rate: 50, 0);
        var stats = await uac.WaitAsync(RunLimit);
        Assert.True(stats.Successful == 20, uac.Describe());
    }

    private async Task<(SippStats Caller, SippStats Callee)> RunAsync(string uacScenario, string uasScenario, string transport, int calls, int rate, int lossPercent)
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = StartUas(uasScenario, transport, uasPort, lossPercent);
        await using var edge = SipEdgeProcess.Start([$"--CallState:Sip:DefaultUpstream=127.0.0.1:{uasPort}"]);
        await edge.WaitReadyAsync(TimeSpan.FromSeconds(30));
        await using var uac = StartUac(uacScenario, transport, edge.SipPort, calls, rate, lossPercent);
        var stats = await uac.WaitAsync(RunLimit);

        // The callee counts a call when its scenario ends, after its closing wait for retransmissions (up to 12 s).
        await uas.WaitForStatsAsync(callee => callee.Successful + callee.Failed >= stats.Successful, TimeSpan.FromSeconds(20));
        var uasStats = uas.Stop();
        output.WriteLine($"uac {stats}; uas {uasStats}");
        if (stats.Successful != calls || stats.Failed != 0)
        {
            output.WriteLine("UAC: " + uac.Describe());
            output.WriteLine("UAS: " + uas.Describe());
            output.WriteLine("edge: " + edge.Output);
        }
        Assert.False(edge.HasExited, edge.Output);
        return (stats, uasStats);
    }

    private static Sipp StartUas(string scenario, string transport, int port, int lossPercent)
    {
        var args = new List<string> { "-sf", RepoPaths.Scenario(scenario), "-i", "127.0.0.1", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-t", transport };
        AddLoss(args, lossPercent);
        if (lossPercent > 0)
        {
            // Under loss the callee's own script meets end-to-end messages out of its order (an ACK while it resends
            // its 2xx); it carries on instead of aborting. The caller stays strict: every call must complete there.
            args.AddRange(["-default_behaviors", "all,-abortunexp"]);
        }
        return Sipp.Start("uas", args);
    }

    private Sipp StartUac(string scenario, string transport, int remotePort, int calls, int rate, int lossPercent)
    {
        var args = new List<string>
        {
            $"127.0.0.1:{remotePort}", "-sf", RepoPaths.Scenario(scenario), "-inf", StandaloneEdge.UsersFile(Data, "alice", "bob", "carol"), "-i", "127.0.0.1",
            "-p", SipEdgeProcess.FreeUdpAndTcpPort().ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-t", transport, "-m", calls.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-r", rate.ToString(System.Globalization.CultureInfo.InvariantCulture), "-l", "100",
            "-timeout", "80s", "-timeout_error", "-recv_timeout", "40s",
        };
        AddLoss(args, lossPercent);

        // A refusal (the edge answering 503) fails the call at the caller.
        return Sipp.Start("uac", args, refusalsFail: scenario == "uac_rr.xml");
    }

    private static void AddLoss(List<string> args, int lossPercent)
    {
        if (lossPercent > 0)
        {
            args.Add("-lost");
            args.Add(lossPercent.ToString(System.Globalization.CultureInfo.InvariantCulture));

            // Each attempt crosses four lossy hops (0.9^4 = 66% get through); sipp's default of 5 UDP
            // retransmissions then times out about one BYE in 600, so a 200-call run would fail one
            // run in three on chance alone. 10 retransmissions take that to about one call in 10^5.
            args.AddRange(["-max_invite_retrans", "10", "-max_non_invite_retrans", "10"]);
        }
    }
}
