using System.Buffers;
using System.Net;
using System.Net.Sockets;

namespace CallState.Sip.Transport;

/// <summary>Receives each UDP datagram synchronously on the receive loop that read it.</summary>
public interface ISipDatagramHandler
{
    /// <summary>
    /// Called once per datagram. <paramref name="datagram"/> and <paramref name="remote"/> belong to the loop
    /// and are overwritten by its next receive: copy what must outlive the call
    /// (<see cref="SocketAddressExtensions.Clone"/> for the address). An exception is counted and the loop goes on.
    /// </summary>
    void OnDatagram(ReadOnlySpan<byte> datagram, SocketAddress remote, SipUdpTransport transport);
}

/// <summary>Settings of a <see cref="SipUdpTransport"/>.</summary>
public sealed class SipUdpTransportOptions
{
    /// <summary>Concurrent receive loops; each owns one 64 KiB buffer and one address.</summary>
    public int ReceiveLoops { get; set; } = 2;

    /// <summary>SO_RCVBUF in bytes, or null for the OS default. Bursts of INVITEs are dropped by the kernel past it.</summary>
    public int? ReceiveBufferSize { get; set; }

    /// <summary>SO_SNDBUF in bytes, or null for the OS default.</summary>
    public int? SendBufferSize { get; set; }

    /// <summary>
    /// Datagrams longer than this are counted and dropped. The default lets through anything UDP can carry;
    /// RFC 3261 18.1.1 keeps well-behaved senders far below it.
    /// </summary>
    public int MaxDatagramSize { get; set; } = SipUdpTransport.MaxUdpPayload;

    /// <summary>Told of each handler exception and socket error; counters record them whether or not it is set.</summary>
    public Action<Exception>? OnError { get; set; }

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(ReceiveLoops, 1, nameof(ReceiveLoops));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ReceiveLoops, 64, nameof(ReceiveLoops));
        if (ReceiveBufferSize is { } receive)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(receive, 1, nameof(ReceiveBufferSize));
        }
        if (SendBufferSize is { } send)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(send, 1, nameof(SendBufferSize));
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxDatagramSize, 1, nameof(MaxDatagramSize));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(MaxDatagramSize, SipUdpTransport.MaxUdpPayload, nameof(MaxDatagramSize));
    }
}

/// <summary>
/// SIP over UDP (RFC 3261 18): one socket, several receive loops that each reuse one pooled buffer and one
/// <see cref="SocketAddress"/>, so receiving a datagram allocates nothing. A loop survives handler exceptions
/// and socket errors for as long as the transport is open.
/// </summary>
public sealed class SipUdpTransport : IDisposable, IAsyncDisposable
{
    /// <summary>Largest UDP payload over IPv4 and IPv6 without jumbograms (65,535 minus the UDP header).</summary>
    public const int MaxUdpPayload = 65_527;

    // Larger than any UDP payload, so a datagram is never silently cut short; MaxDatagramSize does the limiting.
    private const int ReceiveBufferLength = 64 * 1024;

    // Windows reports an ICMP port unreachable for an earlier send as ConnectionReset on the next receive;
    // this ioctl (SIO_UDP_CONNRESET) turns that off. Linux does not report it on unconnected sockets.
    private const int SioUdpConnReset = unchecked((int)0x9800000C);

    private readonly Socket _socket;
    private readonly ISipDatagramHandler _handler;
    private readonly SipUdpTransportOptions _options;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly Task[] _loops;
    private int _started;
    private int _disposed;

    private long _datagramsReceived;
    private long _emptyDatagrams;
    private long _oversizedDatagrams;
    private long _handlerErrors;
    private long _receiveErrors;
    private long _datagramsSent;
    private long _sendErrors;

    /// <summary>Binds the socket; call <see cref="Start"/> to begin receiving.</summary>
    public SipUdpTransport(IPEndPoint localEndPoint, ISipDatagramHandler handler, SipUdpTransportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(localEndPoint);
        ArgumentNullException.ThrowIfNull(handler);
        options ??= new SipUdpTransportOptions();
        options.Validate();
        _handler = handler;
        _options = options;
        _loops = new Task[options.ReceiveLoops];

        _socket = new Socket(localEndPoint.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            if (options.ReceiveBufferSize is { } receive)
            {
                _socket.ReceiveBufferSize = receive;
            }
            if (options.SendBufferSize is { } send)
            {
                _socket.SendBufferSize = send;
            }
            if (OperatingSystem.IsWindows())
            {
                _socket.IOControl(SioUdpConnReset, [0, 0, 0, 0], null);
            }
            _socket.Bind(localEndPoint);
            LocalEndPoint = (IPEndPoint)_socket.LocalEndPoint!;
        }
        catch
        {
            _socket.Dispose();
            throw;
        }
    }

    /// <summary>The bound address, with the port the OS chose when port 0 was asked for.</summary>
    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Datagrams handed to the handler.</summary>
    public long DatagramsReceived => Interlocked.Read(ref _datagramsReceived);

    /// <summary>Zero-byte datagrams, dropped.</summary>
    public long EmptyDatagrams => Interlocked.Read(ref _emptyDatagrams);

    /// <summary>Datagrams over <see cref="SipUdpTransportOptions.MaxDatagramSize"/> or truncated, dropped.</summary>
    public long OversizedDatagrams => Interlocked.Read(ref _oversizedDatagrams);

    /// <summary>Exceptions thrown by the handler.</summary>
    public long HandlerErrors => Interlocked.Read(ref _handlerErrors);

    /// <summary>Socket errors while receiving (an ICMP error reported as a reset, for example).</summary>
    public long ReceiveErrors => Interlocked.Read(ref _receiveErrors);

    /// <summary>Datagrams sent.</summary>
    public long DatagramsSent => Interlocked.Read(ref _datagramsSent);

    /// <summary>Sends that failed.</summary>
    public long SendErrors => Interlocked.Read(ref _sendErrors);

    /// <summary>Starts the receive loops. Call once.</summary>
    public void Start()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("The transport is already started.");
        }
        for (var i = 0; i < _loops.Length; i++)
        {
            _loops[i] = Task.Run(ReceiveLoopAsync);
        }
    }

    /// <summary>
    /// Sends one datagram. False when the OS refused it (counted and reported): for UDP that is a transport
    /// error the transaction layer treats like a lost message or, per RFC 3261 18.4, a 503.
    /// </summary>
    public bool SendTo(ReadOnlySpan<byte> datagram, SocketAddress remote)
    {
        ArgumentNullException.ThrowIfNull(remote);
        try
        {
            _socket.SendTo(datagram, SocketFlags.None, remote);
            Interlocked.Increment(ref _datagramsSent);
            return true;
        }
        catch (SocketException ex)
        {
            Interlocked.Increment(ref _sendErrors);
            ReportError(ex);
            return false;
        }
    }

    /// <summary>Sends one datagram to <paramref name="remote"/>; serializes the address, so prefer the <see cref="SocketAddress"/> overload on hot paths.</summary>
    public bool SendTo(ReadOnlySpan<byte> datagram, IPEndPoint remote)
    {
        ArgumentNullException.ThrowIfNull(remote);
        return SendTo(datagram, remote.Serialize());
    }

    /// <summary>Asynchronous <see cref="SendTo(ReadOnlySpan{byte}, SocketAddress)"/>.</summary>
    public async ValueTask<bool> SendToAsync(ReadOnlyMemory<byte> datagram, SocketAddress remote, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        try
        {
            await _socket.SendToAsync(datagram, SocketFlags.None, remote, cancellationToken).ConfigureAwait(false);
            Interlocked.Increment(ref _datagramsSent);
            return true;
        }
        catch (SocketException ex)
        {
            Interlocked.Increment(ref _sendErrors);
            ReportError(ex);
            return false;
        }
    }

    private async Task ReceiveLoopAsync()
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ReceiveBufferLength);
        var memory = buffer.AsMemory(0, ReceiveBufferLength);
        var remote = new SocketAddress(_socket.AddressFamily);
        var token = _shutdown.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                int received;
                try
                {
                    received = await _socket.ReceiveFromAsync(memory, SocketFlags.None, remote, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (token.IsCancellationRequested)
                {
                    break;
                }
                catch (ObjectDisposedException) when (token.IsCancellationRequested)
                {
                    break;
                }
                catch (SocketException) when (token.IsCancellationRequested)
                {
                    break;
                }
                catch (SocketException ex) when (ex.SocketErrorCode == SocketError.MessageSize)
                {
                    // Windows reports a datagram larger than the buffer this way.
                    Interlocked.Increment(ref _oversizedDatagrams);
                    continue;
                }
                catch (SocketException ex)
                {
                    // ConnectionReset and friends describe an earlier send, not this socket: keep receiving.
                    Interlocked.Increment(ref _receiveErrors);
                    ReportError(ex);
                    continue;
                }
                Dispatch(buffer.AsSpan(0, received), remote);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void Dispatch(ReadOnlySpan<byte> datagram, SocketAddress remote)
    {
        if (datagram.IsEmpty)
        {
            Interlocked.Increment(ref _emptyDatagrams);
            return;
        }
        if (datagram.Length > _options.MaxDatagramSize)
        {
            Interlocked.Increment(ref _oversizedDatagrams);
            return;
        }
        Interlocked.Increment(ref _datagramsReceived);
        try
        {
            _handler.OnDatagram(datagram, remote, this);
        }
#pragma warning disable CA1031 // A handler bug for one datagram must not stop the loop that serves all the others.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Interlocked.Increment(ref _handlerErrors);
            ReportError(ex);
        }
    }

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

    /// <summary>Stops receiving and closes the socket; the loops return their buffers as they exit.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _shutdown.Cancel();
        _socket.Dispose();
    }

    /// <summary>Like <see cref="Dispose"/>, and waits for the receive loops to finish.</summary>
    public async ValueTask DisposeAsync()
    {
        Dispose();
        foreach (var loop in _loops)
        {
            if (loop is not null)
            {
                await loop.ConfigureAwait(false);
            }
        }
        _shutdown.Dispose();
    }
}
