using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The operators' dashboard (docs/dashboard.md) on a standalone edge: its sign-in and access control over HTTP, and the
/// page itself in Debian's chromium (driven by Playwright, headless) while sipp places calls.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class DashboardTests(ITestOutputHelper output) : IDisposable
{
    /// <summary>Longest the page may take to show a change the grains have made (it is pushed each second).</summary>
    private static readonly TimeSpan PageDeadline = TimeSpan.FromSeconds(12);

    private readonly TempDirectory _temp = new("callstate-dashboard-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Without_a_token_the_page_and_its_stream_answer_401_and_a_token_becomes_an_http_only_strict_cookie()
    {
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, SipEdgeProcess.FreeUdpAndTcpPort());
        using var handler = new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false };
        using var http = new HttpClient(handler) { BaseAddress = new Uri($"http://127.0.0.1:{edge.HttpPort}"), Timeout = TimeSpan.FromSeconds(30) };

        // No token, no cookie: the page (answered with the login form) and its stream are 401; so is a made-up cookie.
        using (var page = await http.GetAsync("/dashboard/"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, page.StatusCode);
            Assert.Contains("name=\"token\"", await page.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.Contains("script-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
        }

        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/dashboard/stream")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/dashboard/stream", cookie: "callstate_session=forged")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/dashboard/login")).StatusCode);

        // A wrong token is sent back to the form; a right one gets an HttpOnly, SameSite=Strict session cookie.
        using (var wrong = await http.PostAsync("/dashboard/login", Form("not-a-token-of-this-edge-0000")))
        {
            Assert.Equal(HttpStatusCode.Redirect, wrong.StatusCode);
            Assert.Equal("/dashboard/login?failed=1", wrong.Headers.Location?.ToString());
            Assert.False(wrong.Headers.Contains("Set-Cookie"));
        }

        var reader = await LoginAsync(http, AdminTokens.Read);
        var writer = await LoginAsync(http, AdminTokens.Write);
        using (var page = await SendAsync(http, HttpMethod.Get, "/dashboard/", cookie: reader))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Contains("/dashboard/assets/dashboard.js", await page.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // The stream sends the figures as server-sent events.
        using (var stream = await SendAsync(http, HttpMethod.Get, "/dashboard/stream?key=user/alice", cookie: reader, streamed: true))
        {
            Assert.Equal(HttpStatusCode.OK, stream.StatusCode);
            Assert.Equal("text/event-stream", stream.Content.Headers.ContentType?.MediaType);
            using var lines = new StreamReader(await stream.Content.ReadAsStreamAsync());
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            string? line;
            while ((line = await lines.ReadLineAsync(cts.Token)) is not null && line != "event: key")
            {
            }

            var data = await lines.ReadLineAsync(cts.Token);
            Assert.StartsWith("data: ", data, StringComparison.Ordinal);
            using var watched = JsonDocument.Parse(data!["data: ".Length..]);
            Assert.Equal("user/alice", watched.RootElement.GetProperty("key").GetString());
            Assert.Equal(0, watched.RootElement.GetProperty("entry").GetProperty("total").GetInt32());
        }

        // Changes with the cookie keep the token's role, and need the dashboard's header (no cross-site form can send it).
        const string change = "{\"total\":5}";
        Assert.Equal(HttpStatusCode.Forbidden, (await SendAsync(http, HttpMethod.Patch, "/api/limits/user/alice", reader, change, dashboardHeader: true)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await SendAsync(http, HttpMethod.Patch, "/api/limits/user/alice", writer, change, dashboardHeader: false)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await SendAsync(http, HttpMethod.Patch, "/api/limits/user/alice", writer, change, dashboardHeader: true)).StatusCode);
        using (var audit = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/audit?target=user/alice")))
        {
            var entry = audit.RootElement.EnumerateArray().Single();
            Assert.Equal("test-writer", entry.GetProperty("actor").GetString());
            Assert.Equal(5, entry.GetProperty("after").GetProperty("total").GetInt32());
        }

        // Signing out ends the session: the page and the stream are 401 again with that cookie.
        Assert.Equal(HttpStatusCode.NoContent, (await SendAsync(http, HttpMethod.Post, "/dashboard/logout", writer, dashboardHeader: true)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/dashboard/", cookie: writer)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/dashboard/stream", cookie: writer)).StatusCode);
    }

    [Fact]
    public async Task The_page_follows_alices_calls_shows_a_refusal_with_its_reason_a_limit_changed_on_it_applies_to_the_next_call_and_it_ends_a_call()
    {
        var chromium = Executables.Find("chromium") ?? throw new InvalidOperationException(
            "chromium is not installed (Debian package chromium); scripts/test.sh installs it");
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);

        // alice: 2 calls in total, 1 outbound (the sample configuration), so her second call at once is refused. The
        // other callers have limits of their own, so they are listed beside her.
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, uasPort, extra: [
            "--CallState:Limits:Users:carol:Total=4", "--CallState:Limits:Users:dave:Total=4", "--CallState:Limits:Users:erin:Total=4",
            "--CallState:Limits:Users:frank:Total=4"]);
        var screenshots = Directory.CreateDirectory(Path.Combine(AppContext.BaseDirectory, "screenshots", "dashboard")).FullName;

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        });
        var context = await browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = 1440, Height = 1100 } });
        var page = await context.NewPageAsync();
        // Written by Playwright's event thread while the test reads it.
        var console = new ConcurrentQueue<string>();
        page.Console += (_, message) => console.Enqueue($"{message.Type}: {message.Text}");
        page.PageError += (_, error) => console.Enqueue("page error: " + error);

        // The page asks for a sign-in (401 with the form), then goes live with the write token.
        var first = await page.GotoAsync($"http://127.0.0.1:{edge.HttpPort}/dashboard/");
        Assert.Equal(401, first!.Status);
        await page.FillAsync("#token", AdminTokens.Write);
        await page.ClickAsync("button[type=submit]");
        await page.WaitForSelectorAsync("#status[data-state=live]", new PageWaitForSelectorOptions { Timeout = 15_000 });
        Assert.Equal("test-writer (write)", await page.TextContentAsync("#who"));

        // The 401 of the first navigation was logged by the browser as an error; from here on the page must log none.
        console.Clear();

        // alice's calls, watched in the calls panel.
        await page.FillAsync("#watch-key", "user/alice");
        await page.ClickAsync("#watch-form button[type=submit]");

        // Two calls from alice at once, the admitted one held 15 s: one is up, the other refused. Meanwhile other users'
        // calls load the page's tables.
        var started = Stopwatch.StartNew();
        await using var alice = Sipp.Start("alice", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(_temp.Path, "alice"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "2", "-r", "10", "-l", "2", "-d", "15000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);
        await using var others = Sipp.Start("others", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(_temp.Path, "carol", "dave", "erin", "frank"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "40", "-r", "5", "-l", "12", "-d", "6000",
            "-timeout", "60s", "-timeout_error"]);

        var up = await WaitForPageAsync(page, "alice's row at 1 call", "document.querySelector('#top tr[data-key=\"user/alice\"] td.calls')?.textContent === '1'", console);
        output.WriteLine($"the page showed alice at 1 call {started.ElapsedMilliseconds} ms after sipp started ({up.TotalMilliseconds:F0} ms of waiting)");
        await WaitForPageAsync(page, "alice's call in the calls panel", "document.querySelectorAll('#calls tbody tr').length === 1 && document.querySelector('#watched-summary')?.dataset.total === '1'", console);

        var refused = await WaitForPageAsync(page, "a refusal of alice's second call",
            "[...document.querySelectorAll('#admissions tr[data-result=\"rejected\"]')].some(r => r.dataset.reason === 'USER_OUT_LIMIT_REACHED' && r.querySelector('td.total').textContent === '1')", console);
        output.WriteLine($"the page showed the refusal USER_OUT_LIMIT_REACHED after {refused.TotalMilliseconds:F0} ms");

        // Under load: the laptop's view and a phone's.
        await page.WaitForFunctionAsync("document.querySelectorAll('#top tbody tr').length >= 3", null, new PageWaitForFunctionOptions { Timeout = 15_000 });
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(screenshots, "dashboard-under-load.png"), FullPage = true });
        await page.SetViewportSizeAsync(390, 844);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(screenshots, "dashboard-phone.png"), FullPage = true });
        await page.SetViewportSizeAsync(1440, 1100);
        output.WriteLine($"screenshots in {screenshots}");

        var aliceStats = await alice.WaitAsync(TimeSpan.FromSeconds(60));
        var ended = Stopwatch.StartNew();
        await WaitForPageAsync(page, "alice's row back at 0", "document.querySelector('#top tr[data-key=\"user/alice\"] td.calls')?.textContent === '0'", console);
        output.WriteLine($"the page showed alice back at 0 {ended.ElapsedMilliseconds} ms after her sipp ended; alice {aliceStats}");
        Assert.True(aliceStats.Successful == 2 && aliceStats.Failed == 0, alice.Describe());
        Assert.Equal(1, Count(alice.Messages(), "SIP/2.0 486 Busy Here"));

        // Raise alice's outbound maximum to 2 from the page: her next two calls at once are both admitted.
        await page.FillAsync("#change-key", "user/alice");
        await page.FillAsync("#change-outbound", "2");
        await page.ClickAsync("#change-apply");
        await WaitForPageAsync(page, "the change's answer", "document.querySelector('#change-result')?.textContent.includes('out 2')", console);

        await using var again = Sipp.Start("alice-again", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(_temp.Path, "alice"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "2", "-r", "10", "-l", "2", "-d", "5000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"], refusalsFail: true);
        await WaitForPageAsync(page, "alice at 2 calls after the change", "document.querySelector('#top tr[data-key=\"user/alice\"] td.calls')?.textContent === '2'", console);
        var againStats = await again.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(againStats.Successful == 2 && againStats.Failed == 0, again.Describe());
        Assert.Equal(0, Count(again.Messages(), "SIP/2.0 486"));

        using (var audit = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/audit?target=user/alice")))
        {
            var entry = audit.RootElement.EnumerateArray().First();
            Assert.Equal("limits.change", entry.GetProperty("action").GetString());
            Assert.Equal("test-writer", entry.GetProperty("actor").GetString());
            Assert.Equal(2, entry.GetProperty("after").GetProperty("outbound").GetInt32());
        }

        // Put alice's limit in shadow mode from the page (maxima unchanged): stored, shown in the top keys, audited.
        await page.FillAsync("#change-outbound", "");
        await page.SelectOptionAsync("#change-shadow", "on");
        await page.ClickAsync("#change-apply");
        await WaitForPageAsync(page, "the shadow change's answer", "document.querySelector('#change-result')?.textContent.includes('shadow mode on')", console);
        using (var limit = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/limits/user/alice")))
        {
            Assert.True(limit.RootElement.GetProperty("limits").GetProperty("shadow").GetBoolean());
            Assert.Equal(2, limit.RootElement.GetProperty("limits").GetProperty("outbound").GetInt32());
        }
        await WaitForPageAsync(page, "alice's shadow mode in the top keys", "document.querySelector('#top tr[data-key=\"user/alice\"] td.shadow-col')?.textContent.startsWith('on')", console);

        // End a call from the page: alice's caller never hangs up; "End call" (two clicks) has the edge send each party a BYE.
        await using var hungUp = Sipp.Start("alice-hung-up", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_hung_up.xml"), "-inf", UsersFile(_temp.Path, "alice"), "-s", "bob",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-timeout", "60s", "-timeout_error", "-trace_msg"]);
        await WaitForPageAsync(page, "alice's answered call in the calls panel",
            "document.querySelectorAll('#calls tbody tr').length === 1 && document.querySelector('#calls tbody tr td:nth-child(3)')?.textContent === 'Confirmed'", console);
        await page.ClickAsync("#calls tbody tr button.danger");
        await page.ClickAsync("#calls tbody tr button.danger");
        await WaitForPageAsync(page, "the end's answer", "document.querySelector('#call-result')?.textContent.includes('bye-sent')", console);
        var hungUpStats = await hungUp.WaitAsync(TimeSpan.FromSeconds(40));
        Assert.True(hungUpStats.Successful == 1 && hungUpStats.Failed == 0, $"the caller got no BYE: {hungUpStats}\n{hungUp.Describe()}");
        Assert.Contains("BYE sip:", hungUp.Messages(), StringComparison.Ordinal);
        using (var audit = JsonDocument.Parse(await edge.Http.GetStringAsync("/api/audit?limit=1")))
        {
            var entry = audit.RootElement.EnumerateArray().Single();
            Assert.Equal(("calls.end", "test-writer"), (entry.GetProperty("action").GetString(), entry.GetProperty("actor").GetString()));
        }

        var othersStats = await others.WaitAsync(TimeSpan.FromSeconds(90));
        output.WriteLine($"others {othersStats}");
        await WaitForPageAsync(page, "every count back to 0", "[...document.querySelectorAll('#kinds td.calls')].every(c => c.textContent === '0')", console);
        Assert.True(!console.Any(c => c.StartsWith("page error", StringComparison.Ordinal) || c.StartsWith("error", StringComparison.Ordinal)), string.Join('\n', console));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "every call ended");
    }

    /// <summary>Waits (at most <see cref="PageDeadline"/>) until <paramref name="condition"/> holds in the page; returns how long it took.</summary>
    private static async Task<TimeSpan> WaitForPageAsync(IPage page, string what, string condition, ConcurrentQueue<string> console)
    {
        var watch = Stopwatch.StartNew();
        try
        {
            await page.WaitForFunctionAsync("() => " + condition, null, new PageWaitForFunctionOptions { Timeout = (float)PageDeadline.TotalMilliseconds, PollingInterval = 100 });
        }
        catch (TimeoutException)
        {
            Assert.Fail($"the page did not show {what} within {PageDeadline.TotalSeconds} s; console:\n{string.Join('\n', console)}\npage:\n{await page.InnerTextAsync("main")}");
        }

        return watch.Elapsed;
    }

    private static FormUrlEncodedContent Form(string token) => new([new KeyValuePair<string, string>("token", token)]);

    /// <summary>Signs in with <paramref name="token"/>: the session cookie (<c>name=value</c>), after checking its attributes.</summary>
    private static async Task<string> LoginAsync(HttpClient http, string token)
    {
        using var answer = await http.PostAsync("/dashboard/login", Form(token));
        Assert.Equal(HttpStatusCode.SeeOther, answer.StatusCode);
        Assert.Equal("/dashboard/", answer.Headers.Location?.ToString());
        var cookie = answer.Headers.GetValues("Set-Cookie").Single();
        Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=strict", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(token, cookie, StringComparison.Ordinal);
        return cookie[..cookie.IndexOf(';', StringComparison.Ordinal)];
    }

    private static async Task<HttpResponseMessage> SendAsync(
        HttpClient http, HttpMethod method, string path, string? cookie = null, string? json = null, bool dashboardHeader = false, bool streamed = false)
    {
        using var request = new HttpRequestMessage(method, path) { Content = json is null ? null : new StringContent(json, Encoding.UTF8, "application/json") };
        if (cookie is not null)
        {
            request.Headers.Add("Cookie", cookie);
        }

        if (dashboardHeader)
        {
            request.Headers.Add("X-CallState-Dashboard", "1");
        }

        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("*/*"));
        return await http.SendAsync(request, streamed ? HttpCompletionOption.ResponseHeadersRead : HttpCompletionOption.ResponseContentRead);
    }
}
