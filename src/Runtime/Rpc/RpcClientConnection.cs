using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace CallState.Runtime.Rpc;

/// <summary>The client side of one connection: request ids, the calls waiting for replies, and their failure when it breaks.</summary>
internal sealed class RpcClientConnection : RpcConnection
{
    private readonly ConcurrentDictionary<ulong, PendingCall> _pending = new();
    private readonly EndPoint _target;
    private long _nextRequestId;
    private int _inFlight;

    public RpcClientConnection(Socket socket, EndPoint target, RpcClient client)
        : base(socket, client.Options, client.Logger, client.Metrics, RpcMetrics.ClientSide) => _target = target;

    /// <summary>
    /// Sends one request and waits for its reply, the deadline (<paramref name="expiry"/> fires) or <paramref name="ct"/>.
    /// Takes ownership of <paramref name="body"/>.
    /// </summary>
    public async Task<RpcReply> CallAsync(
        ushort method, DateTimeOffset deadline, ActivityContext trace, byte[] body, int bodyLength, CancellationToken expiry, CancellationToken ct)
    {
        if (Interlocked.Increment(ref _inFlight) > Options.MaxInFlightPerConnection)
        {
            Interlocked.Decrement(ref _inFlight);
            PooledBufferWriter.ReturnArray(body);
            return new RpcReply(RpcStatus.Unavailable, [], 0);
        }

        var requestId = (ulong)Interlocked.Increment(ref _nextRequestId);
        var call = new PendingCall(this, requestId);
        _pending[requestId] = call;

        // Close sets the flag before failing what is pending; checking after adding means one of the two sees the call.
        if (IsClosed)
        {
            PooledBufferWriter.ReturnArray(body);
            call.Fail(new RpcConnectionException($"RPC connection to {_target} is closed"));
            return await call.AsValueTask().ConfigureAwait(false);
        }

        var expiryRegistration = expiry.UnsafeRegister(static s => ((PendingCall)s!).Fail(null), call);
        var cancelRegistration = ct.UnsafeRegister(static (s, token) => ((PendingCall)s!).Fail(new OperationCanceledException(token)), call);
        try
        {
            Send(OutgoingFrame.Request(requestId, method, deadline.ToUnixTimeMilliseconds(), trace, body, bodyLength));
            return await call.AsValueTask().ConfigureAwait(false);
        }
        finally
        {
            await expiryRegistration.DisposeAsync().ConfigureAwait(false);
            await cancelRegistration.DisposeAsync().ConfigureAwait(false);
        }
    }

    protected override bool OnFrame(in RpcFrame frame)
    {
        if (frame.Kind != RpcFrameKind.Response)
        {
            // A server never sends requests or cancels.
            return false;
        }

        if (_pending.TryRemove(frame.RequestId, out var call))
        {
            Interlocked.Decrement(ref _inFlight);
            var body = PooledBufferWriter.RentCopy(frame.Body);
            call.Complete(new RpcReply(frame.Status, body, (int)frame.Body.Length));
        }

        // Otherwise the call timed out or was cancelled before its reply came: drop the reply.
        return true;
    }

    protected override void OnClosed(Exception? reason)
    {
        var error = new RpcConnectionException($"RPC connection to {_target} closed", reason ?? new EndOfStreamException());
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var call))
            {
                Interlocked.Decrement(ref _inFlight);
                call.SetException(error);
            }
        }
    }

    /// <summary>A call waiting for its reply. Whoever removes it from the pending map completes it, exactly once.</summary>
    private sealed class PendingCall(RpcClientConnection connection, ulong requestId) : IValueTaskSource<RpcReply>
    {
        private ManualResetValueTaskSourceCore<RpcReply> _core = new() { RunContinuationsAsynchronously = true };

        public ValueTask<RpcReply> AsValueTask() => new(this, _core.Version);

        public void Complete(RpcReply reply) => _core.SetResult(reply);

        public void SetException(Exception error) => _core.SetException(error);

        /// <summary>The caller gave up (<paramref name="error"/>) or the deadline passed (null): tell the server, fail the call.</summary>
        public void Fail(Exception? error)
        {
            if (!connection._pending.TryRemove(requestId, out _))
            {
                return;
            }

            Interlocked.Decrement(ref connection._inFlight);
            if (!connection.IsClosed)
            {
                connection.Send(OutgoingFrame.Cancel(requestId));
            }

            SetException(error ?? new TimeoutException($"RPC call to {connection._target} timed out"));
        }

        public RpcReply GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
