using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using CallState.Sip.Transport;

namespace CallState.Sip.Tests.Transport;

public sealed class SipTcpTransportTests
{
    private sealed record Received(byte[] Bytes, SipTcpConnection Connection)
    {
        public string Text => Encoding.ASCII.GetString(Bytes);
    }

    /// <summary>Copies each framed message (the pipe releases it on return) and throws for a Call-ID of "boom".</summary>
    private sealed class RecordingHandler : ISipStreamHandler
    {
        public Channel<Received> Messages { get; } = Channel.CreateUnbounded<Received>();

        public ConcurrentQueue<SipTcpConnection> Closed { get; } = new();

        public void OnMessage(in ReadOnlySequence<byte> message, SipTcpConnection connection)
        {
            var bytes = message.ToArray();
            if (Encoding.ASCII.GetString(bytes).Contains("Call-ID: boom\r\n", StringComparison.Ordinal))
            {
                throw new InvalidOperationException("handler failed");
            }
            Messages.Writer.TryWrite(new Received(bytes, connection));
        }

        public void OnConnectionClosed(SipTcpConnection connection) => Closed.Enqueue(connection);

        public async Task<Received> NextAsync() => await Messages.Reader.ReadAsync().AsTask().WaitAsync(Loopback.Timeout);
    }

    /// <summary>Counts framer calls, to show the transport does not call it again until more bytes arrive.</summary>
    private sealed class CountingFramer
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public OperationStatus Frame(in ReadOnlySequence<byte> buffer, out SequencePosition consumed, out SequencePosition examined, out ReadOnlySequence<byte> message)
        {
            Interlocked.Increment(ref _calls);
            return TestFramer.Frame(in buffer, out consumed, out examined, out message);
        }
    }

    private static SipTcpTransport Start(RecordingHandler handler, SipTcpTransportOptions? options = null, IPAddress? address = null, SipFramer? framer = null)
    {
        var transport = new SipTcpTransport(new IPEndPoint(address ?? IPAddress.Loopback, 0), framer ?? TestFramer.Frame, handler, options);
        transport.Start();
        return transport;
    }

    private static async Task<Socket> ConnectAsync(IPEndPoint server)
    {
        var client = new Socket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await client.ConnectAsync(server).WaitAsync(Loopback.Timeout);
        return client;
    }

    /// <summary>Reads until <paramref name="expected"/> bytes have arrived.</summary>
    private static async Task<byte[]> ReadExactlyAsync(Socket socket, int expected)
    {
        var buffer = new byte[expected];
        using var stream = new NetworkStream(socket, ownsSocket: false);
        await stream.ReadExactlyAsync(buffer).AsTask().WaitAsync(Loopback.Timeout);
        return buffer;
    }

    /// <summary>True once the peer has closed the connection (orderly or by reset).</summary>
    private static async Task AssertClosedByPeerAsync(Socket socket)
    {
        var buffer = new byte[1024];
        try
        {
            while (true)
            {
                var read = await socket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Loopback.Timeout);
                if (read == 0)
                {
                    return;
                }
            }
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
        {
        }
    }

    [Fact]
    public async Task Messages_written_one_byte_at_a_time_arrive_intact_without_rescans()
    {
        var handler = new RecordingHandler();
        var framer = new CountingFramer();
        await using var server = Start(handler, framer: framer.Frame);
        using var client = await ConnectAsync(server.LocalEndPoint);
        var first = TestFramer.Message("split-1", "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
        var second = TestFramer.Message("split-2", "body");
        var stream = first.Concat(second).ToArray();

        foreach (var b in stream)
        {
            await client.SendAsync(new[] { b });
        }

        Assert.Equal(first, (await handler.NextAsync()).Bytes);
        Assert.Equal(second, (await handler.NextAsync()).Bytes);
        // At most one call per read (each read brings at least one new byte) plus one per message framed.
        Assert.InRange(framer.Calls, 2, stream.Length + 2);
        Assert.Equal(2, server.MessagesReceived);
    }

    [Fact]
    public async Task Two_messages_in_one_write_are_both_delivered_in_order()
    {
        var handler = new RecordingHandler();
        await using var server = Start(handler);
        using var client = await ConnectAsync(server.LocalEndPoint);
        var first = TestFramer.Message("pair-1", "one");
        var second = TestFramer.Message("pair-2");

        await client.SendAsync(first.Concat(second).ToArray());

        var a = await handler.NextAsync();
        var b = await handler.NextAsync();
        Assert.Equal(first, a.Bytes);
        Assert.Equal(second, b.Bytes);
        Assert.Same(a.Connection, b.Connection);
        Assert.True(a.Connection.IsInbound);
        Assert.Equal(client.LocalEndPoint, a.Connection.RemoteEndPoint);
    }

    [Fact]
    public async Task Invalid_framing_closes_that_connection_and_the_listener_keeps_serving()
    {
        var handler = new RecordingHandler();
        await using var server = Start(handler);
        using var bad = await ConnectAsync(server.LocalEndPoint);

        await bad.SendAsync("OPTIONS sip:a@example.test SIP/2.0\r\nContent-Length: twelve\r\n\r\n"u8.ToArray());

        await AssertClosedByPeerAsync(bad);
        Assert.Equal(1, server.InvalidFrames);
        await Loopback.WaitUntilAsync(() => server.ConnectionCount == 0, "the bad connection is released");
        Assert.Single(handler.Closed);

        using var good = await ConnectAsync(server.LocalEndPoint);
        var message = TestFramer.Message("after-bad");
        await good.SendAsync(message);
        Assert.Equal(message, (await handler.NextAsync()).Bytes);
    }

    [Fact]
    public async Task A_peer_sending_more_than_the_size_limit_without_a_message_is_disconnected()
    {
        var handler = new RecordingHandler();
        await using var server = Start(handler, new SipTcpTransportOptions { MaxMessageSize = 1024 });
        using var client = await ConnectAsync(server.LocalEndPoint);

        var header = Encoding.ASCII.GetBytes("OPTIONS sip:a@example.test SIP/2.0\r\nX-Filler: " + new string('a', 2000));
        await client.SendAsync(header);

        await AssertClosedByPeerAsync(client);
        Assert.Equal(1, server.OversizedMessages);
        Assert.Equal(0, server.MessagesReceived);
    }

    [Fact]
    public async Task A_message_within_the_size_limit_is_delivered()
    {
        var handler = new RecordingHandler();
        await using var server = Start(handler, new SipTcpTransportOptions { MaxMessageSize = 1024 });
        using var client = await ConnectAsync(server.LocalEndPoint);
        var message = TestFramer.Message("fits", new string('b', 900));
        Assert.InRange(message.Length, 900, 1024);

        await client.SendAsync(message);

        Assert.Equal(message, (await handler.NextAsync()).Bytes);
        Assert.Equal(0, server.OversizedMessages);
    }

    [Fact]
    public async Task A_throwing_handler_is_counted_and_the_connection_goes_on()
    {
        var handler = new RecordingHandler();
        var errors = new ConcurrentQueue<Exception>();
        await using var server = Start(handler, new SipTcpTransportOptions { OnError = errors.Enqueue });
        using var client = await ConnectAsync(server.LocalEndPoint);

        await client.SendAsync(TestFramer.Message("boom"));
        var next = TestFramer.Message("after-boom");
        await client.SendAsync(next);

        Assert.Equal(next, (await handler.NextAsync()).Bytes);
        Assert.Equal(1, server.HandlerErrors);
        Assert.Equal("handler failed", Assert.Single(errors).Message);
    }

    [Fact]
    public async Task Connections_over_the_limit_are_closed_and_counted_while_the_others_keep_working()
    {
        var handler = new RecordingHandler();
        await using var server = Start(handler, new SipTcpTransportOptions { MaxInboundConnections = 2 });
        using var first = await ConnectAsync(server.LocalEndPoint);
        using var second = await ConnectAsync(server.LocalEndPoint);
        await Loopback.WaitUntilAsync(() => server.ConnectionCount == 2, "two connections are open");

        using var third = await ConnectAsync(server.LocalEndPoint);
        await AssertClosedByPeerAsync(third);
        Assert.Equal(1, server.ConnectionsRejected);
        Assert.Equal(2, server.ConnectionsAccepted);

        var message = TestFramer.Message("still-served");
        await second.SendAsync(message);
        Assert.Equal(message, (await handler.NextAsync()).Bytes);

        first.Close();
        await Loopback.WaitUntilAsync(() => server.ConnectionCount == 1, "the first connection is released");
        using var fourth = await ConnectAsync(server.LocalEndPoint);
        var late = TestFramer.Message("room-again");
        await fourth.SendAsync(late);
        Assert.Equal(late, (await handler.NextAsync()).Bytes);
    }

    [Fact]
    public async Task An_idle_connection_is_closed_after_the_idle_timeout_and_traffic_resets_it()
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler();
        await using var server = Start(handler, new SipTcpTransportOptions { TimeProvider = time, IdleTimeout = TimeSpan.FromSeconds(120) });
        using var client = await ConnectAsync(server.LocalEndPoint);

        // Delivery means the connection, and so its idle timer, exists, and activity was stamped at t = 0.
        await client.SendAsync(TestFramer.Message("t0"));
        await handler.NextAsync();

        time.Advance(TimeSpan.FromSeconds(100));
        await client.SendAsync(TestFramer.Message("t100"));
        await handler.NextAsync();

        // The timer first fires at t = 120, finds 20 s of idleness and re-arms for t = 220.
        time.Advance(TimeSpan.FromSeconds(20));
        time.Advance(TimeSpan.FromSeconds(99));
        Assert.Equal(1, server.ConnectionCount);
        Assert.Equal(0, server.IdleTimeouts);

        time.Advance(TimeSpan.FromSeconds(1));
        await AssertClosedByPeerAsync(client);
        Assert.Equal(1, server.IdleTimeouts);
        await Loopback.WaitUntilAsync(() => server.ConnectionCount == 0, "the idle connection is released");
    }

    [Fact]
    public async Task SendAsync_to_a_peer_reuses_the_connection_it_opened()
    {
        var handler = new RecordingHandler();
        await using var server = Start(handler);
        using var client = await ConnectAsync(server.LocalEndPoint);
        await client.SendAsync(TestFramer.Message("request"));
        var request = await handler.NextAsync();

        // RFC 3261 18.2.2: the response goes back over the connection the request came on.
        var response = Encoding.ASCII.GetBytes("SIP/2.0 200 OK\r\nCall-ID: request\r\nContent-Length: 0\r\n\r\n");
        Assert.True(server.TryGetConnection((IPEndPoint)client.LocalEndPoint!, out var found));
        Assert.Same(request.Connection, found);
        await server.SendAsync((IPEndPoint)client.LocalEndPoint!, response);

        Assert.Equal(response, await ReadExactlyAsync(client, response.Length));
        Assert.Equal(0, server.ConnectionsOpened);
        Assert.Equal(1, server.ConnectionCount);
        Assert.Equal(1, request.Connection.MessagesSent);
    }

    [Fact]
    public async Task An_outbound_connection_carries_the_reply_back_and_is_reused()
    {
        var clientHandler = new RecordingHandler();
        var serverHandler = new RecordingHandler();
        await using var client = Start(clientHandler);
        await using var server = Start(serverHandler);

        var invite = TestFramer.Message("outbound-1");
        await client.SendAsync(server.LocalEndPoint, invite);
        var atServer = await serverHandler.NextAsync();
        Assert.Equal(invite, atServer.Bytes);
        Assert.True(atServer.Connection.IsInbound);

        var reply = TestFramer.Message("reply-1");
        await server.SendAsync(atServer.Connection.RemoteEndPoint, reply);
        var atClient = await clientHandler.NextAsync();
        Assert.Equal(reply, atClient.Bytes);
        Assert.False(atClient.Connection.IsInbound);
        Assert.Equal(server.LocalEndPoint, atClient.Connection.RemoteEndPoint);

        var bye = TestFramer.Message("outbound-2");
        await client.SendAsync(server.LocalEndPoint, bye);
        var second = await serverHandler.NextAsync();
        Assert.Equal(bye, second.Bytes);
        Assert.Same(atServer.Connection, second.Connection);

        Assert.Equal(1, client.ConnectionsOpened);
        Assert.Equal(0, server.ConnectionsOpened);
        Assert.Equal(1, server.ConnectionsAccepted);
    }

    [Fact]
    public async Task Concurrent_sends_to_a_new_peer_share_one_connection_and_never_interleave()
    {
        var serverHandler = new RecordingHandler();
        await using var client = Start(new RecordingHandler());
        await using var server = Start(serverHandler);
        const int count = 20;
        var messages = Enumerable.Range(0, count).Select(i => TestFramer.Message($"concurrent-{i}", new string((char)('a' + i), 3000 + i))).ToArray();

        await Task.WhenAll(messages.Select(m => Task.Run(async () => await client.SendAsync(server.LocalEndPoint, m)))).WaitAsync(Loopback.Timeout);

        var received = new List<byte[]>();
        for (var i = 0; i < count; i++)
        {
            received.Add((await serverHandler.NextAsync()).Bytes);
        }
        Assert.Equal(
            messages.Select(Convert.ToBase64String).Order(),
            received.Select(Convert.ToBase64String).Order());
        Assert.Equal(1, client.ConnectionsOpened);
        Assert.Equal(1, server.ConnectionsAccepted);
    }

    [Fact]
    public async Task A_refused_connect_fails_the_send_and_is_counted()
    {
        await using var client = Start(new RecordingHandler());
        var nobody = Loopback.UnusedTcpEndPoint(IPAddress.Loopback);

        var error = await Assert.ThrowsAsync<SocketException>(async () => await client.SendAsync(nobody, TestFramer.Message("lost")));

        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
        Assert.Equal(1, client.ConnectErrors);
        Assert.Equal(0, client.ConnectionCount);
        Assert.False(client.TryGetConnection(nobody, out _));
    }

    [Fact]
    public async Task Outbound_connects_count_against_the_outbound_connection_limit()
    {
        await using var client = Start(new RecordingHandler(), new SipTcpTransportOptions { MaxOutboundConnections = 1 });
        await using var first = Start(new RecordingHandler());
        await using var second = Start(new RecordingHandler());

        await client.SendAsync(first.LocalEndPoint, TestFramer.Message("fits"));
        var error = await Assert.ThrowsAsync<SocketException>(async () => await client.SendAsync(second.LocalEndPoint, TestFramer.Message("over")));

        Assert.Equal(SocketError.TooManyOpenSockets, error.SocketErrorCode);
        Assert.Equal(1, client.ConnectionCount);
        Assert.Equal(1, client.OutboundConnectionsRefused);
    }

    [Fact]
    public async Task Sending_on_a_connection_the_peer_closed_fails_and_the_next_send_reconnects()
    {
        var serverHandler = new RecordingHandler();
        await using var client = Start(new RecordingHandler());
        await using var server = Start(serverHandler);

        await client.SendAsync(server.LocalEndPoint, TestFramer.Message("before"));
        var first = await serverHandler.NextAsync();
        first.Connection.Close();
        await Loopback.WaitUntilAsync(() => client.ConnectionCount == 0, "the client sees the close");

        await client.SendAsync(server.LocalEndPoint, TestFramer.Message("after"));
        var second = await serverHandler.NextAsync();
        Assert.NotSame(first.Connection, second.Connection);
        Assert.Equal(2, client.ConnectionsOpened);
        Assert.Throws<IOException>(() => first.Connection.SendAsync(TestFramer.Message("late")).AsTask().GetAwaiter().GetResult());
    }

    [Fact]
    public async Task Round_trip_on_IPv4_and_on_IPv6_where_available()
    {
        Assert.Contains(IPAddress.Loopback, Loopback.Addresses);
        foreach (var address in Loopback.Addresses)
        {
            var clientHandler = new RecordingHandler();
            var serverHandler = new RecordingHandler();
            await using var client = Start(clientHandler, address: address);
            await using var server = Start(serverHandler, address: address);
            Assert.NotEqual(0, server.LocalEndPoint.Port);
            Assert.Equal(address, server.LocalEndPoint.Address);

            await client.SendAsync(server.LocalEndPoint, TestFramer.Message("ping"));
            var ping = await serverHandler.NextAsync();
            await ping.Connection.SendAsync(TestFramer.Message("pong"));
            Assert.Contains("Call-ID: pong", (await clientHandler.NextAsync()).Text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task DisposeAsync_closes_every_connection()
    {
        var handler = new RecordingHandler();
        var server = Start(handler);
        using var a = await ConnectAsync(server.LocalEndPoint);
        using var b = await ConnectAsync(server.LocalEndPoint);
        await Loopback.WaitUntilAsync(() => server.ConnectionCount == 2, "both connections are open");

        await server.DisposeAsync().AsTask().WaitAsync(Loopback.Timeout);

        await AssertClosedByPeerAsync(a);
        await AssertClosedByPeerAsync(b);
        Assert.Equal(0, server.ConnectionCount);
        Assert.Equal(2, handler.Closed.Count);
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await server.SendAsync(new IPEndPoint(IPAddress.Loopback, 9), TestFramer.Message("x")));
    }

    [Fact]
    public async Task A_connect_that_gets_no_answer_fails_after_the_connect_timeout()
    {
        // A listener that never accepts: once its accept queue is full, Linux drops further SYNs, so the next
        // connect hangs until the transport's own timeout ends it. Linux queues backlog + 1 established connections:
        // with a backlog of 1, two connects complete and fill it (each must, within a bound), and the third hangs.
        using var deaf = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        deaf.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        deaf.Listen(1);
        var target = (IPEndPoint)deaf.LocalEndPoint!;
        var fillers = new List<Socket>();
        try
        {
            for (var i = 0; i < 2; i++)
            {
                var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                fillers.Add(filler);
                await filler.ConnectAsync(target).WaitAsync(Loopback.Timeout);
            }

            var time = new FakeTimeProvider();
            await using var client = new SipTcpTransport(
                new IPEndPoint(IPAddress.Loopback, 0),
                TestFramer.Frame,
                new RecordingHandler(),
                new SipTcpTransportOptions { TimeProvider = time, ConnectTimeout = TimeSpan.FromSeconds(5) });

            var send = client.SendAsync(target, TestFramer.Message("unanswered")).AsTask();
            Assert.False(send.IsCompleted);
            time.Advance(TimeSpan.FromSeconds(5));

            var error = await Assert.ThrowsAsync<SocketException>(() => send.WaitAsync(Loopback.Timeout));
            Assert.Equal(SocketError.TimedOut, error.SocketErrorCode);
            Assert.Equal(1, client.ConnectErrors);
            Assert.Equal(0, client.ConnectionCount);
        }
        finally
        {
            foreach (var filler in fillers)
            {
                filler.Dispose();
            }
        }
    }
}
