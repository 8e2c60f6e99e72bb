using System.Net;
using System.Text;
using CallState.Cluster.IntegrationTests.Infrastructure;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Tenants and a shared trunk's guaranteed reservations (docs/policies.md, "Tenants", "Guaranteed reservations") through a
/// standalone edge between real sipp processes.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class TenantTests : IDisposable
{
    private readonly TempDirectory _temp = new("callstate-tenant-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    private static readonly string[] Tenants =
    [
        "--CallState:Limits:Tenants:a:Domains:0=a.example",
        "--CallState:Limits:Tenants:b:Domains:0=b.example",
    ];

    [Fact]
    public async Task Users_on_two_domains_with_the_same_user_part_are_counted_apart()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StartAsync(Data, uasPort, extra: [
            .. Tenants,
            "--CallState:Limits:Users:alice@a.example:Outbound=1",
            "--CallState:Limits:Users:alice@b.example:Outbound=1",
            "--CallState:Limits:Users:bob:Total=1000",
        ]);

        // alice at a.example, alice at b.example, and alice at the edge's own domain (no tenant: the sample's Users:alice,
        // outbound 1), each placing two calls that stay up: one each gets through.
        var callers = new List<Sipp>();
        try
        {
            foreach (var domain in new[] { "a.example", "b.example", "127.0.0.1" })
            {
                callers.Add(Sipp.Start("uac-" + domain, [
                    $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_domain.xml"), "-inf", UsersFile(Data, "alice;" + domain), "-s", "bob",
                    "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "2", "-r", "10", "-l", "2", "-d", "8000",
                    "-timeout", "60s", "-timeout_error", "-trace_msg"]));
            }

            await WaitForCountAsync(edge, "user/alice@a.example", 1);
            await WaitForCountAsync(edge, "user/alice@b.example", 1);
            await WaitForCountAsync(edge, "user/alice", 1);
            await WaitForCountAsync(edge, "tenant/a", 1);
            await WaitForCountAsync(edge, "tenant/b", 1);

            foreach (var caller in callers)
            {
                var stats = await caller.WaitAsync(TimeSpan.FromSeconds(60));
                var messages = caller.Messages();
                Assert.True(stats.Failed == 0 && stats.Successful == 2, $"{stats}\n{caller.Describe()}");
                Assert.Equal(1, Count(messages, "SIP/2.0 486 Busy Here"));
            }
        }
        finally
        {
            foreach (var caller in callers)
            {
                await caller.DisposeAsync();
            }
        }

        Assert.True(await edge.OutputContainsAsync("USER_OUT_LIMIT_REACHED"), edge.Output);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the callers' calls ended");
    }

    [Fact]
    public async Task Two_tenants_on_a_trunk_of_10_with_guarantees_of_4_a_holds_at_most_6_and_b_gets_its_4()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StartAsync(Data, uasPort, trunkNextHop: $"127.0.0.1:{uasPort}", extra: [
            .. Tenants,

            // The sample's carrier, widened to a shared trunk of 10 (the "+" route goes to it).
            "--CallState:Limits:Trunks:carrier:Total=10",
            "--CallState:Limits:Trunks:carrier:Inbound=10",
            "--CallState:Limits:Trunks:carrier:Outbound=10",
            "--CallState:Limits:Trunks:carrier:Reservations:a:Guaranteed=4",
            "--CallState:Limits:Trunks:carrier:Reservations:b:Guaranteed=4",
        ]);

        // Run-time reservations are checked by field like configuration: guarantees over the trunk's total, a maximum below
        // its guarantee, an unknown tenant.
        await AssertRefusedAsync(edge, """{"a":{"guaranteed":6},"b":{"guaranteed":5}}""", "add up to 11, more than the trunk's Total (10)");
        await AssertRefusedAsync(edge, """{"a":{"guaranteed":4,"maximum":3}}""", "trunk/carrier:Reservations:a:Maximum (3) must not be below");
        await AssertRefusedAsync(edge, """{"c":{"guaranteed":1}}""", "trunk/carrier:Reservations:c: no tenant 'c'");

        // Tenant a offers 10 calls at once (distinct users, each under the sample's default of 5), held 20 s; b has none.
        await using var a = Sipp.Start("uac-a", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_domain.xml"),
            "-inf", UsersFile(Data, [.. Enumerable.Range(0, 10).Select(i => $"a{i};a.example")]), "-s", "+15550100",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "10", "-r", "50", "-l", "10", "-d", "20000",
            "-timeout", "90s", "-timeout_error", "-trace_msg"]);
        await WaitForTenantCallsAsync(edge, "a", 6);
        await WaitForRefusalsAsync(edge, "TRUNK_RESERVED_FOR_OTHER_TENANTS", 4);
        Assert.Equal(6, await TenantCallsAsync(edge, "a"));

        // cac show lists the shares beside the trunk.
        var shown = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show", "--kind", "trunk");
        Assert.True(shown.ExitCode == 0 && shown.Output.Contains("Guaranteed", StringComparison.Ordinal), shown.ToString());

        // Then b's 4 calls are all admitted while a still holds its 6.
        await using var b = Sipp.Start("uac-b", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_domain.xml"),
            "-inf", UsersFile(Data, [.. Enumerable.Range(0, 4).Select(i => $"b{i};b.example")]), "-s", "+15550200",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "4", "-r", "50", "-l", "4", "-d", "5000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"], refusalsFail: true);
        await WaitForCountAsync(edge, "trunk/carrier", 10);
        Assert.Equal(4, await TenantCallsAsync(edge, "b"));
        var bStats = await b.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(bStats.Failed == 0 && bStats.Successful == 4, $"{bStats}\n{b.Describe()}");

        var aStats = await a.WaitAsync(TimeSpan.FromSeconds(90));
        var aMessages = a.Messages();
        Assert.True(aStats.Failed == 0 && aStats.Successful == 10, $"{aStats}\n{a.Describe()}");
        Assert.Equal(4, Count(aMessages, "SIP/2.0 480 Temporarily Unavailable"));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "both tenants' calls ended");
    }

    private static async Task AssertRefusedAsync(SipEdgeProcess edge, string body, string error)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await edge.Http.PutAsync("/api/reservations/carrier", content);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest && text.Contains(error, StringComparison.Ordinal), $"{response.StatusCode}: {text}");
    }

    /// <summary>The calls tenant <paramref name="tenant"/> holds on trunk carrier, from the admin API.</summary>
    private static async Task<int> TenantCallsAsync(SipEdgeProcess edge, string tenant)
    {
        var carrier = (await LimitsAsync(edge, "trunk")).Single(e => e.GetProperty("key").GetString() == "trunk/carrier");
        Assert.Equal("config", carrier.GetProperty("reservationsSource").GetString());
        return carrier.GetProperty("reservations").EnumerateArray().Single(r => r.GetProperty("tenant").GetString() == tenant).GetProperty("calls").GetInt32();
    }

    private static async Task WaitForTenantCallsAsync(SipEdgeProcess edge, string tenant, int calls)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        var last = -1;
        while (DateTime.UtcNow < deadline)
        {
            if ((last = await TenantCallsAsync(edge, tenant)) == calls)
            {
                return;
            }

            await Task.Delay(100);
        }

        Assert.Fail($"tenant {tenant} holds {last} calls on the trunk, never {calls}");
    }

    /// <summary>Waits until the edge has counted <paramref name="count"/> refusals for <paramref name="reason"/> (GET /metrics).</summary>
    private static async Task WaitForRefusalsAsync(SipEdgeProcess edge, string reason, int count)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        double counted = -1;
        while (DateTime.UtcNow < deadline)
        {
            var metrics = Telemetry.PrometheusText.Parse(await edge.Http.GetStringAsync("/metrics"));
            if ((counted = Telemetry.PrometheusText.Sum(metrics, "callstate_sipedge_admissions_total", ("callstate_reason", reason))) >= count)
            {
                Assert.Equal(count, counted);
                return;
            }

            await Task.Delay(100);
        }

        Assert.Fail($"{counted} refusals {reason} counted, never {count}");
    }
}
