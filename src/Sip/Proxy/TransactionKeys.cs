using System.Buffers;
using System.Buffers.Binary;
using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

/// <summary>
/// Transaction keys are byte arrays compared by content; lookups go through a span (no key array, no string per
/// message): <see cref="IAlternateEqualityComparer{TAlternate, TOther}"/> over <c>ReadOnlySpan&lt;byte&gt;</c>.
/// </summary>
internal sealed class ByteKeyComparer : IEqualityComparer<byte[]>, IAlternateEqualityComparer<ReadOnlySpan<byte>, byte[]>
{
    public static readonly ByteKeyComparer Instance = new();

    public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);

    public int GetHashCode(byte[] obj) => Hash(obj);

    public bool Equals(ReadOnlySpan<byte> alternate, byte[] other) => alternate.SequenceEqual(other);

    public int GetHashCode(ReadOnlySpan<byte> alternate) => Hash(alternate);

    public byte[] Create(ReadOnlySpan<byte> alternate) => alternate.ToArray();

    private static int Hash(ReadOnlySpan<byte> bytes)
    {
        var hash = default(HashCode);
        hash.AddBytes(bytes);
        return hash.ToHashCode();
    }
}

/// <summary>Builds transaction keys and the branches this proxy puts in its Via.</summary>
internal static class TransactionKeys
{
    /// <summary>The magic cookie that marks an RFC 3261 branch.</summary>
    public static ReadOnlySpan<byte> MagicCookie => "z9hG4bK"u8;

    /// <summary>
    /// The server transaction key of a request (RFC 3261 17.2.3): with the magic cookie, branch + sent-by + method
    /// (ACK maps to INVITE); without it (RFC 2543 peers), Request-URI, From tag, Call-ID, CSeq number, top Via and
    /// method, which an ACK shares with its INVITE when the To tag is left out.
    /// </summary>
    public static void ServerKey(SipMessage m, IBufferWriter<byte> key, bool ackAsInvite = true, bool cancelAsInvite = false)
    {
        var s = m.Span;
        var method = m.Method is SipMethod.Ack && ackAsInvite || m.Method is SipMethod.Cancel && cancelAsInvite
            ? "INVITE"u8
            : m.MethodToken.Of(s);
        var via = m.TopVia;
        if (via.HasMagicCookie(s))
        {
            key.Write("3|"u8);
            key.Write(via.Branch.Of(s));
            key.Write("|"u8);
            WriteLower(key, via.Host.Of(s));
            key.Write(":"u8);
            key.WriteNumber(via.Port);
        }
        else
        {
            key.Write("2|"u8);
            key.Write(m.RequestUriText.Of(s));
            key.Write("|"u8);
            key.Write(m.FromTag.Of(s));
            key.Write("|"u8);
            key.Write(m.CallId.Of(s));
            key.Write("|"u8);
            key.WriteNumber(m.CSeq);
            key.Write("|"u8);
            key.Write(via.Whole.Of(s));
        }
        key.Write("|"u8);
        key.Write(method);
    }

    /// <summary>The client transaction key: our branch and the CSeq method (RFC 3261 17.1.3).</summary>
    public static void ClientKey(ReadOnlySpan<byte> branch, ReadOnlySpan<byte> method, IBufferWriter<byte> key)
    {
        key.Write(branch);
        key.Write("|"u8);
        key.Write(method);
    }

    /// <summary>
    /// The branch for a request forwarded from the one with server key <paramref name="serverKey"/>: derived from it
    /// (a retransmission gets the same branch, on any edge) plus a hash of the fields RFC 3261 16.6 step 8 names for
    /// loop detection, so a request that comes back unchanged can be recognised. A non-zero <paramref name="salt"/> makes
    /// another branch for the same key (the loop hash stays last).
    /// </summary>
    public static void Branch(ReadOnlySpan<byte> serverKey, ulong loopHash, IBufferWriter<byte> branch, ulong salt = 0)
    {
        branch.Write(MagicCookie);
        branch.Write("-cs-"u8);
        WriteHex(branch, Fnv(serverKey, 0xcbf29ce484222325UL));
        WriteHex(branch, Fnv(serverKey, 0x84222325cbf29ce4UL));
        if (salt != 0)
        {
            branch.Write("x"u8);
            WriteHex(branch, salt);
        }
        branch.Write("-"u8);
        WriteHex(branch, loopHash);
    }

    /// <summary>The loop-detection hash (RFC 3261 16.3 step 4): Request-URI, tags, Call-ID, CSeq number, Route and Proxy-Require.</summary>
    public static ulong LoopHash(SipMessage m)
    {
        var s = m.Span;
        var h = Fnv(m.RequestUriText.Of(s), 0xcbf29ce484222325UL);
        h = Fnv(m.FromTag.Of(s), h);
        h = Fnv(m.ToTag.Of(s), h);
        h = Fnv(m.CallId.Of(s), h);
        Span<byte> number = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(number, m.CSeq);
        h = Fnv(number, h);
        foreach (var field in m.Fields)
        {
            if (field.Kind is SipHeaderKind.Route or SipHeaderKind.ProxyRequire)
            {
                h = Fnv(field.Value.Of(s), h);
            }
        }
        return h;
    }

    /// <summary>The loop hash as it appears at the end of a branch this proxy made.</summary>
    public static bool BranchEndsWithLoopHash(ReadOnlySpan<byte> branch, ulong loopHash)
    {
        Span<byte> hex = stackalloc byte[17];
        hex[0] = (byte)'-';
        FormatHex(loopHash, hex[1..]);
        return branch.StartsWith("z9hG4bK-cs-"u8) && branch.EndsWith(hex);
    }

    /// <summary>How every To tag <see cref="ToTag"/> makes begins.</summary>
    public static ReadOnlySpan<byte> ToTagPrefix => "cs"u8;

    /// <summary>A To tag for responses this proxy generates, the same for every retransmission of the request.</summary>
    public static void ToTag(ReadOnlySpan<byte> serverKey, IBufferWriter<byte> tag)
    {
        tag.Write(ToTagPrefix);
        WriteHex(tag, Fnv(serverKey, 0x9e3779b97f4a7c15UL));
    }

    private static ulong Fnv(ReadOnlySpan<byte> data, ulong hash)
    {
        foreach (var b in data)
        {
            hash ^= b;
            hash *= 0x100000001b3UL;
        }
        return hash;
    }

    private static void WriteHex(IBufferWriter<byte> writer, ulong value)
    {
        var span = writer.GetSpan(16);
        FormatHex(value, span);
        writer.Advance(16);
    }

    private static void FormatHex(ulong value, Span<byte> destination)
    {
        for (var i = 15; i >= 0; i--)
        {
            var nibble = (int)(value & 0xF);
            destination[i] = (byte)(nibble < 10 ? '0' + nibble : 'a' + nibble - 10);
            value >>= 4;
        }
    }

    private static void WriteLower(IBufferWriter<byte> writer, ReadOnlySpan<byte> text)
    {
        var span = writer.GetSpan(text.Length);
        for (var i = 0; i < text.Length; i++)
        {
            span[i] = SipSyntax.ToLower(text[i]);
        }
        writer.Advance(text.Length);
    }
}
