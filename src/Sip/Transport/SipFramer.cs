using System.Buffers;

namespace CallState.Sip.Transport;

/// <summary>
/// Finds the first complete SIP message in a stream buffer (RFC 3261 18.3: on a stream transport the
/// Content-Length header marks where the body, and so the message, ends).
/// </summary>
/// <param name="buffer">The unconsumed bytes read from the connection so far.</param>
/// <param name="consumed">Where the next framing starts: after the message on <c>Done</c>, usually the start otherwise.</param>
/// <param name="examined">How far the framer looked; the transport waits for bytes past it before calling again, so
/// a sender trickling a large header in small pieces is never rescanned from the start.</param>
/// <param name="message">On <c>Done</c>, the framed message (a slice of <paramref name="buffer"/>).</param>
/// <returns><see cref="OperationStatus.Done"/> for one message, <see cref="OperationStatus.NeedMoreData"/> to wait for
/// more bytes, <see cref="OperationStatus.InvalidData"/> when the stream can no longer be framed (the transport closes it).</returns>
public delegate OperationStatus SipFramer(
    in ReadOnlySequence<byte> buffer,
    out SequencePosition consumed,
    out SequencePosition examined,
    out ReadOnlySequence<byte> message);

/// <summary>Receives the messages framed on TCP connections, synchronously on the connection's read loop.</summary>
public interface ISipStreamHandler
{
    /// <summary>
    /// Called once per framed message. <paramref name="message"/> points into the connection's pipe and is released
    /// when this returns: copy what must outlive the call. An exception is counted and the connection goes on.
    /// </summary>
    void OnMessage(in ReadOnlySequence<byte> message, SipTcpConnection connection);

    /// <summary>
    /// Called once when a connection closes, whatever the cause, so the transaction layer can fail what was waiting
    /// on it (RFC 3261 18.4 reports a transport error as a 503 to the transaction user).
    /// </summary>
    void OnConnectionClosed(SipTcpConnection connection)
    {
    }
}

/// <summary>Settings of a <see cref="SipTcpTransport"/>.</summary>
public sealed class SipTcpTransportOptions
{
    /// <summary>64 KiB: a SIP message larger than this is not one a proxy should be asked to carry.</summary>
    public const int DefaultMaxMessageSize = 64 * 1024;

    /// <summary>256 KiB: a few hundred SIP messages waiting for one peer that does not read.</summary>
    public const int DefaultMaxSendQueueBytes = 256 * 1024;

    /// <summary>
    /// Connections peers opened to this transport, at most. One past it is closed at once and counted; it never takes
    /// the room of an outbound connection (<see cref="MaxOutboundConnections"/>), so an inbound flood does not stop
    /// this side from reaching its next hops.
    /// </summary>
    public int MaxInboundConnections { get; set; } = 10_000;

    /// <summary>Connections this transport dialled, at most; a send needing one more fails with <see cref="System.Net.Sockets.SocketError.TooManyOpenSockets"/>.</summary>
    public int MaxOutboundConnections { get; set; } = 1_000;

    /// <summary>
    /// Inbound connections from one IP address, at most: one host cannot take the whole of
    /// <see cref="MaxInboundConnections"/>. One past it is closed at once and counted.
    /// </summary>
    public int MaxInboundConnectionsPerSource { get; set; } = 64;

    /// <summary>
    /// A connection with no complete message (or CR LF keep-alive) received or sent for this long is closed. Bytes of a
    /// message not yet complete do not count, so trickling a message never keeps a connection open. Two minutes
    /// outlasts Timer B/F (64*T1 = 32 s), so no transaction still waiting on the connection loses it;
    /// <see cref="Timeout.InfiniteTimeSpan"/> disables it.
    /// </summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Once the first byte of a message has arrived, its headers and body (by Content-Length) must all arrive within this
    /// time, else the connection is closed and counted (a slow sender holding a connection open byte by byte).
    /// </summary>
    public TimeSpan MessageTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A write the peer does not take (its TCP window stays shut) for this long closes the connection; the sends
    /// waiting on it fail (RFC 3261 18.4: the transaction user sees a transport error).
    /// </summary>
    public TimeSpan SendTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Bytes of messages accepted for one connection and not yet written, at most. A send that would pass it closes the
    /// connection and fails with the others waiting, so a peer that does not read cannot grow this side's memory.
    /// A single message is always taken when nothing else waits.
    /// </summary>
    public int MaxSendQueueBytes { get; set; } = DefaultMaxSendQueueBytes;

    /// <summary>
    /// Bytes a peer may send before completing a message. A peer past it is disconnected, so a stream that never
    /// frames cannot grow the buffer without bound.
    /// </summary>
    public int MaxMessageSize { get; set; } = DefaultMaxMessageSize;

    /// <summary>How long an outbound connect may take before it fails with <see cref="System.Net.Sockets.SocketError.TimedOut"/>.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Pending connections the OS queues for the accept loop.</summary>
    public int ListenBacklog { get; set; } = 512;

    /// <summary>Disables Nagle: SIP messages are written whole, and a response held back 40 ms delays the call.</summary>
    public bool NoDelay { get; set; } = true;

    /// <summary>Source of time for idle and connect timeouts.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Told of each handler exception and socket error; counters record them whether or not it is set.</summary>
    public Action<Exception>? OnError { get; set; }

    /// <summary>Makes every connection a TLS connection (SIP over TLS, RFC 3261 26.2); null: plain TCP.</summary>
    public SipTlsTransportOptions? Tls { get; set; }

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxInboundConnections, 1, nameof(MaxInboundConnections));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxOutboundConnections, 1, nameof(MaxOutboundConnections));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxInboundConnectionsPerSource, 1, nameof(MaxInboundConnectionsPerSource));
        if (IdleTimeout != Timeout.InfiniteTimeSpan)
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(IdleTimeout, TimeSpan.Zero, nameof(IdleTimeout));
        }
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(MessageTimeout, TimeSpan.Zero, nameof(MessageTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(SendTimeout, TimeSpan.Zero, nameof(SendTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxSendQueueBytes, 1, nameof(MaxSendQueueBytes));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxMessageSize, 64, nameof(MaxMessageSize));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ConnectTimeout, TimeSpan.Zero, nameof(ConnectTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(ListenBacklog, 1, nameof(ListenBacklog));
        ArgumentNullException.ThrowIfNull(TimeProvider, nameof(TimeProvider));
        Tls?.Validate();
    }
}
