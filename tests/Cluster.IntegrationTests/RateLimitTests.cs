using System.Globalization;
using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// A call rate with burst (docs/policies.md, "Call rates") through a standalone edge between real sipp processes: the
/// callee's own log of the INVITEs it got is the oracle for how many calls the rate let through.
/// </summary>
[Collection(LoadTests.Name)]
public sealed partial class RateLimitTests(ITestOutputHelper output) : IDisposable
{
    private const int Rate = 10;
    private const int Burst = 5;
    private const int Offered = 150;

    private readonly TempDirectory _temp = new("callstate-rate-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Rita_limited_to_10_calls_a_second_with_burst_5_offered_50_a_second_gets_burst_plus_rate_times_the_span_through()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-trace_msg"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: [
            $"--CallState:Limits:Users:rita:OutboundRate={Rate}",
            $"--CallState:Limits:Users:rita:OutboundBurst={Burst}",

            // bob, the callee, without the sample's default of 5 inbound calls: only rita's rate refuses here.
            "--CallState:Limits:Users:bob:Total=1000",

            // The configured response of a rate's refusal: the default 480 with Retry-After, another Q.850 cause.
            "--CallState:Admission:RejectCodes:RateLimit:Q850Cause=63",
        ]);

        // A few calls of an unlimited user first, so that the first of rita's calls is not slowed on its way to the callee
        // (code paths run for the first time), which would shorten the span the callee sees.
        await using (var warmUp = Sipp.Start("warm-up", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "wendy"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "5", "-r", "10", "-d", "100",
            "-timeout", "30s", "-timeout_error"], refusalsFail: true))
        {
            var warmed = await warmUp.WaitAsync(TimeSpan.FromSeconds(45));
            Assert.True(warmed.Successful == 5, $"{warmed}\n{warmUp.Describe()}");
        }

        // 50 calls a second for 3 s (150 calls, bounded in count and time), each held 100 ms.
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "rita"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(Offered), "-r", "50", "-l", "100",
            "-d", "100", "-timeout", "90s", "-timeout_error", "-trace_msg"]);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(120));
        var messages = uac.Messages();
        var refused = Count(messages, "SIP/2.0 480 Temporarily Unavailable");
        var callee = await uas.WaitForStatsAsync(s => s.Created >= 5 + Offered - refused, TimeSpan.FromSeconds(10));
        var invites = InviteTimes(uas.Messages());
        uas.Stop();

        Assert.True(stats.Failed == 0 && stats.Successful == Offered, $"{stats}\n{uac.Describe()}");
        Assert.True(invites.Count >= 2, $"the callee got {invites.Count} INVITEs");
        var span = (invites[^1] - invites[0]).TotalSeconds;
        var allowed = Burst + (Rate * span);
        var admitted = invites.Count;
        var statuses = string.Join(", ", Regex.Matches(messages, @"^SIP/2.0 (\d{3})", RegexOptions.Multiline).GroupBy(m => m.Groups[1].Value).Select(g => $"{g.Key}: {g.Count()}"));
        output.WriteLine($"responses {statuses}");
        output.WriteLine($"offered {Offered}, admitted {admitted} over {span:F3} s (allowed {allowed:F1}), refused {refused}; uac {stats}; uas {callee}");

        // The bucket decides on the limit grain's clock; the callee sees each INVITE a forwarding delay later, and that
        // delay varies from call to call. The span it sees is then shorter than the one decided on by the first call's
        // delay less the last's: as long as that difference is under one token's interval (1/rate, 100 ms here), at most
        // one call more than burst + rate x span can show. The bucket itself is held to the exact bound by the property
        // test (RateBucketPropertyTests).
        Assert.True(admitted <= allowed + 1, $"{admitted} admitted, at most {allowed:F2} (+1 for the forwarding delay's variation) allowed over {span:F3} s");
        Assert.True(admitted >= 0.9 * allowed, $"{admitted} admitted, at least 90% of {allowed:F2} expected over {span:F3} s");
        Assert.Equal(Offered, admitted + refused);
        Assert.Equal(refused, Count(messages, "Reason: Q.850;cause=63"));
        Assert.Equal(refused, RetryAfterCount(messages));
        Assert.Equal(0, Count(messages, "SIP/2.0 503"));
        Assert.True(await edge.OutputContainsAsync("USER_OUT_RATE_LIMIT_REACHED"), edge.Output);

        // The refusals are counted by reason (GET /metrics), and no slot is left held.
        var metrics = Telemetry.PrometheusText.Parse(await edge.Http.GetStringAsync("/metrics"));
        var counted = Telemetry.PrometheusText.Sum(metrics, "callstate_sipedge_admissions_total", ("callstate_reason", "USER_OUT_RATE_LIMIT_REACHED"));
        Assert.True(counted == refused, $"{counted} rate refusals counted, {refused} sent");
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "rita's calls ended");
    }

    [Fact]
    public async Task The_cli_shows_sets_and_clears_a_rate_with_its_burst_and_source()
    {
        await using var edge = await StandaloneEdge.StartAsync(Data, SipEdgeProcess.FreeUdpAndTcpPort(), extra: [
            "--CallState:Limits:Users:rita:OutboundRate=10", "--CallState:Limits:Users:rita:OutboundBurst=5"]);

        var table = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show", "--kind", "user");
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains("Rate", table.Output, StringComparison.Ordinal);
        var shown = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show", "--kind", "user", "--json");
        var rita = shown.Json().EnumerateArray().Single(e => e.GetProperty("key").GetString() == "user/rita");
        Assert.Equal(10, rita.GetProperty("limits").GetProperty("outboundRate").GetDouble());
        Assert.Equal(5, rita.GetProperty("limits").GetProperty("outboundBurst").GetInt32());
        Assert.Equal("config", rita.GetProperty("sources").GetProperty("outboundRate").GetString());

        var set = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "set", "user/rita", "--outbound-rate", "2.5/1", "--inbound-rate", "1", "--json");
        Assert.True(set.ExitCode == 0, set.ToString());
        var limits = set.Json().GetProperty("limits");
        Assert.Equal(2.5, limits.GetProperty("outboundRate").GetDouble());
        Assert.Equal(1, limits.GetProperty("outboundBurst").GetInt32());
        Assert.Equal(1, limits.GetProperty("inboundRate").GetDouble());
        Assert.Equal("runtime", set.Json().GetProperty("sources").GetProperty("outboundRate").GetString());

        var get = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "limits", "get", "user/rita");
        Assert.True(get.ExitCode == 0, get.ToString());
        Assert.Contains("2.5/s burst 1 (runtime)", get.Output, StringComparison.Ordinal);

        // Checked like configuration: a rate of 0 is refused naming the field; a value that is no rate is a usage error.
        var zero = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "set", "user/rita", "--total-rate", "0");
        Assert.True(zero.ExitCode != 0 && (zero.Output + zero.Error).Contains("TotalRate must be more than 0", StringComparison.Ordinal), zero.ToString());
        Assert.Equal(2, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "set", "user/rita", "--outbound-rate", "fast")).ExitCode);

        var cleared = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "clear", "user/rita", "--field", "outboundRate", "--json");
        Assert.True(cleared.ExitCode == 0, cleared.ToString());
        Assert.Equal(10, cleared.Json().GetProperty("limits").GetProperty("outboundRate").GetDouble());
        Assert.Equal("config", cleared.Json().GetProperty("sources").GetProperty("outboundRate").GetString());
        Assert.Equal("runtime", cleared.Json().GetProperty("sources").GetProperty("inboundRate").GetString());
    }

    /// <summary>When the callee received each INVITE from rita, from its <c>-trace_msg</c> log, in order.</summary>
    private static List<DateTime> InviteTimes(string log)
    {
        var times = new List<DateTime>();
        foreach (Match match in ReceivedInvite().Matches(log))
        {
            // The message runs to the next separator line of the log.
            var end = log.IndexOf("\n-----", match.Index + match.Length, StringComparison.Ordinal);
            if (FromRita().IsMatch(log[match.Index..(end < 0 ? log.Length : end)]))
            {
                times.Add(DateTime.ParseExact(match.Groups[1].Value, "yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture));
            }
        }

        times.Sort();
        return times;
    }

    /// <summary>Responses whose Retry-After is a whole number of seconds (the bucket's wait, at least 1).</summary>
    private static int RetryAfterCount(string messages) => RetryAfter().Count(messages);

    [GeneratedRegex(@"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6})\r?\n[^\n]*received[^\n]*\r?\n\r?\nINVITE ", RegexOptions.Multiline)]
    private static partial Regex ReceivedInvite();

    [GeneratedRegex(@"^From:[^\n]*sip:rita@", RegexOptions.Multiline)]
    private static partial Regex FromRita();

    [GeneratedRegex(@"^Retry-After: [1-9][0-9]*\r?$", RegexOptions.Multiline)]
    private static partial Regex RetryAfter();
}
