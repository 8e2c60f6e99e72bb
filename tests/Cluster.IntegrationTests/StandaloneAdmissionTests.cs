using System.Globalization;
using System.Text.Json;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The standalone edge (edge and grains in one process, SQLite, the sample configuration) between real sipp
/// processes: limits enforced at call setup, rejections with their Reason, and every count back to zero.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class StandaloneAdmissionTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _data = Directory.CreateTempSubdirectory("callstate-standalone-").FullName;

    public void Dispose()
    {
        try
        {
            Directory.Delete(_data, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [Fact]
    public async Task Alice_with_outbound_1_gets_one_call_connected_and_one_486_with_cause_17_then_counts_return_to_zero()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StartStandaloneAsync(uasPort);

        var users = Path.Combine(_data, "alice.csv");
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

        using var limits = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits?kind=user"));
        var alice = limits.RootElement.EnumerateArray().Single(e => e.GetProperty("key").GetString() == "user/alice");
        Assert.Equal(0, alice.GetProperty("total").GetInt32());
        Assert.All(limits.RootElement.EnumerateArray(), e => Assert.Equal(0, e.GetProperty("total").GetInt32()));
    }

    private async Task<SipEdgeProcess> StartStandaloneAsync(int upstreamPort)
    {
        var upstream = $"127.0.0.1:{upstreamPort}";
        var edge = SipEdgeProcess.Start([
            "--standalone",
            $"--CallState:Storage:ConnectionString=Data Source={Path.Combine(_data, "callstate.db")}",
            $"--CallState:Admission:Routes:1:Upstream={upstream}",
            $"--CallState:Admission:Routes:2:Upstream={upstream}",
        ]);
        await edge.WaitReadyAsync(TimeSpan.FromSeconds(30));
        return edge;
    }

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static int Count(string text, string what)
    {
        var count = 0;
        for (var at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
        {
            count++;
        }
        return count;
    }
}
