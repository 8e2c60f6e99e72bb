using System.Text;
using CallState.Sip.Messages;

namespace CallState.SipEdge.Trust;

/// <summary>Why <see cref="DigestCredentials.TryParse(ReadOnlySpan{byte}, TextRange, out DigestCredentials, out DigestCredentialsError)"/> refused a value.</summary>
public enum DigestCredentialsError
{
    None = 0,

    /// <summary>The scheme is not <c>Digest</c> (RFC 3261 25.1 other-response).</summary>
    NotDigest,

    /// <summary>Not <c>Digest name=value *(, name=value)</c>: a bad token, an unterminated quoted string, a stray byte.</summary>
    Syntax,

    /// <summary>Longer than <see cref="DigestCredentials.MaxLength"/>.</summary>
    TooLong,

    /// <summary>A parameter the edge reads appears twice, so which one counts would be a guess.</summary>
    DuplicateParameter,

    /// <summary>One of username, realm, nonce, uri, response, cnonce, nc is absent.</summary>
    MissingParameter,

    /// <summary>An algorithm other than <c>MD5</c> and <c>SHA-256</c> (the <c>-sess</c> variants included).</summary>
    UnsupportedAlgorithm,

    /// <summary><c>qop</c> absent (RFC 2069 compatibility) or other than <c>auth</c>.</summary>
    UnsupportedQop,

    /// <summary><c>nc</c> is not 8 hex digits, or is zero (RFC 7616 3.4: the count starts at 1).</summary>
    BadNonceCount,

    /// <summary><c>response</c> is not hex of the algorithm's digest length.</summary>
    BadResponseFormat,

    /// <summary><c>userhash=true</c> (RFC 7616 3.4.4): the edge looks users up by name only.</summary>
    UnsupportedUserhash,
}

/// <summary>
/// The parameters of a <c>Digest</c> <c>Authorization</c> or <c>Proxy-Authorization</c> value (RFC 3261 25.1 digest-response,
/// RFC 7616 3.4), as ranges into the buffer that was parsed. A quoted value's range is its content between the quotes, with any
/// quoted-pair escapes still in it (<see cref="HasEscapes"/>); read values through <see cref="Value"/>.
/// </summary>
public readonly struct DigestCredentials
{
    /// <summary>Longest value parsed: bounds the work and the buffers of a verification; real headers are a few hundred bytes.</summary>
    public const int MaxLength = 4096;

    public TextRange Username { get; private init; }

    public TextRange Realm { get; private init; }

    public TextRange Nonce { get; private init; }

    public TextRange Uri { get; private init; }

    public TextRange Response { get; private init; }

    public TextRange Cnonce { get; private init; }

    /// <summary>The <c>nc</c> value as written (8 hex digits; hashed as written).</summary>
    public TextRange NonceCountText { get; private init; }

    /// <summary>The <c>qop</c> value as written (<c>auth</c> in any case; hashed as written).</summary>
    public TextRange Qop { get; private init; }

    /// <summary>The <c>opaque</c> value, empty when absent (the edge's challenges carry none).</summary>
    public TextRange Opaque { get; private init; }

    public uint NonceCount { get; private init; }

    /// <summary>The <c>algorithm</c> parameter; <see cref="DigestAlgorithm.Md5"/> when absent (RFC 7616 3.4).</summary>
    public DigestAlgorithm Algorithm { get; private init; }

    /// <summary>True when some quoted value holds a <c>\</c> escape, so <see cref="Value"/> has to copy it.</summary>
    public bool HasEscapes { get; private init; }

    /// <summary>Parses a whole header value.</summary>
    public static bool TryParse(ReadOnlySpan<byte> value, out DigestCredentials credentials, out DigestCredentialsError error) =>
        TryParse(value, new TextRange(0, value.Length), out credentials, out error);

    /// <summary>
    /// Parses the header value at <paramref name="value"/> in <paramref name="source"/> (for example a message buffer and a
    /// <see cref="SipHeaderField.Value"/>); the ranges of <paramref name="credentials"/> index <paramref name="source"/>.
    /// Never throws for any bytes in range.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> source, TextRange value, out DigestCredentials credentials, out DigestCredentialsError error)
    {
        credentials = default;
        if (value.Length > MaxLength)
        {
            error = DigestCredentialsError.TooLong;
            return false;
        }

        var s = source[..value.End];
        var i = SkipLws(s, value.Start);
        var schemeEnd = SkipToken(s, i);
        if (!Ascii.EqualsIgnoreCase(s[i..schemeEnd], "Digest"u8))
        {
            error = schemeEnd == i && i < s.Length ? DigestCredentialsError.Syntax : DigestCredentialsError.NotDigest;
            return false;
        }

        // RFC 3261 25.1: "Digest" LWS digest-response.
        if (schemeEnd >= s.Length || !IsLws(s[schemeEnd]))
        {
            error = schemeEnd >= s.Length ? DigestCredentialsError.MissingParameter : DigestCredentialsError.Syntax;
            return false;
        }

        TextRange username = default, realm = default, nonce = default, uri = default, response = default, cnonce = default,
            nc = default, qop = default, opaque = default, algorithm = default, userhash = default;
        var seen = 0;
        var escapes = false;
        i = schemeEnd;
        while (true)
        {
            i = SkipLws(s, i);
            var nameEnd = SkipToken(s, i);
            if (nameEnd == i)
            {
                error = DigestCredentialsError.Syntax;
                return false;
            }

            var name = s[i..nameEnd];
            i = SkipLws(s, nameEnd);
            if (i >= s.Length || s[i] != '=')
            {
                error = DigestCredentialsError.Syntax;
                return false;
            }

            i = SkipLws(s, i + 1);
            if (!TryReadValue(s, ref i, out var range, out var escaped))
            {
                error = DigestCredentialsError.Syntax;
                return false;
            }

            var bit = Ascii.EqualsIgnoreCase(name, "username"u8) ? Set(ref username, range, 1)
                : Ascii.EqualsIgnoreCase(name, "realm"u8) ? Set(ref realm, range, 2)
                : Ascii.EqualsIgnoreCase(name, "nonce"u8) ? Set(ref nonce, range, 4)
                : Ascii.EqualsIgnoreCase(name, "uri"u8) ? Set(ref uri, range, 8)
                : Ascii.EqualsIgnoreCase(name, "response"u8) ? Set(ref response, range, 16)
                : Ascii.EqualsIgnoreCase(name, "cnonce"u8) ? Set(ref cnonce, range, 32)
                : Ascii.EqualsIgnoreCase(name, "nc"u8) ? Set(ref nc, range, 64)
                : Ascii.EqualsIgnoreCase(name, "qop"u8) ? Set(ref qop, range, 128)
                : Ascii.EqualsIgnoreCase(name, "opaque"u8) ? Set(ref opaque, range, 256)
                : Ascii.EqualsIgnoreCase(name, "algorithm"u8) ? Set(ref algorithm, range, 512)
                : Ascii.EqualsIgnoreCase(name, "userhash"u8) ? Set(ref userhash, range, 1024)
                : 0; // RFC 3261 25.1 auth-param: other parameters are ignored.
            if ((seen & bit) != 0)
            {
                error = DigestCredentialsError.DuplicateParameter;
                return false;
            }

            seen |= bit;
            escapes |= escaped && bit != 0;
            i = SkipLws(s, i);
            if (i >= s.Length)
            {
                break;
            }

            // RFC 3261 25.1: COMMA = SWS "," SWS between dig-resp entries.
            if (s[i] != ',')
            {
                error = DigestCredentialsError.Syntax;
                return false;
            }

            i++;
        }

        var alg = DigestAlgorithm.Md5;
        if ((seen & 512) != 0 && !DigestAlgorithms.TryParse(algorithm.Of(s), out alg))
        {
            error = DigestCredentialsError.UnsupportedAlgorithm;
            return false;
        }

        if ((seen & 1024) != 0 && Ascii.EqualsIgnoreCase(userhash.Of(s), "true"u8))
        {
            error = DigestCredentialsError.UnsupportedUserhash;
            return false;
        }

        const int required = 1 | 2 | 4 | 8 | 16 | 32 | 64;
        if ((seen & required) != required)
        {
            error = DigestCredentialsError.MissingParameter;
            return false;
        }

        if ((seen & 128) == 0 || !Ascii.EqualsIgnoreCase(qop.Of(s), "auth"u8))
        {
            error = DigestCredentialsError.UnsupportedQop;
            return false;
        }

        if (!TryParseNonceCount(nc.Of(s), out var count))
        {
            error = DigestCredentialsError.BadNonceCount;
            return false;
        }

        if (response.Length != DigestHash.HexLength(alg) || !IsHex(response.Of(s)))
        {
            error = DigestCredentialsError.BadResponseFormat;
            return false;
        }

        credentials = new DigestCredentials
        {
            Username = username,
            Realm = realm,
            Nonce = nonce,
            Uri = uri,
            Response = response,
            Cnonce = cnonce,
            NonceCountText = nc,
            Qop = qop,
            Opaque = opaque,
            NonceCount = count,
            Algorithm = alg,
            HasEscapes = escapes,
        };
        error = DigestCredentialsError.None;
        return true;
    }

    /// <summary>
    /// The value of <paramref name="range"/> without quoted-pair escapes: the bytes in <paramref name="source"/> when it has none,
    /// else a copy in <paramref name="scratch"/> starting at <paramref name="used"/>, which advances past it.
    /// <paramref name="scratch"/> needs at most the header value's length over all values read.
    /// </summary>
    public static ReadOnlySpan<byte> Value(ReadOnlySpan<byte> source, TextRange range, Span<byte> scratch, ref int used)
    {
        var raw = range.Of(source);
        if (raw.IndexOf((byte)'\\') < 0)
        {
            return raw;
        }

        var start = used;
        for (var i = 0; i < raw.Length; i++)
        {
            // A token never holds a backslash, so every backslash here opens a quoted-pair (RFC 3261 25.1).
            if (raw[i] == '\\' && i + 1 < raw.Length)
            {
                i++;
            }

            scratch[used++] = raw[i];
        }

        return scratch[start..used];
    }

    /// <summary>The user name as text (unescaped, UTF-8), for the credential store and logs.</summary>
    public string GetUser(ReadOnlySpan<byte> source)
    {
        var scratch = Username.Length <= 256 ? stackalloc byte[256] : new byte[Username.Length];
        var used = 0;
        return Encoding.UTF8.GetString(Value(source, Username, scratch, ref used));
    }

    private static int Set(ref TextRange field, TextRange value, int bit)
    {
        field = value;
        return bit;
    }

    /// <summary>Reads a quoted-string (range: its content) or a token at <paramref name="i"/>; <paramref name="i"/> moves past it.</summary>
    private static bool TryReadValue(ReadOnlySpan<byte> s, ref int i, out TextRange value, out bool escaped)
    {
        value = default;
        escaped = false;
        if (i >= s.Length)
        {
            return false;
        }

        if (s[i] != '"')
        {
            var end = SkipToken(s, i);
            if (end == i)
            {
                return false;
            }

            value = TextRange.FromBounds(i, end);
            i = end;
            return true;
        }

        // RFC 3261 25.1 quoted-string: qdtext (LWS, printable ASCII but <"> and "\", UTF-8) or quoted-pair ("\" and a byte
        // other than CR and LF).
        for (var j = i + 1; j < s.Length; j++)
        {
            var b = s[j];
            if (b == '"')
            {
                value = TextRange.FromBounds(i + 1, j);
                i = j + 1;
                return true;
            }

            if (b == '\\')
            {
                if (j + 1 >= s.Length || s[j + 1] is (byte)'\r' or (byte)'\n')
                {
                    return false;
                }

                escaped = true;
                j++;
            }
            else if ((b < 0x20 && !IsLws(b)) || b == 0x7F)
            {
                return false;
            }
        }

        return false;
    }

    /// <summary>RFC 7616 3.4: nc-value = 8LHEX (upper-case digits accepted too), and never 0.</summary>
    private static bool TryParseNonceCount(ReadOnlySpan<byte> text, out uint count)
    {
        count = 0;
        if (text.Length != 8)
        {
            return false;
        }

        foreach (var b in text)
        {
            var digit = HexValue(b);
            if (digit < 0)
            {
                return false;
            }

            count = (count << 4) | (uint)digit;
        }

        return count != 0;
    }

    private static bool IsHex(ReadOnlySpan<byte> text)
    {
        foreach (var b in text)
        {
            if (HexValue(b) < 0)
            {
                return false;
            }
        }

        return true;
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };

    /// <summary>RFC 3261 25.1 token characters: alphanumerics and <c>-.!%*_+`'~</c>.</summary>
    private static bool IsToken(byte b) =>
        (uint)((b | 0x20) - 'a') <= 'z' - 'a' || (uint)(b - '0') <= 9
        || b is (byte)'-' or (byte)'.' or (byte)'!' or (byte)'%' or (byte)'*' or (byte)'_' or (byte)'+' or (byte)'`' or (byte)'\'' or (byte)'~';

    /// <summary>Linear white space in a header value: SP, HT, and the CR LF of a folded line.</summary>
    private static bool IsLws(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n';

    private static int SkipToken(ReadOnlySpan<byte> s, int i)
    {
        while (i < s.Length && IsToken(s[i]))
        {
            i++;
        }

        return i;
    }

    private static int SkipLws(ReadOnlySpan<byte> s, int i)
    {
        while (i < s.Length && IsLws(s[i]))
        {
            i++;
        }

        return i;
    }
}
