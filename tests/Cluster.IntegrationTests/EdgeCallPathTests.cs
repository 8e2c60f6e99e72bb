using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The paths of a call through a running standalone edge that end or keep it other than by a plain BYE: in-dialog
/// refreshes renewing the lease, Timer C, a CANCEL the callee never answers, a next hop that cannot be reached, and an
/// emergency call over the limit. Real sipp at both ends; each test judges what the caller and the callee saw and
/// what the limits count.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class EdgeCallPathTests(ITestOutputHelper output) : IDisposable
{
    /// <summary>T1 of 50 ms: 64*T1 (Timer B, a CANCEL's wait for the 487) is 3.2 s.</summary>
    private static readonly string[] ShortTimers = ["--CallState:Sip:T1=00:00:00.050", "--CallState:Sip:T2=00:00:00.400"];

    private readonly TempDirectory _temp = new("callstate-callpath-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task A_call_refreshed_by_re_INVITEs_then_UPDATEs_outlives_its_lease_and_is_released_by_its_BYE()
    {
        // A 4 s confirmed lease; the caller refreshes every 1.5 s for 9 s (three re-INVITEs, then three UPDATEs) and
        // hangs up at 10.5 s. Without renewal by re-INVITE the lease ends at 4 s; without renewal by UPDATE, at 8.5 s.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_refresh.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        // erin has limits of her own, so her row (and its reclaimed count) is still listed after the call ended.
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: ["--CallState:Grains:Leases:Confirmed=00:00:04", "--CallState:Limits:Users:erin:Total=10"]);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_refresh.xml"), "-inf", UsersFile(Data, "erin"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-timeout", "40s", "-timeout_error"]);
        await WaitForCountAsync(edge, "user/erin", 1);

        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(40));
        await uas.WaitForStatsAsync(callee => callee.Successful + callee.Failed >= 1, TimeSpan.FromSeconds(15));
        var callee = uas.Stop();
        output.WriteLine($"uac {stats}; uas {callee}");
        Assert.True(stats.Successful == 1, uac.Describe());
        Assert.True(callee.Successful == 1, $"the callee did not see every refresh and the BYE: {callee}\n{uas.Describe()}");

        // A lease that ran out while the call was up shows as a reclaimed call (and a count back to 0 too early).
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the refreshed call's BYE");
        var limits = await LimitsAsync(edge, "user");
        Assert.Contains(limits, l => l.GetProperty("key").GetString() == "user/erin");
        Assert.All(limits, l => Assert.True(l.GetProperty("reclaimed").GetInt32() == 0, $"a lease ran out during the call: {l}"));
    }

    [Fact]
    public async Task Timer_C_cancels_a_call_that_rings_too_long_answers_408_and_gives_its_slots_back()
    {
        // The callee rings until cancelled; Timer C (5 s here, 3 minutes by default) makes the edge cancel it.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_ringing.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: [.. ShortTimers, "--CallState:Sip:TimerC=00:00:05"]);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "gina"), "-s", "hank",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "2", "-r", "10", "-l", "2",
            "-timeout", "30s", "-timeout_error", "-trace_msg"]);
        await WaitForCountAsync(edge, "user/gina", 2);

        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(30));
        var messages = uac.Messages();
        Assert.True(stats.Successful == 2, uac.Describe());
        Assert.Equal(2, Count(messages, "SIP/2.0 408 Request Timeout"));
        Assert.Equal(0, Count(messages, "SIP/2.0 200 OK"));

        // The callee's scenario completes only when the edge's CANCEL reaches it and its 487 is ACKed.
        var callee = await uas.WaitForStatsAsync(c => c.Successful >= 2, TimeSpan.FromSeconds(15));
        Assert.True(callee.Successful == 2, $"the edge's CANCEL did not reach the callee: {callee}\n{uas.Describe()}");
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "Timer C");
    }

    [Fact]
    public async Task A_CANCEL_the_callee_never_answers_still_gets_the_caller_a_487_and_gives_the_slots_back()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_deaf_to_cancel.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: ShortTimers);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_cancel.xml"), "-inf", UsersFile(Data, "ivan"), "-s", "judy",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "2", "-r", "10", "-l", "2",
            "-timeout", "30s", "-timeout_error", "-trace_msg"]);

        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(30));
        var messages = uac.Messages();
        Assert.True(stats.Successful == 2 && stats.Failed == 0, uac.Describe());
        Assert.Equal(2, Count(messages, "SIP/2.0 487 Request Terminated"));

        // The callee completes a call only once the forwarded CANCEL has reached it.
        var callee = await uas.WaitForStatsAsync(c => c.Successful >= 2, TimeSpan.FromSeconds(15));
        Assert.True(callee.Successful == 2, $"the CANCEL was not forwarded: {callee}\n{uas.Describe()}");
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the unanswered CANCEL");
    }

    [Fact]
    public async Task A_next_hop_that_refuses_the_TCP_connection_gets_the_caller_a_503_and_gives_the_slots_back()
    {
        // Over TCP the edge forwards over TCP; nothing listens on the upstream port, so the connect is refused.
        var deadPort = SipEdgeProcess.FreeUdpAndTcpPort();
        // kate and leo have limits of their own, so their rows are still listed once the slots are given back.
        await using var edge = await StandaloneEdge.StartAsync(Data, deadPort, extra: ["--CallState:Limits:Users:kate:Total=10", "--CallState:Limits:Users:leo:Total=10"]);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "kate"), "-s", "leo",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "t1", "-m", "2", "-r", "10", "-l", "2",
            "-timeout", "30s", "-timeout_error", "-trace_msg"]);

        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(30));
        var messages = uac.Messages();
        Assert.True(stats.Successful == 2, uac.Describe());
        Assert.Equal(2, Count(messages, "SIP/2.0 503 Service Unavailable"));

        // Admitted first (both users were counted), then released when the forward failed.
        var limits = await LimitsAsync(edge, "user");
        Assert.Contains(limits, l => l.GetProperty("key").GetString() == "user/kate");
        Assert.Contains(limits, l => l.GetProperty("key").GetString() == "user/leo");
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the transport error");
    }

    [Fact]
    public async Task An_emergency_call_connects_while_the_caller_is_at_the_limit_and_an_ordinary_one_is_refused()
    {
        // alice may have one outbound call (the sample); 112 is an emergency prefix.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        await using var held = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "alice"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", "15000",
            "-timeout", "40s", "-timeout_error"], refusalsFail: true);
        await WaitForCountAsync(edge, "user/alice", 1);

        await using var ordinary = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "alice"), "-s", "carol",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1",
            "-timeout", "20s", "-timeout_error", "-trace_msg"]);
        var refused = await ordinary.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(refused.Successful == 1, ordinary.Describe());
        Assert.Equal(1, Count(ordinary.Messages(), "SIP/2.0 486 Busy Here"));

        await using var emergency = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "alice"), "-s", "112",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", "1000",
            "-timeout", "20s", "-timeout_error"], refusalsFail: true);
        var connected = await emergency.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(connected.Successful == 1 && connected.Failed == 0, emergency.Describe());
        Assert.True(await edge.OutputContainsAsync("Emergency call"), edge.Output);

        // The held call and the emergency call reached the callee; the refused one did not.
        var callee = await uas.WaitForStatsAsync(c => c.Created >= 2, TimeSpan.FromSeconds(5));
        Assert.Equal(2, callee.Created);
        await held.WaitAsync(TimeSpan.FromSeconds(40));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "alice's calls ended");
    }
}
