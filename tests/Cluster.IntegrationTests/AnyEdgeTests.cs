using System.Globalization;
using System.Text.Json;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Two edges in front of one silo (alone in its cluster: localhost clustering), both Orleans clients of its gateway.
/// Both put the second edge's address in Record-Route (as a load balancer's would be), so a call set up through
/// edge 1 is ACKed and hung up through edge 2, which knows the call only from the BYE itself.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class AnyEdgeTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_call_admitted_through_edge_1_is_released_by_its_BYE_through_edge_2()
    {
        await using var db = TestDatabase.Create("sqlite");
        var clusterId = "it-" + Guid.NewGuid().ToString("N")[..12];
        await using var silo = SiloProcess.Start(db.Settings.Concat([$"--CallState:Orleans:ClusterId={clusterId}", "--CallState:Limits:DefaultUser:Total=5"]));
        await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));

        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        var edge2Port = SipEdgeProcess.FreeUdpAndTcpPort();
        string[] Settings() => SipEdgeProcess.ClusterClientSettings(clusterId, silo.GatewayPort, uasPort,
            "--CallState:Limits:DefaultUser:Total=5", "--CallState:Sip:AdvertisedHost=127.0.0.1", $"--CallState:Sip:AdvertisedPort={edge2Port}");
        await using var edge2 = SipEdgeProcess.Start(Settings(), edge2Port);
        await using var edge1 = SipEdgeProcess.Start(Settings());

        // Ready means connected to the silo's gateway.
        await edge1.WaitReadyAsync(TimeSpan.FromSeconds(60));
        await edge2.WaitReadyAsync(TimeSpan.FromSeconds(60));

        var data = Directory.CreateTempSubdirectory("callstate-anyedge-").FullName;
        var users = StandaloneEdge.UsersFile(data, "erin");
        try
        {
            await using var uac = Sipp.Start("uac", [
                $"127.0.0.1:{edge1.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", "frank", "-i", "127.0.0.1",
                "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", "3000", "-timeout", "30s", "-timeout_error"], refusalsFail: true);

            // While the call is up the silo counts it on both users.
            Assert.True(await WaitForAsync(silo, total: 1, TimeSpan.FromSeconds(10)), "the call was never counted");
            var stats = await uac.WaitAsync(TimeSpan.FromSeconds(30));
            output.WriteLine($"uac {stats}");
            Assert.True(stats.Successful == 1, uac.Describe());
            Assert.True(await WaitForAsync(silo, total: 0, TimeSpan.FromSeconds(10)), "the BYE through edge 2 did not release the call");
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    private static async Task<bool> WaitForAsync(SiloProcess silo, int total, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            using var limits = JsonDocument.Parse(await silo.Http.GetStringAsync("/api/limits?kind=user"));
            var users = limits.RootElement.EnumerateArray().ToList();
            // Back at 0, the two users (the default's limits only) are not listed at all: their rows go once they hold
            // nothing (docs/architecture.md, "Rows of idle limits").
            if ((total == 0 || users.Count == 2) && users.All(e => e.GetProperty("total").GetInt32() == total))
            {
                return true;
            }
            await Task.Delay(100);
        }
        return false;
    }

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}
