using System.Net.Http.Json;
using System.Text.Json;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The early lease against SIP's own timers on a running standalone edge (docs/architecture.md, "Leases that fit SIP"):
/// a callee that rings long (a 180 every second, each restarting Timer C) keeps its call counted past the early lease's
/// first end; a call the grains no longer count when it is answered is ended with a BYE to each side; and an early
/// lease that does not exceed Timer C + 64*T1 stops start-up naming the field. Timers scaled down: T1 50 ms (64*T1 is
/// 3.2 s), Timer C 4 s, early lease 10 s, so a provisional renews the lease once 1.4 s have passed since the last renewal.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class EarlyLeaseTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string[] ScaledTimers =
    [
        "--CallState:Sip:T1=00:00:00.050", "--CallState:Sip:T2=00:00:00.400", "--CallState:Sip:TimerC=00:00:04",
        "--CallState:Grains:Leases:Early=00:00:10", "--CallState:Grains:DueScanInterval=00:00:00.500",
    ];

    private readonly TempDirectory _temp = new("callstate-earlylease-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task A_call_answered_after_16_s_of_180s_stays_counted_past_its_10_s_early_lease_until_its_BYE()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_ring_long.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        // olga has a limit of her own, so her row (and its reclaimed count) outlives her call (docs/architecture.md,
        // "Rows of idle limits").
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: [.. ScaledTimers, "--CallState:Limits:Users:olga:Total=10"]);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_long_ring.xml"), "-inf", UsersFile(Data, "olga"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", "3000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);
        await WaitForCountAsync(edge, "user/olga", 1);

        // Answered 16 s after its admission, past the 10 s early lease; the caller holds the call 3 s, then hangs up.
        await WaitForAsync(() => uac.Messages().Contains("SIP/2.0 200 OK", StringComparison.Ordinal), TimeSpan.FromSeconds(40), "the callee's 200");
        var olga = await LimitAsync(edge, "user/olga");
        Assert.True(olga.GetProperty("total").GetInt32() == 1, $"the answered call is not counted: {olga}");
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(30));
        var callee = await uas.WaitForStatsAsync(c => c.Successful + c.Failed >= 1, TimeSpan.FromSeconds(15));
        output.WriteLine($"uac {stats}; uas {callee}");
        Assert.True(stats.Successful == 1, $"the caller's call did not end by its own BYE: {uac.Describe()}");
        Assert.True(callee.Successful == 1, $"{callee}\n{uas.Describe()}");

        // A lease that ran out while the call rang shows as a reclaimed call.
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the long-ringing call's BYE");
        olga = await LimitAsync(edge, "user/olga");
        Assert.True(olga.GetProperty("reclaimed").GetInt32() == 0, $"the early lease ran out while the call rang: {olga}");
        Assert.DoesNotContain("answered after its slot was reclaimed", edge.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_call_whose_confirm_finds_it_no_longer_counted_is_ended_with_a_BYE_to_each_side()
    {
        // While the callee rings, the call is ended at the grains (the admin API; a lapsed lease is reclaimed the same
        // way): its 200 then finds it no longer counted, and the edge hangs up both sides.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_ring_long.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: ScaledTimers);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_hung_up.xml"), "-inf", UsersFile(Data, "petra"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1",
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);
        await WaitForCountAsync(edge, "user/petra", 1);
        var held = (await LimitAsync(edge, "user/petra")).GetProperty("calls").EnumerateArray().Single();
        var callKey = held.GetProperty("callKey").GetString()!;
        using (var ended = await edge.Http.PostAsJsonAsync("/api/calls/end", new { callKey }))
        {
            Assert.True(ended.IsSuccessStatusCode, $"POST /api/calls/end answered {ended.StatusCode}");
        }

        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the call ended at the grains");

        // The caller's scenario completes only once a BYE reaches it after the 200, the callee's once its BYE does.
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(40));
        var callee = await uas.WaitForStatsAsync(c => c.Successful + c.Failed >= 1, TimeSpan.FromSeconds(15));
        output.WriteLine($"uac {stats}; uas {callee}");
        Assert.True(stats.Successful == 1, $"the caller got no BYE: {uac.Describe()}");
        Assert.True(callee.Successful == 1, $"the callee got no BYE: {callee}\n{uas.Describe()}");
        Assert.True(await edge.OutputContainsAsync($"Call {callKey} was answered after its slot was reclaimed", TimeSpan.FromSeconds(5)), edge.Output);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the teardown");
    }

    [Fact]
    public async Task An_early_lease_not_longer_than_Timer_C_and_64_T1_stops_a_standalone_edge_naming_the_field()
    {
        // Timer C 4 s + 64*T1 3.2 s = 7.2 s: a 7 s early lease could lapse before the call is answered.
        await using var edge = SipEdgeProcess.Start([
            "--standalone",
            $"--CallState:Storage:ConnectionString=Data Source={Path.Combine(Data, "callstate.db")}",
            "--CallState:Sip:T1=00:00:00.050", "--CallState:Sip:T2=00:00:00.400", "--CallState:Sip:TimerC=00:00:04",
            "--CallState:Grains:Leases:Early=00:00:07"]);
        var exit = await edge.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, exit);
        Assert.Contains("CallState:Grains:Leases:Early: must be longer than CallState:Sip:TimerC + 64*CallState:Sip:T1 (00:00:07.2000000); was 00:00:07",
            edge.Output, StringComparison.Ordinal);
    }

    private static async Task<JsonElement> LimitAsync(SipEdgeProcess edge, string key)
    {
        using var limit = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits/" + key + "?calls=true"));
        return limit.RootElement.Clone();
    }

    private static async Task WaitForAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"no {what} within {timeout}");
            await Task.Delay(100);
        }
    }
}
