using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using CallState.Sip.Transport;

namespace CallState.Sip.Tests.Transport;

public sealed class SipUdpTransportTests
{
    private sealed record Datagram(byte[] Bytes, IPEndPoint Remote)
    {
        public string Text => Encoding.ASCII.GetString(Bytes);
    }

    /// <summary>Copies each datagram (the loop reuses its buffer), optionally echoes it, and throws on "boom".</summary>
    private sealed class RecordingHandler(bool echo = false) : ISipDatagramHandler
    {
        public Channel<Datagram> Received { get; } = Channel.CreateUnbounded<Datagram>();

        public void OnDatagram(ReadOnlySpan<byte> datagram, SocketAddress remote, SipUdpTransport transport)
        {
            if (datagram.SequenceEqual("boom"u8))
            {
                throw new InvalidOperationException("handler failed");
            }
            if (echo)
            {
                Assert.True(transport.SendTo(datagram, remote));
            }
            Received.Writer.TryWrite(new Datagram(datagram.ToArray(), remote.ToIPEndPoint()));
        }

        public async Task<Datagram> NextAsync() => await Received.Reader.ReadAsync().AsTask().WaitAsync(Loopback.Timeout);
    }

    private static Socket Client(IPAddress address)
    {
        var socket = new Socket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(address, 0));
        return socket;
    }

    [Fact]
    public async Task Round_trip_on_IPv4_and_on_IPv6_where_available()
    {
        Assert.Contains(IPAddress.Loopback, Loopback.Addresses);
        foreach (var address in Loopback.Addresses)
        {
            var handler = new RecordingHandler(echo: true);
            await using var transport = new SipUdpTransport(new IPEndPoint(address, 0), handler);
            Assert.NotEqual(0, transport.LocalEndPoint.Port);
            Assert.Equal(address, transport.LocalEndPoint.Address);
            transport.Start();

            using var client = Client(address);
            var request = TestFramer.Message("udp-round-trip");
            await client.SendToAsync(request, transport.LocalEndPoint);

            var received = await handler.NextAsync();
            Assert.Equal(request, received.Bytes);
            Assert.Equal(client.LocalEndPoint, received.Remote);

            var echo = new byte[2048];
            var length = await client.ReceiveAsync(echo.AsMemory()).AsTask().WaitAsync(Loopback.Timeout);
            Assert.Equal(request, echo[..length]);
            Assert.Equal(1, transport.DatagramsReceived);
            Assert.Equal(1, transport.DatagramsSent);
        }
    }

    [Fact]
    public async Task Every_datagram_from_several_senders_is_delivered()
    {
        var delivered = new ConcurrentDictionary<string, int>();
        var handler = new CountingHandler(delivered);
        await using var transport = new SipUdpTransport(
            new IPEndPoint(IPAddress.Loopback, 0),
            handler,
            new SipUdpTransportOptions { ReceiveLoops = 3, ReceiveBufferSize = 1 << 20 });
        transport.Start();

        const int senders = 4;
        const int perSender = 300;
        // Loopback drops only when the socket's receive buffer overflows; keeping each sender at most 32 datagrams
        // ahead of delivery keeps it far from full, so any loss is the transport's.
        var tasks = Enumerable.Range(0, senders).Select(s => Task.Run(async () =>
        {
            using var client = Client(IPAddress.Loopback);
            for (var n = 0; n < perSender; n++)
            {
                await client.SendToAsync(Encoding.ASCII.GetBytes($"{s}:{n}"), transport.LocalEndPoint);
                if (n % 32 == 31)
                {
                    var expected = $"{s}:{n}";
                    await Loopback.WaitUntilAsync(() => delivered.ContainsKey(expected), $"{expected} is delivered");
                }
            }
        })).ToArray();
        await Task.WhenAll(tasks).WaitAsync(Loopback.Timeout * 2);

        await Loopback.WaitUntilAsync(() => delivered.Count == senders * perSender, "every datagram is delivered");
        Assert.All(delivered.Values, count => Assert.Equal(1, count));
        Assert.Equal(senders * perSender, transport.DatagramsReceived);
    }

    private sealed class CountingHandler(ConcurrentDictionary<string, int> delivered) : ISipDatagramHandler
    {
        public void OnDatagram(ReadOnlySpan<byte> datagram, SocketAddress remote, SipUdpTransport transport) =>
            delivered.AddOrUpdate(Encoding.ASCII.GetString(datagram), 1, (_, count) => count + 1);
    }

    [Fact]
    public async Task A_throwing_handler_is_counted_and_the_next_datagram_is_still_delivered()
    {
        var errors = new ConcurrentQueue<Exception>();
        var handler = new RecordingHandler();
        // One loop: were the failure to kill it, nothing else would be receiving.
        await using var transport = new SipUdpTransport(
            new IPEndPoint(IPAddress.Loopback, 0),
            handler,
            new SipUdpTransportOptions { ReceiveLoops = 1, OnError = errors.Enqueue });
        transport.Start();
        using var client = Client(IPAddress.Loopback);

        await client.SendToAsync("boom"u8.ToArray(), transport.LocalEndPoint);
        await client.SendToAsync("after"u8.ToArray(), transport.LocalEndPoint);
        await client.SendToAsync("boom"u8.ToArray(), transport.LocalEndPoint);
        await client.SendToAsync("last"u8.ToArray(), transport.LocalEndPoint);

        Assert.Equal("after", (await handler.NextAsync()).Text);
        Assert.Equal("last", (await handler.NextAsync()).Text);
        Assert.Equal(2, transport.HandlerErrors);
        Assert.All(errors, e => Assert.Equal("handler failed", e.Message));
        Assert.Equal(2, errors.Count);
    }

    [Fact]
    public async Task Empty_and_oversized_datagrams_are_counted_and_dropped()
    {
        var handler = new RecordingHandler();
        await using var transport = new SipUdpTransport(
            new IPEndPoint(IPAddress.Loopback, 0),
            handler,
            new SipUdpTransportOptions { ReceiveLoops = 1, MaxDatagramSize = 100 });
        transport.Start();
        using var client = Client(IPAddress.Loopback);

        await client.SendToAsync(Array.Empty<byte>(), transport.LocalEndPoint);
        await client.SendToAsync(new byte[101], transport.LocalEndPoint);
        var largest = Enumerable.Repeat((byte)'x', 100).ToArray();
        await client.SendToAsync(largest, transport.LocalEndPoint);
        await client.SendToAsync(new byte[60_000], transport.LocalEndPoint);
        await client.SendToAsync("ok"u8.ToArray(), transport.LocalEndPoint);

        // One loop reads in order, so once these arrive the datagrams before them have been counted.
        Assert.Equal(largest, (await handler.NextAsync()).Bytes);
        Assert.Equal("ok", (await handler.NextAsync()).Text);
        Assert.Equal(1, transport.EmptyDatagrams);
        Assert.Equal(2, transport.OversizedDatagrams);
        Assert.Equal(2, transport.DatagramsReceived);
    }

    [Fact]
    public async Task SendToAsync_and_the_IPEndPoint_overload_reach_the_peer()
    {
        var handler = new RecordingHandler();
        await using var transport = new SipUdpTransport(new IPEndPoint(IPAddress.Loopback, 0), handler);
        transport.Start();
        using var peer = Client(IPAddress.Loopback);
        var peerEndPoint = (IPEndPoint)peer.LocalEndPoint!;

        Assert.True(await transport.SendToAsync("first"u8.ToArray(), peerEndPoint.ToSocketAddress()));
        Assert.True(transport.SendTo("second"u8, peerEndPoint));

        var buffer = new byte[64];
        var first = await peer.ReceiveFromAsync(buffer, new IPEndPoint(IPAddress.Any, 0)).WaitAsync(Loopback.Timeout);
        Assert.Equal("first", Encoding.ASCII.GetString(buffer, 0, first.ReceivedBytes));
        Assert.Equal(transport.LocalEndPoint, first.RemoteEndPoint);
        var second = await peer.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Loopback.Timeout);
        Assert.Equal("second", Encoding.ASCII.GetString(buffer, 0, second));
        Assert.Equal(2, transport.DatagramsSent);
    }

    [Fact]
    public async Task A_failed_send_returns_false_and_is_counted()
    {
        var errors = new ConcurrentQueue<Exception>();
        await using var transport = new SipUdpTransport(
            new IPEndPoint(IPAddress.Loopback, 0),
            new RecordingHandler(),
            new SipUdpTransportOptions { OnError = errors.Enqueue });
        transport.Start();

        // Larger than any UDP payload: the OS refuses it (EMSGSIZE).
        Assert.False(transport.SendTo(new byte[70_000], new IPEndPoint(IPAddress.Loopback, 9)));
        Assert.Equal(1, transport.SendErrors);
        Assert.IsType<SocketException>(Assert.Single(errors));
    }

    [Fact]
    public async Task Dispose_stops_the_loops_and_frees_the_port()
    {
        var transport = new SipUdpTransport(new IPEndPoint(IPAddress.Loopback, 0), new RecordingHandler(), new SipUdpTransportOptions { ReceiveLoops = 4 });
        transport.Start();
        var endPoint = transport.LocalEndPoint;

        await transport.DisposeAsync().AsTask().WaitAsync(Loopback.Timeout);

        using var rebound = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        rebound.Bind(endPoint);
        Assert.Throws<ObjectDisposedException>(transport.Start);
    }

    [Fact]
    public void Options_are_validated()
    {
        var endPoint = new IPEndPoint(IPAddress.Loopback, 0);
        var handler = new RecordingHandler();
        Assert.Throws<ArgumentOutOfRangeException>(() => new SipUdpTransport(endPoint, handler, new SipUdpTransportOptions { ReceiveLoops = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SipUdpTransport(endPoint, handler, new SipUdpTransportOptions { MaxDatagramSize = 70_000 }));
    }
}
