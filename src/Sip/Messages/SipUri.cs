using System.Text;

namespace CallState.Sip.Messages;

/// <summary>URI schemes a proxy can route (RFC 3261 19.1 and RFC 3966); any other is <see cref="Other"/>.</summary>
public enum SipUriScheme : byte
{
    Other = 0,
    Sip,
    Sips,
    Tel,
}

/// <summary>
/// A URI as ranges into its message: for <c>sip:</c> and <c>sips:</c> the user, password, host, port, parameters
/// and headers (RFC 3261 19.1.1); for <c>tel:</c> the number in <see cref="User"/> and its parameters.
/// </summary>
public readonly struct SipUri
{
    public SipUriScheme Scheme { get; init; }

    /// <summary>The whole URI.</summary>
    public TextRange Whole { get; init; }

    public TextRange User { get; init; }

    public TextRange Password { get; init; }

    public TextRange Host { get; init; }

    /// <summary>The port, or -1 when the URI names none.</summary>
    public int Port { get; init; }

    /// <summary>URI parameters starting at the first <c>;</c>, or empty.</summary>
    public TextRange Parameters { get; init; }

    /// <summary>URI headers after <c>?</c> (without it), or empty.</summary>
    public TextRange Headers { get; init; }

    /// <summary>True when the URI has a header part (<c>?</c>), which a Request-URI must not (RFC 3261 19.1.1 table 1).</summary>
    public bool HasHeaders { get; init; }

    /// <summary>Whether the URI carries the <c>lr</c> parameter (RFC 3261 19.1.1 loose routing).</summary>
    public bool IsLooseRouter(ReadOnlySpan<byte> s) => SipParameters.TryFindUriParameter(s, Parameters, "lr"u8, out _);

    /// <summary>
    /// Parses the URI in <paramref name="s"/>[start..end). Unknown schemes parse with only <see cref="Whole"/> set
    /// (they need a scheme and no white space or angle brackets).
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> s, int start, int end, out SipUri uri)
    {
        uri = default;
        if (start >= end || !SipSyntax.IsAlpha(s[start]))
        {
            return false;
        }
        var i = start + 1;
        while (i < end && (SipSyntax.IsAlpha(s[i]) || SipSyntax.IsDigit(s[i]) || s[i] is (byte)'+' or (byte)'-' or (byte)'.'))
        {
            i++;
        }
        if (i >= end || s[i] != ':')
        {
            return false;
        }
        var schemeText = s[start..i];
        var scheme = schemeText.Length switch
        {
            3 when Ascii.EqualsIgnoreCase(schemeText, "sip"u8) => SipUriScheme.Sip,
            4 when Ascii.EqualsIgnoreCase(schemeText, "sips"u8) => SipUriScheme.Sips,
            3 when Ascii.EqualsIgnoreCase(schemeText, "tel"u8) => SipUriScheme.Tel,
            _ => SipUriScheme.Other,
        };
        var rest = i + 1;
        if (rest >= end)
        {
            return false;
        }
        for (var k = rest; k < end; k++)
        {
            var b = s[k];
            if (b <= ' ' || b is (byte)'<' or (byte)'>' or (byte)'"' or 0x7f)
            {
                return false;
            }
        }
        var whole = TextRange.FromBounds(start, end);
        switch (scheme)
        {
            case SipUriScheme.Sip or SipUriScheme.Sips:
                return TryParseSip(s, scheme, whole, rest, end, out uri);
            case SipUriScheme.Tel:
                var semi = s[rest..end].IndexOf((byte)';');
                var numberEnd = semi < 0 ? end : rest + semi;
                if (numberEnd == rest)
                {
                    return false;
                }
                uri = new SipUri
                {
                    Scheme = scheme,
                    Whole = whole,
                    User = TextRange.FromBounds(rest, numberEnd),
                    Port = -1,
                    Parameters = TextRange.FromBounds(numberEnd, end),
                };
                return true;
            default:
                uri = new SipUri { Scheme = scheme, Whole = whole, Port = -1 };
                return true;
        }
    }

    private static bool TryParseSip(ReadOnlySpan<byte> s, SipUriScheme scheme, TextRange whole, int i, int end, out SipUri uri)
    {
        uri = default;
        TextRange user = default, password = default;
        var at = s[i..end].IndexOf((byte)'@');
        if (at >= 0)
        {
            var userEnd = i + at;
            if (!ValidEscapes(s, i, userEnd))
            {
                return false;
            }
            var colon = s[i..userEnd].IndexOf((byte)':');
            user = colon < 0 ? TextRange.FromBounds(i, userEnd) : TextRange.FromBounds(i, i + colon);
            password = colon < 0 ? default : TextRange.FromBounds(i + colon + 1, userEnd);
            if (user.IsEmpty)
            {
                return false;
            }
            i = userEnd + 1;
        }
        var hostStart = i;
        i = SipSyntax.SkipHost(s, i, end);
        if (i == hostStart)
        {
            return false;
        }
        var host = TextRange.FromBounds(hostStart, i);
        var port = -1;
        if (i < end && s[i] == ':')
        {
            var portStart = ++i;
            while (i < end && SipSyntax.IsDigit(s[i]))
            {
                i++;
            }
            if (!SipSyntax.TryParseNumber(s[portStart..i], 65535, out var p))
            {
                return false;
            }
            port = (int)p;
        }
        var paramStart = i;
        if (i < end && s[i] != ';' && s[i] != '?')
        {
            return false;
        }
        var question = s[i..end].IndexOf((byte)'?');
        var paramEnd = question < 0 ? end : i + question;
        for (var k = paramStart; k < paramEnd; k++)
        {
            if (!SipSyntax.IsUriChar(s[k]) || s[k] == '@')
            {
                return false;
            }
        }
        if (!ValidEscapes(s, paramStart, end))
        {
            return false;
        }
        uri = new SipUri
        {
            Scheme = scheme,
            Whole = whole,
            User = user,
            Password = password,
            Host = host,
            Port = port,
            Parameters = TextRange.FromBounds(paramStart, paramEnd),
            Headers = question < 0 ? default : TextRange.FromBounds(paramEnd + 1, end),
            HasHeaders = question >= 0,
        };
        return true;
    }

    private static bool ValidEscapes(ReadOnlySpan<byte> s, int start, int end)
    {
        for (var k = start; k < end; k++)
        {
            if (s[k] == '%' && !(IsHex(s, k + 1, end) && IsHex(s, k + 2, end)))
            {
                return false;
            }
        }
        return true;
    }

    private static bool IsHex(ReadOnlySpan<byte> s, int k, int end) =>
        k < end && (SipSyntax.IsDigit(s[k]) || (uint)((s[k] | 0x20) - 'a') <= 5);

    /// <summary>
    /// RFC 3261 19.1.4 comparison of two SIP URIs (which may live in different buffers): user and password compare
    /// after unescaping and with case, host without case, ports must both be absent or equal, the user, ttl, method,
    /// maddr and transport parameters must match when either has them, other parameters only when both have them.
    /// </summary>
    public static bool AreEquivalent(ReadOnlySpan<byte> a, in SipUri x, ReadOnlySpan<byte> b, in SipUri y)
    {
        if (x.Scheme != y.Scheme || x.Scheme is SipUriScheme.Other)
        {
            return x.Scheme == SipUriScheme.Other && y.Scheme == SipUriScheme.Other && x.Whole.Of(a).SequenceEqual(y.Whole.Of(b));
        }
        if (!UnescapedEqual(x.User.Of(a), y.User.Of(b), ignoreCase: false)
            || !UnescapedEqual(x.Password.Of(a), y.Password.Of(b), ignoreCase: false)
            || !UnescapedEqual(x.Host.Of(a), y.Host.Of(b), ignoreCase: true)
            || x.Port != y.Port)
        {
            return false;
        }
        return ParametersMatch(a, x.Parameters, b, y.Parameters) && ParametersMatch(b, y.Parameters, a, x.Parameters);
    }

    private static bool ParametersMatch(ReadOnlySpan<byte> a, TextRange pa, ReadOnlySpan<byte> b, TextRange pb)
    {
        var i = pa.Start;
        var end = pa.End;
        while (i < end)
        {
            i++;
            var semi = a[i..end].IndexOf((byte)';');
            var itemEnd = semi < 0 ? end : i + semi;
            var eq = a[i..itemEnd].IndexOf((byte)'=');
            var name = eq < 0 ? a[i..itemEnd] : a[i..(i + eq)];
            var value = eq < 0 ? default : a[(i + eq + 1)..itemEnd];
            var mustMatch = Ascii.EqualsIgnoreCase(name, "user"u8) || Ascii.EqualsIgnoreCase(name, "ttl"u8)
                || Ascii.EqualsIgnoreCase(name, "method"u8) || Ascii.EqualsIgnoreCase(name, "maddr"u8)
                || Ascii.EqualsIgnoreCase(name, "transport"u8);
            if (SipParameters.TryFindUriParameter(b, pb, name, out var other))
            {
                if (!UnescapedEqual(value, other.Of(b), ignoreCase: true))
                {
                    return false;
                }
            }
            else if (mustMatch)
            {
                return false;
            }
            i = itemEnd;
        }
        return true;
    }

    /// <summary>Compares two URI components after decoding <c>%HH</c> escapes.</summary>
    public static bool UnescapedEqual(ReadOnlySpan<byte> x, ReadOnlySpan<byte> y, bool ignoreCase)
    {
        int i = 0, j = 0;
        while (i < x.Length && j < y.Length)
        {
            var cx = Next(x, ref i);
            var cy = Next(y, ref j);
            if (ignoreCase ? SipSyntax.ToLower(cx) != SipSyntax.ToLower(cy) : cx != cy)
            {
                return false;
            }
        }
        return i == x.Length && j == y.Length;
    }

    /// <summary>Decodes <c>%HH</c> escapes into <paramref name="destination"/>; returns the bytes written.</summary>
    public static int Unescape(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        int i = 0, n = 0;
        while (i < source.Length && n < destination.Length)
        {
            destination[n++] = Next(source, ref i);
        }
        return n;
    }

    private static byte Next(ReadOnlySpan<byte> s, ref int i)
    {
        var b = s[i];
        if (b == '%' && IsHex(s, i + 1, s.Length) && IsHex(s, i + 2, s.Length))
        {
            i += 3;
            return (byte)((HexValue(s[i - 2]) << 4) | HexValue(s[i - 1]));
        }
        i++;
        return b;
    }

    private static int HexValue(byte b) => SipSyntax.IsDigit(b) ? b - '0' : (b | 0x20) - 'a' + 10;
}
