using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Rpc;

/// <summary>
/// Accepts RPC connections on a TCP socket and runs <see cref="IRpcHandler"/> for each request, many concurrently per
/// connection. A connection that breaks the protocol is closed; nothing a peer sends stops the accept loop.
/// </summary>
public sealed class RpcServer : IAsyncDisposable
{
    /// <summary>Pending connections the kernel queues before accept; bursts of reconnecting edges fit.</summary>
    private const int ListenBacklog = 512;

    /// <summary>Pause after a failed accept (for example out of file descriptors) so the loop cannot spin.</summary>
    private static readonly TimeSpan AcceptRetryDelay = TimeSpan.FromMilliseconds(50);

    private readonly IPEndPoint _listen;
    private readonly ConcurrentDictionary<RpcServerConnection, byte> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private Socket? _listener;
    private Task _acceptLoop = Task.CompletedTask;
    private IPEndPoint? _localEndPoint;
    private int _disposed;

    public RpcServer(IPEndPoint listen, IRpcHandler handler, RpcOptions options, TimeProvider time, ILogger<RpcServer> logger, RpcMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(listen);
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentNullException.ThrowIfNull(metrics);
        options.ThrowIfInvalid(nameof(options));

        _listen = listen;
        Handler = handler;
        Options = options;
        Time = time;
        Logger = logger;
        Metrics = metrics;
    }

    /// <summary>The bound address and port (the real port when started with port 0).</summary>
    public IPEndPoint LocalEndPoint => _localEndPoint ?? throw new InvalidOperationException("The RPC server has not been started.");

    internal IRpcHandler Handler { get; }

    internal RpcOptions Options { get; }

    internal TimeProvider Time { get; }

    internal ILogger Logger { get; }

    internal RpcMetrics Metrics { get; }

    /// <summary>Open connections (for tests and diagnostics).</summary>
    internal int ConnectionCount => _connections.Count;

    /// <summary>Binds (port 0 picks a free port) and starts accepting.</summary>
    public Task StartAsync(CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (_listener is not null)
        {
            throw new InvalidOperationException("The RPC server is already started.");
        }

        var listener = new Socket(_listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // A restarted silo binds its port again while old connections sit in TIME_WAIT. (On Windows the option
            // would let another process share the port, and rebinding works without it.)
            if (!OperatingSystem.IsWindows())
            {
                listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            }

            listener.Bind(_listen);
            listener.Listen(ListenBacklog);
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        _listener = listener;
        _localEndPoint = (IPEndPoint)listener.LocalEndPoint!;
        _acceptLoop = AcceptLoopAsync(listener);
        Log.Listening(Logger, _localEndPoint);
        return Task.CompletedTask;
    }

    /// <summary>Stops accepting and closes every connection; in-flight handlers see their token cancelled.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener?.Dispose();
        await _acceptLoop.ConfigureAwait(false);
        foreach (var connection in _connections.Keys)
        {
            connection.Close(null);
        }

        await Task.WhenAll(_connections.Keys.Select(c => c.Completion)).ConfigureAwait(false);
        _stopping.Dispose();
        if (_localEndPoint is not null)
        {
            Log.Stopped(Logger, _localEndPoint);
        }
    }

    internal void Remove(RpcServerConnection connection) => _connections.TryRemove(connection, out _);

    private async Task AcceptLoopAsync(Socket listener)
    {
        var stopping = _stopping.Token;
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(stopping).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex)
            {
                if (stopping.IsCancellationRequested)
                {
                    return;
                }

                Log.AcceptFailed(Logger, ex);
                try
                {
                    await Task.Delay(AcceptRetryDelay, Time, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                continue;
            }

            socket.NoDelay = true;
            var connection = new RpcServerConnection(socket, this);
            _connections.TryAdd(connection, 0);
            connection.Start();
            if (stopping.IsCancellationRequested)
            {
                // Raced with DisposeAsync, which may have listed the connections already.
                connection.Close(null);
            }
        }
    }
}
