using System.Runtime.CompilerServices;

namespace CallState.Sip.Messages;

/// <summary>Character classes and small scanners of the RFC 3261 25.1 grammar, over bytes.</summary>
internal static class SipSyntax
{
    private const byte TokenBit = 1;
    private const byte HostBit = 2;
    private const byte UriBit = 4;
    private const byte WordBit = 8;

    // One entry per ASCII byte; bytes >= 0x80 are UTF-8 and belong to none of these classes.
    private static ReadOnlySpan<byte> Classes => [
        //  0   1   2   3   4   5   6   7   8   9   A   B   C   D   E   F
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 0x00
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 0x10
        // SP   !   "   #   $   %   &   '   (   )   *   +   ,   -   .   /
        0, 13, 8, 0, 4, 13, 4, 13, 12, 12, 13, 13, 4, 15, 15, 12, // 0x20
        // 0-9 : ; < = > ?
        15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 4, 8, 4, 8, 12, // 0x30
        // @ A-O
        4, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, // 0x40
        // P-Z [ \ ] ^ _
        15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 8, 14, 0, 13, // 0x50
        // ` a-o
        9, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, // 0x60
        // p-z { | } ~ DEL
        15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 8, 0, 8, 13, 0, // 0x70
    ];

    /// <summary>RFC 3261 token characters: alphanum and <c>-.!%*_+`'~</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsToken(byte b) => b < 0x80 && (Classes[b] & TokenBit) != 0;

    /// <summary>Characters of a hostname, an IPv4 address, or (with the brackets) an IPv6 reference.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsHostChar(byte b) => b < 0x80 && (Classes[b] & HostBit) != 0;

    /// <summary>Characters that may appear unescaped somewhere in a SIP URI (unreserved, reserved, escapes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsUriChar(byte b) => b < 0x80 && (Classes[b] & UriBit) != 0;

    /// <summary>RFC 3261 word characters (Call-ID): token characters and <c>()&lt;&gt;:\"/[]?{}</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsWordChar(byte b) => b < 0x80 && (Classes[b] & WordBit) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsDigit(byte b) => (uint)(b - '0') <= 9;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAlpha(byte b) => (uint)((b | 0x20) - 'a') <= 'z' - 'a';

    /// <summary>Linear white space inside a header value: SP, HT, and the CR LF of a folded line.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLws(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n';

    /// <summary>Advances <paramref name="i"/> past linear white space, up to <paramref name="end"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SkipLws(ReadOnlySpan<byte> s, int i, int end)
    {
        while (i < end && IsLws(s[i]))
        {
            i++;
        }
        return i;
    }

    /// <summary>Moves <paramref name="end"/> back over trailing linear white space, down to <paramref name="start"/>.</summary>
    public static int TrimLwsEnd(ReadOnlySpan<byte> s, int start, int end)
    {
        while (end > start && IsLws(s[end - 1]))
        {
            end--;
        }
        return end;
    }

    /// <summary>Advances past token characters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SkipToken(ReadOnlySpan<byte> s, int i, int end)
    {
        while (i < end && IsToken(s[i]))
        {
            i++;
        }
        return i;
    }

    /// <summary>
    /// Reads a quoted-string whose opening quote is at <paramref name="i"/>; returns the index after the closing
    /// quote, or -1 when it is not terminated (quoted-pair <c>\x</c> escapes any byte but CR and LF).
    /// </summary>
    public static int SkipQuoted(ReadOnlySpan<byte> s, int i, int end)
    {
        i++;
        while (i < end)
        {
            var b = s[i];
            if (b == '"')
            {
                return i + 1;
            }
            if (b == '\\')
            {
                if (i + 1 >= end || s[i + 1] is (byte)'\r' or (byte)'\n')
                {
                    return -1;
                }
                i += 2;
                continue;
            }
            i++;
        }
        return -1;
    }

    /// <summary>
    /// Parses 1*DIGIT as a non-negative number no larger than <paramref name="max"/>. Leading zeros are allowed
    /// (RFC 4475 3.1.1.1 has <c>0068</c>); an overlarge value fails instead of wrapping.
    /// </summary>
    public static bool TryParseNumber(ReadOnlySpan<byte> digits, long max, out long value)
    {
        value = 0;
        if (digits.IsEmpty)
        {
            return false;
        }
        foreach (var b in digits)
        {
            if (!IsDigit(b))
            {
                return false;
            }
            value = (value * 10) + (b - '0');
            if (value > max)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Lower-cases ASCII letters; other bytes unchanged.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte ToLower(byte b) => (uint)(b - 'A') <= 'Z' - 'A' ? (byte)(b | 0x20) : b;

    /// <summary>Finds <paramref name="value"/> at <paramref name="from"/> or later, outside quoted strings and angle brackets; -1 if absent.</summary>
    public static int IndexOfUnquoted(ReadOnlySpan<byte> s, byte value, int from, int end)
    {
        var angle = false;
        for (var i = from; i < end; i++)
        {
            var b = s[i];
            if (b == '"' && !angle)
            {
                var after = SkipQuoted(s, i, end);
                if (after < 0)
                {
                    return -1;
                }
                i = after - 1;
                continue;
            }
            if (b == value && !angle)
            {
                return i;
            }
            if (b == '<')
            {
                angle = true;
            }
            else if (b == '>')
            {
                angle = false;
            }
        }
        return -1;
    }

    /// <summary>
    /// Reads a host (RFC 3261 25.1: hostname, IPv4address, or IPv6reference in brackets) at <paramref name="i"/>;
    /// returns the index after it, or <paramref name="i"/> itself when there is no valid host there.
    /// </summary>
    public static int SkipHost(ReadOnlySpan<byte> s, int i, int end)
    {
        if (i < end && s[i] == '[')
        {
            var k = i + 1;
            while (k < end && (IsDigit(s[k]) || (uint)((s[k] | 0x20) - 'a') <= 5 || s[k] is (byte)':' or (byte)'.'))
            {
                k++;
            }
            return k < end && s[k] == ']' && k > i + 1 ? k + 1 : i;
        }
        var j = i;
        while (j < end && (IsAlpha(s[j]) || IsDigit(s[j]) || s[j] is (byte)'-' or (byte)'.'))
        {
            j++;
        }
        return j;
    }
}
