using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using CallState.Cluster.IntegrationTests.Infrastructure;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The admin API and the <c>callstate</c> command against a real standalone edge (sample configuration, SQLite): tokens
/// and roles, the probes' own port, partial changes that keep what is not sent, a change that applies to the next call
/// on a busy limit and survives a restart, and the audit trail naming who did it.
/// </summary>
public sealed class AdminApiTests : IDisposable
{
    private readonly TempDirectory _temp = new("callstate-admin-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Without_a_token_the_API_answers_401_a_read_token_cannot_write_and_the_probes_need_none()
    {
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, SipEdgeProcess.FreeUdpAndTcpPort());
        using var anonymous = AdminTokens.Client(edge.HttpPort, null, TimeSpan.FromSeconds(10));
        using var reader = AdminTokens.Client(edge.HttpPort, AdminTokens.Read, TimeSpan.FromSeconds(10));
        using var wrong = AdminTokens.Client(edge.HttpPort, "not-the-token-0123456789abcdef", TimeSpan.FromSeconds(10));

        using (var none = await anonymous.GetAsync("/api/limits"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
            Assert.Equal("application/problem+json", none.Content.Headers.ContentType?.MediaType);
            Assert.Equal("Bearer", none.Headers.WwwAuthenticate.Single().Scheme);
        }

        using (var unknown = await wrong.GetAsync("/api/limits"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, unknown.StatusCode);
        }

        using (var read = await reader.GetAsync("/api/limits"))
        {
            Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        }

        using (var apiKey = new HttpRequestMessage(HttpMethod.Get, "/api/limits"))
        {
            apiKey.Headers.Add("X-Api-Key", AdminTokens.Read);
            using var answer = await anonymous.SendAsync(apiKey);
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        }

        using (var write = await reader.PatchAsync("/api/limits/user/bob", Json("""{"total":3}""")))
        {
            Assert.Equal(HttpStatusCode.Forbidden, write.StatusCode);
            Assert.Contains("read role", await write.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        using (var end = await reader.PostAsJsonAsync("/api/calls/end", new { callKey = "c1" }))
        {
            Assert.Equal(HttpStatusCode.Forbidden, end.StatusCode);
        }

        // The probes answer on their own port without a token, and only there; that port serves nothing else.
        using (var ready = await edge.Health.GetAsync("/health/ready"))
        {
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        }

        using (var live = await edge.Health.GetAsync("/health/live"))
        {
            Assert.Equal(HttpStatusCode.OK, live.StatusCode);
        }

        using (var apiOnProbePort = await edge.Health.GetAsync("/api/limits"))
        {
            Assert.Equal(HttpStatusCode.NotFound, apiOnProbePort.StatusCode);
        }

        using (var probeOnApiPort = await anonymous.GetAsync("/health/ready"))
        {
            Assert.Equal(HttpStatusCode.NotFound, probeOnApiPort.StatusCode);
        }

        // The OpenAPI document names the API's routes (a token is needed for it too).
        var openApi = await reader.GetStringAsync("/openapi/v1.json");
        Assert.Contains("/api/limits/{kind}/{value}", openApi, StringComparison.Ordinal);
        Assert.Contains("/api/audit", openApi, StringComparison.Ordinal);

        // The token never reaches the log, even in a refusal.
        Assert.DoesNotContain(AdminTokens.Read, edge.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("not-the-token", edge.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_patch_keeps_what_is_not_sent_applies_to_the_next_call_on_a_busy_limit_survives_a_restart_and_is_audited()
    {
        var edge = await StandaloneEdge.StartAsync(_temp.Path, SipEdgeProcess.FreeUdpAndTcpPort());
        try
        {
            // The sample gives unlisted users total 10, outbound 5, inbound 5 (DefaultUser). Bob holds one outbound call.
            Assert.Equal("Admitted", await AdmitAsync(edge, "b1"));
            var patched = await PatchAsync(edge, "user/bob", """{"outbound":1}""");
            Assert.Equal(10, patched.GetProperty("limits").GetProperty("total").GetInt32());
            Assert.Equal(5, patched.GetProperty("limits").GetProperty("inbound").GetInt32());
            Assert.Equal(1, patched.GetProperty("limits").GetProperty("outbound").GetInt32());
            Assert.Equal("default", patched.GetProperty("sources").GetProperty("total").GetString());
            Assert.Equal("runtime", patched.GetProperty("sources").GetProperty("outbound").GetString());

            // The very next call of the busy limit meets the new maximum; raising it lets the next one through.
            Assert.Equal("Rejected", await AdmitAsync(edge, "b2"));
            await PatchAsync(edge, "user/bob", """{"outbound":2}""");
            Assert.Equal("Admitted", await AdmitAsync(edge, "b2"));
            await PatchAsync(edge, "user/bob", """{"total":3}""");
            var bob = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits/user/bob")).RootElement;
            Assert.Equal(3, bob.GetProperty("limits").GetProperty("total").GetInt32());
            Assert.Equal(2, bob.GetProperty("limits").GetProperty("outbound").GetInt32());
            Assert.Equal(5, bob.GetProperty("limits").GetProperty("inbound").GetInt32());
        }
        finally
        {
            await edge.DisposeAsync();
        }

        // After a restart on the same database the run-time values are still in force.
        edge = await StandaloneEdge.StartAsync(_temp.Path, SipEdgeProcess.FreeUdpAndTcpPort(), extra: ["--Logging:LogLevel:CallState.Silo.Admin=Information"]);
        try
        {
            var bob = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits/user/bob?calls=true")).RootElement;
            Assert.Equal(2, bob.GetProperty("limits").GetProperty("outbound").GetInt32());
            Assert.Equal(2, bob.GetProperty("total").GetInt32());
            Assert.Equal(2, bob.GetProperty("calls").GetArrayLength());
            Assert.Equal("Rejected", await AdmitAsync(edge, "b3"));

            // Every change is in the audit, newest first, with who made it and the values before and after.
            var audit = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/audit?target=user/bob")).RootElement.EnumerateArray().ToList();
            Assert.Equal(3, audit.Count);
            Assert.All(audit, e => Assert.Equal("test-writer", e.GetProperty("actor").GetString()));
            Assert.All(audit, e => Assert.Equal("limits.change", e.GetProperty("action").GetString()));
            var first = audit[^1];
            Assert.Equal(5, first.GetProperty("before").GetProperty("outbound").GetInt32());
            Assert.Equal(1, first.GetProperty("after").GetProperty("outbound").GetInt32());
            Assert.Equal("outbound", first.GetProperty("after").GetProperty("runtime")[0].GetString());
            Assert.Equal(3, audit[0].GetProperty("after").GetProperty("total").GetInt32());

            // Clearing goes back to configuration, and is audited too.
            using var cleared = await edge.Http.DeleteAsync("/api/limits/user/bob");
            var after = JsonDocument.Parse(await cleared.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(5, after.GetProperty("limits").GetProperty("outbound").GetInt32());
            Assert.Equal("default", after.GetProperty("sources").GetProperty("outbound").GetString());
            var latest = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/audit?limit=1")).RootElement[0];
            Assert.Equal("limits.clear", latest.GetProperty("action").GetString());
            Assert.True(await edge.OutputContainsAsync("Admin change by test-writer: limits.clear user/bob"), edge.Output);
        }
        finally
        {
            await edge.DisposeAsync();
        }
    }

    [Fact]
    public async Task The_listing_has_configured_keys_paging_a_prefix_and_top_n_and_an_unknown_key_is_404()
    {
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, SipEdgeProcess.FreeUdpAndTcpPort());
        Assert.Equal("Admitted", await AdmitAsync(edge, "t1", "user/zed"));

        // Trunk carrier is configured, not stored: it is listed with zero calls and its configured maxima.
        var trunks = await ListAsync(edge, "/api/limits?kind=trunk");
        var carrier = Assert.Single(trunks.Items);
        Assert.Equal("trunk/carrier", carrier.GetProperty("key").GetString());
        Assert.Equal(0, carrier.GetProperty("total").GetInt32());
        Assert.Equal(4, carrier.GetProperty("maximum").GetInt32());
        Assert.Equal("config", carrier.GetProperty("sources").GetProperty("total").GetString());

        var users = await ListAsync(edge, "/api/limits?kind=user&limit=1");
        Assert.Single(users.Items);
        Assert.Equal(2, users.Total);  // alice (configured) and zed (stored)
        var page2 = await ListAsync(edge, "/api/limits?kind=user&limit=1&offset=1");
        Assert.Equal("user/zed", page2.Items.Single().GetProperty("key").GetString());
        Assert.False(page2.Items.Single().TryGetProperty("calls", out _));
        var top = await ListAsync(edge, "/api/limits?top=1");
        Assert.Equal("user/zed", top.Items.Single().GetProperty("key").GetString());
        var prefixed = await ListAsync(edge, "/api/limits?prefix=ali");
        Assert.Equal("user/alice", prefixed.Items.Single().GetProperty("key").GetString());

        using var unknown = await edge.Http.GetAsync("/api/limits/user/nobody-at-all");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Equal("application/problem+json", unknown.Content.Headers.ContentType?.MediaType);
        using var badKind = await edge.Http.GetAsync("/api/limits?kind=group");
        Assert.Equal(HttpStatusCode.BadRequest, badKind.StatusCode);
        Assert.Equal("application/problem+json", badKind.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task The_cli_shows_sets_clears_and_ends_with_exit_codes_a_script_can_use()
    {
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, SipEdgeProcess.FreeUdpAndTcpPort());
        Assert.Equal("Admitted", await AdmitAsync(edge, "k1", "user/kim"));

        var table = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show");
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains("user/kim", table.Output, StringComparison.Ordinal);
        Assert.Contains("trunk/carrier", table.Output, StringComparison.Ordinal);

        var json = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show", "--kind", "user", "--json");
        Assert.Equal(0, json.ExitCode);
        Assert.Equal(1, json.Json().EnumerateArray().Single(e => e.GetProperty("key").GetString() == "user/kim").GetProperty("outbound").GetInt32());

        var set = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "set", "user/kim", "--total", "7", "--inbound", "unlimited", "--json");
        Assert.True(set.ExitCode == 0, set.ToString());
        Assert.Equal(7, set.Json().GetProperty("limits").GetProperty("total").GetInt32());
        Assert.False(set.Json().GetProperty("limits").TryGetProperty("inbound", out _));
        Assert.Equal(5, set.Json().GetProperty("limits").GetProperty("outbound").GetInt32());

        var get = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "limits", "get", "user/kim", "--calls");
        Assert.Equal(0, get.ExitCode);
        Assert.Contains("7 (runtime)", get.Output, StringComparison.Ordinal);
        Assert.Contains("k1", get.Output, StringComparison.Ordinal);

        var cleared = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "clear", "user/kim", "--field", "total", "--json");
        Assert.Equal(0, cleared.ExitCode);
        Assert.Equal("default", cleared.Json().GetProperty("sources").GetProperty("total").GetString());
        Assert.Equal("runtime", cleared.Json().GetProperty("sources").GetProperty("inbound").GetString());

        var list = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "calls", "list", "--json");
        Assert.Equal(0, list.ExitCode);
        Assert.Contains(list.Json().EnumerateArray(), c => c.GetProperty("callKey").GetString() == "k1");

        Assert.Equal(0, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "calls", "show", "k1")).ExitCode);
        var end = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "calls", "end", "k1");
        Assert.True(end.ExitCode == 0, end.ToString());
        Assert.Equal(0, JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits/user/kim")).RootElement.GetProperty("total").GetInt32());

        var audit = await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "audit", "--json");
        Assert.Equal(0, audit.ExitCode);
        Assert.Contains(audit.Json().EnumerateArray(), e => e.GetProperty("action").GetString() == "calls.end" && e.GetProperty("target").GetString() == "k1");

        // Exit codes: 1 nothing there, 2 bad usage, 3 no or too weak a token, 4 nothing listening.
        Assert.Equal(ExitNotFound, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "calls", "end", "k1")).ExitCode);
        Assert.Equal(ExitNotFound, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "limits", "get", "user/nobody-at-all")).ExitCode);
        Assert.Equal(ExitUsage, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "set", "user/kim", "--total", "many")).ExitCode);
        Assert.Equal(ExitUsage, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Write, "limits", "set", "key/k", "--inbound", "3")).ExitCode);
        Assert.Equal(ExitUsage, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "cac", "show", "--no-such-option")).ExitCode);
        Assert.Equal(ExitDenied, (await CliRunner.RunAsync(edge.HttpPort, null, "cac", "show")).ExitCode);
        Assert.Equal(ExitDenied, (await CliRunner.RunAsync(edge.HttpPort, AdminTokens.Read, "limits", "set", "user/kim", "--total", "1")).ExitCode);
        Assert.Equal(ExitUnavailable, (await CliRunner.RunAsync(SipEdgeProcess.FreeUdpAndTcpPort(), AdminTokens.Read, "cac", "show")).ExitCode);
    }

    [Fact]
    public async Task A_configured_maximum_that_is_not_a_number_stops_start_up_naming_the_field()
    {
        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings.Concat(["--CallState:Limits:Users:bob:Outbound=x"]));

        Assert.Equal(2, await silo.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("CallState:Limits:Users:bob:Outbound: 'x' is not a whole number", silo.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_token_shorter_than_16_characters_stops_start_up_without_printing_it()
    {
        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings.Concat(["--CallState:Admin:Tokens:ops:Token=short-secret"]));

        Assert.Equal(2, await silo.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("CallState:Admin:Tokens:ops:Token is shorter than 16 characters", silo.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("short-secret", silo.Output, StringComparison.Ordinal);
    }

    private const int ExitNotFound = 1;
    private const int ExitUsage = 2;
    private const int ExitDenied = 3;
    private const int ExitUnavailable = 4;

    private static StringContent Json(string text) => new(text, Encoding.UTF8, "application/json");

    private static async Task<string> AdmitAsync(SipEdgeProcess edge, string callKey, string key = "user/bob")
    {
        using var response = await edge.Http.PostAsJsonAsync("/api/calls/admit", new { callKey, limits = new[] { new { key, direction = "Outbound" } } });
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("status").GetString()!;
    }

    private static async Task<JsonElement> PatchAsync(SipEdgeProcess edge, string key, string body)
    {
        using var response = await edge.Http.PatchAsync("/api/limits/" + key, Json(body));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, text);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private static async Task<(List<JsonElement> Items, int Total)> ListAsync(SipEdgeProcess edge, string path)
    {
        using var response = await edge.Http.GetAsync(path);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, text);
        var total = int.Parse(response.Headers.GetValues("X-Total-Count").Single(), System.Globalization.CultureInfo.InvariantCulture);
        return ([.. JsonDocument.Parse(text).RootElement.EnumerateArray().Select(e => e.Clone())], total);
    }
}
