using CallState.Grains;
using CallState.Sip.Proxy;
using Microsoft.Extensions.Options;

namespace CallState.SipEdge.Admission;

/// <summary>
/// Ends calls for the admin API (docs/architecture.md, "Ending a call from the admin API"): sends the two BYEs stored
/// with a call's answer through this edge's proxy (<see cref="SipProxy.TeardownOf(OwnRequest, OwnRequest)"/>, the same
/// <see cref="CallTeardown"/> a confirm that finds its call reclaimed uses). An edge of a cluster registers it with the
/// silos' <see cref="IEdgeRegistryGrain"/> (<see cref="EdgeRegistration"/>); a standalone edge's silo calls it directly.
/// </summary>
public sealed partial class EdgeCallEnder : IEdgeObserver
{
    private readonly Func<SipProxy?> _proxy;
    private readonly ILogger<EdgeCallEnder> _logger;

    internal EdgeCallEnder(SipListenerService listener, ILogger<EdgeCallEnder> logger)
        : this(() => listener.Endpoint?.Proxy, logger)
    {
    }

    /// <param name="proxy">The running proxy, or null while the SIP listeners are not up.</param>
    /// <param name="logger">Where each end is logged.</param>
    public EdgeCallEnder(Func<SipProxy?> proxy, ILogger<EdgeCallEnder> logger)
    {
        _proxy = proxy;
        _logger = logger;
    }

    public Task SendTeardownAsync(string callKey, DialogTeardown teardown)
    {
        ArgumentNullException.ThrowIfNull(teardown);
        var proxy = _proxy() ?? throw new InvalidOperationException("this edge's SIP listeners are not running");
        var towardCallee = Request(teardown.TowardCallee);
        var towardCaller = Request(teardown.TowardCaller);
        proxy.TeardownOf(towardCallee, towardCaller).Send();
        LogEnded(_logger, callKey, towardCaller.Target.ToString(), towardCallee.Target.ToString());
        return Task.CompletedTask;
    }

    /// <summary>The stored form of a <see cref="CallTeardown"/>, to keep with the call's answer (null for a call nothing counts).</summary>
    public static DialogTeardown? Store(CallTeardown? teardown) => teardown is null
        ? null
        : new DialogTeardown(Store(teardown.TowardCallee), Store(teardown.TowardCaller));

    private static StoredBye Store(OwnRequest request) => new(request.Target.ToString(), request.RequestLine, request.Rest);

    private static OwnRequest Request(StoredBye bye) =>
        SipTarget.TryParse(bye.Target, out var target)
            ? new OwnRequest(target, bye.RequestLine, bye.Rest)
            : throw new ArgumentException($"stored BYE target '{bye.Target}' is not a SIP target", nameof(bye));

    [LoggerMessage(EventId = 3212, Level = LogLevel.Warning, Message = "Call {CallKey} ended by the admin API: BYE sent to the caller at {CallerTarget} and the callee at {CalleeTarget}")]
    private static partial void LogEnded(ILogger logger, string callKey, string callerTarget, string calleeTarget);
}

/// <summary>
/// Keeps an edge of a cluster registered with the silos' <see cref="IEdgeRegistryGrain"/>: an observer reference is not
/// durable and the registry lives in memory, so the edge registers again every <see cref="EdgeRegistry.RefreshInterval"/>
/// (every 2 s until the first registration succeeds) and unregisters when it stops.
/// </summary>
internal sealed partial class EdgeRegistration(IClusterClient client, EdgeCallEnder ender, IOptions<SipProxyOptions> sip, TimeProvider time,
    ILogger<EdgeRegistration> logger) : BackgroundService
{
    private static readonly TimeSpan RetryInterval = TimeSpan.FromSeconds(2);

    /// <summary>This edge's name in the registry: its SIP address as it advertises it, host and process.</summary>
    private readonly string _name = $"{sip.Value.AdvertisedHost ?? sip.Value.ViaHost ?? sip.Value.ListenAddress}:{sip.Value.AdvertisedPort ?? sip.Value.Port}/{Environment.MachineName}/{Environment.ProcessId}";

    private IEdgeObserver? _reference;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var registered = false;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                _reference ??= client.CreateObjectReference<IEdgeObserver>(ender);
                await client.GetGrain<IEdgeRegistryGrain>(EdgeRegistry.Key).RegisterAsync(_name, _reference).WaitAsync(stoppingToken).ConfigureAwait(false);
                if (!registered)
                {
                    registered = true;
                    LogRegistered(logger, _name);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // no gateway yet, a silo restarting: register again shortly
            catch (Exception ex)
#pragma warning restore CA1031
            {
                registered = false;
                LogRegisterFailed(logger, ex.Message);
            }

            try
            {
                await Task.Delay(registered ? EdgeRegistry.RefreshInterval : RetryInterval, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        if (_reference is null)
        {
            return;
        }

        try
        {
            await client.GetGrain<IEdgeRegistryGrain>(EdgeRegistry.Key).UnregisterAsync(_name).WaitAsync(TimeSpan.FromSeconds(2), time, cancellationToken).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // the registry forgets an edge that does not refresh anyway
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        client.DeleteObjectReference<IEdgeObserver>(_reference);
    }

    [LoggerMessage(EventId = 3213, Level = LogLevel.Information, Message = "Registered with the silos as edge {Edge}: the admin API can end calls through it")]
    private static partial void LogRegistered(ILogger logger, string edge);

    [LoggerMessage(EventId = 3214, Level = LogLevel.Debug, Message = "Registering with the silos' edge registry failed ({Error}); trying again")]
    private static partial void LogRegisterFailed(ILogger logger, string error);
}
