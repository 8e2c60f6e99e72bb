namespace CallState.Sip.Messages;

/// <summary>
/// Reads <c>;name[=value]</c> parameter lists (URI parameters and header parameters, RFC 3261 25.1 generic-param):
/// validation and case-insensitive lookup by name.
/// </summary>
public static class SipParameters
{
    /// <summary>
    /// Checks a header parameter list: each entry is <c>token [ "=" (token / host / quoted-string) ]</c> with optional
    /// LWS around the separators. The range starts at the first <c>;</c> (or is empty).
    /// </summary>
    public static bool Validate(ReadOnlySpan<byte> s, TextRange list)
    {
        var i = list.Start;
        var end = list.End;
        while (true)
        {
            i = SipSyntax.SkipLws(s, i, end);
            if (i >= end)
            {
                return true;
            }
            if (s[i] != ';')
            {
                return false;
            }
            if (!TryReadParameter(s, i + 1, end, out _, out _, out i))
            {
                return false;
            }
        }
    }

    /// <summary>
    /// Finds the parameter <paramref name="name"/> (case-insensitive). <paramref name="value"/> is its value without
    /// quotes, empty when the parameter has none. False when absent or when the list is malformed before it.
    /// </summary>
    public static bool TryFind(ReadOnlySpan<byte> s, TextRange list, ReadOnlySpan<byte> name, out TextRange value)
    {
        value = default;
        var i = list.Start;
        var end = list.End;
        while (true)
        {
            i = SipSyntax.SkipLws(s, i, end);
            if (i >= end || s[i] != ';')
            {
                return false;
            }
            if (!TryReadParameter(s, i + 1, end, out var n, out var v, out i))
            {
                return false;
            }
            if (System.Text.Ascii.EqualsIgnoreCase(n.Of(s), name))
            {
                value = v;
                return true;
            }
        }
    }

    /// <summary>Reads one <c>name[=value]</c> starting after its semicolon; <paramref name="next"/> is where the next separator may be.</summary>
    internal static bool TryReadParameter(ReadOnlySpan<byte> s, int i, int end, out TextRange name, out TextRange value, out int next)
    {
        name = default;
        value = default;
        next = i;
        i = SipSyntax.SkipLws(s, i, end);
        var nameEnd = SipSyntax.SkipToken(s, i, end);
        if (nameEnd == i)
        {
            return false;
        }
        name = TextRange.FromBounds(i, nameEnd);
        var j = SipSyntax.SkipLws(s, nameEnd, end);
        if (j >= end || s[j] != '=')
        {
            next = nameEnd;
            return true;
        }
        j = SipSyntax.SkipLws(s, j + 1, end);
        if (j >= end)
        {
            return false;
        }
        if (s[j] == '"')
        {
            var after = SipSyntax.SkipQuoted(s, j, end);
            if (after < 0)
            {
                return false;
            }
            value = TextRange.FromBounds(j + 1, after - 1);
            next = after;
            return true;
        }
        var k = j;
        while (k < end && (SipSyntax.IsToken(s[k]) || SipSyntax.IsHostChar(s[k])))
        {
            k++;
        }
        if (k == j)
        {
            return false;
        }
        value = TextRange.FromBounds(j, k);
        next = k;
        return true;
    }

    /// <summary>
    /// Finds a URI parameter (no LWS, values unquoted) in <c>;a=b;c</c> form; names compare without regard to case.
    /// </summary>
    public static bool TryFindUriParameter(ReadOnlySpan<byte> s, TextRange list, ReadOnlySpan<byte> name, out TextRange value)
    {
        value = default;
        var i = list.Start;
        var end = list.End;
        while (i < end)
        {
            if (s[i] != ';')
            {
                return false;
            }
            i++;
            var semi = s.Slice(i, end - i).IndexOf((byte)';');
            var itemEnd = semi < 0 ? end : i + semi;
            var eq = s.Slice(i, itemEnd - i).IndexOf((byte)'=');
            var nameEnd = eq < 0 ? itemEnd : i + eq;
            if (System.Text.Ascii.EqualsIgnoreCase(s[i..nameEnd], name))
            {
                value = eq < 0 ? new TextRange(itemEnd, 0) : TextRange.FromBounds(nameEnd + 1, itemEnd);
                return true;
            }
            i = itemEnd;
        }
        return false;
    }
}
