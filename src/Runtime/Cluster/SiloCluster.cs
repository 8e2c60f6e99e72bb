using System.Buffers;
using System.Net;
using System.Net.Sockets;
using CallState.Grains;
using CallState.Runtime.Rpc;
using CallState.Runtime.Storage;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Cluster;

/// <summary>
/// This silo's membership and its share of the grains. Joins the membership table with a new epoch, heartbeats,
/// reads the table, declares silos dead after <see cref="ClusterOptions.FailureTimeout"/>, and keeps the view that
/// placement uses. Serves RPC requests for the grains it owns (redirecting the others), sends call grains' limit
/// operations to the limits' owners, fires only the timers of grains it owns, and deactivates grains that moved
/// away. A silo that finds itself declared dead (it was paused, or cut off) drops every activation and joins again
/// with a new epoch; one that cannot heartbeat for a failure timeout stops serving until it can. Neither is what keeps
/// a limit: every admission is a compare-and-set on the grain's stored version, so a stale silo cannot commit.
/// </summary>
public sealed partial class SiloCluster : IClusterLocalSilo, IClusterViewSource, IRpcHandler, IAsyncDisposable
{
    private readonly GrainRuntime _runtime;
    private readonly IMembershipTable _table;
    private readonly ClusterOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly RpcServer _server;
    private readonly CancellationTokenSource _stop = new();
    private volatile ClusterView _current = ClusterView.Empty;
    private volatile bool _serving;
    private Task? _loop;
    private long _epoch;
    private DateTimeOffset _lastHeartbeat;
    private bool _storageWarned;

    public SiloCluster(
        GrainRuntime runtime, IMembershipTable table, ClusterOptions options, RpcOptions rpcOptions, RpcClient rpc, TimeProvider time, ILoggerFactory loggerFactory, RpcMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _runtime = runtime;
        _table = table;
        _options = options;
        _time = time;
        _logger = loggerFactory.CreateLogger<SiloCluster>();
        SiloId = options.EffectiveSiloId;
        Client = new ClusterClient(rpc, this, time, loggerFactory.CreateLogger<ClusterClient>(), this);
        _server = new RpcServer(new IPEndPoint(IPAddress.Parse(options.ListenAddress), options.Port), this, rpcOptions, time, loggerFactory.CreateLogger<RpcServer>(), metrics);

        // Before the runtime starts: call grains reach limits through placement; timers fire at the owner.
        runtime.UseLimitClient(new ClusterLimitClient(Client, options.RequestTimeout));
        runtime.TimerFilter = Owns;
    }

    public string SiloId { get; }

    /// <summary>This incarnation's epoch (0 before joining).</summary>
    public long Epoch => Interlocked.Read(ref _epoch);

    /// <summary>Joined, heartbeating, not declared dead: RPC requests are served.</summary>
    public bool IsServing => _serving;

    /// <summary>The address written to the membership table.</summary>
    public string? Endpoint { get; private set; }

    public ClusterView Current => _current;

    /// <summary>Routes requests by placement, serving what this silo owns in process.</summary>
    public ClusterClient Client { get; }

    public void Offer(ClusterView view)
    {
        // The membership table is this silo's authority; a redirect only means the next read will tell.
    }

    /// <summary>Whether this silo owns <paramref name="id"/> in its current view.</summary>
    public bool Owns(GrainId id) => _current.OwnerOf(id.ToString())?.SiloId == SiloId;

    /// <summary>The membership and RPC stages: listen, join, read the view, arm the timers of owned grains, then serve.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await _server.StartAsync(cancellationToken).ConfigureAwait(false);
        Endpoint = FormatEndpoint(_options, _server.LocalEndPoint);
        await JoinAsync(cancellationToken).ConfigureAwait(false);
        await RefreshAsync(cancellationToken).ConfigureAwait(false);
        _serving = true;
        LogServing(_logger, SiloId, Endpoint, Epoch, _current);
        _loop = Task.Run(LoopAsync, CancellationToken.None);
    }

    /// <summary>Leaves the table (so the others move this silo's keys at once) and stops serving.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _serving = false;
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        if (Epoch > 0)
        {
            try
            {
                await _table.LeaveAsync(SiloId, Epoch, cancellationToken).ConfigureAwait(false);
                LogLeft(_logger, SiloId, Epoch);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // The others declare this silo dead after the failure timeout instead.
                LogLeaveFailed(_logger, ex);
            }
        }

        await _server.DisposeAsync().ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stop.IsCancellationRequested)
        {
            await StopAsync(CancellationToken.None).ConfigureAwait(false);
        }

        await _table.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
    }

    ValueTask<RpcStatus> IRpcHandler.HandleAsync(RpcRequest request, IBufferWriter<byte> reply, CancellationToken cancellationToken) =>
        DispatchAsync((ClusterMethod)request.Method, request.Body, reply, cancellationToken);

    /// <summary>Serves one request: redirects a grain this silo does not own (unless the caller was redirected already).</summary>
    public async ValueTask<RpcStatus> DispatchAsync(ClusterMethod method, ReadOnlyMemory<byte> body, IBufferWriter<byte> reply, CancellationToken cancellationToken)
    {
        if (method == ClusterMethod.GetView)
        {
            if (!_serving)
            {
                return RpcStatus.Unavailable;
            }

            ClusterProtocol.WriteView(reply, _current);
            return RpcStatus.Ok;
        }

        if (!_serving)
        {
            return RpcStatus.Unavailable;
        }

        switch (method)
        {
            case ClusterMethod.CallAdmit:
            {
                var (flags, callKey, limits) = ClusterProtocol.ReadAdmit(body.Span);
                if (Redirect(flags, ClusterClient.CallGrainKey(callKey), reply))
                {
                    return RpcStatus.Redirect;
                }

                ClusterProtocol.WriteAdmitResult(reply, await _runtime.AdmitAsync(callKey, limits, cancellationToken).ConfigureAwait(false));
                return RpcStatus.Ok;
            }

            case ClusterMethod.CallConfirm or ClusterMethod.CallRenew or ClusterMethod.CallEnd:
            {
                var (flags, callKey) = ClusterProtocol.ReadCallKey(body.Span);
                if (Redirect(flags, ClusterClient.CallGrainKey(callKey), reply))
                {
                    return RpcStatus.Redirect;
                }

                var done = method switch
                {
                    ClusterMethod.CallConfirm => await _runtime.ConfirmCallAsync(callKey, cancellationToken).ConfigureAwait(false),
                    ClusterMethod.CallRenew => await _runtime.RenewCallAsync(callKey, cancellationToken).ConfigureAwait(false),
                    _ => await _runtime.EndCallAsync(callKey, cancellationToken).ConfigureAwait(false),
                };
                ClusterProtocol.WriteBool(reply, done);
                return RpcStatus.Ok;
            }

            case ClusterMethod.LimitReserve or ClusterMethod.LimitConfirm or ClusterMethod.LimitRenew or ClusterMethod.LimitRelease:
            {
                var (flags, request) = ClusterProtocol.ReadLimitOp(body.Span);
                if (Redirect(flags, ClusterClient.LimitGrainKey(request.LimitKey), reply))
                {
                    return RpcStatus.Redirect;
                }

                var key = ParseLimitKey(request.LimitKey);
                var limits = _runtime.LocalLimits;
                switch (method)
                {
                    case ClusterMethod.LimitReserve:
                        ClusterProtocol.WriteReserveOutcome(reply, await limits.TryReserveAsync(
                            key, request.CallKey, request.Direction, request.Lease, request.PerCallMax, cancellationToken).ConfigureAwait(false));
                        break;
                    case ClusterMethod.LimitConfirm:
                        ClusterProtocol.WriteBool(reply, await limits.ConfirmAsync(key, request.CallKey, request.Lease, cancellationToken).ConfigureAwait(false));
                        break;
                    case ClusterMethod.LimitRenew:
                        ClusterProtocol.WriteBool(reply, await limits.RenewAsync(key, request.CallKey, request.Lease, cancellationToken).ConfigureAwait(false));
                        break;
                    default:
                        ClusterProtocol.WriteBool(reply, await limits.ReleaseAsync(key, request.CallKey, cancellationToken).ConfigureAwait(false));
                        break;
                }

                return RpcStatus.Ok;
            }

            case ClusterMethod.LimitSet:
            {
                var (flags, keyText, settings) = ClusterProtocol.ReadLimitSet(body.Span);
                if (Redirect(flags, ClusterClient.LimitGrainKey(keyText), reply))
                {
                    return RpcStatus.Redirect;
                }

                await _runtime.SetLimitsAsync(ParseLimitKey(keyText), settings, cancellationToken).ConfigureAwait(false);
                ClusterProtocol.WriteBool(reply, true);
                return RpcStatus.Ok;
            }

            default:
                return RpcStatus.UnknownMethod;
        }
    }

    private bool Redirect(ClusterRouting flags, string grainKey, IBufferWriter<byte> reply)
    {
        if ((flags & ClusterRouting.NoRedirect) != 0)
        {
            return false;
        }

        var view = _current;
        var owner = view.OwnerOf(grainKey);
        if (owner is null || owner.SiloId == SiloId)
        {
            return false;
        }

        ClusterProtocol.WriteView(reply, view);
        return true;
    }

    private static LimitKey ParseLimitKey(string text) =>
        LimitKey.TryParse(text, out var key, out var error) ? key : throw new FormatException(error);

    private async Task JoinAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var epoch = await _table.JoinAsync(SiloId, Endpoint!, now, cancellationToken).ConfigureAwait(false);
        Interlocked.Exchange(ref _epoch, epoch);
        _lastHeartbeat = now;
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_options.HeartbeatInterval, _time, _stop.Token).ConfigureAwait(false);
                await BeatAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                if (!_storageWarned)
                {
                    _storageWarned = true;
                    LogMembershipFailed(_logger, ex);
                }

                if (_serving && _time.GetUtcNow() - _lastHeartbeat > _options.FailureTimeout)
                {
                    // The others may have declared this silo dead by now; stop until a heartbeat says otherwise.
                    _serving = false;
                    LogFenced(_logger, SiloId, _options.FailureTimeout.TotalSeconds);
                }
            }
        }
    }

    /// <summary>One heartbeat and table read (the loop calls it; tests may too).</summary>
    public async Task BeatAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        if (!await _table.HeartbeatAsync(SiloId, Epoch, now, cancellationToken).ConfigureAwait(false))
        {
            // Declared dead (paused or cut off past the failure timeout): whatever is in memory may be stale.
            _serving = false;
            var dropped = _runtime.DeactivateWhere(static _ => true);
            LogDeclaredDead(_logger, SiloId, Epoch, dropped);
            await JoinAsync(cancellationToken).ConfigureAwait(false);
            LogRejoined(_logger, SiloId, Epoch);
        }
        else
        {
            _lastHeartbeat = now;
        }

        await RefreshAsync(cancellationToken).ConfigureAwait(false);
        if (_storageWarned)
        {
            _storageWarned = false;
            LogMembershipRecovered(_logger);
        }

        if (!_serving && !_stop.IsCancellationRequested)
        {
            _serving = true;
            LogServing(_logger, SiloId, Endpoint!, Epoch, _current);
        }
    }

    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        var entries = await _table.ReadAllAsync(cancellationToken).ConfigureAwait(false);
        var now = _time.GetUtcNow();
        foreach (var entry in entries)
        {
            if (entry.Status == SiloStatus.Active && entry.SiloId != SiloId && now - entry.HeartbeatAt > _options.FailureTimeout
                && await _table.DeclareDeadAsync(entry.SiloId, entry.Epoch, now - _options.FailureTimeout, cancellationToken).ConfigureAwait(false))
            {
                LogDeclaredOtherDead(_logger, entry.SiloId, entry.Epoch, (now - entry.HeartbeatAt).TotalSeconds);
            }
        }

        var view = ClusterView.FromEntries(entries.Where(e => e.SiloId != SiloId), now, _options.FailureTimeout)
            .With(new SiloMember(SiloId, Endpoint!, Epoch));
        if (view.Signature == _current.Signature)
        {
            return;
        }

        _current = view;
        LogView(_logger, view);
        var moved = _runtime.DeactivateWhere(id => !Owns(id));
        var armed = await _runtime.RearmTimersAsync(cancellationToken).ConfigureAwait(false);
        LogPlacement(_logger, moved, armed);
    }

    private static string FormatEndpoint(ClusterOptions options, IPEndPoint bound)
    {
        if (!string.IsNullOrWhiteSpace(options.AdvertisedAddress))
        {
            // Validated at start-up (ClusterOptions.Validate), so this holds.
            return SiloAddress.TryFormatAdvertised(options.AdvertisedAddress, bound.Port, out var advertised)
                ? advertised
                : throw new InvalidOperationException($"CallState:Cluster:AdvertisedAddress '{options.AdvertisedAddress}' is not an address");
        }

        if (!bound.Address.Equals(IPAddress.Any) && !bound.Address.Equals(IPAddress.IPv6Any))
        {
            return bound.ToString();
        }

        var address = Dns.GetHostAddresses(Dns.GetHostName())
            .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a)) ?? IPAddress.Loopback;
        return new IPEndPoint(address, bound.Port).ToString();
    }

    [LoggerMessage(EventId = 4000, Level = LogLevel.Information, Message = "Silo {SiloId} serving at {Endpoint}, epoch {Epoch}; view: {View}")]
    private static partial void LogServing(ILogger logger, string siloId, string endpoint, long epoch, ClusterView view);

    [LoggerMessage(EventId = 4001, Level = LogLevel.Information, Message = "Cluster view changed: {View}")]
    private static partial void LogView(ILogger logger, ClusterView view);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Information, Message = "Placement: {Moved} activations moved away, {Armed} timers armed")]
    private static partial void LogPlacement(ILogger logger, int moved, int armed);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Warning, Message = "Declared silo {SiloId} epoch {Epoch} dead: no heartbeat for {Seconds:0.0} s")]
    private static partial void LogDeclaredOtherDead(ILogger logger, string siloId, long epoch, double seconds);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Error, Message = "This silo {SiloId} epoch {Epoch} was declared dead: stopped serving, dropped {Dropped} activations, joining again")]
    private static partial void LogDeclaredDead(ILogger logger, string siloId, long epoch, int dropped);

    [LoggerMessage(EventId = 4005, Level = LogLevel.Warning, Message = "Silo {SiloId} joined again with epoch {Epoch}")]
    private static partial void LogRejoined(ILogger logger, string siloId, long epoch);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Error, Message = "Membership table unreachable; serving continues until the failure timeout")]
    private static partial void LogMembershipFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4007, Level = LogLevel.Information, Message = "Membership table reachable again")]
    private static partial void LogMembershipRecovered(ILogger logger);

    [LoggerMessage(EventId = 4008, Level = LogLevel.Error, Message = "Silo {SiloId} stopped serving: no heartbeat written for {Seconds} s")]
    private static partial void LogFenced(ILogger logger, string siloId, double seconds);

    [LoggerMessage(EventId = 4009, Level = LogLevel.Information, Message = "Silo {SiloId} epoch {Epoch} left the cluster")]
    private static partial void LogLeft(ILogger logger, string siloId, long epoch);

    [LoggerMessage(EventId = 4010, Level = LogLevel.Warning, Message = "Could not mark this silo as left; the others will declare it dead")]
    private static partial void LogLeaveFailed(ILogger logger, Exception exception);
}

/// <summary>Call grains' limit operations, sent to each limit's owner.</summary>
internal sealed class ClusterLimitClient(ClusterClient client, TimeSpan timeout) : ILimitGrainClient
{
    public Task<ReserveOutcome> TryReserveAsync(LimitKey key, string callKey, Direction direction, TimeSpan lease, int? perCallMax, CancellationToken cancellationToken) =>
        client.ReserveAsync(new LimitOpRequest(key.ToString(), callKey, direction, lease, perCallMax), timeout, cancellationToken);

    public Task<bool> ConfirmAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
        client.LimitOpAsync(ClusterMethod.LimitConfirm, new LimitOpRequest(key.ToString(), callKey, default, lease, null), timeout, cancellationToken);

    public Task<bool> RenewAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
        client.LimitOpAsync(ClusterMethod.LimitRenew, new LimitOpRequest(key.ToString(), callKey, default, lease, null), timeout, cancellationToken);

    public Task<bool> ReleaseAsync(LimitKey key, string callKey, CancellationToken cancellationToken) =>
        client.LimitOpAsync(ClusterMethod.LimitRelease, new LimitOpRequest(key.ToString(), callKey, default, TimeSpan.Zero, null), timeout, cancellationToken);
}
