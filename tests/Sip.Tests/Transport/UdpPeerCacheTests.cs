using System.Net;
using CallState.Sip.Transport;

namespace CallState.Sip.Tests.Transport;

public sealed class UdpPeerCacheTests
{
    [Fact]
    public void An_ipv4_peer_is_one_endpoint_and_one_address_whichever_way_it_is_met()
    {
        var cache = new UdpPeerCache();
        var peer = new IPEndPoint(IPAddress.Parse("192.0.2.7"), 5070);

        var received = cache.EndPointOf(peer.Serialize());
        Assert.Equal(peer, received);
        Assert.Same(received, cache.EndPointOf(peer.Serialize()));

        // Sending to an equal endpoint (another instance) uses the cached address, which serializes the same peer.
        var address = cache.AddressOf(new IPEndPoint(IPAddress.Parse("192.0.2.7"), 5070));
        Assert.Same(address, cache.AddressOf(received));
        Assert.Equal(peer.Serialize(), address);
        Assert.Equal(1, cache.Count);

        // Another port is another peer.
        Assert.NotSame(received, cache.EndPointOf(new IPEndPoint(IPAddress.Parse("192.0.2.7"), 5071).Serialize()));
        Assert.Equal(2, cache.Count);
    }

    [Fact]
    public void Ipv6_peers_are_converted_every_time_and_never_cached()
    {
        var cache = new UdpPeerCache();
        var peer = new IPEndPoint(IPAddress.Parse("2001:db8::7"), 5060);

        var first = cache.EndPointOf(peer.Serialize());
        Assert.Equal(peer, first);
        Assert.NotSame(first, cache.EndPointOf(peer.Serialize()));
        Assert.Equal(peer.Serialize(), cache.AddressOf(peer));
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public void The_cache_starts_over_when_full()
    {
        var cache = new UdpPeerCache();
        for (var i = 0; i < UdpPeerCache.MaxPeers; i++)
        {
            cache.EndPointOf(new IPEndPoint(IPAddress.Parse("198.51.100.1"), 1024 + i).Serialize());
        }

        Assert.Equal(UdpPeerCache.MaxPeers, cache.Count);
        var next = cache.EndPointOf(new IPEndPoint(IPAddress.Parse("198.51.100.2"), 5060).Serialize());
        Assert.Equal(1, cache.Count);
        Assert.Same(next, cache.EndPointOf(new IPEndPoint(IPAddress.Parse("198.51.100.2"), 5060).Serialize()));
    }
}
