using System.Text;
using CallState.SipEdge.Trust;

namespace CallState.SipEdge.Tests.Trust;

/// <summary>The worked example of RFC 7616 section 3.9.1 (user Mufasa, password "Circle of Life").</summary>
public sealed class DigestHashTests
{
    private const string Realm = "http-auth@example.org";
    private const string Nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    private const string Cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    [Theory]
    [InlineData(DigestAlgorithm.Md5, "8ca523f5e9506fed4657c9700eebdbec")]
    [InlineData(DigestAlgorithm.Sha256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")]
    public void Rfc7616_section_3_9_1_responses(DigestAlgorithm algorithm, string expected)
    {
        var ha1 = DigestHash.Ha1(algorithm, "Mufasa", Realm, "Circle of Life");

        Assert.Equal(expected, DigestHash.Response(algorithm, ha1, "GET", "/dir/index.html", Nonce, "00000001", Cnonce));
    }

    [Theory]
    [InlineData("MD5", "8ca523f5e9506fed4657c9700eebdbec")]
    [InlineData("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")]
    public void Rfc7616_section_3_9_1_authorization_parses_and_its_response_recomputes(string algorithm, string response)
    {
        var value = Encoding.UTF8.GetBytes(
            $"Digest username=\"Mufasa\",\r\n    realm=\"{Realm}\",\r\n    uri=\"/dir/index.html\",\r\n    algorithm={algorithm},\r\n" +
            $"    nonce=\"{Nonce}\",\r\n    nc=00000001,\r\n    cnonce=\"{Cnonce}\",\r\n    qop=auth,\r\n    response=\"{response}\",\r\n" +
            "    opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"");

        Assert.True(DigestCredentials.TryParse(value, out var c, out var error), error.ToString());
        Assert.Equal("Mufasa", c.GetUser(value));
        Assert.Equal(Realm, Text(value, c.Realm));
        Assert.Equal("/dir/index.html", Text(value, c.Uri));
        Assert.Equal(Nonce, Text(value, c.Nonce));
        Assert.Equal(Cnonce, Text(value, c.Cnonce));
        Assert.Equal("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", Text(value, c.Opaque));
        Assert.Equal(1u, c.NonceCount);
        Assert.False(c.HasEscapes);

        var ha1 = DigestHash.Ha1(c.Algorithm, "Mufasa", Realm, "Circle of Life");
        Assert.Equal(response, DigestHash.Response(c.Algorithm, ha1, "GET", Text(value, c.Uri), Text(value, c.Nonce),
            Text(value, c.NonceCountText), Text(value, c.Cnonce)));
    }

    [Fact]
    public void Ha1_is_lower_case_hex_of_the_algorithms_length()
    {
        var md5 = DigestHash.Ha1(DigestAlgorithm.Md5, "Mufasa", Realm, "Circle of Life");
        var sha = DigestHash.Ha1(DigestAlgorithm.Sha256, "Mufasa", Realm, "Circle of Life");

        Assert.Equal(DigestClient.Hex("MD5", $"Mufasa:{Realm}:Circle of Life"), md5);
        Assert.Equal(DigestClient.Hex("SHA-256", $"Mufasa:{Realm}:Circle of Life"), sha);
        Assert.Equal(32, md5.Length);
        Assert.Equal(64, sha.Length);
    }

    [Fact]
    public void A_long_uri_is_hashed_through_a_pooled_buffer_with_the_same_result()
    {
        var uri = "sip:" + new string('a', 3000) + "@callstate.example";
        var ha1 = DigestHash.Ha1(DigestAlgorithm.Sha256, "u", "r", "p");

        var expected = DigestClient.Hex("SHA-256", $"{ha1}:n:00000001:c:auth:{DigestClient.Hex("SHA-256", $"INVITE:{uri}")}");
        Assert.Equal(expected, DigestHash.Response(DigestAlgorithm.Sha256, ha1, "INVITE", uri, "n", "00000001", "c"));
    }

    private static string Text(byte[] source, CallState.Sip.Messages.TextRange range) => Encoding.UTF8.GetString(range.Of(source));
}
