using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Cluster.IntegrationTests.Telemetry;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// What an operator's collector and Prometheus receive (docs/operations.md, "Metrics"): a silo and an edge pointed at an
/// OTLP/HTTP receiver through the standard <c>OTEL_*</c> variables export the admission decisions, the SIP traffic with
/// its method and transport, one trace per admission from the edge into the silo, and logs naming the call; the
/// Prometheus endpoint on each admin listener shows the same counts while the calls are up.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class TelemetryTests(ITestOutputHelper output) : IDisposable
{
    private const string Edge = "callstate-edge";
    private const string Silo = "callstate-silo";

    private readonly TempDirectory _temp = new("callstate-otel-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Edge_and_silo_export_decisions_sip_traffic_one_trace_per_admission_and_logs_and_metrics_shows_the_same_counts()
    {
        await using var receiver = new OtlpReceiver(SipEdgeProcess.FreeUdpAndTcpPort());
        await using var db = TestDatabase.Create("sqlite");
        var clusterId = "it-" + Guid.NewGuid().ToString("N")[..12];

        // erin may hold 2 calls; she places 5 held 12 s: 2 admitted, 3 refused 486 while the first 2 are up.
        string[] limits = ["--CallState:Limits:Users:erin:Total=2"];
        await using var silo = SiloProcess.Start(db.Settings.Concat([$"--CallState:Orleans:ClusterId={clusterId}", .. limits]), environment: receiver.Environment);
        await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));

        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = SipEdgeProcess.Start(SipEdgeProcess.ClusterClientSettings(clusterId, silo.GatewayPort, uasPort, limits), environment: receiver.Environment);
        await edge.WaitReadyAsync(TimeSpan.FromSeconds(60));

        var users = StandaloneEdge.UsersFile(_temp.Path, "erin");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", "frank", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "5", "-l", "5", "-r", "20", "-d", "12000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);

        // The decision counter, split by outcome and reason, as the calls are placed.
        var decided = await receiver.WaitForAsync(r => Decisions(r).Values.Sum() >= 5, TimeSpan.FromSeconds(30));
        var decisions = Decisions(receiver);
        Assert.True(decided, Describe(receiver, edge, silo));
        Assert.Equal(new Dictionary<string, double> { ["admitted/NONE"] = 2, ["rejected/USER_TOTAL_LIMIT_REACHED"] = 3 }, decisions);

        // The Prometheus endpoints while the 2 admitted calls are still up: the same counts, and the capacity erin uses.
        var edgeScrape = await ScrapeAsync(edge.HttpPort);
        Assert.Equal(2, PrometheusText.Sum(edgeScrape, "callstate_sipedge_admissions_total", ("callstate_result", "admitted"), ("callstate_reason", "NONE")));
        Assert.Equal(3, PrometheusText.Sum(edgeScrape, "callstate_sipedge_admissions_total", ("callstate_result", "rejected"), ("callstate_reason", "USER_TOTAL_LIMIT_REACHED")));
        Assert.True(PrometheusText.Sum(edgeScrape, "callstate_sip_messages_received_total", ("callstate_sip_method", "INVITE"), ("network_transport", "udp")) >= 5);
        var siloScrape = await ScrapeAsync(silo.Port);
        Assert.Equal(2, PrometheusText.Sum(siloScrape, "callstate_limit_top_usage", ("callstate_limit_key", "user/erin")));
        Assert.True(PrometheusText.Sum(siloScrape, "callstate_limit_usage", ("callstate_limit_kind", "user")) >= 2);
        Assert.True(PrometheusText.Sum(siloScrape, "callstate_limit_capacity", ("callstate_limit_kind", "user")) >= 2);
        // The grains count the edge's warm-up admissions too (a call no limit applies to, made before the edge is ready).
        Assert.True(PrometheusText.Sum(siloScrape, "callstate_admissions_total", ("callstate_result", "admitted")) >= 2);
        Assert.Equal(3, PrometheusText.Sum(siloScrape, "callstate_admissions_total", ("callstate_result", "rejected"), ("callstate_reason", "USER_TOTAL_LIMIT_REACHED")));

        // Without a token the scrape is refused like every admin request.
        using (var anonymous = AdminTokens.Client(edge.HttpPort, null, TimeSpan.FromSeconds(10)))
        {
            Assert.Equal(System.Net.HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/metrics")).StatusCode);
        }

        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(stats.Failed == 0, uac.Describe());
        Assert.Equal(3, CountOf(uac.Messages(), "SIP/2.0 486 Busy Here"));

        // SIP instruments carry the method, the status class and the transport.
        Assert.True(await receiver.WaitForAsync(r => Received(r, "INVITE", "request", null) >= 5 && Received(r, "INVITE", "response", "2xx") >= 2,
            TimeSpan.FromSeconds(20)), Describe(receiver, edge, silo));
        Assert.Contains(receiver.Points, p => p.Service == Edge && p.Metric == "callstate.sip.messages.forwarded" && p.Attributes.GetValueOrDefault("callstate.sip.method") == "INVITE"
            && p.Attributes.GetValueOrDefault("network.transport") == "udp");
        Assert.Equal(3, receiver.Points.Where(p => p.Service == Edge && p.Metric == "callstate.sip.responses.generated"
            && p.Attributes.GetValueOrDefault("callstate.sip.status_code") == "486" && p.Attributes.GetValueOrDefault("callstate.sip.status_class") == "4xx").Sum(p => p.Value));

        // One trace per admission: the edge's span, Orleans' grain calls and the storage write on the silo share it.
        Assert.True(await receiver.WaitForAsync(r => AdmittedTraces(r).Any(t => r.Spans.Any(s => s.Service == Silo && s.TraceId == t && s.Name == "callstate.storage.write")),
            TimeSpan.FromSeconds(20)), Describe(receiver, edge, silo));
        var admissionSpans = receiver.Spans.Where(s => s.Service == Edge && s.Name == "callstate.admission").ToList();
        Assert.Equal(5, admissionSpans.Count);
        Assert.All(admissionSpans, s => Assert.False(string.IsNullOrEmpty(s.Attributes.GetValueOrDefault("callstate.call.key"))));
        Assert.All(AdmittedTraces(receiver), t => Assert.Contains(receiver.Spans, s => s.Service == Silo && s.TraceId == t));

        // Logs arrive with the call key as an attribute: one per refusal, naming the limit.
        Assert.True(await receiver.WaitForAsync(r => Refusals(r).Count == 3, TimeSpan.FromSeconds(20)), Describe(receiver, edge, silo));
        Assert.All(Refusals(receiver), l =>
        {
            Assert.Contains(l.Attributes["CallKey"], l.Body, StringComparison.Ordinal);
            Assert.Equal("user/erin", l.Attributes["LimitKey"]);
        });
        Assert.Equal(3, Refusals(receiver).Select(l => l.Attributes["CallKey"]).Distinct().Count());

        // Each process says which it is, and every data point decoded.
        Assert.Contains(receiver.Points, p => p.Service == Silo && p.Metric == "callstate.storage.commit.duration");
        Assert.Contains(receiver.Points, p => p.Service == Edge && p.Metric == "callstate.sipedge.admission.duration" && p.Unit == "s");
        Assert.Contains(receiver.Points, p => p.Service == Silo && p.Metric.StartsWith("orleans", StringComparison.OrdinalIgnoreCase));
        Assert.Contains(receiver.Points, p => p.Service == Edge && p.Metric.StartsWith("dotnet.", StringComparison.Ordinal));
        Assert.Empty(receiver.Errors);
        output.WriteLine(string.Join("\n", receiver.Points.Select(p => $"{p.Service} {p.Metric} {p.Unit} {string.Join(',', p.Attributes)} = {p.Value}").Order(StringComparer.Ordinal)));
    }

    [Fact]
    public async Task The_dashboard_and_the_alert_rules_name_only_metrics_the_processes_export_and_promtool_accepts_the_rules()
    {
        var dashboardPath = Path.Combine(RepoPaths.Repository, "deploy", "grafana", "callstate-dashboard.json");
        var rulesPath = Path.Combine(RepoPaths.Repository, "deploy", "prometheus", "callstate-rules.yml");
        using var dashboard = JsonDocument.Parse(await File.ReadAllTextAsync(dashboardPath));
        var panelExpressions = dashboard.RootElement.GetProperty("panels").EnumerateArray()
            .SelectMany(p => p.GetProperty("targets").EnumerateArray()).Select(t => t.GetProperty("expr").GetString()!).ToList();
        var rules = new YamlDotNet.Serialization.DeserializerBuilder().Build()
            .Deserialize<Dictionary<string, List<Dictionary<string, object>>>>(await File.ReadAllTextAsync(rulesPath));
        var ruleExpressions = rules["groups"].SelectMany(g => (List<object>)g["rules"]).Cast<Dictionary<object, object>>()
            .Select(r => (string)r["expr"]).ToList();
        Assert.True(panelExpressions.Count >= 10, "the dashboard has fewer panels' queries than it shows");
        Assert.True(ruleExpressions.Count >= 5, "the rules file has fewer alerts than docs/operations.md names");

        var promtool = Executables.Find("promtool");
        Assert.True(promtool is not null, "promtool is not installed (Debian package prometheus); scripts/test.sh installs it");
        var check = await RunAsync(promtool!, "check", "rules", rulesPath);
        Assert.True(check.ExitCode == 0, check.Output);

        // A standalone edge (silo and edge in one process) with alice's 2 calls up (her maximum), one refused, and a
        // caller over its budget from an address no trunk or peer has (127.0.0.9) being shed: every instrument the rules and panels use has data.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, uasPort, extra: [
            "--CallState:Limits:Users:alice:Outbound=2",
            "--CallState:Sip:Overload:Default:RequestsPerSecond=1", "--CallState:Sip:Overload:Default:Burst=1"]);
        var users = StandaloneEdge.UsersFile(_temp.Path, "alice");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", "bob", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "3", "-l", "3", "-r", "20", "-d", "12000",
            "-timeout", "60s", "-timeout_error"]);
        using (var stranger = new RawSipCaller(System.Net.IPAddress.Parse("127.0.0.9"), edge.SipPort))
        {
            for (var i = 0; i < 5; i++)
            {
                await stranger.SendOnlyAsync(stranger.Request("INVITE", $"sip:bob@127.0.0.1:{edge.SipPort}", $"shed-{i}", null, sdp: true, user: "mallory"));
            }
        }

        IReadOnlyList<PrometheusSample> scrape = [];
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        do
        {
            scrape = await ScrapeAsync(edge.HttpPort);
            if (PrometheusText.Sum(scrape, "callstate_limit_top_usage", ("callstate_limit_key", "user/alice")) == 2
                && PrometheusText.Sum(scrape, "callstate_sipedge_admissions_total", ("callstate_result", "rejected")) == 1
                && PrometheusText.Sum(scrape, "callstate_sip_overload_shed_total") > 0)
            {
                break;
            }

            await Task.Delay(200);
        }
        while (DateTime.UtcNow < deadline);

        var exported = scrape.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        var named = panelExpressions.Concat(ruleExpressions).SelectMany(MetricNames).Distinct(StringComparer.Ordinal).ToList();
        Assert.Contains("callstate_sipedge_admissions_total", named);
        var missing = named.Where(n => !exported.Contains(n) && n != "up").ToList();
        Assert.True(missing.Count == 0, $"named but not exported: {string.Join(", ", missing)}\nexported: {string.Join(", ", exported.Order(StringComparer.Ordinal))}");
        await uac.WaitAsync(TimeSpan.FromSeconds(60));
    }

    /// <summary>
    /// The metric names in a PromQL expression: identifiers outside label matchers, grouping clauses, range selectors and
    /// strings that are not functions or keywords.
    /// </summary>
    private static IEnumerable<string> MetricNames(string expression)
    {
        var stripped = Regex.Replace(expression, @"\{[^}]*\}|\[[^\]]*\]|""[^""]*""|\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ");
        string[] functions = ["sum", "rate", "max", "min", "avg", "count", "topk", "bottomk", "histogram_quantile", "irate", "increase", "by", "and", "or", "unless"];
        return Regex.Matches(stripped, @"[a-zA-Z_:][a-zA-Z0-9_:]*").Select(m => m.Value)
            .Where(n => !functions.Contains(n, StringComparer.Ordinal) && !n.StartsWith("__", StringComparison.Ordinal));
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(string file, params string[] args)
    {
        var info = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = System.Diagnostics.Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    private static Dictionary<string, double> Decisions(OtlpReceiver receiver) =>
        receiver.Points.Where(p => p.Service == Edge && p.Metric == "callstate.sipedge.admissions")
            .GroupBy(p => $"{p.Attributes["callstate.result"]}/{p.Attributes["callstate.reason"]}")
            .ToDictionary(g => g.Key, g => g.Sum(p => p.Value));

    private static double Received(OtlpReceiver receiver, string method, string kind, string? statusClass) =>
        receiver.Points.Where(p => p.Service == Edge && p.Metric == "callstate.sip.messages.received"
                && p.Attributes.GetValueOrDefault("callstate.sip.method") == method
                && p.Attributes.GetValueOrDefault("callstate.sip.message.kind") == kind
                && p.Attributes.GetValueOrDefault("network.transport") == "udp"
                && p.Attributes.GetValueOrDefault("callstate.sip.transport") == "udp"
                && (statusClass is null || p.Attributes.GetValueOrDefault("callstate.sip.status_class") == statusClass))
            .Sum(p => p.Value);

    private static List<string> AdmittedTraces(OtlpReceiver receiver) =>
        [.. receiver.Spans.Where(s => s.Service == Edge && s.Name == "callstate.admission" && s.Attributes.GetValueOrDefault("callstate.result") == "Admitted").Select(s => s.TraceId)];

    private static List<ReceivedLog> Refusals(OtlpReceiver receiver) =>
        [.. receiver.Logs.Where(l => l.Service == Edge && l.Attributes.ContainsKey("CallKey") && l.Body.Contains("rejected by", StringComparison.Ordinal))];

    private static async Task<IReadOnlyList<PrometheusSample>> ScrapeAsync(int port)
    {
        using var http = AdminTokens.Client(port, AdminTokens.Read, TimeSpan.FromSeconds(10));
        return PrometheusText.Parse(await http.GetStringAsync("/metrics"));
    }

    private static int CountOf(string text, string what)
    {
        var count = 0;
        for (var at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    private static string Describe(OtlpReceiver receiver, SipEdgeProcess edge, SiloProcess silo) =>
        $"metrics: {string.Join("; ", receiver.Points.Where(p => p.Metric.StartsWith("callstate.", StringComparison.Ordinal)).Select(p => $"{p.Service} {p.Metric} {string.Join(',', p.Attributes)}={p.Value.ToString(CultureInfo.InvariantCulture)}"))}\n"
        + $"spans: {string.Join("; ", receiver.Spans.Select(s => $"{s.Service} {s.Name} {s.TraceId}"))}\n"
        + $"logs: {receiver.Logs.Count}; errors: {string.Join("; ", receiver.Errors)}\nedge:\n{edge.Output}\nsilo:\n{silo.Output}";

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}
