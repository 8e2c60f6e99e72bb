using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using CallState.Sip.Messages;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>
/// A SIP peer for the fuzz run on a UDP and TCP port of the test range: it records every datagram and every TCP
/// connection it gets and, as the callee, answers each request but ACK (INVITE 486 Busy Here, so admitted slots go back
/// at once; anything else 200 OK), copying the request's Via, From, To, Call-ID and CSeq fields as the parser found them.
/// </summary>
public sealed class FuzzPeer : IDisposable
{
    private readonly Socket _udp = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    private readonly TcpListener _tcp;
    private readonly ConcurrentQueue<byte[]> _received = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly bool _answer;
    private long _connections;

    public FuzzPeer(bool answer)
    {
        _answer = answer;
        Port = SipEdgeProcess.FreeUdpAndTcpPort();
        _udp.Bind(new IPEndPoint(IPAddress.Loopback, Port));
        _tcp = new TcpListener(IPAddress.Loopback, Port);
        _tcp.Start();
        _ = ReceiveAsync();
        _ = AcceptAsync();
    }

    public int Port { get; }

    /// <summary>Datagrams received (requests and responses).</summary>
    public int Datagrams => _received.Count;

    /// <summary>TCP connections accepted.</summary>
    public long Connections => Interlocked.Read(ref _connections);

    /// <summary>What was received, for a failure message.</summary>
    public IEnumerable<byte[]> Received => _received;

    private async Task ReceiveAsync()
    {
        var buffer = new byte[70_000];
        using var request = new SipMessage();
        try
        {
            while (true)
            {
                var from = new IPEndPoint(IPAddress.Any, 0);
                var got = await _udp.ReceiveFromAsync(buffer, SocketFlags.None, from, _stop.Token);
                var bytes = buffer.AsSpan(0, got.ReceivedBytes).ToArray();
                _received.Enqueue(bytes);
                if (_answer && request.Parse(bytes) == SipParseError.None && request.IsRequest && request.Method != SipMethod.Ack)
                {
                    await _udp.SendToAsync(AnswerTo(request), SocketFlags.None, got.RemoteEndPoint, _stop.Token);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                using var client = await _tcp.AcceptTcpClientAsync(_stop.Token);
                Interlocked.Increment(ref _connections);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    private static byte[] AnswerTo(SipMessage request)
    {
        using var writer = new PooledBufferWriter(512);
        writer.Write(request.Method == SipMethod.Invite ? "SIP/2.0 486 Busy Here\r\n"u8 : "SIP/2.0 200 OK\r\n"u8);
        var s = request.Span;
        foreach (var field in request.Fields)
        {
            if (field.Kind is SipHeaderKind.Via or SipHeaderKind.From or SipHeaderKind.CallId or SipHeaderKind.CSeq or SipHeaderKind.To)
            {
                writer.Write(field.Name.Of(s));
                writer.Write(": "u8);
                writer.Write(field.Value.Of(s));
                if (field.Kind == SipHeaderKind.To && request.ToTag.IsEmpty)
                {
                    writer.Write(";tag=fuzz"u8);
                }
                writer.Write("\r\n"u8);
            }
        }
        writer.Write("Content-Length: 0\r\n\r\n"u8);
        return writer.WrittenSpan.ToArray();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _udp.Dispose();
        _tcp.Stop();
        _stop.Dispose();
    }
}

/// <summary>What the edge must do with one fuzz input, from the same parser's verdict on it.</summary>
public readonly record struct FuzzExpectation(int Status, string StatusLine)
{
    /// <summary>
    /// A request that does not parse, whose header fields could be read and which has a Via, and is not an ACK, gets its
    /// parse error's status and reason (docs/security.md, the proxy's RejectMalformed); anything else that does not parse
    /// is dropped (Status 0, nothing sent back).
    /// </summary>
    public static FuzzExpectation? Of(SipMessage m)
    {
        ArgumentNullException.ThrowIfNull(m);
        if (m.Error == SipParseError.None)
        {
            return null;
        }
        if (m.IsRequest && m.Method != SipMethod.Ack && m.HeadersReadable && m.Has(SipHeaderKind.Via))
        {
            var status = SipParseErrors.StatusCode(m.Error);
            return new FuzzExpectation(status, $"SIP/2.0 {status} {System.Text.Encoding.ASCII.GetString(SipParseErrors.ReasonPhrase(m.Error))}");
        }
        return new FuzzExpectation(0, "");
    }
}

/// <summary>Frames a byte stream the way the edge's TCP connections do (<see cref="SipStreamFramer"/>).</summary>
public static class FuzzFraming
{
    /// <summary>The messages framed from <paramref name="stream"/> and how framing stopped.</summary>
    public static (List<byte[]> Messages, OperationStatus Stop) Frame(byte[] stream)
    {
        var messages = new List<byte[]>();
        var buffer = new ReadOnlySequence<byte>(stream);
        while (true)
        {
            var status = SipStreamFramer.Frame(buffer, out var consumed, out _, out var message);
            if (status != OperationStatus.Done)
            {
                return (messages, status);
            }
            messages.Add(message.ToArray());
            buffer = buffer.Slice(consumed);
        }
    }
}
