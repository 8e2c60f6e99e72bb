using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using CallState.Sip.Messages;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Trust;

/// <summary>One challenge line as a client reads it.</summary>
internal sealed record ChallengeLine(string Header, string Realm, string Nonce, string Algorithm, string Qop, bool Stale);

/// <summary>
/// A digest client of the tests' own: reads challenge lines and answers them, hashing with string concatenation and
/// System.Security.Cryptography directly, so the product's <see cref="DigestHash"/> is not what checks itself.
/// </summary>
internal static partial class DigestClient
{
    [GeneratedRegex("""^(?<header>[A-Za-z-]+): Digest realm="(?<realm>(?:[^"\\]|\\.)*)", nonce="(?<nonce>[^"]*)", algorithm=(?<alg>[A-Z0-9-]+), qop="(?<qop>[^"]*)"(?<stale>, stale=true)?$""")]
    private static partial Regex LinePattern();

    public static List<ChallengeLine> ReadChallenge(string lines)
    {
        Assert.EndsWith("\r\n", lines);
        return
        [
            .. lines[..^2].Split("\r\n").Select(line =>
            {
                var m = LinePattern().Match(line);
                Assert.True(m.Success, $"not a challenge line: {line}");
                return new ChallengeLine(m.Groups["header"].Value, Regex.Replace(m.Groups["realm"].Value, @"\\(.)", "$1"),
                    m.Groups["nonce"].Value, m.Groups["alg"].Value, m.Groups["qop"].Value, m.Groups["stale"].Success);
            }),
        ];
    }

    public static string Hex(string algorithm, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
#pragma warning disable CA5351 // RFC 7616 MD5 answers are what the product must verify.
        return Convert.ToHexStringLower(algorithm == "MD5" ? MD5.HashData(bytes) : SHA256.HashData(bytes));
#pragma warning restore CA5351
    }

    /// <summary>The <c>Proxy-Authorization</c> (or <c>Authorization</c>) value answering <paramref name="challenge"/>.</summary>
    public static string Answer(ChallengeLine challenge, string user, string password, string method, string uri,
        int nc = 1, string cnonce = "0a4f113b", string? nonce = null, string? realm = null)
    {
        realm ??= challenge.Realm;
        nonce ??= challenge.Nonce;
        var ncText = nc.ToString("x8", System.Globalization.CultureInfo.InvariantCulture);
        var ha1 = Hex(challenge.Algorithm, $"{user}:{realm}:{password}");
        var ha2 = Hex(challenge.Algorithm, $"{method}:{uri}");
        var response = Hex(challenge.Algorithm, $"{ha1}:{nonce}:{ncText}:{cnonce}:auth:{ha2}");
        return $"Digest username=\"{Escape(user)}\", realm=\"{Escape(realm)}\", nonce=\"{nonce}\", uri=\"{uri}\", " +
            $"response=\"{response}\", algorithm={challenge.Algorithm}, cnonce=\"{cnonce}\", qop=auth, nc={ncText}";
    }

    private static string Escape(string text) => text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal);
}

/// <summary>Users and passwords; the store hands out HA1 computed by the test client, as a provisioning tool would.</summary>
internal sealed class TestStore(string realm, params (string User, string Password)[] users) : IDigestCredentialStore
{
    public bool TryGetHa1(string user, DigestAlgorithm algorithm, out string ha1Hex)
    {
        foreach (var (name, password) in users)
        {
            if (name == user)
            {
                ha1Hex = DigestClient.Hex(algorithm == DigestAlgorithm.Md5 ? "MD5" : "SHA-256", $"{user}:{realm}:{password}");
                return true;
            }
        }

        ha1Hex = "";
        return false;
    }
}

/// <summary>One edge: its clock, nonces, replay cache, challenge and verifier, over a shared secret.</summary>
internal sealed class TestEdge
{
    public const string Realm = "callstate.example";

    public static readonly byte[] Secret = [.. Enumerable.Range(1, 32).Select(i => (byte)(i * 7))];

    public TestEdge(FakeTimeProvider? time = null, byte[]? secret = null, DigestAlgorithm[]? algorithms = null, int maxNonces = 1000,
        DigestRole role = DigestRole.Proxy, IDigestCredentialStore? store = null)
    {
        Time = time ?? new FakeTimeProvider(new DateTimeOffset(2025, 3, 1, 12, 0, 0, TimeSpan.Zero));
        Nonces = new NonceService(secret ?? Secret, Time);
        Counts = new NonceCountCache(Time, maxNonces);
        algorithms ??= [DigestAlgorithm.Sha256, DigestAlgorithm.Md5];
        Challenge = new DigestChallenge(Realm, algorithms, Nonces, role);
        Verifier = new DigestVerifier(Realm, algorithms, store ?? new TestStore(Realm, ("alice", "wonderland"), ("bob", "builder")), Nonces, Counts);
    }

    public FakeTimeProvider Time { get; }

    public NonceService Nonces { get; }

    public NonceCountCache Counts { get; }

    public DigestChallenge Challenge { get; }

    public DigestVerifier Verifier { get; }

    /// <summary>The challenge line of <paramref name="algorithm"/> (<c>SHA-256</c> or <c>MD5</c>) from a fresh challenge.</summary>
    public ChallengeLine Challenged(string algorithm = "SHA-256", bool stale = false) =>
        DigestClient.ReadChallenge(Challenge.Build(stale)).Single(c => c.Algorithm == algorithm);

    /// <summary>Verifies a bare header value for <c>INVITE sip:bob@callstate.example</c>.</summary>
    public DigestResult Verify(string credentials, string requestUri = Requests.BobUri) =>
        Verifier.Verify("INVITE"u8, Encoding.UTF8.GetBytes(requestUri), Encoding.UTF8.GetBytes(credentials));
}

internal static class Requests
{
    public const string BobUri = "sip:bob@callstate.example";

    /// <summary>A parsed INVITE to <paramref name="requestUri"/> carrying <paramref name="headers"/> (complete lines without CR LF).</summary>
    public static SipMessage Invite(string requestUri = BobUri, params string[] headers)
    {
        var text = $"INVITE {requestUri} SIP/2.0\r\n" +
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-digest-1\r\n" +
            "Max-Forwards: 70\r\n" +
            "From: <sip:alice@callstate.example>;tag=a1\r\n" +
            "To: <sip:bob@callstate.example>\r\n" +
            "Call-ID: digest-test-1@192.0.2.10\r\n" +
            "CSeq: 1 INVITE\r\n" +
            string.Concat(headers.Select(h => h + "\r\n")) +
            "Content-Length: 0\r\n\r\n";
        var message = new SipMessage();
        Assert.Equal(SipParseError.None, message.Parse(Encoding.UTF8.GetBytes(text)));
        return message;
    }
}
