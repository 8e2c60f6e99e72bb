using System.Text.Json;
using CallState.Cluster.IntegrationTests.Infrastructure;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The standalone edge (edge and grains in one process, SQLite, the sample configuration) between real sipp
/// processes: limits enforced at call setup, rejections with their Reason, and every count back to zero.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class StandaloneAdmissionTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new("callstate-standalone-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Alice_with_outbound_1_gets_one_call_connected_and_one_486_with_cause_17_then_counts_return_to_zero()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);

        var users = Path.Combine(Data, "alice.csv");
        await File.WriteAllTextAsync(users, "SEQUENTIAL\nalice\n");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", "bob", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "2", "-r", "10", "-l", "2", "-d", "2000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(60));
        var messages = uac.Messages();
        output.WriteLine($"uac {stats}");

        Assert.True(stats.Successful == 2 && stats.Failed == 0, uac.Describe());
        Assert.Equal(1, Count(messages, "SIP/2.0 486 Busy Here"));
        Assert.Equal(1, Count(messages, "Reason: Q.850;cause=17"));
        Assert.Equal(2, Count(messages, "SIP/2.0 200 OK"));  // the connected call's INVITE and its BYE
        Assert.Equal(1, uas.Stop().Created);

        using (var limits = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits?kind=user")))
        {
            Assert.Contains(limits.RootElement.EnumerateArray(), e => e.GetProperty("key").GetString() == "user/alice");
        }

        // The storage's group commit shows what the calls cost it (GET /metrics: batches timed, writes committed, waits).
        var metrics = Telemetry.PrometheusText.Parse(await edge.Http.GetStringAsync("/metrics"));
        var batches = Telemetry.PrometheusText.Sum(metrics, "callstate_storage_commit_duration_seconds_count", ("callstate_outcome", "committed"));
        var writes = Telemetry.PrometheusText.Sum(metrics, "callstate_storage_writes_total", ("callstate_outcome", "committed"));
        Assert.True(batches > 0 && writes >= batches, $"{batches} batches, {writes} writes");
        Assert.True(Telemetry.PrometheusText.Sum(metrics, "callstate_storage_queue_duration_seconds_count") >= writes);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "alice's call ended");
    }

    [Fact]
    public async Task Plus_123_calls_keyed_by_the_caller_allow_exactly_3_and_the_4th_is_refused_with_the_per_key_reason()
    {
        var (stats, messages, callee, edge) = await RunCallsAsync(caller: "bob", called: "+12345", calls: 4, local: "127.0.0.1");
        await using (edge)
        {
            Assert.Equal(0, stats.Failed);
            Assert.Equal(1, Count(messages, "SIP/2.0 480 Temporarily Unavailable"));
            Assert.Equal(1, Count(messages, "Reason: Q.850;cause=34"));
            Assert.Equal(1, Count(messages, "Retry-After: 5"));
            Assert.Equal(3, callee.Created);
            Assert.True(await edge.OutputContainsAsync("IN_PER_KEY_CAC_LIMIT_REACHED"), edge.Output);
            Assert.True(await edge.OutputContainsAsync("key/bob"), edge.Output);
            await AssertAllCountsZeroAsync(edge);
        }
    }

    [Fact]
    public async Task The_trunk_carries_at_most_3_inbound_calls_and_the_4th_gets_480_with_cause_34()
    {
        // The caller sits at 127.0.0.2, the carrier's source address.
        var (stats, messages, callee, edge) = await RunCallsAsync(caller: "+4930123", called: "bob", calls: 4, local: "127.0.0.2");
        await using (edge)
        {
            Assert.Equal(0, stats.Failed);
            Assert.Equal(1, Count(messages, "SIP/2.0 480 Temporarily Unavailable"));
            Assert.Equal(1, Count(messages, "Reason: Q.850;cause=34"));
            Assert.Equal(3, callee.Created);
            Assert.True(await edge.OutputContainsAsync("TRUNK_IN_LIMIT_REACHED"), edge.Output);
            await AssertAllCountsZeroAsync(edge);
        }
    }

    [Fact]
    public async Task With_the_real_200_ms_deadline_the_first_calls_right_after_readiness_are_admitted_not_refused()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);

        // The default deadline instead of the suite's 5 s (a later argument wins): readiness waits for the warm-up.
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: [
            "--CallState:Admission:Deadline=00:00:00.200", "--Logging:LogLevel:CallState.SipEdge.Admission.AdmissionWarmup=Information"]);
        Assert.True(await edge.OutputContainsAsync("deadline 200 ms): ready"), edge.Output);

        // Any refusal (a 503 because the admission missed its deadline) fails its call.
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "erin", "frank", "grace"), "-s", "heidi",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "3", "-r", "10", "-l", "3",
            "-timeout", "30s", "-trace_msg"], refusalsFail: true);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(45));
        await uas.WaitForStatsAsync(callee => callee.Created >= 3, TimeSpan.FromSeconds(5));
        var callee = uas.Stop();
        output.WriteLine($"first calls: uac {stats}; uas {callee}");

        Assert.True(stats.Successful == 3 && stats.Failed == 0, $"{stats}\n{uac.Describe()}\n{edge.Output}");
        Assert.Equal(0, Count(uac.Messages(), "SIP/2.0 503"));
        Assert.Equal(3, callee.Created);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the first calls ended");
    }

    [Theory]
    [InlineData("uac_rr.xml", "uas_rr.xml", "caller BYE", null)]
    [InlineData("uac_answered.xml", "uas_hangup.xml", "callee BYE", null)]
    [InlineData("uac_cancel.xml", "uas_ringing.xml", "CANCEL", null)]
    [InlineData("uac_rr.xml", "uas_reject.xml", "486 from the callee", "SIP/2.0 486 Busy Here")]
    [InlineData("uac_rr.xml", "uas_silent.xml", "INVITE timeout", "SIP/2.0 408 Request Timeout")]
    public async Task Every_way_a_call_ends_gives_its_slots_back(string callerScenario, string calleeScenario, string ending, string? refusal)
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario(calleeScenario), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);

        // T1 of 50 ms: a silent callee times out (Timer B, 64*T1) in 3.2 s.
        // carol and dave have limits of their own, so their rows are still listed after the calls ended.
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: [
            "--CallState:Sip:T1=00:00:00.050", "--CallState:Sip:T2=00:00:00.400", "--CallState:Limits:Users:carol:Total=10", "--CallState:Limits:Users:dave:Total=10"]);

        // Only the refusal this ending expects ends a call normally; any other (a 503 from the edge) fails it.
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario(callerScenario), "-inf", UsersFile(Data, "carol"), "-s", "dave", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "3", "-r", "10", "-l", "3",
            "-timeout", "30s", "-trace_msg"], refusalsFail: refusal is null && callerScenario == "uac_rr.xml");
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(45));

        // sipp writes its statistics every second: wait (bounded) until the callee's show the three calls.
        await uas.WaitForStatsAsync(callee => callee.Created >= 3, TimeSpan.FromSeconds(5));
        var callee = uas.Stop();
        output.WriteLine($"{ending}: uac {stats}; uas {callee}");

        // Judged at the callee: every INVITE reached it.
        Assert.True(callee.Created == 3, $"{ending}: the callee saw {callee.Created} of 3 calls\n{uas.Describe()}");
        Assert.True(stats.Successful == 3 && stats.Failed == 0, $"{ending}: {stats}\n{uac.Describe()}");
        if (refusal is not null)
        {
            var messages = uac.Messages();
            Assert.Equal(3, Count(messages, refusal));
            Assert.Equal(0, Count(messages, "SIP/2.0 200 OK"));
        }

        using var limits = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits?kind=user"));
        var keys = limits.RootElement.EnumerateArray().Select(e => e.GetProperty("key").GetString()).ToList();
        Assert.Contains("user/carol", keys);
        Assert.Contains("user/dave", keys);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), ending);
    }

    // An early lease shorter than Timer C no longer starts (EarlyLeaseTests): a ringing call is ended by Timer C, and the
    // early lease reclaims only what an edge that stopped never ended (the grains' own tests, LimitLedgerTests).
    [Theory]
    [InlineData("uac_rr.xml", "uas_rr.xml", "Confirmed")]
    public async Task A_call_whose_end_never_comes_is_reclaimed_when_its_lease_ends(string callerScenario, string calleeScenario, string lease)
    {
        // The caller holds the call 20 s without a BYE.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario(calleeScenario), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        // gina has limits of her own, so her row (and its reclaimed count) stays once the slot is reclaimed.
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: [$"--CallState:Grains:Leases:{lease}=00:00:02", "--CallState:Limits:Users:gina:Total=10"]);
        var users = Path.Combine(Data, "gina.csv");
        await File.WriteAllTextAsync(users, "SEQUENTIAL\ngina\n");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario(callerScenario), "-inf", users, "-s", "hank", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", "20000", "-timeout", "40s"]);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        var counted = false;
        while (DateTime.UtcNow < deadline)
        {
            using var limits = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits?kind=user"));
            var gina = limits.RootElement.EnumerateArray().FirstOrDefault(e => e.GetProperty("key").GetString() == "user/gina");
            if (gina.ValueKind == JsonValueKind.Object)
            {
                counted |= gina.GetProperty("total").GetInt32() == 1;
                if (counted && gina.GetProperty("total").GetInt32() == 0)
                {
                    Assert.Equal(1, gina.GetProperty("reclaimed").GetInt32());
                    return;
                }
            }
            await Task.Delay(200);
        }
        Assert.Fail(counted ? $"the {lease} lease never reclaimed the slot" : "the call was never counted");
    }

    [Fact]
    public async Task Retransmissions_under_ten_percent_loss_never_count_a_call_twice_and_every_count_returns_to_zero()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1",
            "-lost", "10", "-default_behaviors", "all,-abortunexp",
            "-max_invite_retrans", "10", "-max_non_invite_retrans", "10"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: [
            "--CallState:Limits:Users:ivan:Total=20", "--CallState:Limits:DefaultUser:Total=20",
            "--CallState:Limits:DefaultUser:Outbound=20", "--CallState:Limits:DefaultUser:Inbound=20"]);
        var users = Path.Combine(Data, "many.csv");
        await File.WriteAllTextAsync(users, "SEQUENTIAL\n" + string.Join("\n", Enumerable.Range(1, 20).Select(i => "caller" + i)) + "\n");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", "ivan", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "100", "-r", "50", "-l", "10", "-lost", "10",
            "-max_invite_retrans", "10", "-max_non_invite_retrans", "10", "-timeout", "60s", "-timeout_error"], refusalsFail: true);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(70));
        output.WriteLine($"uac {stats}");

        // One call in a run may still give up on its BYE after sipp's retransmissions all met the 10% loss on the
        // way out and back (end-to-end, between the two sipp ends); its slot must still come back below.
        var described = uac.Describe();
        Assert.True(stats.Successful + stats.Failed == 100 && (stats.Failed == 0 || (stats.Failed == 1 && described.Contains("retransmission timeout", StringComparison.Ordinal))), described);

        // At most 10 calls are up at once and ivan may have 20: a refusal would mean calls counted twice (a
        // retransmitted INVITE reserving again) or slots leaking; and every count ends at 0.
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(15), "100 calls under loss");
        Assert.DoesNotContain("_LIMIT_REACHED", edge.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_call_from_an_rfc_2543_caller_without_from_tag_is_counted_by_its_call_id_and_released_by_its_bye()
    {
        // RFC 4475 3.4.1 (inv2543): a proxy keys such a call by its Call-ID alone instead of refusing it.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-m", "1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        using var caller = new RawSipCaller(System.Net.IPAddress.Loopback, edge.SipPort);

        var ok = await caller.SendAsync(caller.Request("INVITE", $"sip:bob@127.0.0.1:{edge.SipPort}", "notag-1", null, sdp: true, fromTag: false), final: true);
        Assert.StartsWith("SIP/2.0 200", ok, StringComparison.Ordinal);
        await caller.SendOnlyAsync(caller.Request("ACK", SipText.ContactUri(ok), "notag-1", SipText.ToTag(ok), route: SipText.RecordRoute(ok), fromTag: false));
        await WaitForCountAsync(edge, "user/alice", 1);

        var bye = await caller.SendAsync(caller.Request("BYE", SipText.ContactUri(ok), "notag-1", SipText.ToTag(ok), route: SipText.RecordRoute(ok), cseq: 2, fromTag: false), final: true);
        Assert.StartsWith("SIP/2.0 200", bye, StringComparison.Ordinal);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the RFC 2543 caller's BYE");
        await uas.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task An_inbound_call_to_alice_during_her_outbound_call_connects_and_a_further_one_gets_486()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        await using var outbound = StartCaller(edge, "alice", "bob", calls: 1, local: "127.0.0.1", holdMs: 10_000);
        await WaitForCountAsync(edge, "user/alice", 1);

        await using var inbound = StartCaller(edge, "bob", "alice", calls: 2, local: "127.0.0.1", holdMs: 2_000);
        var stats = await inbound.WaitAsync(TimeSpan.FromSeconds(60));
        var messages = inbound.Messages();
        Assert.Equal(0, stats.Failed);
        Assert.Equal(1, Count(messages, "SIP/2.0 486 Busy Here"));
        Assert.Equal(1, Count(messages, "Reason: Q.850;cause=17"));
        Assert.True(await edge.OutputContainsAsync("USER_TOTAL_LIMIT_REACHED"), edge.Output);
        await outbound.WaitAsync(TimeSpan.FromSeconds(60));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "alice's calls ended");
    }

    [Fact]
    public async Task The_trunk_carries_at_most_2_outbound_calls_and_the_3rd_gets_480_with_cause_34()
    {
        var (stats, messages, callee, edge) = await RunCallsAsync(caller: "bob", called: "+4930555", calls: 3, local: "127.0.0.1");
        await using (edge)
        {
            Assert.Equal(0, stats.Failed);
            Assert.Equal(1, Count(messages, "SIP/2.0 480 Temporarily Unavailable"));
            Assert.Equal(1, Count(messages, "Reason: Q.850;cause=34"));
            Assert.Equal(2, callee.Created);
            Assert.True(await edge.OutputContainsAsync("TRUNK_OUT_LIMIT_REACHED"), edge.Output);
            await AssertAllCountsZeroAsync(edge);
        }
    }

    [Fact]
    public async Task The_trunk_carries_at_most_4_calls_in_total_across_both_directions()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, trunkNextHop: $"127.0.0.1:{uasPort}");

        // Two calls out through the carrier stay up; then three come in from it: inbound 3 would allow them, total 4 does not.
        await using var outbound = StartCaller(edge, "bob", "+4930777", calls: 2, local: "127.0.0.1", holdMs: 10_000);
        await WaitForCountAsync(edge, "trunk/carrier", 2);
        await using var inbound = StartCaller(edge, "+4930123", "dave", calls: 3, local: "127.0.0.2", holdMs: 2_000);
        var stats = await inbound.WaitAsync(TimeSpan.FromSeconds(60));
        var messages = inbound.Messages();
        Assert.Equal(0, stats.Failed);
        Assert.Equal(1, Count(messages, "SIP/2.0 480 Temporarily Unavailable"));
        Assert.Equal(1, Count(messages, "Reason: Q.850;cause=34"));
        Assert.True(await edge.OutputContainsAsync("TRUNK_TOTAL_LIMIT_REACHED"), edge.Output);
        await outbound.WaitAsync(TimeSpan.FromSeconds(60));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the trunk's calls ended");
    }

    [Fact]
    public async Task A_trunk_with_inbound_0_refuses_inbound_calls_with_403_and_cause_54()
    {
        var (stats, messages, callee, edge) = await RunCallsAsync(caller: "+4930123", called: "bob", calls: 1, local: "127.0.0.2",
            extra: ["--CallState:Limits:Trunks:carrier:Inbound=0"]);
        await using (edge)
        {
            Assert.Equal(0, stats.Failed);
            Assert.Equal(1, Count(messages, "SIP/2.0 403 Forbidden"));
            Assert.Equal(1, Count(messages, "Reason: Q.850;cause=54"));
            Assert.Equal(0, callee.Created);
        }
    }

    [Fact]
    public async Task Plus_123_calls_keyed_by_source_address_allow_exactly_3()
    {
        var (stats, messages, callee, edge) = await RunCallsAsync(caller: "bob", called: "+12399", calls: 4, local: "127.0.0.1",
            extra: ["--CallState:Admission:SetupRules:0:Key=SourceIp"]);
        await using (edge)
        {
            Assert.Equal(0, stats.Failed);
            Assert.Equal(1, Count(messages, "SIP/2.0 480 Temporarily Unavailable"));
            Assert.Equal(3, callee.Created);
            Assert.True(await edge.OutputContainsAsync("IN_PER_KEY_CAC_LIMIT_REACHED"), edge.Output);
            Assert.True(await edge.OutputContainsAsync("key/127.0.0.1"), edge.Output);
            await AssertAllCountsZeroAsync(edge);
        }
    }

    private Sipp StartCaller(SipEdgeProcess edge, string caller, string called, int calls, string local, int holdMs)
    {
        var users = Path.Combine(Data, $"{caller}-{Guid.NewGuid():N}.csv");
        File.WriteAllText(users, $"SEQUENTIAL\n{caller}\n");
        return Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", called, "-i", local,
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(calls), "-r", "20", "-l", Port(calls), "-d", Port(holdMs),
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);
    }

    private async Task<(SippStats Caller, string Messages, SippStats Callee, SipEdgeProcess Edge)> RunCallsAsync(
        string caller, string called, int calls, string local, string[]? extra = null)
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        var edge = await StandaloneEdge.StartAsync(Data, uasPort, trunkNextHop: $"127.0.0.1:{uasPort}", extra: extra);
        var users = Path.Combine(Data, "callers.csv");
        await File.WriteAllTextAsync(users, $"SEQUENTIAL\n{caller}\n");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", called, "-i", local,
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(calls), "-r", "20", "-l", Port(calls), "-d", "3000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(60));
        var messages = uac.Messages();
        var callee = uas.Stop();
        output.WriteLine($"uac {stats}; uas {callee}");
        return (stats, messages, callee, edge);
    }

    private static async Task AssertAllCountsZeroAsync(SipEdgeProcess edge)
    {
        // Every limit listed counts 0; a limit with nothing of its own (a per-key limit, a user with only the default's
        // limits) is not listed at all once it holds nothing (docs/architecture.md, "Rows of idle limits").
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the calls ended");
    }
}
