using System.Net;
using CallState.Silo.Limits;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Trust;

/// <summary>Who an INVITE is counted as: trunks and trusted peers by source, everyone else by digest credentials.</summary>
public sealed class CallerTrustTests : IDisposable
{
    private const string Realm = "callstate.example";
    private static readonly IPAddress Pbx = IPAddress.Parse("10.0.0.5");
    private static readonly IPAddress Stranger = IPAddress.Parse("203.0.113.9");

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-12-06T10:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly string _directory = Directory.CreateTempSubdirectory("callstate-trust-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void A_trunk_source_is_believed_without_credentials()
    {
        using var invite = Requests.Invite();
        var verdict = Trust().Check(invite, Stranger, trunkSource: true);
        Assert.Equal(new TrustVerdict(TrustKind.Trunk, null), verdict);
    }

    [Theory]
    [InlineData(true, "<sip:Carol@pbx.example>", "carol")]
    [InlineData(true, null, null)]
    [InlineData(false, "<sip:carol@pbx.example>", null)]
    public void A_trusted_peer_is_believed_and_its_asserted_identity_names_the_caller(bool asserted, string? identity, string? expected)
    {
        var options = Options();
        options.Peers["pbx"].AssertedIdentity = asserted;
        using var invite = identity is null ? Requests.Invite() : Requests.Invite(Requests.BobUri, "P-Asserted-Identity: " + identity);

        var verdict = Trust(options).Check(invite, Pbx, trunkSource: false);

        Assert.Equal(TrustKind.Peer, verdict.Kind);
        Assert.Equal(expected, verdict.User);
    }

    [Fact]
    public void Without_digest_anyone_else_is_refused()
    {
        var options = Options();
        options.Digest = null;
        options.Credentials.Clear();
        using var invite = Requests.Invite();

        var verdict = Trust(options).Check(invite, Stranger, trunkSource: false);

        Assert.Equal((TrustKind.Refused, 403, "Forbidden (untrusted source)"), (verdict.Kind, verdict.Status, verdict.Reason));
    }

    [Fact]
    public void Anyone_else_is_challenged_then_counted_as_the_user_of_the_credentials_whatever_the_from_says()
    {
        var trust = Trust();
        using var first = Requests.Invite();
        var challenge = trust.Check(first, Stranger, trunkSource: false);
        Assert.Equal((TrustKind.Refused, 407), (challenge.Kind, challenge.Status));
        var line = DigestClient.ReadChallenge(challenge.Headers!).First(c => c.Algorithm == "SHA-256");

        // The From of Requests.Invite is alice; the credentials are carol's: the caller is carol.
        using var answered = Requests.Invite(Requests.BobUri,
            "Proxy-Authorization: " + DigestClient.Answer(line, "carol", "carol-password", "INVITE", Requests.BobUri));
        Assert.Equal(new TrustVerdict(TrustKind.Authenticated, "carol"), trust.Check(answered, Stranger, trunkSource: false));
    }

    [Fact]
    public void Wrong_credentials_are_refused_and_a_source_that_keeps_guessing_is_blocked_before_any_check()
    {
        var options = Options();
        options.Digest!.MaxFailures = 2;
        var trust = Trust(options);
        for (var i = 0; i < 2; i++)
        {
            using var first = Requests.Invite();
            var line = DigestClient.ReadChallenge(trust.Check(first, Stranger, false).Headers!)[0];
            using var guess = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + DigestClient.Answer(line, "carol", "guess" + i, "INVITE", Requests.BobUri));
            Assert.Equal((403, "Forbidden (authentication failed)"), (trust.Check(guess, Stranger, false).Status, trust.Check(guess, IPAddress.Parse("203.0.113.10"), false).Reason));
        }

        using var again = Requests.Invite();
        Assert.Equal((403, "Forbidden (too many failed authentications)"), (trust.Check(again, Stranger, false).Status, trust.Check(again, Stranger, false).Reason));

        // The block ends after its time.
        _time.Advance(options.Digest.BlockTime + TimeSpan.FromSeconds(1));
        Assert.Equal(407, trust.Check(again, Stranger, false).Status);
    }

    [Fact]
    public void Credentials_come_from_the_file_and_the_configuration_and_bad_entries_name_their_place()
    {
        var file = Path.Combine(_directory, "credentials.csv");
        File.WriteAllText(file, $"name,ha1_md5,ha1_sha256\n# comment\ndave,,{DigestClient.Hex("SHA-256", $"dave:{Realm}:dave-password")}\nerin,abc,\n");
        var options = Options();
        options.CredentialsFile = file;

        var errors = options.Validate();
        Assert.Equal([$"{file}:4: ha1_md5: must be 32 hex digits (the HA1, never the password)"], errors);

        File.WriteAllText(file, $"dave,,{DigestClient.Hex("SHA-256", $"dave:{Realm}:dave-password")}\n");
        Assert.Empty(options.Validate());
        var trust = Trust(options);
        using var first = Requests.Invite();
        var line = DigestClient.ReadChallenge(trust.Check(first, Stranger, false).Headers!).First(c => c.Algorithm == "SHA-256");
        using var answered = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + DigestClient.Answer(line, "dave", "dave-password", "INVITE", Requests.BobUri));
        Assert.Equal(new TrustVerdict(TrustKind.Authenticated, "dave"), trust.Check(answered, Stranger, false));
    }

    [Fact]
    public void Credentials_without_digest_and_bad_peer_sources_are_configuration_errors()
    {
        var options = Options();
        options.Digest = null;
        options.Peers["pbx"].Sources.Add("not-an-address");
        options.Credentials["carol"].Md5 = "1234";

        var errors = options.Validate();

        Assert.Contains(errors, e => e.StartsWith("CallState:Trust:Peers:pbx:Sources:1: ", StringComparison.Ordinal));
        Assert.Contains("CallState:Trust:Credentials:carol:Md5: must be 32 hex digits (the HA1, never the password)", errors);
        Assert.Contains(errors, e => e.StartsWith("CallState:Trust:Digest: credentials are configured", StringComparison.Ordinal));
    }

    private static TrustOptions Options() => new()
    {
        Peers = { ["pbx"] = new TrustedPeerOptions { Sources = ["10.0.0.0/24"] } },
        Digest = new DigestOptions { Realm = Realm, Secret = Convert.ToBase64String(TestEdge.Secret) },
        Credentials =
        {
            ["carol"] = new DigestCredentialOptions
            {
                Md5 = DigestClient.Hex("MD5", $"carol:{Realm}:carol-password"),
                Sha256 = DigestClient.Hex("SHA-256", $"carol:{Realm}:carol-password"),
            },
        },
    };

    private CallerTrust Trust(TrustOptions? options = null) => new(options ?? Options(), new LimitsOptions(), _time);
}
