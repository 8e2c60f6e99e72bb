using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Shadow mode (docs/policies.md, "Shadow mode") through a standalone edge between real sipp processes: a limit in shadow
/// mode lets every call through, holds each one, and reports what it would have refused in metrics, logs and
/// <c>callstate cac show</c>; it is set and cleared through the admin API with its roles and audit.
/// </summary>
[Collection(LoadTests.Name)]
public sealed partial class ShadowModeTests(ITestOutputHelper output) : IDisposable
{
    private const int Calls = 5;

    private readonly TempDirectory _temp = new("callstate-shadow-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task A_limit_of_2_in_shadow_admits_all_5_concurrent_calls_and_reports_3_would_be_refusals()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-trace_msg"]);
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, uasPort, extra: [
            "--CallState:Limits:Users:sam:Total=2",
            "--CallState:Limits:Users:sam:Shadow=true",

            // bob, the callee, without the sample's default of 5 inbound calls.
            "--CallState:Limits:Users:bob:Total=1000",

            // The limits' log lines (the test processes log warnings only by default).
            "--Logging:LogLevel:CallState.Grains=Information",
        ]);

        // 5 calls from sam, all up at once (each held 4 s), bounded in count and time.
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(_temp.Path, "sam"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(Calls), "-r", "20", "-l", Port(Calls),
            "-d", "4000", "-timeout", "60s", "-timeout_error", "-trace_msg"]);

        // All 5 are held on sam's limit together: counted past the maximum of 2, as the operator should see.
        await WaitForCountAsync(edge, "user/sam", Calls);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(60));
        var callee = await uas.WaitForStatsAsync(s => s.Created >= Calls, TimeSpan.FromSeconds(10));
        var messages = uac.Messages();
        output.WriteLine($"uac {stats}; uas {callee}");
        Assert.True(stats.Successful == Calls && stats.Failed == 0, $"{stats}\n{uac.Describe()}");
        Assert.Equal(Calls, callee.Created);
        Assert.Equal(0, FinalRefusal().Count(messages));

        // Metrics: 3 would-be refusals by sam's total, on the silo's counter (GET /metrics).
        var metrics = Telemetry.PrometheusText.Parse(await edge.Http.GetStringAsync("/metrics"));
        Assert.Equal(3, Telemetry.PrometheusText.Sum(metrics, "callstate_limit_shadow_refusals_total",
            ("callstate_limit_kind", "user"), ("callstate_reason", "USER_TOTAL_LIMIT_REACHED")));
        Assert.Equal(0, Telemetry.PrometheusText.Sum(metrics, "callstate_sipedge_admissions_total", ("callstate_result", "rejected")));

        // Logs: one line per would-be refusal, naming the limit and the reason.
        Assert.True(await edge.OutputContainsAsync("in shadow mode: it would have been refused, USER_TOTAL_LIMIT_REACHED"), edge.Output);
        Assert.Equal(3, ShadowLine().Count(edge.Output));

        // cac show: the would-be refusals beside the real ones (none), and shadow mode on, from configuration.
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "sam's calls ended");
        var shown = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show", "--kind", "user", "--json");
        Assert.True(shown.ExitCode == 0, shown.ToString());
        var sam = shown.Json().EnumerateArray().Single(e => e.GetProperty("key").GetString() == "user/sam");
        Assert.Equal(3, sam.GetProperty("shadowRefused").GetInt64());
        Assert.Equal(0, sam.GetProperty("refused").GetInt64());
        Assert.True(sam.GetProperty("limits").GetProperty("shadow").GetBoolean());
        Assert.Equal("config", sam.GetProperty("sources").GetProperty("shadow").GetString());
        var table = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show", "--kind", "user");
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Matches(@"user/sam[^\n]*3 \(on\)", table.Output);

        // Enforced again at run time: only the writer's token may, the change is audited, and the next calls past the
        // maximum are refused and counted as real refusals.
        var denied = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "limits", "set", "user/sam", "--shadow", "off");
        Assert.True(denied.ExitCode != 0, denied.ToString());
        var off = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "set", "user/sam", "--shadow", "off", "--json");
        Assert.True(off.ExitCode == 0, off.ToString());
        Assert.False(off.Json().GetProperty("limits").GetProperty("shadow").GetBoolean());
        Assert.Equal("runtime", off.Json().GetProperty("sources").GetProperty("shadow").GetString());
        var audit = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "audit", "--json");
        Assert.Contains(audit.Json().EnumerateArray(), e => e.GetProperty("action").GetString() == "limits.change"
            && e.GetProperty("target").GetString() == "user/sam"
            && e.GetProperty("after").GetProperty("runtime").EnumerateArray().Any(f => f.GetString() == "shadow"));

        await using (var enforced = Sipp.Start("enforced", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(_temp.Path, "sam"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "3", "-r", "20", "-l", "3",
            "-d", "3000", "-timeout", "60s", "-timeout_error", "-trace_msg"]))
        {
            var enforcedStats = await enforced.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.True(enforcedStats.Failed == 0, $"{enforcedStats}\n{enforced.Describe()}");
            Assert.Equal(1, FinalRefusal().Count(enforced.Messages()));
        }

        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "sam's enforced calls ended");
        var get = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "limits", "get", "user/sam", "--json");
        Assert.True(get.ExitCode == 0, get.ToString());
        Assert.Equal(1, get.Json().GetProperty("refused").GetInt64());
        Assert.Equal(3, get.Json().GetProperty("shadowRefused").GetInt64());

        // Back to configuration: shadow mode on again.
        var cleared = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "clear", "user/sam", "--field", "shadow", "--json");
        Assert.True(cleared.ExitCode == 0, cleared.ToString());
        Assert.True(cleared.Json().GetProperty("limits").GetProperty("shadow").GetBoolean());
        Assert.Equal("config", cleared.Json().GetProperty("sources").GetProperty("shadow").GetString());
    }

    /// <summary>A final response refusing the call (4xx, 5xx, 6xx) as the caller received it.</summary>
    [GeneratedRegex(@"^SIP/2.0 [456]\d\d ", RegexOptions.Multiline)]
    private static partial Regex FinalRefusal();

    [GeneratedRegex(@"admitted past user/sam in shadow mode")]
    private static partial Regex ShadowLine();
}
