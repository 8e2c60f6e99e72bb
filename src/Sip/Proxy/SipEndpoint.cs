using System.Buffers;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using CallState.Sip.Messages;
using CallState.Sip.Timers;
using CallState.Sip.Transport;

namespace CallState.Sip.Proxy;

/// <summary>
/// The edge's SIP stack: UDP and TCP listeners on one address and port, a TLS listener on its own port when
/// <see cref="SipTlsOptions.Enabled"/>, the parser, the timer wheel and the proxy core. Each receive loop parses into
/// its own reused <see cref="SipMessage"/>.
/// </summary>
public sealed class SipEndpoint : ISipDatagramHandler, ISipStreamHandler, ISipSender, IAsyncDisposable
{
    [ThreadStatic]
    private static SipMessage? t_message;

    private readonly SipUdpTransport? _udp;
    private readonly UdpPeerCache _peers = new();
    private readonly SipTcpTransport? _tcp;
    private readonly SipTcpTransport? _tls;
    private readonly TimerWheel _wheel;
    private readonly SipTcpTransportMetrics _streamMetrics;
    private readonly SipOverloadControl? _overload;
    private long _transportErrors;

    /// <summary>
    /// <c>onError</c> is told of socket and connection errors (see <see cref="TransportErrors"/>); <c>onHandlerError</c> of
    /// each exception caught while handling a received message or running a timer (counted in the proxy's metrics).
    /// With <see cref="SipOverloadOptions.Enabled"/>, <c>classifySource</c> tells which budget a source address gets and
    /// <c>onShed</c> hears, rate-limited, what overload control refused (docs/architecture.md, "Overload control").
    /// </summary>
    public SipEndpoint(SipProxyOptions options, TimeProvider? timeProvider = null, IMeterFactory? meterFactory = null, Action<Exception>? onError = null,
        ICallPolicy? policy = null, Action<SipHandlerError>? onHandlerError = null, Func<IPAddress, SipSourceKind>? classifySource = null,
        Action<SipShedReport>? onShed = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        timeProvider ??= TimeProvider.System;
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        }
        // The proxy's own timer callbacks catch and report their exceptions; this is for any other callback.
        _wheel = new TimerWheel(timeProvider, TimerWheel.DefaultResolution,
            onCallbackError: ex => Proxy!.ReportHandlerError(new SipHandlerError(SipHandlerErrorKind.Timer, ex)));
        _overload = options.Overload.Enabled ? new SipOverloadControl(options.Overload, timeProvider, classifySource, onShed, maxTransactions: options.MaxTransactions) : null;
        Proxy = new SipProxy(options, this, _wheel, new SipProxyMetrics(meterFactory), policy, onHandlerError, _overload);
        var local = new IPEndPoint(IPAddress.Parse(options.ListenAddress), options.Port);
        void Report(Exception ex)
        {
            Interlocked.Increment(ref _transportErrors);
            onError?.Invoke(ex);
        }
        if (options.Udp)
        {
            _udp = new SipUdpTransport(local, this, new SipUdpTransportOptions
            {
                ReceiveLoops = options.UdpReceiveLoops,
                ReceiveBufferSize = options.UdpReceiveBufferSize,
                SendBufferSize = options.UdpReceiveBufferSize,
                OnError = Report,
            });
        }
        if (options.Tcp)
        {
            _tcp = new SipTcpTransport(local, SipStreamFramer.Frame, this, StreamOptions(options, timeProvider, Report, tls: null));
        }
        if (options.Tls.Enabled)
        {
            var tls = options.Tls.CreateTransportOptions(timeProvider);
            try
            {
                // The same connection limits and timeouts as TCP: TLS is TCP underneath (RFC 3261 26.2).
                _tls = new SipTcpTransport(new IPEndPoint(local.Address, options.Tls.Port), SipStreamFramer.Frame, this, StreamOptions(options, timeProvider, Report, tls));
            }
            catch
            {
                tls.Certificate.Certificate.Dispose();
                throw;
            }
            TlsCertificate = tls.Certificate;
            var tlsTransport = _tls;
            Proxy.Metrics.ObserveTlsHandshakeFailures(() => tlsTransport.TlsHandshakeFailures);
        }
        _streamMetrics = new SipTcpTransportMetrics(meterFactory, _tcp, _tls);
    }

    private static SipTcpTransportOptions StreamOptions(SipProxyOptions options, TimeProvider timeProvider, Action<Exception> onError, SipTlsTransportOptions? tls) => new()
    {
        MaxInboundConnections = options.TcpMaxConnections,
        MaxOutboundConnections = options.TcpMaxOutboundConnections,
        MaxInboundConnectionsPerSource = options.TcpMaxConnectionsPerSource,
        IdleTimeout = options.TcpIdleTimeout,
        MessageTimeout = options.TcpMessageTimeout,
        SendTimeout = options.TcpSendTimeout,
        MaxSendQueueBytes = options.TcpMaxSendQueueBytes,
        MaxMessageSize = SipLimits.MaxMessageSize,
        TimeProvider = timeProvider,
        OnError = onError,
        Tls = tls,
    };

    public SipProxy Proxy { get; }

    public SipUdpTransport? Udp => _udp;

    public SipTcpTransport? Tcp => _tcp;

    /// <summary>The TLS listener and connections; null when TLS is off.</summary>
    public SipTcpTransport? Tls => _tls;

    /// <summary>The certificate the TLS listener presents, read again when its files change; null when TLS is off.</summary>
    public SipTlsCertificateSource? TlsCertificate { get; }

    /// <summary>Socket and connection errors reported by the transports; handler exceptions are counted in <see cref="SipProxyMetrics"/>.</summary>
    public long TransportErrors => Interlocked.Read(ref _transportErrors);

    public void Start()
    {
        _udp?.Start();
        _tcp?.Start();
        _tls?.Start();
    }

    void ISipDatagramHandler.OnDatagram(ReadOnlySpan<byte> datagram, SocketAddress remote, SipUdpTransport transport)
    {
        SipTarget? source = null;
        try
        {
            var message = t_message ??= new SipMessage();
            source = new SipTarget(SipTransportKind.Udp, _peers.EndPointOf(remote));
            message.Parse(datagram);
            Proxy.OnMessage(message, source.Value);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Caught per message, so the receive loop goes on; the peer hears nothing of it (the proxy answered 500 if
            // it could), and the log gets the first line only.
            Proxy.ReportHandlerError(new SipHandlerError(SipHandlerErrorKind.Message, ex, source, SipHandlerError.FirstLineOf(datagram)));
        }
    }

    void ISipStreamHandler.OnMessage(in ReadOnlySequence<byte> message, SipTcpConnection connection)
    {
        var source = new SipTarget(connection.IsTls ? SipTransportKind.Tls : SipTransportKind.Tcp, connection.RemoteEndPoint, connection);
        try
        {
            var parsed = t_message ??= new SipMessage();
            parsed.Parse(message);
            Proxy.OnMessage(parsed, source);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // As for a datagram: the connection and its other messages go on.
            Proxy.ReportHandlerError(new SipHandlerError(SipHandlerErrorKind.Message, ex, source, FirstLineOf(message)));
        }
    }

    private static string FirstLineOf(in ReadOnlySequence<byte> message)
    {
        if (message.FirstSpan.Length >= SipHandlerError.MaxDetailLength || message.IsSingleSegment)
        {
            return SipHandlerError.FirstLineOf(message.FirstSpan);
        }
        Span<byte> head = stackalloc byte[SipHandlerError.MaxDetailLength];
        var length = (int)Math.Min(message.Length, head.Length);
        message.Slice(0, length).CopyTo(head);
        return SipHandlerError.FirstLineOf(head[..length]);
    }

    void ISipSender.Send(in SipTarget target, byte[] message, Action? onFailure)
    {
        if (target.Transport == SipTransportKind.Udp)
        {
            if (_udp is null || !_udp.SendTo(message, _peers.AddressOf(target.EndPoint)))
            {
                onFailure?.Invoke();
            }
            return;
        }
        var transport = target.Transport == SipTransportKind.Tls ? _tls : _tcp;
        if (transport is null)
        {
            onFailure?.Invoke();
            return;
        }
        var send = target.Connection is { IsClosed: false } connection
            ? connection.SendAsync(message)
            : transport.SendAsync(target.EndPoint, target.ServerName, message);
        if (send.IsCompletedSuccessfully)
        {
            return;
        }
        _ = ObserveAsync(send, onFailure);
    }

    private async Task ObserveAsync(ValueTask send, Action? onFailure)
    {
        try
        {
            await send.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException or OperationCanceledException)
        {
            Interlocked.Increment(ref _transportErrors);
            onFailure?.Invoke();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_udp is not null)
        {
            await _udp.DisposeAsync().ConfigureAwait(false);
        }
        if (_tcp is not null)
        {
            await _tcp.DisposeAsync().ConfigureAwait(false);
        }
        if (_tls is not null)
        {
            await _tls.DisposeAsync().ConfigureAwait(false);
        }
        _wheel.Dispose();
        _streamMetrics.Dispose();
        _overload?.Dispose();
        Proxy.Dispose();
    }
}
