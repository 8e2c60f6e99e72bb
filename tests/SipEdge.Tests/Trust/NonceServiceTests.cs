using System.Text;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Trust;

public sealed class NonceServiceTests
{
    private static readonly byte[] Realm = "callstate.example"u8.ToArray();

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2025, 3, 1, 12, 0, 0, TimeSpan.Zero));

    private NonceService Service(byte[]? secret = null, FakeTimeProvider? time = null) => new(secret ?? TestEdge.Secret, time ?? _time);

    private static byte[] Issue(NonceService service)
    {
        var nonce = new byte[NonceService.NonceLength];
        service.Issue(Realm, nonce);
        return nonce;
    }

    [Fact]
    public void A_fresh_nonce_is_base64url_and_valid_until_its_lifetime_ends()
    {
        var service = Service();
        var nonce = Issue(service);

        Assert.Matches("^[A-Za-z0-9_-]{32}$", Encoding.ASCII.GetString(nonce));
        Assert.Equal(NonceStatus.Valid, service.Verify(nonce, Realm, out var expires));
        Assert.Equal(_time.GetUtcNow() + NonceService.DefaultLifetime, expires);

        _time.Advance(NonceService.DefaultLifetime);
        Assert.Equal(NonceStatus.Valid, service.Verify(nonce, Realm, out _));

        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(NonceStatus.Stale, service.Verify(nonce, Realm, out var staleExpires));
        Assert.Equal(expires, staleExpires);
    }

    [Fact]
    public void The_lifetime_is_configurable()
    {
        var service = new NonceService(TestEdge.Secret, _time, TimeSpan.FromSeconds(5));
        var nonce = Issue(service);

        _time.Advance(TimeSpan.FromSeconds(6));
        Assert.Equal(NonceStatus.Stale, service.Verify(nonce, Realm, out _));
    }

    [Fact]
    public void Another_edge_with_the_same_secret_verifies_the_nonce()
    {
        var nonce = Issue(Service());
        var otherEdge = Service(TestEdge.Secret.ToArray(), new FakeTimeProvider(_time.GetUtcNow() + TimeSpan.FromMilliseconds(300)));

        Assert.Equal(NonceStatus.Valid, otherEdge.Verify(nonce, Realm, out _));
    }

    [Fact]
    public void A_different_secret_or_realm_makes_the_nonce_invalid()
    {
        var nonce = Issue(Service());
        var otherSecret = TestEdge.Secret.ToArray();
        otherSecret[^1] ^= 1;

        Assert.Equal(NonceStatus.Invalid, Service(otherSecret).Verify(nonce, Realm, out _));
        Assert.Equal(NonceStatus.Invalid, Service().Verify(nonce, "other.example"u8, out _));
    }

    [Fact]
    public void Changing_any_character_makes_the_nonce_invalid()
    {
        var service = Service();
        var nonce = Issue(service);
        for (var i = 0; i < nonce.Length; i++)
        {
            var tampered = nonce.ToArray();
            tampered[i] = tampered[i] == (byte)'A' ? (byte)'B' : (byte)'A';

            Assert.Equal(NonceStatus.Invalid, service.Verify(tampered, Realm, out _));
        }
    }

    [Fact]
    public void A_nonce_from_further_in_the_future_than_the_clock_skew_is_invalid()
    {
        var aheadBySkew = Service(time: new FakeTimeProvider(_time.GetUtcNow() + NonceService.MaxClockSkew));
        var aheadFurther = Service(time: new FakeTimeProvider(_time.GetUtcNow() + NonceService.MaxClockSkew + TimeSpan.FromMilliseconds(1)));

        Assert.Equal(NonceStatus.Valid, Service().Verify(Issue(aheadBySkew), Realm, out _));
        Assert.Equal(NonceStatus.Invalid, Service().Verify(Issue(aheadFurther), Realm, out _));
    }

    [Theory]
    [InlineData("")]
    [InlineData("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    [InlineData("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    [InlineData("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")]
    [InlineData("AAAAAAAAAAAAAAAA+AAAAAAAAAAAAAA/")]
    [InlineData("AAAAAAAAAAAAAAAA AAAAAAAAAAAAAAA")]
    public void Malformed_nonces_are_invalid(string nonce)
    {
        Assert.Equal(NonceStatus.Invalid, Service().Verify(Encoding.ASCII.GetBytes(nonce), Realm, out _));
    }

    [Fact]
    public void A_secret_shorter_than_32_bytes_is_refused_naming_the_requirement()
    {
        var e = Assert.Throws<ArgumentException>(() => new NonceService(new byte[31], _time));

        Assert.Contains("at least 32 bytes", e.Message, StringComparison.Ordinal);
        Assert.Equal("secret", e.ParamName);
    }
}
