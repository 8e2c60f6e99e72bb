using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Net.Sockets;
using System.Text;

namespace CallState.Runtime.Rpc;

/// <summary>The server side of one connection: dispatches requests to the handler without blocking the read loop.</summary>
internal sealed class RpcServerConnection : RpcConnection
{
    private readonly Dictionary<ulong, ServerCall> _calls = [];
    private readonly Lock _callsLock = new();

    public RpcServerConnection(Socket socket, RpcServer server)
        : base(socket, server.Options, server.Logger, server.Metrics, RpcMetrics.ServerSide) => Server = server;

    public RpcServer Server { get; }

    protected override bool OnFrame(in RpcFrame frame)
    {
        switch (frame.Kind)
        {
            case RpcFrameKind.Request:
                return OnRequest(in frame);

            case RpcFrameKind.Cancel:
                ServerCall? call;
                lock (_callsLock)
                {
                    _calls.TryGetValue(frame.RequestId, out call);
                }

                // Unknown id: the reply crossed the Cancel on the wire; nothing to do.
                call?.CancelByCaller();
                return true;

            default:
                // A client never sends responses.
                return false;
        }
    }

    protected override void OnClosed(Exception? reason) => Server.Remove(this);

    /// <summary>Called by a finished call: forget it and queue its reply when <paramref name="reply"/> (someone still waits for it).</summary>
    internal void Complete(ServerCall call, RpcStatus status, bool reply)
    {
        lock (_callsLock)
        {
            _calls.Remove(call.RequestId);
        }

        if (reply)
        {
            var body = call.Reply.Detach(out var length);
            if (RpcFrameCodec.ResponseFixedBytes + length > Options.MaxFrameBytes)
            {
                PooledBufferWriter.ReturnArray(body);
                status = RpcStatus.Error;
                body = Encoding.UTF8.GetBytes($"reply of {length} bytes exceeds MaxFrameBytes ({Options.MaxFrameBytes})");
                length = body.Length;
            }

            Metrics.ServerRequest(RpcMetrics.StatusTag(status));
            Send(OutgoingFrame.Response(call.RequestId, status, body, length));
        }
        else
        {
            Metrics.ServerRequest(status == RpcStatus.DeadlineExceeded ? RpcMetrics.StatusTag(status) : RpcMetrics.Cancelled);
        }
    }

    private bool OnRequest(in RpcFrame frame)
    {
        var time = Server.Time;
        var now = time.GetUtcNow();
        var deadline = DateTimeOffset.FromUnixTimeMilliseconds(Math.Clamp(frame.DeadlineUnixMs, MinUnixMs, MaxUnixMs));
        ServerCall call;
        lock (_callsLock)
        {
            if (_calls.ContainsKey(frame.RequestId))
            {
                return false;
            }

            if (deadline <= now)
            {
                Reply(frame.RequestId, RpcStatus.DeadlineExceeded);
                return true;
            }

            if (_calls.Count >= Options.MaxInFlightPerConnection)
            {
                Reply(frame.RequestId, RpcStatus.Unavailable);
                return true;
            }

            call = new ServerCall(this, in frame, deadline, deadline - now);
            _calls.Add(frame.RequestId, call);
        }

        // The handler's synchronous part runs on the thread pool, never on the read loop.
        ThreadPool.UnsafeQueueUserWorkItem(call, preferLocal: false);
        return true;
    }

    private void Reply(ulong requestId, RpcStatus status)
    {
        Metrics.ServerRequest(RpcMetrics.StatusTag(status));
        Send(OutgoingFrame.Response(requestId, status, null, 0));
    }

    private static readonly long MinUnixMs = DateTimeOffset.MinValue.ToUnixTimeMilliseconds();
    private static readonly long MaxUnixMs = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();
}

/// <summary>One request being handled: owns the copied body, the reply buffer and the token the handler sees.</summary>
[SuppressMessage("Reliability", "CA1001", Justification = "_cancellation is disposed when the call completes, at the end of RunAsync.")]
internal sealed class ServerCall : IThreadPoolWorkItem
{
    private static readonly TimeSpan MaxDeadlineTimer = TimeSpan.FromDays(1);

    private readonly RpcServerConnection _connection;
    private readonly byte[] _body;
    private readonly int _bodyLength;
    private readonly ushort _method;
    private readonly DateTimeOffset _deadline;
    private readonly ActivityContext _trace;
    private readonly CancellationTokenSource _cancellation;
    private int _cancelledByCaller;

    public ServerCall(RpcServerConnection connection, in RpcFrame frame, DateTimeOffset deadline, TimeSpan remaining)
    {
        _connection = connection;
        RequestId = frame.RequestId;
        _method = frame.Method;
        _deadline = deadline;
        _trace = frame.TraceContext;
        _bodyLength = (int)frame.Body.Length;
        _body = PooledBufferWriter.RentCopy(frame.Body);

        // Fires at the deadline on the server's clock (the caller's deadline, as absolute time). A deadline beyond what a
        // timer can hold gets no timer: the caller's own timer still bounds the call.
        _cancellation = remaining <= MaxDeadlineTimer ? new CancellationTokenSource(remaining, connection.Server.Time) : new CancellationTokenSource();
    }

    public ulong RequestId { get; }

    public PooledBufferWriter Reply { get; } = new();

    public void CancelByCaller()
    {
        Volatile.Write(ref _cancelledByCaller, 1);
        Cancel();
    }

    public void Execute() => _ = RunAsync();

    private void Cancel()
    {
        try
        {
            _cancellation.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The call finished meanwhile.
        }
    }

    private async Task RunAsync()
    {
        var server = _connection.Server;
        var token = _cancellation.Token;
        var closing = _connection.Closing.UnsafeRegister(static s => ((ServerCall)s!).Cancel(), this);
        var status = RpcStatus.Error;
        var expired = false;
        using (var activity = RpcMetrics.ActivitySource.StartActivity("rpc.server", ActivityKind.Server, _trace))
        {
            try
            {
                activity?.SetTag("rpc.system", "callstate");
                activity?.SetTag("rpc.method", _method);
                var request = new RpcRequest(_method, _body.AsMemory(0, _bodyLength), _deadline, _trace, _connection.RemoteEndPoint);
                status = await server.Handler.HandleAsync(request, Reply, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                status = RpcStatus.DeadlineExceeded;
                expired = true;
            }
#pragma warning disable CA1031 // Any handler exception becomes an Error reply carrying its message; it must not kill the connection.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.HandlerFailed(server.Logger, _method, ex);
                status = RpcStatus.Error;
                Reply.Reset();
                Encoding.UTF8.GetBytes(ex.Message, Reply);
            }
            finally
            {
                PooledBufferWriter.ReturnArray(_body);
            }

            if (status != RpcStatus.Ok)
            {
                activity?.SetStatus(ActivityStatusCode.Error);
            }

            activity?.SetTag("rpc.callstate.status", (byte)status);
        }

        closing.Dispose();
        // No reply when the caller cancelled, the connection is gone, or the deadline stopped the handler: the caller's
        // own timer, set to the same deadline, fails the call with TimeoutException (a reply would race with it).
        var reply = !expired && Volatile.Read(ref _cancelledByCaller) == 0 && !_connection.IsClosed;

        _connection.Complete(this, status, reply);
        Reply.Dispose();
        _cancellation.Dispose();
    }
}
