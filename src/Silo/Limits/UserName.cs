using System.Buffers;
using System.Text;

namespace CallState.Silo.Limits;

/// <summary>How user names are compared (<c>CallState:Limits:UserNames</c>).</summary>
public enum UserNameMatching
{
    /// <summary><c>Alice</c> and <c>alice</c> are one user, as most PBXs treat extensions (the default).</summary>
    CaseInsensitive,

    /// <summary><c>Alice</c> and <c>alice</c> are two users (RFC 3261 19.1.4 compares user parts case-sensitively).</summary>
    CaseSensitive,
}

/// <summary>
/// The one form of a user name that limits are keyed by, whether it comes from a SIP URI's user part, a <c>tel:</c>
/// number or configuration: escapes decoded (<c>%61lice</c> is <c>alice</c>, RFC 3261 19.1.2), a telephone number's
/// visual separators removed (<c>+1-234.567</c> is <c>+1234567</c>, RFC 3966 5.1.1), and, unless matching is
/// case-sensitive, folded to lower case. See docs/architecture.md, "Admission at the edge".
/// </summary>
public static class UserName
{
    private static readonly SearchValues<char> VisualSeparators = SearchValues.Create("-.()");
    private static readonly SearchValues<char> PhoneDigits = SearchValues.Create("0123456789*#");

    /// <summary>The normal form of <paramref name="name"/>; null or empty stays as it is.</summary>
    public static string? Normalize(string? name, UserNameMatching matching)
    {
        if (string.IsNullOrEmpty(name))
        {
            return name;
        }

        var text = name.Contains('%', StringComparison.Ordinal) ? Unescape(name) : name;
        text = WithoutVisualSeparators(text);
        return matching == UserNameMatching.CaseInsensitive ? text.ToLowerInvariant() : text;
    }

    /// <summary>
    /// <paramref name="text"/> with every <c>%HH</c> decoded as UTF-8; a malformed escape, or bytes that are not UTF-8,
    /// leave the text as it was (it then matches only itself).
    /// </summary>
    private static string Unescape(string text)
    {
        var bytes = new List<byte>(text.Length);
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '%')
            {
                if (i + 2 >= text.Length || !IsHex(text[i + 1]) || !IsHex(text[i + 2]))
                {
                    return text;
                }

                bytes.Add((byte)((Hex(text[i + 1]) << 4) | Hex(text[i + 2])));
                i += 2;
            }
            else if (c < 0x80)
            {
                bytes.Add((byte)c);
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString()));
            }
        }

        try
        {
            return new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString([.. bytes]);
        }
        catch (DecoderFallbackException)
        {
            return text;
        }
    }

    /// <summary>
    /// A telephone number (an optional <c>+</c>, then phone digits and visual separators only) without its separators;
    /// anything else (<c>alice.smith</c>) unchanged.
    /// </summary>
    private static string WithoutVisualSeparators(string text)
    {
        var digits = text.AsSpan(text.StartsWith('+') ? 1 : 0);
        if (digits.IndexOfAny(VisualSeparators) < 0 || digits.IsEmpty)
        {
            return text;
        }

        var sawDigit = false;
        foreach (var c in digits)
        {
            if (char.IsAsciiDigit(c))
            {
                sawDigit = true;
            }
            else if (!VisualSeparators.Contains(c) && !PhoneDigits.Contains(c))
            {
                return text;
            }
        }

        if (!sawDigit)
        {
            return text;
        }

        var result = new StringBuilder(text.Length);
        foreach (var c in text)
        {
            if (!VisualSeparators.Contains(c))
            {
                result.Append(c);
            }
        }

        return result.ToString();
    }

    private static bool IsHex(char c) => char.IsAsciiHexDigit(c);

    private static int Hex(char c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
