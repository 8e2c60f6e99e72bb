using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Rpc;

/// <summary>
/// Calls RPC servers. Keeps <see cref="RpcOptions.ConnectionsPerEndpoint"/> lazily made connections per target and
/// spreads calls over them round-robin; a broken connection is made again by the next call that picks it.
/// </summary>
public sealed class RpcClient : IAsyncDisposable
{
    private readonly ConcurrentDictionary<EndPoint, EndpointPool> _pools = new();
    private int _disposed;

    public RpcClient(RpcOptions options, TimeProvider time, ILogger<RpcClient> logger, RpcMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentNullException.ThrowIfNull(metrics);
        options.ThrowIfInvalid(nameof(options));

        Options = options;
        Time = time;
        Logger = logger;
        Metrics = metrics;
    }

    internal RpcOptions Options { get; }

    internal TimeProvider Time { get; }

    internal ILogger Logger { get; }

    internal RpcMetrics Metrics { get; }

    /// <summary>
    /// Calls <paramref name="method"/> on <paramref name="target"/> (an <see cref="IPEndPoint"/> or <see cref="DnsEndPoint"/>).
    /// Throws <see cref="TimeoutException"/> when <paramref name="timeout"/> passes, <see cref="OperationCanceledException"/>
    /// on <paramref name="ct"/> (both send a Cancel frame once the request is out), and <see cref="RpcConnectionException"/>
    /// when the connection cannot be made or breaks while the call is in flight. Dispose the reply.
    /// </summary>
    public Task<RpcReply> CallAsync(EndPoint target, ushort method, Action<IBufferWriter<byte>>? writeBody, TimeSpan timeout, CancellationToken ct) =>
        CallAsync(target, method, writeBody, static (write, body) => write?.Invoke(body), timeout, ct);

    /// <summary>As the other overload; <paramref name="state"/> goes to <paramref name="writeBody"/> so the hot path needs no closure.</summary>
    public async Task<RpcReply> CallAsync<TState>(
        EndPoint target, ushort method, TState state, Action<TState, IBufferWriter<byte>> writeBody, TimeSpan timeout, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(writeBody);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        ct.ThrowIfCancellationRequested();

        var started = Time.GetTimestamp();
        var deadline = Time.GetUtcNow() + timeout;
        var body = EncodeBody(state, writeBody, out var bodyLength);
        var outcome = RpcMetrics.ConnectionFailed;

        // Started here (kind Client) when someone listens; otherwise the caller's activity, if any, goes on the wire.
        using var activity = RpcMetrics.ActivitySource.StartActivity("rpc.client", ActivityKind.Client);
        activity?.SetTag("rpc.system", "callstate");
        activity?.SetTag("rpc.method", method);
        var trace = Activity.Current?.Context ?? default;
        using var expiry = new CancellationTokenSource(timeout, Time);
        try
        {
            var pool = _pools.GetOrAdd(target, static (t, client) => new EndpointPool(t, client), this);
            var connect = pool.GetConnectionAsync();
            var connection = connect.IsCompletedSuccessfully
                ? connect.Result
                : await connect.AsTask().WaitAsync(timeout, Time, ct).ConfigureAwait(false);
            var handedOver = body;
            body = null;
            var reply = await connection.CallAsync(method, deadline, trace, handedOver, bodyLength, expiry.Token, ct).ConfigureAwait(false);
            outcome = RpcMetrics.StatusTag(reply.Status);
            if (reply.Status != RpcStatus.Ok)
            {
                activity?.SetStatus(ActivityStatusCode.Error);
            }

            return reply;
        }
        catch (TimeoutException)
        {
            outcome = RpcMetrics.Timeout;
            activity?.SetStatus(ActivityStatusCode.Error, "timeout");
            throw;
        }
        catch (OperationCanceledException)
        {
            outcome = RpcMetrics.Cancelled;
            throw;
        }
        catch (RpcConnectionException ex)
        {
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            throw;
        }
        finally
        {
            if (body is not null)
            {
                // Never handed to a connection (the connect failed or timed out).
                PooledBufferWriter.ReturnArray(body);
            }

            Metrics.ClientCall(outcome, Time.GetElapsedTime(started));
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        var closing = new List<Task>();
        foreach (var pool in _pools.Values)
        {
            closing.AddRange(pool.Close());
        }

        await Task.WhenAll(closing).ConfigureAwait(false);
    }

    /// <summary>Open connections to <paramref name="target"/> (for tests and diagnostics).</summary>
    internal int OpenConnections(EndPoint target) => _pools.TryGetValue(target, out var pool) ? pool.OpenConnections : 0;

    private byte[] EncodeBody<TState>(TState state, Action<TState, IBufferWriter<byte>> writeBody, out int length)
    {
        var writer = PooledBufferWriter.RentFromCache();
        try
        {
            writeBody(state, writer);
            if (RpcFrameCodec.RequestFixedBytes + writer.WrittenCount > Options.MaxFrameBytes)
            {
                throw new ArgumentException(
                    $"The request body ({writer.WrittenCount} bytes) does not fit in MaxFrameBytes ({Options.MaxFrameBytes}).", nameof(writeBody));
            }

            return writer.Detach(out length);
        }
        finally
        {
            PooledBufferWriter.ReturnToCache(writer);
        }
    }

    private async Task<RpcClientConnection> ConnectAsync(EndPoint target, EndpointPool pool)
    {
        var socket = target is IPEndPoint ip
            ? new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
            : new Socket(SocketType.Stream, ProtocolType.Tcp);
        socket.NoDelay = true;
        using var timeout = new CancellationTokenSource(Options.ConnectTimeout, Time);
        try
        {
            await socket.ConnectAsync(target, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException)
        {
            socket.Dispose();
            pool.ConnectFailed();
            Log.ConnectFailed(Logger, target, Options.ReconnectBackoff, ex);
            throw new RpcConnectionException($"RPC connect to {target} failed: {ex.Message}", ex);
        }

        var connection = new RpcClientConnection(socket, target, this);
        connection.Start();
        if (Volatile.Read(ref _disposed) != 0)
        {
            connection.Close(null);
        }

        return connection;
    }

    /// <summary>The connections to one target, made lazily, one connect at a time per slot.</summary>
    private sealed class EndpointPool(EndPoint target, RpcClient client)
    {
        private readonly Task<RpcClientConnection>?[] _slots = new Task<RpcClientConnection>?[client.Options.ConnectionsPerEndpoint];
        private readonly Lock _lock = new();
        private long _retryAfter = long.MinValue;
        private uint _next;

        public int OpenConnections => _slots.Count(s => s is { IsCompletedSuccessfully: true } && !s.Result.IsClosed);

        public ValueTask<RpcClientConnection> GetConnectionAsync()
        {
            var slot = (int)(Interlocked.Increment(ref _next) % (uint)_slots.Length);
            var task = Volatile.Read(ref _slots[slot]);
            if (task is { IsCompletedSuccessfully: true } && !task.Result.IsClosed)
            {
                return new ValueTask<RpcClientConnection>(task.Result);
            }

            lock (_lock)
            {
                task = _slots[slot];
                if (task is null || (task.IsCompleted && (!task.IsCompletedSuccessfully || task.Result.IsClosed)))
                {
                    if (client.Time.GetTimestamp() < Volatile.Read(ref _retryAfter))
                    {
                        throw new RpcConnectionException($"RPC connect to {target} failed recently; retrying after {client.Options.ReconnectBackoff}");
                    }

                    task = client.ConnectAsync(target, this);
                    Volatile.Write(ref _slots[slot], task);
                }
            }

            return new ValueTask<RpcClientConnection>(task);
        }

        public void ConnectFailed()
        {
            var backoff = client.Options.ReconnectBackoff;
            Volatile.Write(ref _retryAfter, client.Time.GetTimestamp() + (long)(backoff.TotalSeconds * client.Time.TimestampFrequency));
        }

        public List<Task> Close()
        {
            var closing = new List<Task>();
            lock (_lock)
            {
                foreach (var task in _slots)
                {
                    if (task is { IsCompletedSuccessfully: true })
                    {
                        task.Result.Close(null);
                        closing.Add(task.Result.Completion);
                    }
                }
            }

            return closing;
        }
    }
}
