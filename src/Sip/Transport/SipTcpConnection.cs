using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace CallState.Sip.Transport;

/// <summary>
/// One TCP connection of a <see cref="SipTcpTransport"/>, inbound or outbound, in plain text or, on a TLS transport,
/// inside a TLS session (RFC 3261 26.2). Its read loop frames messages for the handler; writes from any thread are
/// serialized so two messages never interleave on the stream. Three deadlines bound what a peer can hold: a message
/// begun must complete (<see cref="SipTcpTransportOptions.MessageTimeout"/>), a write must be taken
/// (<see cref="SipTcpTransportOptions.SendTimeout"/>), and a connection with no complete message closes
/// (<see cref="SipTcpTransportOptions.IdleTimeout"/>); the bytes waiting to be written are capped
/// (<see cref="SipTcpTransportOptions.MaxSendQueueBytes"/>).
/// </summary>
public sealed class SipTcpConnection : IDisposable
{
    private readonly SipTcpTransport _transport;
    private readonly Socket _socket;
    private readonly Stream _stream;
    private readonly SslStream? _tls;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly CancellationTokenSource _closing = new();
    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _idleTimeout;
    private readonly ITimer? _idleTimer;
    private readonly ConnectionDeadline _messageDeadline;
    private readonly ConnectionDeadline _sendDeadline;
    private readonly int _maxSendQueueBytes;
    private long _lastActivity;
    private int _closed;
    private long _messagesReceived;
    private long _messagesSent;
    private long _queuedSendBytes;

    internal SipTcpConnection(SipTcpTransport transport, Socket socket, long id, bool isInbound, bool tls, SipTcpTransportOptions options)
    {
        _transport = transport;
        _socket = socket;
        var network = new NetworkStream(socket, ownsSocket: true);
        if (tls)
        {
            _tls = new SslStream(network, leaveInnerStreamOpen: false);
            _stream = _tls;
        }
        else
        {
            _stream = network;
        }
        Id = id;
        IsInbound = isInbound;
        RemoteEndPoint = SipTcpTransport.Normalize((IPEndPoint)socket.RemoteEndPoint!);
        LocalEndPoint = (IPEndPoint)socket.LocalEndPoint!;
        var timeProvider = options.TimeProvider;
        _timeProvider = timeProvider;
        _idleTimeout = options.IdleTimeout;
        _maxSendQueueBytes = options.MaxSendQueueBytes;
        _lastActivity = timeProvider.GetTimestamp();
        _messageDeadline = new ConnectionDeadline(timeProvider, options.MessageTimeout, OnMessageTimeout);
        _sendDeadline = new ConnectionDeadline(timeProvider, options.SendTimeout, OnSendTimeout);
        if (_idleTimeout != Timeout.InfiniteTimeSpan)
        {
            // One timer per connection, re-armed only when it fires: activity just stamps a time, so a busy
            // connection costs no timer operation per message.
            _idleTimer = timeProvider.CreateTimer(static s => ((SipTcpConnection)s!).OnIdleTimer(), this, _idleTimeout, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Unique within the transport, for logs.</summary>
    public long Id { get; }

    /// <summary>True for a connection the peer opened, false for one this transport connected.</summary>
    public bool IsInbound { get; }

    /// <summary>The peer (IPv4-mapped IPv6 addresses reported as IPv4), the key of the connection-reuse table.</summary>
    public IPEndPoint RemoteEndPoint { get; }

    /// <summary>This side's address.</summary>
    public IPEndPoint LocalEndPoint { get; }

    /// <summary>True once the connection is closed, by either side or a limit.</summary>
    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <summary>Messages framed on this connection.</summary>
    public long MessagesReceived => Interlocked.Read(ref _messagesReceived);

    /// <summary>Messages written to this connection.</summary>
    public long MessagesSent => Interlocked.Read(ref _messagesSent);

    /// <summary>Bytes of the messages accepted by <see cref="SendAsync"/> and not yet written (the one being written included).</summary>
    public long QueuedSendBytes => Interlocked.Read(ref _queuedSendBytes);

    /// <summary>True for a connection inside a TLS session (SIP transport TLS).</summary>
    public bool IsTls => _tls is not null;

    /// <summary>The TLS version agreed on; <see cref="SslProtocols.None"/> for plain TCP or before the handshake.</summary>
    public SslProtocols TlsProtocol { get; private set; }

    /// <summary>
    /// The peer's certificate, validated during the handshake: a client certificate checked against the trusted client
    /// CAs on an inbound connection, the next hop's certificate on an outbound one. Null on plain TCP and when an inbound
    /// peer presented none (client certificates not asked for, or optional).
    /// </summary>
    public X509Certificate2? RemoteCertificate { get; private set; }

    /// <summary>SHA-256 thumbprint of <see cref="RemoteCertificate"/>, upper-case hex: a stable key to identify a trunk by.</summary>
    public string? RemoteCertificateSha256 { get; private set; }

    /// <summary>The DNS names in the subject alternative names of <see cref="RemoteCertificate"/>; empty without one.</summary>
    public IReadOnlyList<string> RemoteCertificateDnsNames { get; private set; } = [];

    internal SslStream? Tls => _tls;

    internal CancellationToken Closing => _closing.Token;

    internal Task Completion { get; private set; } = Task.CompletedTask;

    /// <summary>
    /// Writes one whole message, after the writes already under way. A failed, timed-out or cancelled write closes the
    /// connection, since the peer may have seen part of a message and the stream can no longer be framed; so does a
    /// message that would take the bytes waiting past <see cref="SipTcpTransportOptions.MaxSendQueueBytes"/>.
    /// </summary>
    /// <exception cref="IOException">The connection is closed, the write failed or timed out, or the send queue is full.</exception>
    public async ValueTask SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        var length = message.Length;
        var queued = Interlocked.Add(ref _queuedSendBytes, length);
        if (queued > _maxSendQueueBytes && queued != length)
        {
            // The peer is not taking what it was sent: holding more would grow this side's memory without bound.
            Interlocked.Add(ref _queuedSendBytes, -length);
            _transport.CountSendQueueFull();
            Close();
            throw new IOException($"Sending to {RemoteEndPoint} failed: {queued - length} bytes were already waiting; the connection is closed.");
        }
        _transport.AddQueuedSendBytes(length);
        var locked = false;
        try
        {
            await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
            locked = true;
            ThrowIfClosed();
            _sendDeadline.Start();
            try
            {
                await _stream.WriteAsync(message, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _sendDeadline.Stop();
            }
            Touch();
            Interlocked.Increment(ref _messagesSent);
            _transport.CountSent();
        }
        catch (OperationCanceledException) when (!locked)
        {
            // Cancelled while waiting its turn: nothing of it was written, the connection goes on.
            throw;
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            _transport.CountSendError(ex);
            Close();
            if (ex is OperationCanceledException)
            {
                throw;
            }
            throw new IOException($"Sending to {RemoteEndPoint} failed; the connection is closed.", ex);
        }
        finally
        {
            if (locked)
            {
                _writeLock.Release();
            }
            Interlocked.Add(ref _queuedSendBytes, -length);
            _transport.AddQueuedSendBytes(-length);
        }
    }

    /// <summary>Closes the connection and removes it from the transport; idempotent.</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }
        _closing.Cancel();
        _idleTimer?.Dispose();
        _messageDeadline.Dispose();
        _sendDeadline.Dispose();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
            // Already reset or never fully connected: closing is all that is left to do.
        }
        catch (ObjectDisposedException)
        {
        }
        _stream.Dispose();
        _transport.OnClosed(this);
    }

    /// <summary>Same as <see cref="Close"/>.</summary>
    public void Dispose() => Close();

    public override string ToString() => $"{(IsTls ? "tls" : "tcp")}#{Id} {RemoteEndPoint}";

    /// <summary>Starts the read loop, after <paramref name="handshake"/> when there is one; a failed handshake closes the connection.</summary>
    internal void Start(Func<SipTcpConnection, Task<bool>>? handshake = null) =>
        Completion = Task.Run(handshake is null ? ReadLoopAsync : () => HandshakeThenReadAsync(handshake));

    /// <summary>Takes what the completed handshake established: the TLS version and the peer's validated certificate.</summary>
    internal void OnAuthenticated()
    {
        var tls = _tls!;
        TlsProtocol = tls.SslProtocol;
        if (tls.RemoteCertificate is not { } remote)
        {
            return;
        }
        // A copy: the stream's own instance goes when the connection closes, and a policy may keep this one longer.
        var certificate = X509CertificateLoader.LoadCertificate(remote.GetRawCertData());
        RemoteCertificateSha256 = certificate.GetCertHashString(HashAlgorithmName.SHA256);
        var names = new List<string>();
        foreach (var extension in certificate.Extensions)
        {
            if (extension.Oid?.Value == "2.5.29.17")
            {
                names.AddRange(new X509SubjectAlternativeNameExtension(extension.RawData, extension.Critical).EnumerateDnsNames());
            }
        }
        RemoteCertificateDnsNames = names;
        RemoteCertificate = certificate;
    }

    private async Task HandshakeThenReadAsync(Func<SipTcpConnection, Task<bool>> handshake)
    {
        if (!await handshake(this).ConfigureAwait(false))
        {
            Close();
            return;
        }
        await ReadLoopAsync().ConfigureAwait(false);
    }

    private async Task ReadLoopAsync()
    {
        var reader = PipeReader.Create(_stream, new StreamPipeReaderOptions(leaveOpen: true));
        var token = _closing.Token;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(token).ConfigureAwait(false);
                if (!FrameAll(result, out var consumed, out var examined))
                {
                    break;
                }
                var buffer = result.Buffer;
                var pending = buffer.Slice(consumed).Length;
                var completed = pending != buffer.Length;
                if (completed)
                {
                    // A message or a CR LF keep-alive: only whole ones keep the connection from idling out.
                    Touch();
                }
                if (pending == 0)
                {
                    _messageDeadline.Stop();
                }
                else if (completed || !_messageDeadline.IsRunning)
                {
                    // The first bytes of a message: it has until the message timeout to complete, however it trickles.
                    _messageDeadline.Start();
                }
                reader.AdvanceTo(consumed, examined);
                if (result.IsCompleted || result.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            // A reset or a close from this side ends the loop like an orderly close does.
        }
        finally
        {
            await reader.CompleteAsync().ConfigureAwait(false);
            Close();
        }
    }

    /// <summary>Frames every complete message in the buffer. False when the connection must be closed.</summary>
    private bool FrameAll(in ReadResult result, out SequencePosition consumed, out SequencePosition examined)
    {
        var buffer = result.Buffer;
        consumed = buffer.Start;
        examined = buffer.Start;
        var maxMessageSize = _transport.MaxMessageSize;
        while (true)
        {
            var status = _transport.Framer(in buffer, out var messageEnd, out var framerExamined, out var message);
            if (status == OperationStatus.Done)
            {
                var rest = buffer.Slice(messageEnd);
                if (message.IsEmpty || rest.Length == buffer.Length)
                {
                    // A framer that reports a message without moving forward would spin here forever.
                    _transport.CountInvalidFrame();
                    return false;
                }
                if (message.Length > maxMessageSize)
                {
                    _transport.CountOversized();
                    return false;
                }
                Interlocked.Increment(ref _messagesReceived);
                _transport.Deliver(in message, this);
                if (IsClosed)
                {
                    return false;
                }
                buffer = rest;
                consumed = messageEnd;
                examined = messageEnd;
                continue;
            }
            if (status == OperationStatus.NeedMoreData)
            {
                consumed = messageEnd;
                examined = framerExamined;
                if (buffer.Slice(messageEnd).Length > maxMessageSize)
                {
                    // The peer has sent more than any message may be without completing one.
                    _transport.CountOversized();
                    return false;
                }
                // A peer that closed mid-message leaves a fragment that can never complete.
                return !result.IsCompleted;
            }
            _transport.CountInvalidFrame();
            return false;
        }
    }

    private void Touch() => Volatile.Write(ref _lastActivity, _timeProvider.GetTimestamp());

    private void OnIdleTimer()
    {
        if (IsClosed)
        {
            return;
        }
        var idle = _timeProvider.GetElapsedTime(Volatile.Read(ref _lastActivity));
        if (idle >= _idleTimeout)
        {
            _transport.CountIdleTimeout();
            Close();
            return;
        }
        ConnectionDeadline.Change(_idleTimer!, _idleTimeout - idle);
    }

    private void OnMessageTimeout()
    {
        if (IsClosed)
        {
            return;
        }
        _transport.CountMessageTimeout();
        Close();
    }

    private void OnSendTimeout()
    {
        if (IsClosed)
        {
            return;
        }
        // Closing fails the write under way, and with it every send waiting behind it.
        _transport.CountSendTimeout();
        Close();
    }

    private void ThrowIfClosed()
    {
        if (IsClosed)
        {
            throw new IOException($"The connection to {RemoteEndPoint} is closed.");
        }
    }
}
