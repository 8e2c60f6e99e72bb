using System.Globalization;
using System.Net;
using System.Text.Json;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// What Kubernetes does to an edge pod it stops (docs/operations.md, "Draining an edge"): SIGTERM during sipp load. The
/// edge, an Orleans client of one silo, refuses new calls and probes with 503 + Retry-After and reports not ready, while
/// the calls it admitted end through it (their BYEs cross it: Record-Route names it); then it exits by itself within its
/// drain. The callee and the silo judge: every call that reached the callee ended normally, and every count is back to 0.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class EdgeDrainTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Drain = TimeSpan.FromSeconds(8);

    [Fact]
    public async Task A_draining_edge_refuses_new_calls_lets_admitted_calls_end_and_exits()
    {
        await using var db = TestDatabase.Create("sqlite");
        var clusterId = "it-" + Guid.NewGuid().ToString("N")[..12];
        await using var silo = SiloProcess.Start(db.Settings.Concat([$"--CallState:Orleans:ClusterId={clusterId}", "--CallState:Limits:DefaultUser:Total=1000"]));
        await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));

        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = SipEdgeProcess.Start(SipEdgeProcess.ClusterClientSettings(clusterId, silo.GatewayPort, uasPort,
            "--CallState:Limits:DefaultUser:Total=1000", $"--CallState:Sip:DrainTimeout={Drain:c}"));
        await edge.WaitReadyAsync(TimeSpan.FromSeconds(60));

        var data = Directory.CreateTempSubdirectory("callstate-drain-").FullName;
        try
        {
            // Bounded load: at most 400 calls of 1.5 s at 20 a second (about 30 up at once), stopped once the edge is gone.
            await using var uac = Sipp.Start("uac", [
                $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", StandaloneEdge.UsersFile(data, "erin"), "-s", "frank",
                "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-r", "20", "-m", "400", "-d", "1500",
                "-timeout", "60s", "-trace_counts"]);

            // Calls are up (the callee has answered some) when Kubernetes stops the pod.
            var before = await uas.WaitForStatsAsync(s => s.Created >= 20, TimeSpan.FromSeconds(30));
            Assert.True(before.Created >= 20, $"the load never reached the callee: {before}\n{uac.Describe()}");
            var terminated = System.Diagnostics.Stopwatch.StartNew();
            edge.Terminate();

            // Draining: not ready, so the Service takes the pod out of its endpoints.
            Assert.True(await ReadinessBecomesAsync(edge, HttpStatusCode.ServiceUnavailable, TimeSpan.FromSeconds(5)), "readiness stayed ready while draining");

            // A new call and the load balancer's probe are refused with Retry-After; so are sipp's new calls.
            using (var caller = new RawSipCaller(IPAddress.Loopback, edge.SipPort))
            {
                var uri = $"sip:127.0.0.1:{edge.SipPort}";
                var probe = await caller.SendAsync(caller.Request("OPTIONS", uri, "drain-probe-" + Guid.NewGuid().ToString("N"), toTag: null), final: true);
                Assert.Equal(503, SipText.Status(probe));
                Assert.Contains("\r\nRetry-After: ", probe, StringComparison.Ordinal);
                var invite = await caller.SendAsync(caller.Request("INVITE", $"sip:frank@127.0.0.1:{edge.SipPort}", "drain-invite-" + Guid.NewGuid().ToString("N"), toTag: null, sdp: true, user: "erin"), final: true);
                Assert.Equal(503, SipText.Status(invite));
                Assert.Contains("\r\nRetry-After: ", invite, StringComparison.Ordinal);
            }
            Assert.True(await RefusedAsync(uac, TimeSpan.FromSeconds(5)), "sipp's new calls were not answered 503 while the edge drained");

            // It exits by itself, within its drain plus the shutdown's margin (what terminationGracePeriodSeconds must cover).
            var exitCode = await edge.WaitForExitAsync(Drain + TimeSpan.FromSeconds(5) + TimeSpan.FromSeconds(5));
            Assert.True(exitCode == 0, $"the edge exited {exitCode}:\n{edge.Output}");
            output.WriteLine($"edge exited {terminated.Elapsed.TotalSeconds:F1} s after SIGTERM (drain {Drain.TotalSeconds} s)");
            var callerStats = uac.Stop();
            output.WriteLine($"uac {callerStats}; 503s {Refusals(uac)}");

            // The callee judges: every call that reached it (admitted before the drain) ended with its BYE through the
            // draining edge; nothing reached it after the drain began.
            var callee = await uas.WaitForStatsAsync(s => s.Successful + s.Failed >= s.Created, TimeSpan.FromSeconds(40));
            output.WriteLine($"uas {callee}");
            Assert.True(callee.Created >= before.Created && callee.Failed == 0 && callee.Successful == callee.Created, $"calls lost at the callee: {callee}\n{uas.Describe()}");

            // And the silo: no call left counted (a call counted twice, or never released, would stay above 0).
            Assert.True(await CountsBackToZeroAsync(silo, TimeSpan.FromSeconds(20)), "the silo still counts calls after the drain");
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    private static async Task<bool> ReadinessBecomesAsync(SipEdgeProcess edge, HttpStatusCode expected, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline && !edge.HasExited)
        {
            if (await edge.ReadinessAsync() == expected)
            {
                return true;
            }
            await Task.Delay(50);
        }
        return false;
    }

    private static long Refusals(Sipp uac) => uac.Counts().Where(c => c.Key.EndsWith("_503_Recv", StringComparison.Ordinal)).Sum(c => c.Value);

    private static async Task<bool> RefusedAsync(Sipp uac, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (Refusals(uac) > 0)
            {
                return true;
            }
            await Task.Delay(250);
        }
        return false;
    }

    private static async Task<bool> CountsBackToZeroAsync(SiloProcess silo, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            using var limits = JsonDocument.Parse(await silo.Http.GetStringAsync("/api/limits?kind=user"));
            if (limits.RootElement.EnumerateArray().All(e => e.GetProperty("total").GetInt32() == 0))
            {
                return true;
            }
            await Task.Delay(100);
        }
        return false;
    }

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}
