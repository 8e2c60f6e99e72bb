using System.Buffers;
using System.Text;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Trust;

public sealed class DigestChallengeTests
{
    [Fact]
    public void A_proxy_challenge_offers_SHA_256_then_MD5_with_one_fresh_nonce()
    {
        var edge = new TestEdge();

        var text = edge.Challenge.Build(stale: false);
        var lines = DigestClient.ReadChallenge(text);

        Assert.Equal(407, edge.Challenge.Status);
        Assert.Equal(["SHA-256", "MD5"], lines.Select(l => l.Algorithm));
        Assert.All(lines, l =>
        {
            Assert.Equal("Proxy-Authenticate", l.Header);
            Assert.Equal(TestEdge.Realm, l.Realm);
            Assert.Equal("auth", l.Qop);
            Assert.False(l.Stale);
            Assert.Equal(lines[0].Nonce, l.Nonce);
        });
        Assert.Equal(NonceStatus.Valid, edge.Nonces.Verify(Encoding.ASCII.GetBytes(lines[0].Nonce), Encoding.UTF8.GetBytes(TestEdge.Realm), out _));
        Assert.StartsWith($"Proxy-Authenticate: Digest realm=\"{TestEdge.Realm}\", nonce=\"{lines[0].Nonce}\", algorithm=SHA-256, qop=\"auth\"\r\n", text);
    }

    [Fact]
    public void Each_challenge_carries_a_new_nonce()
    {
        var edge = new TestEdge();
        var first = edge.Challenged().Nonce;
        edge.Time.Advance(TimeSpan.FromMilliseconds(1));

        Assert.NotEqual(first, edge.Challenged().Nonce);
    }

    [Fact]
    public void After_a_stale_nonce_every_line_says_stale()
    {
        var lines = DigestClient.ReadChallenge(new TestEdge().Challenge.Build(stale: true));

        Assert.Equal(2, lines.Count);
        Assert.All(lines, l => Assert.True(l.Stale));
    }

    [Fact]
    public void A_server_challenge_is_a_401_with_WWW_Authenticate()
    {
        var edge = new TestEdge(role: DigestRole.Server);

        Assert.Equal(401, edge.Challenge.Status);
        Assert.All(DigestClient.ReadChallenge(edge.Challenge.Build(false)), l => Assert.Equal("WWW-Authenticate", l.Header));
    }

    [Fact]
    public void The_preferred_algorithm_comes_first_whatever_the_configured_order()
    {
        var nonces = new NonceService(TestEdge.Secret, new FakeTimeProvider());

        var both = new DigestChallenge("r", [DigestAlgorithm.Md5, DigestAlgorithm.Sha256, DigestAlgorithm.Md5], nonces);
        var md5Only = new DigestChallenge("r", [DigestAlgorithm.Md5], nonces);

        Assert.Equal(["SHA-256", "MD5"], DigestClient.ReadChallenge(both.Build(false)).Select(l => l.Algorithm));
        Assert.Equal(["MD5"], DigestClient.ReadChallenge(md5Only.Build(false)).Select(l => l.Algorithm));
    }

    [Fact]
    public void The_realm_is_written_as_a_quoted_string_and_writes_to_a_buffer_writer()
    {
        var challenge = new DigestChallenge("a \"quoted\" \\ realm", [DigestAlgorithm.Sha256], new NonceService(TestEdge.Secret, new FakeTimeProvider()));
        var writer = new ArrayBufferWriter<byte>();

        challenge.WriteTo(writer, stale: false);

        var text = Encoding.UTF8.GetString(writer.WrittenSpan);
        Assert.StartsWith("Proxy-Authenticate: Digest realm=\"a \\\"quoted\\\" \\\\ realm\", nonce=\"", text);
        Assert.Equal("a \"quoted\" \\ realm", DigestClient.ReadChallenge(text).Single().Realm);
    }

    [Theory]
    [InlineData("evil\r\nVia: x")]
    [InlineData("tab\there")]
    public void A_realm_with_control_characters_is_refused(string realm)
    {
        var nonces = new NonceService(TestEdge.Secret, new FakeTimeProvider());

        Assert.Throws<ArgumentException>(() => new DigestChallenge(realm, [DigestAlgorithm.Sha256], nonces));
    }
}
