using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using CallState.Sip.Transport;

namespace CallState.Sip.Tests.Transport;

/// <summary>
/// The TCP transport's overload limits on real loopback sockets: separate inbound and outbound caps, the per-source cap,
/// the message (header completion) timeout, the idle timeout counted from whole messages, and bounded, timed sends.
/// </summary>
public sealed class SipTcpOverloadTests
{
    private sealed record Received(byte[] Bytes, SipTcpConnection Connection);

    /// <summary>Copies each framed message and counts framer calls (one per read that brought bytes, at least).</summary>
    private sealed class Handler : ISipStreamHandler
    {
        private int _framerCalls;

        public Channel<Received> Messages { get; } = Channel.CreateUnbounded<Received>();

        public int FramerCalls => Volatile.Read(ref _framerCalls);

        public void OnMessage(in ReadOnlySequence<byte> message, SipTcpConnection connection) =>
            Messages.Writer.TryWrite(new Received(message.ToArray(), connection));

        public OperationStatus Frame(in ReadOnlySequence<byte> buffer, out SequencePosition consumed, out SequencePosition examined, out ReadOnlySequence<byte> message)
        {
            Interlocked.Increment(ref _framerCalls);
            return TestFramer.Frame(in buffer, out consumed, out examined, out message);
        }

        public async Task<Received> NextAsync() => await Messages.Reader.ReadAsync().AsTask().WaitAsync(Loopback.Timeout);
    }

    private static SipTcpTransport Start(Handler handler, SipTcpTransportOptions? options = null)
    {
        var transport = new SipTcpTransport(new IPEndPoint(IPAddress.Loopback, 0), handler.Frame, handler, options);
        transport.Start();
        return transport;
    }

    private static async Task<Socket> ConnectAsync(IPEndPoint server, IPAddress? from = null, int? receiveBuffer = null)
    {
        var client = new Socket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (receiveBuffer is { } size)
        {
            // Set before connecting, so the window the peer sees stays small and a full one is reached quickly.
            client.ReceiveBufferSize = size;
        }
        if (from is not null)
        {
            client.Bind(new IPEndPoint(from, 0));
        }
        await client.ConnectAsync(server).WaitAsync(Loopback.Timeout);
        return client;
    }

    /// <summary>Returns once the peer has closed the connection (orderly or by reset), reading whatever came before.</summary>
    private static async Task AssertClosedByPeerAsync(Socket socket)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (await socket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Loopback.Timeout) != 0)
            {
            }
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
        {
        }
    }

    /// <summary>Sends a request from a new client and returns the connection the server delivered it on.</summary>
    private static async Task<(Socket Client, SipTcpConnection AtServer)> ConnectAndGreetAsync(SipTcpTransport server, Handler handler, string tag, int? receiveBuffer = null)
    {
        var client = await ConnectAsync(server.LocalEndPoint, receiveBuffer: receiveBuffer);
        var request = TestFramer.Message(tag);
        await client.SendAsync(request);
        var received = await handler.NextAsync();
        Assert.Equal(request, received.Bytes);
        return (client, received.Connection);
    }

    /// <summary>An 8 KiB message: big enough to fill a peer's window in a few hundred sends.</summary>
    private static byte[] Bulk(int i) => TestFramer.Message($"bulk-{i}", new string('x', 8 * 1024));

    [Fact]
    public async Task Inbound_connections_at_their_cap_do_not_stop_the_transport_from_dialling_a_next_hop()
    {
        var edgeHandler = new Handler();
        var hopHandler = new Handler();
        await using var edge = Start(edgeHandler, new SipTcpTransportOptions { MaxInboundConnections = 2, MaxOutboundConnections = 2 });
        await using var nextHop = Start(hopHandler);
        using var first = await ConnectAsync(edge.LocalEndPoint);
        using var second = await ConnectAsync(edge.LocalEndPoint);
        await Loopback.WaitUntilAsync(() => edge.InboundConnectionCount == 2, "two inbound connections are open");
        using var third = await ConnectAsync(edge.LocalEndPoint);
        await AssertClosedByPeerAsync(third);
        Assert.Equal(1, edge.ConnectionsRejected);

        // The inbound cap is full; the outbound one is not shared with it.
        var invite = TestFramer.Message("to-next-hop");
        await edge.SendAsync(nextHop.LocalEndPoint, invite);

        Assert.Equal(invite, (await hopHandler.NextAsync()).Bytes);
        Assert.Equal(1, edge.OutboundConnectionCount);
        Assert.Equal(2, edge.InboundConnectionCount);
        Assert.Equal(0, edge.ConnectErrors);
    }

    [Fact]
    public async Task One_source_past_its_connection_cap_is_refused_while_another_source_is_served()
    {
        var handler = new Handler();
        await using var edge = Start(handler, new SipTcpTransportOptions { MaxInboundConnectionsPerSource = 2 });
        var flooder = IPAddress.Loopback;
        var other = IPAddress.Parse("127.0.0.2");
        using var a = await ConnectAsync(edge.LocalEndPoint, flooder);
        using var b = await ConnectAsync(edge.LocalEndPoint, flooder);
        await Loopback.WaitUntilAsync(() => edge.InboundConnectionsFrom(flooder) == 2, "two connections from the flooding source are open");

        using var c = await ConnectAsync(edge.LocalEndPoint, flooder);
        await AssertClosedByPeerAsync(c);
        Assert.Equal(1, edge.ConnectionsRejectedPerSource);
        Assert.Equal(0, edge.ConnectionsRejected);

        using var fromOther = await ConnectAsync(edge.LocalEndPoint, other);
        var message = TestFramer.Message("other-source");
        await fromOther.SendAsync(message);
        var received = await handler.NextAsync();
        Assert.Equal(message, received.Bytes);
        Assert.Equal(other, received.Connection.RemoteEndPoint.Address);

        // A connection closed gives its source the room back; a source with none open is forgotten.
        a.Close();
        await Loopback.WaitUntilAsync(() => edge.InboundConnectionsFrom(flooder) == 1, "the closed connection is released");
        using var d = await ConnectAsync(edge.LocalEndPoint, flooder);
        var late = TestFramer.Message("room-again");
        await d.SendAsync(late);
        Assert.Equal(late, (await handler.NextAsync()).Bytes);
        Assert.Equal(1, edge.ConnectionsRejectedPerSource);

        fromOther.Close();
        await Loopback.WaitUntilAsync(() => edge.InboundConnectionsFrom(other) == 0, "the other source's only connection is released");
    }

    [Fact]
    public async Task A_slow_sender_trickling_a_message_byte_by_byte_is_closed_at_the_message_timeout_while_others_are_served()
    {
        var handler = new Handler();
        await using var edge = Start(handler, new SipTcpTransportOptions { MessageTimeout = TimeSpan.FromSeconds(1) });
        using var slow = await ConnectAsync(edge.LocalEndPoint);
        using var normal = await ConnectAsync(edge.LocalEndPoint);
        // About 100 bytes: at one per 100 ms it would take 10 s to complete, far past the 1 s timeout.
        var trickled = TestFramer.Message("slowloris", new string('s', 40));

        var sent = 0;
        for (; sent < trickled.Length && edge.MessageTimeouts == 0; sent++)
        {
            try
            {
                await slow.SendAsync(trickled.AsMemory(sent, 1));
            }
            catch (SocketException)
            {
                break;
            }
            if (sent == 0)
            {
                // While the slow sender holds its connection, another is served as usual. (Right after the first byte:
                // on a starved machine the timeout can fire before a few more 100 ms pauses have passed, and the loop
                // ends before a later turn would come; seen as MessagesReceived 0.)
                var message = TestFramer.Message("served-meanwhile");
                await normal.SendAsync(message);
                Assert.Equal(message, (await handler.NextAsync()).Bytes);
            }
            // The pace of the attack, one byte every 100 ms.
            await Task.Delay(TimeSpan.FromMilliseconds(100));
        }

        await AssertClosedByPeerAsync(slow);
        Assert.True(sent < trickled.Length, "the connection was closed before the message could complete");
        Assert.Equal(1, edge.MessageTimeouts);
        Assert.Equal(0, edge.IdleTimeouts);
        Assert.Equal(1, edge.MessagesReceived);
        var after = TestFramer.Message("served-after");
        await normal.SendAsync(after);
        Assert.Equal(after, (await handler.NextAsync()).Bytes);
        await Loopback.WaitUntilAsync(() => edge.InboundConnectionCount == 1, "the slow connection is released");
    }

    [Fact]
    public async Task The_idle_timeout_counts_from_the_last_complete_message_not_from_trickled_bytes()
    {
        var time = new FakeTimeProvider();
        var handler = new Handler();
        await using var edge = Start(handler, new SipTcpTransportOptions
        {
            TimeProvider = time,
            IdleTimeout = TimeSpan.FromSeconds(60),
            MessageTimeout = TimeSpan.FromHours(1),
        });
        using var client = await ConnectAsync(edge.LocalEndPoint);
        await client.SendAsync(TestFramer.Message("complete-at-t0"));
        await handler.NextAsync();

        // A byte of an unfinished message every 10 s: each one reaches the framer, none keeps the connection.
        var partial = "OPTIONS sip:trickle@example.test SIP/2.0\r\n"u8.ToArray();
        for (var i = 0; i < 5; i++)
        {
            var calls = handler.FramerCalls;
            await client.SendAsync(partial.AsMemory(i, 1));
            await Loopback.WaitUntilAsync(() => handler.FramerCalls > calls, $"byte {i} is read");
            time.Advance(TimeSpan.FromSeconds(10));
        }
        Assert.Equal(1, edge.ConnectionCount);
        Assert.Equal(0, edge.IdleTimeouts);

        time.Advance(TimeSpan.FromSeconds(10));

        await AssertClosedByPeerAsync(client);
        Assert.Equal(1, edge.IdleTimeouts);
        Assert.Equal(0, edge.MessageTimeouts);
    }

    [Fact]
    public async Task A_peer_that_never_reads_is_closed_at_the_send_queue_limit_and_the_other_connections_keep_working()
    {
        const int limit = 64 * 1024;
        var handler = new Handler();
        await using var edge = Start(handler, new SipTcpTransportOptions { MaxSendQueueBytes = limit, SendTimeout = TimeSpan.FromMinutes(5) });
        var (deaf, atEdge) = await ConnectAndGreetAsync(edge, handler, "never-reads", receiveBuffer: 4096);
        using var deafClient = deaf;
        var (reader, readerAtEdge) = await ConnectAndGreetAsync(edge, handler, "reads");
        using var readerClient = reader;

        // Sent as the proxy sends, without waiting for each one: the queue is what grows when the peer stops reading.
        var pending = new List<Task>();
        long mostQueued = 0;
        for (var i = 0; i < 10_000 && !atEdge.IsClosed; i++)
        {
            var send = atEdge.SendAsync(Bulk(i));
            if (!send.IsCompletedSuccessfully)
            {
                pending.Add(send.AsTask());
            }
            mostQueued = Math.Max(mostQueued, Math.Max(atEdge.QueuedSendBytes, edge.QueuedSendBytes));
        }

        Assert.True(atEdge.IsClosed, "the connection of the peer that does not read was closed");
        Assert.InRange(mostQueued, 1, limit);
        Assert.Equal(1, edge.SendQueueOverflows);
        Assert.NotEmpty(pending);
        foreach (var send in pending)
        {
            await Assert.ThrowsAsync<IOException>(() => send.WaitAsync(Loopback.Timeout));
        }
        await Loopback.WaitUntilAsync(() => edge.QueuedSendBytes == 0, "nothing is left queued");
        Assert.Equal(0, atEdge.QueuedSendBytes);

        // The reading peer's connection is untouched: its requests arrive and the answers reach it.
        var request = TestFramer.Message("still-here");
        await readerClient.SendAsync(request);
        Assert.Same(readerAtEdge, (await handler.NextAsync()).Connection);
        var answer = TestFramer.Message("answer");
        await readerAtEdge.SendAsync(answer);
        var buffer = new byte[answer.Length];
        using var stream = new NetworkStream(readerClient, ownsSocket: false);
        await stream.ReadExactlyAsync(buffer).AsTask().WaitAsync(Loopback.Timeout);
        Assert.Equal(answer, buffer);
        Assert.Equal(1, edge.InboundConnectionCount);
    }

    [Fact]
    public async Task A_write_the_peer_never_takes_fails_at_the_send_timeout_and_closes_the_connection()
    {
        var handler = new Handler();
        await using var edge = Start(handler, new SipTcpTransportOptions { MaxSendQueueBytes = 64 * 1024 * 1024, SendTimeout = TimeSpan.FromMilliseconds(300) });
        var (deaf, atEdge) = await ConnectAndGreetAsync(edge, handler, "never-reads", receiveBuffer: 4096);
        using var deafClient = deaf;

        // Fill the peer's window and this side's socket buffer, then queue a few more writes behind the stuck one.
        var pending = new List<Task>();
        for (var i = 0; i < 10_000 && atEdge.QueuedSendBytes < 4 * Bulk(0).Length && !atEdge.IsClosed; i++)
        {
            var send = atEdge.SendAsync(Bulk(i));
            if (!send.IsCompletedSuccessfully)
            {
                pending.Add(send.AsTask());
            }
        }
        Assert.NotEmpty(pending);

        foreach (var send in pending)
        {
            await Assert.ThrowsAsync<IOException>(() => send.WaitAsync(Loopback.Timeout));
        }
        Assert.True(atEdge.IsClosed);
        Assert.Equal(1, edge.SendTimeouts);
        Assert.Equal(0, edge.SendQueueOverflows);
        await Loopback.WaitUntilAsync(() => edge.QueuedSendBytes == 0 && edge.ConnectionCount == 0, "the connection and its queue are released");
        await AssertClosedByPeerAsync(deafClient);
    }
}
