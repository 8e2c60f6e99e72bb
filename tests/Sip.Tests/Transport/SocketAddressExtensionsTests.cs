using System.Net;
using System.Net.Sockets;
using System.Text;
using CallState.Sip.Transport;

namespace CallState.Sip.Tests.Transport;

public sealed class SocketAddressExtensionsTests
{
    [Theory]
    [InlineData("192.0.2.33", 5060, "192.0.2.33", "192.0.2.33")]
    [InlineData("255.255.255.255", 65535, "255.255.255.255", "255.255.255.255")]
    [InlineData("0.0.0.0", 0, "0.0.0.0", "0.0.0.0")]
    [InlineData("2001:db8::1", 5061, "[2001:db8::1]", "2001:db8::1")]
    [InlineData("::1", 5062, "[::1]", "::1")]
    [InlineData("::ffff:198.51.100.7", 5063, "198.51.100.7", "198.51.100.7")]
    public void Port_host_text_and_endpoint_come_straight_from_the_socket_address(string ip, int port, string host, string received)
    {
        var endPoint = new IPEndPoint(IPAddress.Parse(ip), port);
        var address = endPoint.ToSocketAddress();

        Assert.Equal(port, address.GetPort());
        Assert.Equal(endPoint, address.ToIPEndPoint());

        Span<byte> text = stackalloc byte[SocketAddressExtensions.MaxHostLength];
        Assert.True(address.TryFormatHost(text, out var written));
        Assert.Equal(host, Encoding.ASCII.GetString(text[..written]));
        Assert.True(address.TryFormatHost(text, out written, bracketIPv6: false));
        Assert.Equal(received, Encoding.ASCII.GetString(text[..written]));
    }

    [Fact]
    public void Scope_ids_survive_the_round_trip()
    {
        var endPoint = new IPEndPoint(IPAddress.Parse("fe80::1%3"), 5060);
        var back = endPoint.ToSocketAddress().ToIPEndPoint();
        Assert.Equal(3, back.Address.ScopeId);
        Assert.Equal(endPoint, back);
    }

    [Fact]
    public void Formatting_into_a_short_buffer_fails_instead_of_truncating()
    {
        var v4 = new IPEndPoint(IPAddress.Parse("192.0.2.33"), 5060).ToSocketAddress();
        var v6 = new IPEndPoint(IPAddress.Parse("2001:db8::1"), 5060).ToSocketAddress();
        Span<byte> small = stackalloc byte[9];
        Assert.False(v4.TryFormatHost(small, out _));
        // "[2001:db8::1]" is 13 bytes.
        Assert.False(v6.TryFormatHost(stackalloc byte[12], out _));
        Assert.True(v6.TryFormatHost(stackalloc byte[13], out var written));
        Assert.Equal(13, written);
    }

    [Fact]
    public void A_clone_does_not_change_when_the_loop_reuses_the_original()
    {
        var original = new IPEndPoint(IPAddress.Parse("192.0.2.1"), 5060).ToSocketAddress();
        var clone = original.Clone();
        Assert.Equal(original, clone);

        new IPEndPoint(IPAddress.Parse("192.0.2.2"), 5070).Serialize().Buffer.Span.CopyTo(original.Buffer.Span);

        Assert.Equal(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 5060), clone.ToIPEndPoint());
        Assert.NotEqual(original, clone);
    }

    [Fact]
    public void Non_IP_families_are_refused()
    {
        var unix = new SocketAddress(AddressFamily.Unix, 16);
        Assert.Equal(0, unix.GetPort());
        Assert.False(unix.TryFormatHost(stackalloc byte[64], out _));
        Assert.Throws<ArgumentException>(() => unix.ToIPEndPoint());
    }
}
