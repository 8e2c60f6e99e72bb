using System.Text;

namespace CallState.Sip.Messages;

/// <summary>
/// One Via entry (RFC 3261 20.42, RFC 3581): sent-protocol, sent-by, and the parameters a proxy uses, as ranges.
/// </summary>
public readonly struct ViaValue
{
    /// <summary>The whole entry.</summary>
    public TextRange Whole { get; init; }

    /// <summary>The protocol version as written (<c>2.0</c>).</summary>
    public TextRange Version { get; init; }

    /// <summary>The transport token (<c>UDP</c>, <c>TCP</c>, <c>TLS</c>, <c>SCTP</c>, or any other).</summary>
    public TextRange Transport { get; init; }

    /// <summary>The sent-by host (IPv6 references keep their brackets).</summary>
    public TextRange Host { get; init; }

    /// <summary>The sent-by port, or -1.</summary>
    public int Port { get; init; }

    /// <summary>Parameters from the first <c>;</c>.</summary>
    public TextRange Parameters { get; init; }

    /// <summary>The branch value, or empty (an RFC 2543 peer).</summary>
    public TextRange Branch { get; init; }

    public TextRange Received { get; init; }

    /// <summary>True when <c>rport</c> is present, with or without a value.</summary>
    public bool HasRport { get; init; }

    /// <summary>The <c>rport</c> value, or -1.</summary>
    public int Rport { get; init; }

    public TextRange Maddr { get; init; }

    /// <summary>True when the branch starts with the RFC 3261 magic cookie <c>z9hG4bK</c>.</summary>
    public bool HasMagicCookie(ReadOnlySpan<byte> s) => Branch.Length > 7 && Branch.Of(s).StartsWith("z9hG4bK"u8);

    /// <summary>Parses one Via entry in <paramref name="s"/>[start..end).</summary>
    public static bool TryParse(ReadOnlySpan<byte> s, int start, int end, out ViaValue via)
    {
        via = default;
        var i = SipSyntax.SkipLws(s, start, end);
        end = SipSyntax.TrimLwsEnd(s, i, end);
        var entryStart = i;
        var nameEnd = SipSyntax.SkipToken(s, i, end);
        if (nameEnd == i)
        {
            return false;
        }
        if (!ReadSlash(s, nameEnd, end, out i))
        {
            return false;
        }
        var versionStart = i;
        var versionEnd = SipSyntax.SkipToken(s, i, end);
        if (versionEnd == versionStart || !ReadSlash(s, versionEnd, end, out i))
        {
            return false;
        }
        var transportStart = i;
        var transportEnd = SipSyntax.SkipToken(s, i, end);
        if (transportEnd == transportStart || transportEnd >= end || !SipSyntax.IsLws(s[transportEnd]))
        {
            return false;
        }
        i = SipSyntax.SkipLws(s, transportEnd, end);
        var hostStart = i;
        i = SipSyntax.SkipHost(s, i, end);
        if (i == hostStart)
        {
            return false;
        }
        var host = TextRange.FromBounds(hostStart, i);
        var port = -1;
        var j = SipSyntax.SkipLws(s, i, end);
        if (j < end && s[j] == ':')
        {
            var portStart = SipSyntax.SkipLws(s, j + 1, end);
            var portEnd = portStart;
            while (portEnd < end && SipSyntax.IsDigit(s[portEnd]))
            {
                portEnd++;
            }
            if (!SipSyntax.TryParseNumber(s[portStart..portEnd], 65535, out var p))
            {
                return false;
            }
            port = (int)p;
            i = portEnd;
        }
        var paramsStart = SipSyntax.SkipLws(s, i, end);
        if (paramsStart < end && s[paramsStart] != ';')
        {
            return false;
        }
        TextRange branch = default, received = default, maddr = default;
        var hasRport = false;
        var rport = -1;
        var k = paramsStart;
        while (true)
        {
            k = SipSyntax.SkipLws(s, k, end);
            if (k >= end)
            {
                break;
            }
            if (s[k] != ';' || !SipParameters.TryReadParameter(s, k + 1, end, out var name, out var value, out k))
            {
                return false;
            }
            var n = name.Of(s);
            if (Ascii.EqualsIgnoreCase(n, "branch"u8))
            {
                if (value.IsEmpty)
                {
                    return false;
                }
                branch = value;
            }
            else if (Ascii.EqualsIgnoreCase(n, "received"u8))
            {
                received = value;
            }
            else if (Ascii.EqualsIgnoreCase(n, "rport"u8))
            {
                hasRport = true;
                if (!value.IsEmpty)
                {
                    if (!SipSyntax.TryParseNumber(value.Of(s), 65535, out var rp))
                    {
                        return false;
                    }
                    rport = (int)rp;
                }
            }
            else if (Ascii.EqualsIgnoreCase(n, "maddr"u8))
            {
                maddr = value;
            }
        }
        via = new ViaValue
        {
            Whole = TextRange.FromBounds(entryStart, end),
            Version = TextRange.FromBounds(versionStart, versionEnd),
            Transport = TextRange.FromBounds(transportStart, transportEnd),
            Host = host,
            Port = port,
            Parameters = TextRange.FromBounds(paramsStart, end),
            Branch = branch,
            Received = received,
            HasRport = hasRport,
            Rport = rport,
            Maddr = maddr,
        };
        return true;
    }

    private static bool ReadSlash(ReadOnlySpan<byte> s, int i, int end, out int next)
    {
        i = SipSyntax.SkipLws(s, i, end);
        if (i >= end || s[i] != '/')
        {
            next = i;
            return false;
        }
        next = SipSyntax.SkipLws(s, i + 1, end);
        return true;
    }
}
