using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace CallState.Sip.Transport;

/// <summary>
/// Reads ports and addresses straight out of a <see cref="SocketAddress"/> (the raw sockaddr a receive loop
/// reuses), so building Via <c>received</c>/<c>rport</c> (RFC 3261 18.2.1, RFC 3581 4) does not need an
/// <see cref="IPEndPoint"/> per datagram.
/// </summary>
public static class SocketAddressExtensions
{
    // sockaddr_in and sockaddr_in6 share this layout on Linux, Windows and macOS: port at 2 (network order),
    // IPv4 address at 4, IPv6 flow info at 4, address at 8, scope id at 24.
    private const int PortOffset = 2;
    private const int IPv4AddressOffset = 4;
    private const int IPv6AddressOffset = 8;
    private const int IPv6ScopeOffset = 24;

    /// <summary>Longest text <see cref="TryFormatHost"/> writes: a bracketed IPv6 address with a scope id.</summary>
    public const int MaxHostLength = 64;

    /// <summary>The port, or 0 for a family other than IPv4/IPv6.</summary>
    public static int GetPort(this SocketAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        return IsIP(address) ? BinaryPrimitives.ReadUInt16BigEndian(address.Buffer.Span[PortOffset..]) : 0;
    }

    /// <summary>A new <see cref="IPEndPoint"/> for logs and connection tables; allocates, so keep it off the per-datagram path.</summary>
    public static IPEndPoint ToIPEndPoint(this SocketAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var span = address.Buffer.Span;
        var port = BinaryPrimitives.ReadUInt16BigEndian(span[PortOffset..]);
        return address.Family switch
        {
            AddressFamily.InterNetwork => new IPEndPoint(new IPAddress(span.Slice(IPv4AddressOffset, 4)), port),
            AddressFamily.InterNetworkV6 => new IPEndPoint(
                new IPAddress(span.Slice(IPv6AddressOffset, 16), BinaryPrimitives.ReadUInt32LittleEndian(span[IPv6ScopeOffset..])),
                port),
            _ => throw new ArgumentException($"Address family {address.Family} is not IPv4 or IPv6.", nameof(address)),
        };
    }

    /// <summary>Serializes <paramref name="endPoint"/> for <see cref="SipUdpTransport.SendTo(ReadOnlySpan{byte}, SocketAddress)"/>.</summary>
    public static SocketAddress ToSocketAddress(this IPEndPoint endPoint)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        return endPoint.Serialize();
    }

    /// <summary>
    /// A copy that the caller owns: a handler that keeps a receive loop's address past its call (a transaction's
    /// reply target) must copy it, because the loop overwrites it with the next datagram's source.
    /// </summary>
    public static SocketAddress Clone(this SocketAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var copy = new SocketAddress(address.Family, address.Size);
        address.Buffer.Span[..address.Size].CopyTo(copy.Buffer.Span);
        return copy;
    }

    /// <summary>
    /// Writes the address as ASCII: dotted quad for IPv4, RFC 5952 text for IPv6, bracketed when
    /// <paramref name="bracketIPv6"/> (a SIP host, RFC 3261 25.1) and bare otherwise (a Via <c>received</c> value).
    /// IPv4 is formatted without allocating; IPv6 allocates one <see cref="IPAddress"/>.
    /// </summary>
    public static bool TryFormatHost(this SocketAddress address, Span<byte> destination, out int written, bool bracketIPv6 = true)
    {
        ArgumentNullException.ThrowIfNull(address);
        written = 0;
        var span = address.Buffer.Span;
        switch (address.Family)
        {
            case AddressFamily.InterNetwork:
                return TryFormatIPv4(span.Slice(IPv4AddressOffset, 4), destination, out written);
            case AddressFamily.InterNetworkV6:
                {
                    var ip = new IPAddress(span.Slice(IPv6AddressOffset, 16), BinaryPrimitives.ReadUInt32LittleEndian(span[IPv6ScopeOffset..]));
                    if (ip.IsIPv4MappedToIPv6)
                    {
                        // A dual-mode socket reports IPv4 peers as ::ffff:a.b.c.d; SIP wants the IPv4 address.
                        return TryFormatIPv4(span.Slice(IPv6AddressOffset + 12, 4), destination, out written);
                    }
                    var offset = bracketIPv6 ? 1 : 0;
                    if (destination.Length < offset || !ip.TryFormat(destination[offset..], out var length))
                    {
                        return false;
                    }
                    if (bracketIPv6)
                    {
                        if (destination.Length < length + 2)
                        {
                            return false;
                        }
                        destination[0] = (byte)'[';
                        destination[length + 1] = (byte)']';
                        length += 2;
                    }
                    written = length;
                    return true;
                }
            default:
                return false;
        }
    }

    private static bool TryFormatIPv4(ReadOnlySpan<byte> octets, Span<byte> destination, out int written)
    {
        written = 0;
        var position = 0;
        for (var i = 0; i < 4; i++)
        {
            if (i > 0)
            {
                if (position >= destination.Length)
                {
                    return false;
                }
                destination[position++] = (byte)'.';
            }
            if (!octets[i].TryFormat(destination[position..], out var digits))
            {
                return false;
            }
            position += digits;
        }
        written = position;
        return true;
    }

    private static bool IsIP(SocketAddress address) =>
        address.Family is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6;
}
