using System.Buffers;
using CallState.Grains;
using CallState.Runtime.Rpc;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Cluster;

/// <summary>Where a process gets its view of the live silos.</summary>
public interface IClusterViewSource
{
    ClusterView Current { get; }

    /// <summary>A view another silo sent with a redirect: fresher than ours, most likely.</summary>
    void Offer(ClusterView view);
}

/// <summary>The silo this process is, when it is one: requests it owns are served without a network hop.</summary>
public interface IClusterLocalSilo
{
    string SiloId { get; }

    ValueTask<RpcStatus> DispatchAsync(ClusterMethod method, ReadOnlyMemory<byte> body, IBufferWriter<byte> reply, CancellationToken cancellationToken);
}

/// <summary>A request the cluster could not serve: no live silo, the owner failed, or it answered an error.</summary>
public sealed class ClusterRequestException : IOException
{
    public ClusterRequestException()
    {
    }

    public ClusterRequestException(string message)
        : base(message)
    {
    }

    public ClusterRequestException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public ClusterRequestException(RpcStatus status, string message)
        : base(message) => Status = status;

    public ClusterRequestException(RpcStatus status, string message, Exception innerException)
        : base(message, innerException) => Status = status;

    public RpcStatus Status { get; }
}

/// <summary>Reads a reply body.</summary>
public delegate T ReplyReader<out T>(ReadOnlySpan<byte> body);

/// <summary>Writes a request body with the flags of this attempt.</summary>
public delegate void BodyWriter<TState>(IBufferWriter<byte> writer, ClusterRouting flags, TState state);

/// <summary>
/// Sends grain requests to the silo that owns the grain in the current view (rendezvous placement). A redirect
/// (the silo's view names another owner) is retried once at the owner the redirect names; an owner that cannot be
/// reached (connection refused or broken, or not serving) is retried once at the next silo in the grain's preference
/// order. Both retries carry <see cref="ClusterRouting.NoRedirect"/>: serving a grain on a silo that is not its
/// owner is safe because every admission is a compare-and-set in storage. A timeout is not retried: the deadline is spent.
/// </summary>
public sealed partial class ClusterClient(RpcClient rpc, IClusterViewSource views, TimeProvider time, ILogger<ClusterClient> logger, IClusterLocalSilo? local = null)
{
    public ClusterView View => views.Current;

    public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, TimeSpan timeout, CancellationToken cancellationToken) =>
        InvokeAsync(
            CallGrainKey(callKey),
            ClusterMethod.CallAdmit,
            (callKey, limits),
            static (w, f, s) => ClusterProtocol.WriteAdmit(w, f, s.callKey, s.limits),
            static body => ClusterProtocol.ReadAdmitResult(body),
            timeout,
            cancellationToken);

    public Task<bool> ConfirmCallAsync(string callKey, TimeSpan timeout, CancellationToken cancellationToken) =>
        CallOpAsync(ClusterMethod.CallConfirm, callKey, timeout, cancellationToken);

    public Task<bool> RenewCallAsync(string callKey, TimeSpan timeout, CancellationToken cancellationToken) =>
        CallOpAsync(ClusterMethod.CallRenew, callKey, timeout, cancellationToken);

    public Task<bool> EndCallAsync(string callKey, TimeSpan timeout, CancellationToken cancellationToken) =>
        CallOpAsync(ClusterMethod.CallEnd, callKey, timeout, cancellationToken);

    public Task<ReserveOutcome> ReserveAsync(LimitOpRequest request, TimeSpan timeout, CancellationToken cancellationToken) =>
        InvokeAsync(
            LimitGrainKey(request.LimitKey),
            ClusterMethod.LimitReserve,
            request,
            static (w, f, s) => ClusterProtocol.WriteLimitOp(w, f, s),
            static body => ClusterProtocol.ReadReserveOutcome(body),
            timeout,
            cancellationToken);

    public Task<bool> LimitOpAsync(ClusterMethod method, LimitOpRequest request, TimeSpan timeout, CancellationToken cancellationToken) =>
        InvokeAsync(
            LimitGrainKey(request.LimitKey),
            method,
            request,
            static (w, f, s) => ClusterProtocol.WriteLimitOp(w, f, s),
            static body => ClusterProtocol.ReadBool(body),
            timeout,
            cancellationToken);

    public Task<bool> SetLimitsAsync(LimitKey key, LimitSettings? limits, TimeSpan timeout, CancellationToken cancellationToken) =>
        InvokeAsync(
            LimitGrainKey(key.ToString()),
            ClusterMethod.LimitSet,
            (key: key.ToString(), limits),
            static (w, f, s) => ClusterProtocol.WriteLimitSet(w, f, s.key, s.limits),
            static body => ClusterProtocol.ReadBool(body),
            timeout,
            cancellationToken);

    /// <summary>The placement key of a call grain.</summary>
    public static string CallGrainKey(string callKey) => "call:" + callKey;

    /// <summary>The placement key of a limit grain.</summary>
    public static string LimitGrainKey(string limitKey) => "limit:" + limitKey;

    private Task<bool> CallOpAsync(ClusterMethod method, string callKey, TimeSpan timeout, CancellationToken cancellationToken) =>
        InvokeAsync(
            CallGrainKey(callKey),
            method,
            callKey,
            static (w, f, s) => ClusterProtocol.WriteCallKey(w, f, s),
            static body => ClusterProtocol.ReadBool(body),
            timeout,
            cancellationToken);

    public async Task<T> InvokeAsync<TState, T>(
        string grainKey,
        ClusterMethod method,
        TState state,
        BodyWriter<TState> write,
        ReplyReader<T> read,
        TimeSpan timeout,
        CancellationToken cancellationToken)
    {
        var view = views.Current;
        var target = view.OwnerOf(grainKey) ?? throw new ClusterRequestException(RpcStatus.Unavailable, "no live silo in the cluster view");
        var deadline = time.GetUtcNow() + timeout;
        var flags = ClusterRouting.None;
        for (var attempt = 0; ; attempt++)
        {
            var remaining = deadline - time.GetUtcNow();
            if (remaining <= TimeSpan.Zero)
            {
                throw new TimeoutException($"{method} for {grainKey} found no silo within {timeout.TotalMilliseconds:0} ms");
            }

            RpcStatus status;
            ReadOnlyMemory<byte> body;
            RpcReply? reply = null;
            ArrayBufferWriter<byte>? localReply = null;
            try
            {
                if (local is not null && target.SiloId == local.SiloId)
                {
                    var request = new ArrayBufferWriter<byte>(64);
                    write(request, flags, state);
                    localReply = new ArrayBufferWriter<byte>(64);
                    using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    cts.CancelAfter(remaining);
                    try
                    {
                        status = await local.DispatchAsync(method, request.WrittenMemory, localReply, cts.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        throw new TimeoutException($"{method} for {grainKey} took longer than {timeout.TotalMilliseconds:0} ms");
                    }

                    body = localReply.WrittenMemory;
                }
                else
                {
                    reply = await rpc.CallAsync(
                        target.EndPoint!,
                        (ushort)method,
                        (write, flags, state),
                        static (s, w) => s.write(w, s.flags, s.state),
                        remaining,
                        cancellationToken).ConfigureAwait(false);
                    status = reply.Status;
                    body = reply.Body;
                }
            }
            catch (RpcConnectionException ex) when (attempt == 0)
            {
                // The owner cannot be reached: most likely dead before the membership says so. The next silo
                // in this grain's order is where it goes once the owner is declared dead; go there now.
                LogOwnerUnreachable(logger, target, method, ex.Message);
                target = views.Current.Ranked(grainKey, 1) is { } next && next.SiloId != target.SiloId ? next : throw new ClusterRequestException(
                    RpcStatus.Unavailable, $"silo {target} is unreachable and no other silo is live", ex);
                flags |= ClusterRouting.NoRedirect;
                continue;
            }
            catch (RpcConnectionException ex)
            {
                throw new ClusterRequestException(RpcStatus.Unavailable, $"silo {target} is unreachable: {ex.Message}", ex);
            }

            using (reply)
            {
                switch (status)
                {
                    case RpcStatus.Ok:
                        return read(body.Span);
                    case RpcStatus.Redirect when attempt == 0:
                        var theirs = ClusterProtocol.ReadView(body.Span);
                        views.Offer(theirs);
                        var owner = theirs.OwnerOf(grainKey);
                        if (owner is null || owner.SiloId == target.SiloId)
                        {
                            // Their view has no owner or names themselves (it changed under us): ask them once more, unconditionally.
                            owner = target;
                        }

                        target = owner;
                        flags |= ClusterRouting.NoRedirect;
                        continue;
                    case RpcStatus.Unavailable when attempt == 0:
                        target = views.Current.Ranked(grainKey, 1) is { } next && next.SiloId != target.SiloId ? next : throw new ClusterRequestException(
                            RpcStatus.Unavailable, $"silo {target} is not serving and no other silo is live");
                        flags |= ClusterRouting.NoRedirect;
                        continue;
                    case RpcStatus.DeadlineExceeded:
                        throw new TimeoutException($"{method} for {grainKey}: silo {target} reports the deadline passed");
                    default:
                        throw new ClusterRequestException(status, $"{method} for {grainKey} at silo {target}: {status} {System.Text.Encoding.UTF8.GetString(body.Span)}");
                }
            }
        }
    }

    [LoggerMessage(EventId = 4100, Level = LogLevel.Warning, Message = "Silo {Silo} unreachable for {Method} ({Error}); trying the next silo")]
    private static partial void LogOwnerUnreachable(ILogger logger, SiloMember silo, ClusterMethod method, string error);
}
