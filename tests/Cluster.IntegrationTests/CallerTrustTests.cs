using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.SipText;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Who may call as whom, against running standalone edges with the sample configuration (127.0.0.1 is a trusted PBX,
/// alice has digest credentials for realm example.com, password <c>alice-password</c>): callers from any other address
/// are challenged, refused after wrong credentials, and counted as the user they authenticated as, whatever their From
/// says (docs/security.md, "Who may call as whom"). Requests come from 127.0.0.5, an address no configuration trusts.
/// </summary>
[Collection(LoadTests.Name)]
public sealed partial class CallerTrustTests(ITestOutputHelper output) : IDisposable
{
    private static readonly IPAddress Untrusted = IPAddress.Parse("127.0.0.5");

    private readonly TempDirectory _temp = new("callstate-trust-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("SHA-256")]
    [InlineData("MD5")]
    public async Task A_spoofed_from_is_challenged_refused_with_wrong_credentials_and_counted_as_the_authenticated_user(string algorithm)
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        using var caller = new RawSipCaller(Untrusted, edge.SipPort);
        var uri = $"sip:bob@127.0.0.1:{edge.SipPort}";

        // From says alice; nothing vouches for it.
        var challenge = await caller.SendAsync(caller.Request("INVITE", uri, "auth1", null, sdp: true, branch: "z9hG4bKa1"), final: true);
        Assert.Equal(407, Status(challenge));
        await caller.SendOnlyAsync(caller.Request("ACK", uri, "auth1", ToTag(challenge), branch: "z9hG4bKa1"));
        var (realm, nonce) = Challenge(challenge, algorithm);
        Assert.Equal("example.com", realm);
        await AssertNothingHeldAsync(edge);

        // Wrong password: 403, and still nothing counted.
        var wrong = Credentials(algorithm, "alice", "guess", realm, nonce, "INVITE", uri, 1);
        var refused = await caller.SendAsync(caller.Request("INVITE", uri, "auth1", null, cseq: 2, sdp: true, branch: "z9hG4bKa2", headers: wrong), final: true);
        Assert.Equal(403, Status(refused));
        await caller.SendOnlyAsync(caller.Request("ACK", uri, "auth1", ToTag(refused), cseq: 2, branch: "z9hG4bKa2"));
        await AssertNothingHeldAsync(edge);

        // Right credentials for alice, with a From naming mallory: the call is alice's.
        var right = Credentials(algorithm, "alice", "alice-password", realm, nonce, "INVITE", uri, 2);
        var ok = await caller.SendAsync(caller.Request("INVITE", uri, "auth1", null, cseq: 3, sdp: true, branch: "z9hG4bKa3", user: "mallory", headers: right), final: true);
        output.WriteLine(FirstLine(ok));
        Assert.Equal(200, Status(ok));
        await caller.SendOnlyAsync(caller.Request("ACK", ContactUri(ok), "auth1", ToTag(ok), route: RecordRoute(ok), cseq: 3, user: "mallory"));
        await WaitForCountAsync(edge, "user/alice", 1);
        Assert.DoesNotContain(await LimitsAsync(edge, "user"), l => l.GetProperty("key").GetString() == "user/mallory");

        var bye = await caller.SendAsync(caller.Request("BYE", ContactUri(ok), "auth1", ToTag(ok), route: RecordRoute(ok), cseq: 4, user: "mallory"), final: true);
        Assert.Equal(200, Status(bye));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the BYE");
    }

    [Fact]
    public async Task A_replayed_nonce_count_and_a_stale_nonce_are_refused_and_another_edge_verifies_the_nonce()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-m", "1"]);
        string[] shortNonces = ["--CallState:Trust:Digest:NonceLifetime=00:00:04"];
        await using var first = await StandaloneEdge.StartAsync(Directory.CreateDirectory(Path.Combine(Data, "a")).FullName, uasPort, extra: shortNonces);
        await using var second = await StandaloneEdge.StartAsync(Directory.CreateDirectory(Path.Combine(Data, "b")).FullName, uasPort, extra: shortNonces);
        using var caller = new RawSipCaller(Untrusted, first.SipPort);
        using var toSecond = new RawSipCaller(Untrusted, second.SipPort);

        var uri = $"sip:bob@127.0.0.1:{first.SipPort}";
        var challenge = await caller.SendAsync(caller.Request("INVITE", uri, "nonce1", null, sdp: true, branch: "z9hG4bKn1"), final: true);
        Assert.Equal(407, Status(challenge));
        await caller.SendOnlyAsync(caller.Request("ACK", uri, "nonce1", ToTag(challenge), branch: "z9hG4bKn1"));
        var (realm, nonce) = Challenge(challenge, "SHA-256");

        // The second edge never saw this nonce: the shared secret is enough to verify it.
        var secondUri = $"sip:bob@127.0.0.1:{second.SipPort}";
        var credentials = Credentials("SHA-256", "alice", "alice-password", realm, nonce, "INVITE", secondUri, 1);
        var ok = await toSecond.SendAsync(toSecond.Request("INVITE", secondUri, "nonce2", null, sdp: true, branch: "z9hG4bKn2", headers: credentials), final: true);
        Assert.Equal(200, Status(ok));
        await toSecond.SendOnlyAsync(toSecond.Request("ACK", ContactUri(ok), "nonce2", ToTag(ok), route: RecordRoute(ok)));

        // The same credentials again (a captured INVITE replayed as a new call): refused, nothing counted.
        var replay = await toSecond.SendAsync(toSecond.Request("INVITE", secondUri, "nonce3", null, sdp: true, branch: "z9hG4bKn3", headers: credentials), final: true);
        Assert.Equal(403, Status(replay));
        await toSecond.SendOnlyAsync(toSecond.Request("ACK", secondUri, "nonce3", ToTag(replay), branch: "z9hG4bKn3"));

        // Past its lifetime, a nonce with the right password is stale: challenged again with stale=true.
        await Task.Delay(TimeSpan.FromSeconds(5));
        var late = Credentials("SHA-256", "alice", "alice-password", realm, nonce, "INVITE", uri, 5);
        var stale = await caller.SendAsync(caller.Request("INVITE", uri, "nonce4", null, sdp: true, branch: "z9hG4bKn4", headers: late), final: true);
        Assert.Equal(407, Status(stale));
        Assert.Contains("stale=true", stale, StringComparison.OrdinalIgnoreCase);
        await caller.SendOnlyAsync(caller.Request("ACK", uri, "nonce4", ToTag(stale), branch: "z9hG4bKn4"));

        await WaitForCountAsync(second, "user/alice", 1);
        await AssertNothingHeldAsync(first);
        var bye = await toSecond.SendAsync(toSecond.Request("BYE", ContactUri(ok), "nonce2", ToTag(ok), route: RecordRoute(ok), cseq: 2), final: true);
        Assert.Equal(200, Status(bye));
        await WaitForZeroAsync(second, TimeSpan.FromSeconds(10), "the BYE");
    }

    [Fact]
    public async Task A_source_guessing_passwords_is_refused_even_with_the_right_one()
    {
        await using var edge = await StandaloneEdge.StartAsync(Data, SipEdgeProcess.FreeUdpAndTcpPort(), extra: ["--CallState:Trust:Digest:MaxFailures=3"]);
        using var caller = new RawSipCaller(Untrusted, edge.SipPort);
        var uri = $"sip:bob@127.0.0.1:{edge.SipPort}";
        var statuses = new List<int>();
        for (var i = 0; i < 5; i++)
        {
            var challenge = await caller.SendAsync(caller.Request("INVITE", uri, $"guess{i}", null, branch: $"z9hG4bKg{i}a"), final: true);
            statuses.Add(Status(challenge));
            await caller.SendOnlyAsync(caller.Request("ACK", uri, $"guess{i}", ToTag(challenge), branch: $"z9hG4bKg{i}a"));
            if (Status(challenge) != 407)
            {
                continue;
            }
            var (realm, nonce) = Challenge(challenge, "SHA-256");
            var password = i < 3 ? "guess" + i : "alice-password";
            var answer = await caller.SendAsync(caller.Request("INVITE", uri, $"guess{i}", null, cseq: 2, branch: $"z9hG4bKg{i}b",
                headers: Credentials("SHA-256", "alice", password, realm, nonce, "INVITE", uri, 1)), final: true);
            statuses.Add(Status(answer));
            await caller.SendOnlyAsync(caller.Request("ACK", uri, $"guess{i}", ToTag(answer), cseq: 2, branch: $"z9hG4bKg{i}b"));
        }

        // Three wrong passwords (407 then 403 each), then the source is refused before any challenge.
        Assert.Equal([407, 403, 407, 403, 407, 403, 403, 403], statuses);
        Assert.True(await edge.OutputContainsAsync("blocked after failed authentications", TimeSpan.FromSeconds(5)));
        await AssertNothingHeldAsync(edge);
    }

    [Fact]
    public async Task Sipp_authenticating_with_md5_from_an_untrusted_address_is_counted_as_the_user()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-m", "1"]);
        // Debian's sipp answers only the first challenge and only with MD5: the edge offers MD5 alone.
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: ["--CallState:Trust:Digest:Algorithms:0=MD5"]);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_auth.xml"), "-inf", UsersFile(Data, "alice"), "-s", "bob",
            "-au", "alice", "-ap", "alice-password",
            "-i", "127.0.0.5", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", "4000",
            "-timeout", "40s", "-timeout_error", "-trace_msg"]);
        try
        {
            await WaitForCountAsync(edge, "user/alice", 1);
        }
        catch (Exception)
        {
            output.WriteLine(uac.Messages());
            throw;
        }
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(40));
        Assert.True(stats.Successful == 1, uac.Describe());
        Assert.Equal(1, Count(uac.Messages(), "SIP/2.0 407 Proxy Authentication Required"));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the authenticated call");
    }

    /// <summary>The realm and nonce of the challenge for <paramref name="algorithm"/> in a 407.</summary>
    private static (string Realm, string Nonce) Challenge(string response, string algorithm)
    {
        foreach (Match header in ProxyAuthenticate().Matches(response))
        {
            var value = header.Groups[1].Value;
            if (Parameter(value, "algorithm").Equals(algorithm, StringComparison.OrdinalIgnoreCase))
            {
                Assert.Equal("auth", Parameter(value, "qop"));
                return (Parameter(value, "realm"), Parameter(value, "nonce"));
            }
        }
        Assert.Fail($"no {algorithm} challenge in: {response}");
        return default;
    }

    private static string Parameter(string challenge, string name)
    {
        var match = Regex.Match(challenge, $@"(?:^|[\s,]){name}=(?:""([^""]*)""|([^,\s]+))", RegexOptions.IgnoreCase);
        return match.Groups[1].Success ? match.Groups[1].Value : match.Groups[2].Value;
    }

    /// <summary>The tests' own digest client (RFC 7616 3.4.1, qop=auth): a Proxy-Authorization header line.</summary>
    private static string Credentials(string algorithm, string user, string password, string realm, string nonce, string method, string uri, int nc)
    {
#pragma warning disable CA5351 // MD5 is what digest authentication with algorithm=MD5 is (RFC 7616 keeps it for old clients)
        string H(string text) => Convert.ToHexStringLower(algorithm == "MD5"
            ? MD5.HashData(Encoding.UTF8.GetBytes(text))
            : SHA256.HashData(Encoding.UTF8.GetBytes(text)));
#pragma warning restore CA5351
        var count = nc.ToString("x8", CultureInfo.InvariantCulture);
        const string Cnonce = "0a4f113b";
        var response = H($"{H($"{user}:{realm}:{password}")}:{nonce}:{count}:{Cnonce}:auth:{H($"{method}:{uri}")}");
        return $"Proxy-Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", " +
            $"response=\"{response}\", algorithm={algorithm}, cnonce=\"{Cnonce}\", qop=auth, nc={count}\r\n";
    }

    [GeneratedRegex(@"\r\nProxy-Authenticate:\s*Digest\s+([^\r]*)", RegexOptions.IgnoreCase)]
    private static partial Regex ProxyAuthenticate();
}
