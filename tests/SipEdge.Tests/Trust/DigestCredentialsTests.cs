using System.Globalization;
using System.Text;
using CallState.Sip.Messages;
using CallState.SipEdge.Trust;
using FsCheck;
using FsCheck.Fluent;

namespace CallState.SipEdge.Tests.Trust;

public sealed class DigestCredentialsTests
{
    private const string Md5Response = "0123456789abcdef0123456789abcdef";

    private const string Valid =
        "Digest username=\"alice\", realm=\"callstate.example\", nonce=\"n1\", uri=\"sip:bob@callstate.example\", " +
        "response=\"" + Md5Response + "\", cnonce=\"c1\", qop=auth, nc=00000001";

    private static readonly TestEdge Edge = new();

    /// <summary>Test counts scale with SIP_PROPERTY_SCALE (default 1), as in the parser's property tests.</summary>
    private static int Tests(int count) =>
        int.TryParse(Environment.GetEnvironmentVariable("SIP_PROPERTY_SCALE"), CultureInfo.InvariantCulture, out var scale) && scale > 1
            ? count * scale
            : count;

    private static (bool Ok, DigestCredentials Credentials, DigestCredentialsError Error) Parse(string value)
    {
        var ok = DigestCredentials.TryParse(Encoding.UTF8.GetBytes(value), out var c, out var error);
        return (ok, c, error);
    }

    [Fact]
    public void Ranges_index_the_message_buffer_when_given_a_field_value()
    {
        using var invite = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + Valid);
        var field = invite.Fields.ToArray().Single(f => Encoding.ASCII.GetString(f.Name.Of(invite.Span)) == "Proxy-Authorization");

        Assert.True(DigestCredentials.TryParse(invite.Span, field.Value, out var c, out _));
        Assert.Equal("alice", c.GetUser(invite.Span));
        Assert.Equal("sip:bob@callstate.example", Encoding.UTF8.GetString(c.Uri.Of(invite.Span)));
        Assert.Equal(DigestAlgorithm.Md5, c.Algorithm);
        Assert.InRange(c.Uri.Start, field.Value.Start, field.Value.End);
    }

    [Fact]
    public void Names_are_case_insensitive_and_whitespace_and_folding_are_allowed()
    {
        var response = string.Concat(Md5Response, Md5Response).ToUpperInvariant();
        var (ok, c, error) = Parse(
            "digest  USERNAME = \"alice\" ,\r\n Realm=\"callstate.example\",NONCE=\"n1\"\t,\tUri=\"sip:bob@callstate.example\"," +
            $"Response=\"{response}\", CNonce=\"c1\", QOP=\"auth\", NC=0000000A, Algorithm=\"sha-256\"");

        Assert.True(ok, error.ToString());
        Assert.Equal(DigestAlgorithm.Sha256, c.Algorithm);
        Assert.Equal(10u, c.NonceCount);
    }

    [Fact]
    public void Quoted_pairs_are_unescaped_and_unknown_parameters_ignored()
    {
        var value = Encoding.UTF8.GetBytes(Valid.Replace("\"alice\"", "\"al\\\"ice\\\\\"", StringComparison.Ordinal) + ", future=\"x, y\", other=token");

        Assert.True(DigestCredentials.TryParse(value, out var c, out var error), error.ToString());
        Assert.True(c.HasEscapes);
        Assert.Equal("al\"ice\\", c.GetUser(value));
    }

    [Theory]
    [InlineData("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", DigestCredentialsError.NotDigest)]
    [InlineData("", DigestCredentialsError.NotDigest)]
    [InlineData("Digest", DigestCredentialsError.MissingParameter)]
    [InlineData("Digest,username=\"a\"", DigestCredentialsError.Syntax)]
    [InlineData("Digest username=\"alice", DigestCredentialsError.Syntax)]
    [InlineData("Digest username=", DigestCredentialsError.Syntax)]
    [InlineData("Digest username=\"a\" realm=\"r\"", DigestCredentialsError.Syntax)]
    [InlineData("Digest username=\"a\",, realm=\"r\"", DigestCredentialsError.Syntax)]
    [InlineData("Digest username=\"a\x01\"", DigestCredentialsError.Syntax)]
    [InlineData("Digest username=\"a\\\r\n\"", DigestCredentialsError.Syntax)]
    [InlineData("Digest username=\"alice\", realm=\"r\"", DigestCredentialsError.MissingParameter)]
    public void Malformed_values_are_refused_with_a_reason(string value, DigestCredentialsError expected)
    {
        var (ok, _, error) = Parse(value);

        Assert.False(ok);
        Assert.Equal(expected, error);
    }

    [Theory]
    [InlineData("uri=\"sip:bob@callstate.example\", ", "", DigestCredentialsError.MissingParameter)]
    [InlineData("cnonce=\"c1\", ", "", DigestCredentialsError.MissingParameter)]
    [InlineData("nc=00000001", "nc=1", DigestCredentialsError.BadNonceCount)]
    [InlineData("nc=00000001", "nc=0000000g", DigestCredentialsError.BadNonceCount)]
    [InlineData("nc=00000001", "nc=00000000", DigestCredentialsError.BadNonceCount)]
    [InlineData("nc=00000001", "nc=000000001", DigestCredentialsError.BadNonceCount)]
    [InlineData("qop=auth", "qop=auth-int", DigestCredentialsError.UnsupportedQop)]
    [InlineData(", qop=auth", "", DigestCredentialsError.UnsupportedQop)]
    [InlineData("nc=00000001", "nc=00000001, algorithm=MD5-sess", DigestCredentialsError.UnsupportedAlgorithm)]
    [InlineData("nc=00000001", "nc=00000001, algorithm=SHA-256-sess", DigestCredentialsError.UnsupportedAlgorithm)]
    [InlineData("nc=00000001", "nc=00000001, algorithm=SHA-512-256", DigestCredentialsError.UnsupportedAlgorithm)]
    [InlineData("nc=00000001", "nc=00000001, algorithm=SHA-256", DigestCredentialsError.BadResponseFormat)]
    [InlineData(Md5Response, "0123456789abcdef", DigestCredentialsError.BadResponseFormat)]
    [InlineData(Md5Response, "0123456789abcdef0123456789abcdeg", DigestCredentialsError.BadResponseFormat)]
    [InlineData("nc=00000001", "nc=00000001, realm=\"other\"", DigestCredentialsError.DuplicateParameter)]
    [InlineData("nc=00000001", "nc=00000001, NC=00000002", DigestCredentialsError.DuplicateParameter)]
    [InlineData("nc=00000001", "nc=00000001, userhash=true", DigestCredentialsError.UnsupportedUserhash)]
    [InlineData("nc=00000001", "nc=00000001 trailing", DigestCredentialsError.Syntax)]
    public void Wrong_parameters_are_refused_with_a_reason(string replace, string with, DigestCredentialsError expected)
    {
        var (ok, _, error) = Parse(Valid.Replace(replace, with, StringComparison.Ordinal));

        Assert.False(ok);
        Assert.Equal(expected, error);
    }

    [Fact]
    public void The_valid_value_parses_and_userhash_false_is_accepted()
    {
        Assert.True(Parse(Valid).Ok);
        Assert.True(Parse(Valid + ", userhash=false").Ok);
    }

    [Fact]
    public void An_overlong_value_is_refused_before_it_is_read()
    {
        var (ok, _, error) = Parse(Valid + ", pad=\"" + new string('x', DigestCredentials.MaxLength) + "\"");

        Assert.False(ok);
        Assert.Equal(DigestCredentialsError.TooLong, error);
    }

    [Fact]
    public void Random_bytes_never_throw()
    {
        var bytes = Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b));
        var prefixed = bytes.Select(b => (byte[])[.. "Digest "u8, .. b]);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Tests(2000)), Prop.ForAll(Arb.From(Gen.OneOf(bytes, prefixed)), b =>
        {
            ParseAndRead(b);
            return true;
        }));
    }

    [Fact]
    public void Mutated_valid_values_never_throw_and_accepted_ones_keep_their_ranges_inside_the_value()
    {
        var seed = Encoding.UTF8.GetBytes(Valid.Replace("\"alice\"", "\"a\\\"lice\"", StringComparison.Ordinal) + ", opaque=\"o\"");
        byte[] interesting = [(byte)'"', (byte)'\\', (byte)',', (byte)'=', (byte)' ', (byte)'\r', (byte)'\n', 0, 0xFF, (byte)'a', (byte)'0'];
        var mutation =
            from count in Gen.Choose(1, 4)
            from edits in Gen.ArrayOf(
                from at in Gen.Choose(0, seed.Length - 1)
                from kind in Gen.Choose(0, 2)
                from value in Gen.OneOf(Gen.Elements(interesting), Gen.Choose(0, 255).Select(b => (byte)b))
                select (At: at, Kind: kind, Value: value), count)
            select edits;
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Tests(3000)), Prop.ForAll(Arb.From(mutation), edits =>
        {
            var bytes = seed.ToList();
            foreach (var (at, kind, value) in edits)
            {
                var i = Math.Min(at, bytes.Count - 1);
                switch (kind)
                {
                    case 0: bytes[i] = value; break;
                    case 1: bytes.Insert(i, value); break;
                    default: if (bytes.Count > 1) { bytes.RemoveAt(i); } break;
                }
            }

            ParseAndRead([.. bytes]);
            return true;
        }));
    }

    /// <summary>Parses in the middle of a larger buffer and, when accepted, reads every value as the verifier would.</summary>
    private static void ParseAndRead(byte[] value)
    {
        byte[] buffer = [.. "X: "u8, .. value, .. "\r\n"u8];
        var range = new TextRange(3, value.Length);
        if (!DigestCredentials.TryParse(buffer, range, out var c, out var error))
        {
            Assert.NotEqual(DigestCredentialsError.None, error);
            return;
        }

        var scratch = new byte[buffer.Length];
        var used = 0;
        foreach (var r in (TextRange[])[c.Username, c.Realm, c.Nonce, c.Uri, c.Response, c.Cnonce, c.NonceCountText, c.Qop, c.Opaque])
        {
            Assert.True(r == default || (r.Start >= range.Start && r.End <= range.End), $"range {r} outside {range}");
            DigestCredentials.Value(buffer, r, scratch, ref used);
        }

        _ = c.GetUser(buffer);
        _ = Edge.Verifier.Verify("INVITE"u8, "sip:bob@callstate.example"u8, value);
    }
}
