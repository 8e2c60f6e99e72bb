using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace CallState.Sip.Transport;

/// <summary>
/// One shared <see cref="IPEndPoint"/> and <see cref="SocketAddress"/> per IPv4 peer, so receiving from and sending to
/// the same few peers (the next hop, a load balancer, the callers' edge) makes no address objects per datagram. A
/// transaction keeps its peer's endpoint until its timers end (up to 64*T1), and the garbage collector's pauses grow
/// with the objects kept that long. IPv6 peers get new objects each time, as before. Both objects are shared: callers
/// must not change them. The cache forgets everything when it reaches <see cref="MaxPeers"/>, so it stays bounded.
/// </summary>
public sealed class UdpPeerCache
{
    /// <summary>Peers remembered before the cache starts over.</summary>
    public const int MaxPeers = 4096;

    private readonly ConcurrentDictionary<ulong, Peer> _peers = new();

    /// <summary>Peers remembered now.</summary>
    public int Count => _peers.Count;

    /// <summary>The endpoint <paramref name="remote"/> names (an address a receive loop reuses, read now, never kept).</summary>
    public IPEndPoint EndPointOf(SocketAddress remote)
    {
        ArgumentNullException.ThrowIfNull(remote);
        if (remote.Family != AddressFamily.InterNetwork)
        {
            return remote.ToIPEndPoint();
        }

        var key = Key(BinaryPrimitives.ReadUInt32BigEndian(remote.Buffer.Span[4..]), remote.GetPort());
        return _peers.TryGetValue(key, out var peer) ? peer.EndPoint : Add(key, remote.ToIPEndPoint()).EndPoint;
    }

    /// <summary>The serialized address of <paramref name="endPoint"/>, for <see cref="SipUdpTransport.SendTo(ReadOnlySpan{byte}, SocketAddress)"/>.</summary>
    public SocketAddress AddressOf(IPEndPoint endPoint)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        Span<byte> ipv4 = stackalloc byte[4];
        if (endPoint.AddressFamily != AddressFamily.InterNetwork || !endPoint.Address.TryWriteBytes(ipv4, out _))
        {
            return endPoint.Serialize();
        }

        var key = Key(BinaryPrimitives.ReadUInt32BigEndian(ipv4), endPoint.Port);
        return _peers.TryGetValue(key, out var peer) ? peer.Address : Add(key, new IPEndPoint(endPoint.Address, endPoint.Port)).Address;
    }

    private static ulong Key(uint address, int port) => ((ulong)address << 16) | (uint)port;

    private Peer Add(ulong key, IPEndPoint endPoint)
    {
        if (_peers.Count >= MaxPeers)
        {
            _peers.Clear();
        }

        return _peers.GetOrAdd(key, new Peer(endPoint, endPoint.Serialize()));
    }

    private sealed record Peer(IPEndPoint EndPoint, SocketAddress Address);
}
