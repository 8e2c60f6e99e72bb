using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Net;
using System.Net.Sockets;

namespace CallState.Sip.Transport;

/// <summary>
/// SIP over TCP (RFC 3261 18): a listener whose connections are read through System.IO.Pipelines and framed by a
/// <see cref="SipFramer"/>, plus outbound connections. Open connections are kept by remote endpoint and reused for
/// responses and later requests to the same peer (RFC 3261 18.2.2, 18.3), whichever side opened them. With
/// <see cref="SipTcpTransportOptions.Tls"/> it is SIP over TLS (RFC 3261 26.2): every connection does its handshake on
/// its own task (never on the accept loop), bounded by the handshake timeout, and is used only once it succeeded.
/// Inbound and outbound connections have separate caps, and inbound ones a cap per source address, so a flood of
/// inbound connections never stops this side from dialling its next hops (docs/architecture.md, "TCP and TLS limits").
/// </summary>
public sealed class SipTcpTransport : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly SipFramer _framer;
    private readonly ISipStreamHandler _handler;
    private readonly SipTcpTransportOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly SipTlsHandshake? _tls;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly ConcurrentDictionary<long, SipTcpConnection> _open = new();
    private readonly ConcurrentDictionary<IPEndPoint, SipTcpConnection> _byRemote = new();
    private readonly ConcurrentDictionary<IPEndPoint, Task<SipTcpConnection>> _connecting = new();
    private readonly Lock _sourcesLock = new();
    private readonly Dictionary<IPAddress, int> _inboundBySource = [];
    private Task _acceptLoop = Task.CompletedTask;
    private long _nextId;
    private int _inboundCount;
    private int _outboundCount;
    private long _queuedSendBytes;
    private int _started;
    private int _disposed;

    private long _connectionsAccepted;
    private long _connectionsRejected;
    private long _connectionsRejectedPerSource;
    private long _outboundRefused;
    private long _connectionsOpened;
    private long _connectErrors;
    private long _acceptErrors;
    private long _messagesReceived;
    private long _messagesSent;
    private long _sendErrors;
    private long _invalidFrames;
    private long _oversizedMessages;
    private long _idleTimeouts;
    private long _messageTimeouts;
    private long _sendTimeouts;
    private long _sendQueueOverflows;
    private long _handlerErrors;
    private long _tlsHandshakes;
    private long _tlsHandshakeFailures;

    /// <summary>Binds and listens; call <see cref="Start"/> to begin accepting.</summary>
    public SipTcpTransport(IPEndPoint localEndPoint, SipFramer framer, ISipStreamHandler handler, SipTcpTransportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(localEndPoint);
        ArgumentNullException.ThrowIfNull(framer);
        ArgumentNullException.ThrowIfNull(handler);
        options ??= new SipTcpTransportOptions();
        options.Validate();
        _framer = framer;
        _handler = handler;
        _options = options;
        _timeProvider = options.TimeProvider;
        _tls = options.Tls is { } tls ? new SipTlsHandshake(tls) : null;

        _listener = new Socket(localEndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            _listener.Bind(localEndPoint);
            _listener.Listen(options.ListenBacklog);
            LocalEndPoint = (IPEndPoint)_listener.LocalEndPoint!;
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
    }

    /// <summary>The listening address, with the port the OS chose when port 0 was asked for.</summary>
    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Open connections, inbound and outbound.</summary>
    public int ConnectionCount => InboundConnectionCount + OutboundConnectionCount;

    /// <summary>Open connections peers opened.</summary>
    public int InboundConnectionCount => Volatile.Read(ref _inboundCount);

    /// <summary>Open connections this transport dialled.</summary>
    public int OutboundConnectionCount => Volatile.Read(ref _outboundCount);

    /// <summary>Bytes accepted for sending on every open connection and not yet written.</summary>
    public long QueuedSendBytes => Interlocked.Read(ref _queuedSendBytes);

    /// <summary>Inbound connections accepted.</summary>
    public long ConnectionsAccepted => Interlocked.Read(ref _connectionsAccepted);

    /// <summary>Inbound connections closed at once because <see cref="SipTcpTransportOptions.MaxInboundConnections"/> were open.</summary>
    public long ConnectionsRejected => Interlocked.Read(ref _connectionsRejected);

    /// <summary>
    /// Inbound connections closed at once because their source address had
    /// <see cref="SipTcpTransportOptions.MaxInboundConnectionsPerSource"/> open.
    /// </summary>
    public long ConnectionsRejectedPerSource => Interlocked.Read(ref _connectionsRejectedPerSource);

    /// <summary>Outbound connects not tried because <see cref="SipTcpTransportOptions.MaxOutboundConnections"/> were open (also in <see cref="ConnectErrors"/>).</summary>
    public long OutboundConnectionsRefused => Interlocked.Read(ref _outboundRefused);

    /// <summary>Outbound connections established.</summary>
    public long ConnectionsOpened => Interlocked.Read(ref _connectionsOpened);

    /// <summary>Outbound connects that failed, timed out or hit the connection limit.</summary>
    public long ConnectErrors => Interlocked.Read(ref _connectErrors);

    /// <summary>Socket errors from the accept loop.</summary>
    public long AcceptErrors => Interlocked.Read(ref _acceptErrors);

    /// <summary>Messages framed and handed to the handler.</summary>
    public long MessagesReceived => Interlocked.Read(ref _messagesReceived);

    /// <summary>Messages written.</summary>
    public long MessagesSent => Interlocked.Read(ref _messagesSent);

    /// <summary>Writes that failed (each closed its connection).</summary>
    public long SendErrors => Interlocked.Read(ref _sendErrors);

    /// <summary>Connections closed because the framer returned <see cref="OperationStatus.InvalidData"/>.</summary>
    public long InvalidFrames => Interlocked.Read(ref _invalidFrames);

    /// <summary>Connections closed for exceeding <see cref="SipTcpTransportOptions.MaxMessageSize"/>.</summary>
    public long OversizedMessages => Interlocked.Read(ref _oversizedMessages);

    /// <summary>Connections closed for idling past <see cref="SipTcpTransportOptions.IdleTimeout"/>.</summary>
    public long IdleTimeouts => Interlocked.Read(ref _idleTimeouts);

    /// <summary>Connections closed because a message begun was not complete within <see cref="SipTcpTransportOptions.MessageTimeout"/>.</summary>
    public long MessageTimeouts => Interlocked.Read(ref _messageTimeouts);

    /// <summary>Connections closed because a write was not taken within <see cref="SipTcpTransportOptions.SendTimeout"/>.</summary>
    public long SendTimeouts => Interlocked.Read(ref _sendTimeouts);

    /// <summary>Connections closed because a send would have passed <see cref="SipTcpTransportOptions.MaxSendQueueBytes"/>.</summary>
    public long SendQueueOverflows => Interlocked.Read(ref _sendQueueOverflows);

    /// <summary>Exceptions thrown by the handler.</summary>
    public long HandlerErrors => Interlocked.Read(ref _handlerErrors);

    /// <summary>True when every connection of this transport is a TLS connection.</summary>
    public bool IsTls => _tls is not null;

    /// <summary>TLS handshakes completed, inbound and outbound.</summary>
    public long TlsHandshakes => Interlocked.Read(ref _tlsHandshakes);

    /// <summary>
    /// TLS handshakes that failed, inbound and outbound: refused or missing certificates, protocol versions or errors,
    /// timeouts. Each closed its connection and was reported as a <see cref="SipTlsHandshakeException"/>.
    /// </summary>
    public long TlsHandshakeFailures => Interlocked.Read(ref _tlsHandshakeFailures);

    internal SipFramer Framer => _framer;

    internal int MaxMessageSize => _options.MaxMessageSize;

    /// <summary>Starts accepting connections. Call once.</summary>
    public void Start()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("The transport is already started.");
        }
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    /// <summary>The open connection to <paramref name="remote"/>, if there is one.</summary>
    public bool TryGetConnection(IPEndPoint remote, [NotNullWhen(true)] out SipTcpConnection? connection)
    {
        ArgumentNullException.ThrowIfNull(remote);
        if (_byRemote.TryGetValue(Normalize(remote), out connection) && !connection.IsClosed)
        {
            return true;
        }
        connection = null;
        return false;
    }

    /// <summary>
    /// Sends one message to <paramref name="remote"/> over the open connection to it, or over a new one
    /// (RFC 3261 18.1.1, 18.2.2). A new connection is read like an inbound one, so the peer's responses and
    /// requests on it reach the handler.
    /// </summary>
    /// <exception cref="SocketException">The connect failed, timed out, or the connection limit is reached.</exception>
    /// <exception cref="IOException">The write failed; the connection is closed.</exception>
    public ValueTask SendAsync(IPEndPoint remote, ReadOnlyMemory<byte> message, CancellationToken cancellationToken = default) =>
        SendAsync(remote, serverName: null, message, cancellationToken);

    /// <summary>
    /// Same as <see cref="SendAsync(IPEndPoint, ReadOnlyMemory{byte}, CancellationToken)"/>; on a TLS transport a new
    /// connection's peer must present a certificate naming <paramref name="serverName"/> (null: the IP address of
    /// <paramref name="remote"/>).
    /// </summary>
    /// <exception cref="SocketException">The connect failed, timed out, or the connection limit is reached.</exception>
    /// <exception cref="IOException">The write failed, or the TLS handshake did (<see cref="SipTlsHandshakeException"/>).</exception>
    public async ValueTask SendAsync(IPEndPoint remote, string? serverName, ReadOnlyMemory<byte> message, CancellationToken cancellationToken = default)
    {
        var connection = await GetOrConnectAsync(remote, serverName, cancellationToken).ConfigureAwait(false);
        await connection.SendAsync(message, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The open connection to <paramref name="remote"/>, or a new one. Concurrent callers for the same peer share one
    /// connect attempt, bounded by <see cref="SipTcpTransportOptions.ConnectTimeout"/>.
    /// </summary>
    public ValueTask<SipTcpConnection> GetOrConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default) =>
        GetOrConnectAsync(remote, serverName: null, cancellationToken);

    /// <summary>
    /// Same as <see cref="GetOrConnectAsync(IPEndPoint, CancellationToken)"/>; on a TLS transport a new connection's peer
    /// must present a certificate naming <paramref name="serverName"/> (null: the IP address of <paramref name="remote"/>).
    /// An open connection to <paramref name="remote"/> is reused whatever name it was opened for.
    /// </summary>
    public async ValueTask<SipTcpConnection> GetOrConnectAsync(IPEndPoint remote, string? serverName, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        remote = Normalize(remote);
        if (_byRemote.TryGetValue(remote, out var existing) && !existing.IsClosed)
        {
            return existing;
        }
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

        var attempt = new TaskCompletionSource<SipTcpConnection>(TaskCreationOptions.RunContinuationsAsynchronously);
        var pending = _connecting.GetOrAdd(remote, attempt.Task);
        if (pending == attempt.Task)
        {
            _ = ConnectAsync(remote, serverName, attempt);
        }
        return await pending.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task ConnectAsync(IPEndPoint remote, string? serverName, TaskCompletionSource<SipTcpConnection> attempt)
    {
        try
        {
            // A connection from that peer may have been accepted while this attempt was being set up.
            if (_byRemote.TryGetValue(remote, out var existing) && !existing.IsClosed)
            {
                attempt.SetResult(existing);
                return;
            }
            if (!TryReserveOutbound())
            {
                Interlocked.Increment(ref _outboundRefused);
                Interlocked.Increment(ref _connectErrors);
                throw new SocketException((int)SocketError.TooManyOpenSockets, $"Not connecting to {remote}: {_options.MaxOutboundConnections} outbound connections are open.");
            }
            var socket = new Socket(remote.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _timeProvider);
            try
            {
                socket.NoDelay = _options.NoDelay;
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, _shutdown.Token);
                await socket.ConnectAsync(remote, linked.Token).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                socket.Dispose();
                Interlocked.Decrement(ref _outboundCount);
                Interlocked.Increment(ref _connectErrors);
                ReportError(ex);
                if (ex is OperationCanceledException && timeout.IsCancellationRequested)
                {
                    throw new SocketException((int)SocketError.TimedOut, $"Connecting to {remote} timed out after {_options.ConnectTimeout}.");
                }
                throw;
            }
            var connection = Register(socket, source: null);
            if (_tls is not null)
            {
                await AuthenticateOutboundAsync(connection, serverName ?? remote.Address.ToString()).ConfigureAwait(false);
            }
            Run(connection, handshake: null);
            Interlocked.Increment(ref _connectionsOpened);
            attempt.SetResult(connection);
        }
#pragma warning disable CA1031 // Every failure is handed to the callers waiting on the attempt.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            attempt.TrySetException(ex);
        }
        finally
        {
            _connecting.TryRemove(KeyValuePair.Create(remote, attempt.Task));
        }
    }

    private async Task AcceptLoopAsync()
    {
        var token = _shutdown.Token;
        while (!token.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync(token).ConfigureAwait(false);
            }
            catch (Exception ex) when (token.IsCancellationRequested && ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                break;
            }
            catch (SocketException ex)
            {
                Interlocked.Increment(ref _acceptErrors);
                ReportError(ex);
                if (ex.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
                {
                    // Out of descriptors or memory: retrying at once would spin; give closing connections a moment.
                    try
                    {
                        await Task.Delay(TimeSpan.FromMilliseconds(100), _timeProvider, token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                }
                continue;
            }

            IPAddress source;
            try
            {
                source = Normalize((IPEndPoint)socket.RemoteEndPoint!).Address;
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // The peer reset before it could be looked at; there is nothing to serve.
                socket.Dispose();
                ReportError(ex);
                continue;
            }
            if (!TryReserveInbound(source))
            {
                socket.Dispose();
                continue;
            }
            Interlocked.Increment(ref _connectionsAccepted);
            try
            {
                socket.NoDelay = _options.NoDelay;
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // The peer reset between accept and set-up; there is nothing to serve.
                ReleaseInbound(source);
                socket.Dispose();
                ReportError(ex);
                continue;
            }
            SipTcpConnection? connection = null;
            try
            {
                // Register gives the slots back itself if it fails; once it succeeded, closing does.
                connection = Register(socket, source);
                // The handshake runs on the connection's task: a slow or silent peer never holds up the next accept.
                Run(connection, _tls is null ? null : AuthenticateInboundAsync);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                connection?.Close();
                ReportError(ex);
            }
        }
    }

    private bool TryReserveOutbound()
    {
        if (Interlocked.Increment(ref _outboundCount) > _options.MaxOutboundConnections)
        {
            Interlocked.Decrement(ref _outboundCount);
            return false;
        }
        return true;
    }

    /// <summary>Takes a slot of the inbound cap and one of <paramref name="source"/>'s; counts a refusal.</summary>
    private bool TryReserveInbound(IPAddress source)
    {
        if (Interlocked.Increment(ref _inboundCount) > _options.MaxInboundConnections)
        {
            Interlocked.Decrement(ref _inboundCount);
            Interlocked.Increment(ref _connectionsRejected);
            return false;
        }
        lock (_sourcesLock)
        {
            _inboundBySource.TryGetValue(source, out var open);
            if (open >= _options.MaxInboundConnectionsPerSource)
            {
                Interlocked.Decrement(ref _inboundCount);
                Interlocked.Increment(ref _connectionsRejectedPerSource);
                return false;
            }
            _inboundBySource[source] = open + 1;
        }
        return true;
    }

    private void ReleaseInbound(IPAddress source)
    {
        lock (_sourcesLock)
        {
            // A source with nothing open leaves the table, so scans from many addresses do not grow it.
            if (_inboundBySource.TryGetValue(source, out var open) && open > 1)
            {
                _inboundBySource[source] = open - 1;
            }
            else
            {
                _inboundBySource.Remove(source);
            }
        }
        Interlocked.Decrement(ref _inboundCount);
    }

    /// <summary>Open inbound connections from <paramref name="source"/>.</summary>
    public int InboundConnectionsFrom(IPAddress source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.IsIPv4MappedToIPv6)
        {
            source = source.MapToIPv4();
        }
        lock (_sourcesLock)
        {
            return _inboundBySource.GetValueOrDefault(source);
        }
    }

    /// <summary>
    /// Wraps a connected socket holding a reserved slot (inbound from <paramref name="source"/>, or outbound when it is
    /// null) and counts it as open (closing it releases the slot); on failure releases both and rethrows. It is not yet
    /// used for sending: see <see cref="Publish"/>.
    /// </summary>
    private SipTcpConnection Register(Socket socket, IPAddress? source)
    {
        SipTcpConnection connection;
        try
        {
            connection = new SipTcpConnection(this, socket, Interlocked.Increment(ref _nextId), isInbound: source is not null, _tls is not null, _options);
        }
        catch
        {
            if (source is null)
            {
                Interlocked.Decrement(ref _outboundCount);
            }
            else
            {
                ReleaseInbound(source);
            }
            socket.Dispose();
            throw;
        }
        _open[connection.Id] = connection;
        if (Volatile.Read(ref _disposed) != 0)
        {
            // Raced with DisposeAsync, which may already have taken its list of connections to close.
            connection.Close();
        }
        return connection;
    }

    /// <summary>Starts reading (after the handshake, when there is one); a connection with no handshake to do is usable at once.</summary>
    private void Run(SipTcpConnection connection, Func<SipTcpConnection, Task<bool>>? handshake)
    {
        if (handshake is null)
        {
            Publish(connection);
        }
        connection.Start(handshake);
    }

    /// <summary>Makes a connection the one sends to its peer go over (on TLS, only once its handshake succeeded).</summary>
    private void Publish(SipTcpConnection connection)
    {
        // The newest connection to a peer wins: it is the one the peer is most likely to keep open.
        _byRemote[connection.RemoteEndPoint] = connection;
        if (connection.IsClosed)
        {
            // Closed meanwhile (a limit, the peer, DisposeAsync): OnClosed may already have run, so take it out again.
            _byRemote.TryRemove(KeyValuePair.Create(connection.RemoteEndPoint, connection));
        }
    }

    private async Task<bool> AuthenticateInboundAsync(SipTcpConnection connection)
    {
        using var timeout = new CancellationTokenSource(_tls!.Timeout, _timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, connection.Closing);
        try
        {
            await _tls.AcceptAsync(connection.Tls!, connection.RemoteEndPoint, linked.Token).ConfigureAwait(false);
        }
        catch (SipTlsHandshakeException ex)
        {
            CountHandshakeFailure(ex);
            return false;
        }
#pragma warning disable CA1031 // Anything else failing here ends this connection alone, counted like a failed handshake.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            CountHandshakeFailure(new SipTlsHandshakeException(connection.RemoteEndPoint, inbound: true, ex.Message, innerException: ex));
            return false;
        }
        connection.OnAuthenticated();
        Interlocked.Increment(ref _tlsHandshakes);
        Publish(connection);
        return true;
    }

    /// <summary>The client side of the handshake of a new outbound connection; on failure closes it and throws.</summary>
    /// <exception cref="SipTlsHandshakeException">The handshake failed, timed out, or the next hop's certificate was refused.</exception>
    private async Task AuthenticateOutboundAsync(SipTcpConnection connection, string serverName)
    {
        using var timeout = new CancellationTokenSource(_tls!.Timeout, _timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, connection.Closing, _shutdown.Token);
        try
        {
            await _tls.ConnectAsync(connection.Tls!, connection.RemoteEndPoint, serverName, linked.Token).ConfigureAwait(false);
        }
        catch (SipTlsHandshakeException ex)
        {
            connection.Close();
            Interlocked.Increment(ref _connectErrors);
            CountHandshakeFailure(ex);
            throw;
        }
        connection.OnAuthenticated();
        Interlocked.Increment(ref _tlsHandshakes);
    }

    private void CountHandshakeFailure(SipTlsHandshakeException ex)
    {
        Interlocked.Increment(ref _tlsHandshakeFailures);
        ReportError(ex);
    }

    internal void OnClosed(SipTcpConnection connection)
    {
        if (_open.TryRemove(connection.Id, out _))
        {
            if (connection.IsInbound)
            {
                ReleaseInbound(connection.RemoteEndPoint.Address);
            }
            else
            {
                Interlocked.Decrement(ref _outboundCount);
            }
        }
        _byRemote.TryRemove(KeyValuePair.Create(connection.RemoteEndPoint, connection));
        try
        {
            _handler.OnConnectionClosed(connection);
        }
#pragma warning disable CA1031 // A handler bug must not stop the transport from closing connections.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Interlocked.Increment(ref _handlerErrors);
            ReportError(ex);
        }
    }

    internal void Deliver(in ReadOnlySequence<byte> message, SipTcpConnection connection)
    {
        Interlocked.Increment(ref _messagesReceived);
        try
        {
            _handler.OnMessage(in message, connection);
        }
#pragma warning disable CA1031 // A handler bug for one message must not tear down the connection or its peer's calls.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Interlocked.Increment(ref _handlerErrors);
            ReportError(ex);
        }
    }

    internal void CountSent() => Interlocked.Increment(ref _messagesSent);

    internal void CountSendError(Exception ex)
    {
        Interlocked.Increment(ref _sendErrors);
        ReportError(ex);
    }

    internal void CountInvalidFrame() => Interlocked.Increment(ref _invalidFrames);

    internal void CountOversized() => Interlocked.Increment(ref _oversizedMessages);

    internal void CountIdleTimeout() => Interlocked.Increment(ref _idleTimeouts);

    internal void CountMessageTimeout() => Interlocked.Increment(ref _messageTimeouts);

    internal void CountSendTimeout() => Interlocked.Increment(ref _sendTimeouts);

    internal void CountSendQueueFull() => Interlocked.Increment(ref _sendQueueOverflows);

    internal void AddQueuedSendBytes(long bytes) => Interlocked.Add(ref _queuedSendBytes, bytes);

    /// <summary>IPv4 peers seen through a dual-mode socket are keyed as IPv4, so both paths find the same connection.</summary>
    internal static IPEndPoint Normalize(IPEndPoint endPoint) =>
        endPoint.Address.IsIPv4MappedToIPv6 ? new IPEndPoint(endPoint.Address.MapToIPv4(), endPoint.Port) : endPoint;

    private void ReportError(Exception ex)
    {
        var onError = _options.OnError;
        if (onError is null)
        {
            return;
        }
        try
        {
            onError(ex);
        }
#pragma warning disable CA1031 // The error sink is the last resort; its own failure has nowhere left to go.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    /// <summary>Stops accepting, closes every connection and waits for their read loops to end.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _shutdown.Cancel();
        _listener.Dispose();
        await _acceptLoop.ConfigureAwait(false);

        var closing = new List<Task>();
        foreach (var connection in _open.Values)
        {
            connection.Close();
            closing.Add(connection.Completion);
        }
        await Task.WhenAll(closing).ConfigureAwait(false);
        _shutdown.Dispose();
    }
}
