using System.Net;
using System.Net.Sockets;
using CallState.Silo.Hosting;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Messaging;

namespace CallState.SipEdge.Admission;

public static class ClusterAdmissionServiceCollectionExtensions
{
    /// <summary>
    /// The edge as an Orleans client (<c>CallState:Orleans:Gateways</c>): no database access; it keeps trying while no
    /// gateway answers (admission fails closed meanwhile, and readiness stays false until <see cref="AdmissionWarmup"/>
    /// completes a round trip). Throws
    /// <see cref="OptionsValidationException"/> when <c>CallState:Orleans</c> is invalid.
    /// </summary>
    public static IServiceCollection AddCallStateClusterClient(this IServiceCollection services, IConfiguration configuration)
    {
        var cluster = configuration.GetSection(OrleansClusterOptions.SectionName).Get<OrleansClusterOptions>() ?? new OrleansClusterOptions();
        var errors = cluster.Validate(silo: false).ToList();
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(OrleansClusterOptions.SectionName, typeof(OrleansClusterOptions), errors);
        }

        services.AddSingleton<ClusterConnectionStatus>();
        // The client's start waits for a gateway: the SIP listeners and probes must not wait with it.
        services.Configure<HostOptions>(o => o.ServicesStartConcurrently = true);
        services.AddOrleansClient(client =>
        {
            client.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = cluster.ClusterId;
                o.ServiceId = cluster.ServiceId;
            });
            // A gateway whose connection failed (its silo stopped) is passed over until the next refresh after this
            // interval: a silo restarted on the same address is used again within two intervals.
            client.Configure<GatewayOptions>(o => o.GatewayListRefreshPeriod = cluster.GatewayRefreshInterval);
            client.Services.AddSingleton<IGatewayListProvider>(sp => new DnsGatewayListProvider(cluster.Gateways, sp.GetRequiredService<IOptions<GatewayOptions>>().Value.GatewayListRefreshPeriod));
            client.UseConnectionRetryFilter(async (exception, ct) =>
            {
                // No gateway answers (silos not started yet, or all restarting): keep trying for as long as the edge runs.
                await Task.Delay(cluster.GatewayRetryInterval, ct).ConfigureAwait(false);
                return !ct.IsCancellationRequested;
            });
            client.AddClusterConnectionStatusObserver<ClusterConnectionStatus>();
            client.Services.AddSingleton<ILifecycleParticipant<IClusterClientLifecycle>>(sp => sp.GetRequiredService<ClusterConnectionStatus>());
            if (OtlpExport.Traces(configuration))
            {
                // Only when traces are exported: propagation costs an activity and request-context copies per call.
                client.AddActivityPropagation();
            }

            client.UseCallStateTls(cluster.Tls);
        });
        services.AddSingleton<IAdmissionClient>(sp => new GrainAdmissionClient(sp.GetRequiredService<IClusterClient>()));
        return services;
    }
}

/// <summary>
/// Gateways from <c>host:port</c> entries. A host name is resolved on every refresh and each of its addresses is a
/// gateway (a Kubernetes headless Service resolves to every silo pod, so pods that come and go are followed).
/// </summary>
internal sealed class DnsGatewayListProvider(IReadOnlyList<string> gateways, TimeSpan refreshPeriod) : IGatewayListProvider
{
    public TimeSpan MaxStaleness => refreshPeriod;

    public bool IsUpdatable => true;

    public Task InitializeGatewayListProvider() => Task.CompletedTask;

    public async Task<IList<Uri>> GetGateways()
    {
        var result = new List<Uri>();
        foreach (var entry in gateways)
        {
            if (!OrleansClusterOptions.TrySplitHostPort(entry, out var host, out var port))
            {
                continue;
            }

            IPAddress[] addresses;
            if (IPAddress.TryParse(host, out var literal))
            {
                addresses = [literal];
            }
            else
            {
                try
                {
                    addresses = await Dns.GetHostAddressesAsync(host).ConfigureAwait(false);
                }
                catch (SocketException)
                {
                    // Not resolvable now (the Service has no ready pod yet): the next refresh tries again.
                    continue;
                }
            }

            foreach (var address in addresses)
            {
                result.Add(SiloAddress.New(address, port, 0).ToGatewayUri());
            }
        }

        return result;
    }
}

/// <summary>
/// A log line per change of the edge's connection to the cluster. Not a readiness check: readiness is the admission
/// warm-up (<see cref="AdmissionWarmup"/>), which a lost connection does not undo (the edge answers 503 itself meanwhile).
/// </summary>
internal sealed partial class ClusterConnectionStatus(ILogger<ClusterConnectionStatus> logger) : IClusterConnectionStatusObserver, ILifecycleParticipant<IClusterClientLifecycle>
{
    public void Participate(IClusterClientLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(ClusterConnectionStatus), ServiceLifecycleStage.Active, _ =>
        {
            // The client finished connecting (its start waits for a gateway).
            LogConnected(logger);
            return Task.CompletedTask;
        });

    public void NotifyGatewayCountChanged(int currentNumberOfGateways, int previousNumberOfGateways, bool connectionRecovered)
    {
        LogGateways(logger, currentNumberOfGateways, previousNumberOfGateways);
    }

    public void NotifyClusterConnectionLost()
    {
        LogLost(logger);
    }

    [LoggerMessage(EventId = 3302, Level = LogLevel.Information, Message = "Connected to the cluster")]
    private static partial void LogConnected(ILogger logger);

    [LoggerMessage(EventId = 3300, Level = LogLevel.Information, Message = "Connected to {Gateways} silo gateways (was {Previous})")]
    private static partial void LogGateways(ILogger logger, int gateways, int previous);

    [LoggerMessage(EventId = 3301, Level = LogLevel.Warning, Message = "Connection to the cluster lost; admission fails closed until a gateway answers")]
    private static partial void LogLost(ILogger logger);
}
