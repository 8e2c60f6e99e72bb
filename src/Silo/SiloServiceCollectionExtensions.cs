using System.Net;
using System.Text.Json.Serialization;
using CallState.Grains;
using CallState.Silo.Admin;
using CallState.Silo.Dashboard;
using CallState.Silo.Hosting;
using CallState.Silo.Limits;
using CallState.Storage;
using CallState.Storage.Membership;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Orleans.Configuration;

namespace CallState.Silo;

public static class SiloServiceCollectionExtensions
{
    /// <summary>
    /// The silo: options validated at start, the state store, an Orleans silo hosting the limit and call-shard grains
    /// (<c>CallState:Orleans</c>: alone with localhost clustering, or joined through the membership table in storage),
    /// the due scan, health checks and telemetry. Throws <see cref="OptionsValidationException"/> when
    /// <c>CallState:Orleans</c> is invalid (the silo's shape is decided here, before the host is built).
    /// </summary>
    public static IServiceCollection AddCallStateSilo(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var cluster = configuration.GetSection(OrleansClusterOptions.SectionName).Get<OrleansClusterOptions>() ?? new OrleansClusterOptions();
        var errors = cluster.Validate(silo: true).ToList();
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(OrleansClusterOptions.SectionName, typeof(OrleansClusterOptions), errors);
        }

        // A host name that resolves to nothing stops start-up here, naming the field (OptionsValidationException).
        _ = cluster.ResolveAdvertised();

        services.AddCallStateGrainServices(configuration);
        services.AddOrleans(silo => ConfigureSilo(silo, cluster, OtlpExport.Traces(configuration)));
        services.AddHealthChecks().AddCheck<SiloReadyCheck>("silo", tags: ["ready"]);
        services.AddCallStateDashboard();
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.Converters.Add(new JsonStringEnumConverter());
            o.SerializerOptions.TypeInfoResolverChain.Insert(0, AdminJsonContext.Default);
        });
        return services;
    }

    /// <summary>
    /// What the grains need on a silo, bound from configuration and validated at start: the state store
    /// (<c>CallState:Storage</c>, its schema created in the silo's start-up), grain options (<c>CallState:Grains</c>),
    /// configured limits (<c>CallState:Limits</c>), metrics, the due scan and the admin API's grain access. The caller
    /// adds the Orleans silo (<see cref="AddCallStateSilo"/>, or a test cluster).
    /// </summary>
    public static IServiceCollection AddCallStateGrainServices(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<StorageOptions>().Bind(configuration.GetSection(StorageOptions.SectionName)).ValidateOnStart();
        services.AddOptions<GrainOptions>().Bind(configuration.GetSection(GrainOptions.SectionName)).ValidateOnStart();
        services.AddOptions<LimitsOptions>().Bind(configuration.GetSection(LimitsOptions.SectionName)).ValidateOnStart();
        services.AddLimitsUsersFile();
        services.AddSingleton<IValidateOptions<StorageOptions>, StorageOptionsValidator>();
        services.AddSingleton<IValidateOptions<GrainOptions>, SiloOptionsValidator>();
        services.AddSingleton<IValidateOptions<LimitsOptions>, SiloOptionsValidator>();
        services.AddSingleton<IValidateOptions<LimitsOptions>>(new LimitsConfigurationValidator(configuration));

        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(sp => new GrainMetrics(sp.GetService<System.Diagnostics.Metrics.IMeterFactory>()));
        services.AddSingleton<ILimitSettingsSource>(sp =>
        {
            var monitor = sp.GetRequiredService<IOptionsMonitor<LimitsOptions>>();
            return new ConfiguredLimits(() => monitor.CurrentValue);
        });
        services.AddSingleton(sp => StateStoreFactory.Create(sp.GetRequiredService<IOptions<StorageOptions>>().Value, sp.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton<GrainAccess>();
        services.AddSingleton<CallEnding>();
        services.AddSingleton(sp => AuditLogFactory.Create(sp.GetRequiredService<IOptions<StorageOptions>>().Value));
        services.AddSingleton<AdminAudit>();

        services.AddSingleton<SiloLifecycle>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<SiloLifecycle>());
        services.AddSingleton<DueScanner>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<DueScanner>());
        return services;
    }

    private static void ConfigureSilo(ISiloBuilder silo, OrleansClusterOptions cluster, bool tracesExported)
    {
        var advertised = KubernetesHosting.AdvertisedAddress(cluster);
        var advertisedPort = OrleansClusterOptions.TryParseAdvertised(cluster.AdvertisedAddress, out _, out var port) ? port : null;
        var listen = cluster.ListenAddress is null ? advertised : IPAddress.Parse(cluster.ListenAddress);
        var siloPort = cluster.SiloPort == 0 ? OrleansClusterOptions.FreePort(listen) : cluster.SiloPort;
        silo.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = cluster.ClusterId;
            o.ServiceId = cluster.ServiceId;
        });
        silo.Configure<EndpointOptions>(o =>
        {
            o.AdvertisedIPAddress = advertised;
            o.SiloPort = advertisedPort ?? siloPort;
            o.GatewayPort = cluster.GatewayPort;
            o.SiloListeningEndpoint = new IPEndPoint(listen, siloPort);
            o.GatewayListeningEndpoint = cluster.GatewayPort == 0 ? null : new IPEndPoint(listen, cluster.GatewayPort);
        });
        silo.Configure<ClusterMembershipOptions>(o =>
        {
            o.ProbeTimeout = cluster.ProbeTimeout;
            o.NumMissedProbesLimit = cluster.MissedProbesLimit;
            o.IAmAliveTablePublishTimeout = cluster.IAmAliveInterval;
            o.TableRefreshTimeout = cluster.TableRefreshInterval;
        });
        if (cluster.Clustering == ClusteringMode.Storage)
        {
            silo.UseStorageClustering();
        }
        else
        {
            silo.UseDevelopmentClustering(new IPEndPoint(advertised, siloPort));
        }

        if (tracesExported)
        {
            // Trace context carried across grain calls costs an activity and request-context copies per call (measured:
            // about 15% of a call's CPU in docs/benchmarks.md); only worth it when the traces go somewhere.
            silo.AddActivityPropagation();
        }

        silo.UseCallStateTls(cluster.Tls);
        silo.UseCallStateKubernetesHosting(cluster);
    }
}

/// <summary>Validates every silo options class; each failure names its configuration field.</summary>
internal sealed class SiloOptionsValidator : IValidateOptions<GrainOptions>, IValidateOptions<LimitsOptions>
{
    public ValidateOptionsResult Validate(string? name, GrainOptions options) => Result(options.Validate());

    public ValidateOptionsResult Validate(string? name, LimitsOptions options) => Result(options.Validate());

    private static ValidateOptionsResult Result(IEnumerable<string> errors)
    {
        var list = errors.ToList();
        return list.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(list);
    }
}

/// <summary>
/// The silo's own start-up stages inside Orleans' lifecycle: the state store's schema before any grain runs, readiness
/// once the silo is active. Readiness is false before and during shutdown, so a half-started silo gets no traffic.
/// </summary>
internal sealed partial class SiloLifecycle(IStateStore store, IGrainFactory grains, ILogger<SiloLifecycle> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    /// <summary>The key of the grains read once at start; never a real call (a Call-ID has no spaces) or user.</summary>
    private const string WarmUpKey = "callstate warm-up";

    private volatile bool _ready;

    public bool IsReady => _ready;

    public void Participate(ISiloLifecycle lifecycle)
    {
        lifecycle.Subscribe(nameof(SiloLifecycle) + ".Storage", ServiceLifecycleStage.RuntimeInitialize, async ct =>
        {
            LogStage(logger, "storage");
            await store.InitializeAsync(ct).ConfigureAwait(false);
        });
        lifecycle.Subscribe(
            nameof(SiloLifecycle) + ".Serving",
            ServiceLifecycleStage.Active,
            async _ =>
            {
                // One read through each grain type before the first call: activation, serializers and the store's read
                // path are compiled now, not inside the first caller's admission deadline. Nothing is written.
                LogStage(logger, "warming up");
                await grains.GetCall(WarmUpKey).GetSnapshotAsync().ConfigureAwait(false);
                await grains.GetGrain<ILimitGrain>("user/" + WarmUpKey).GetSnapshotAsync().ConfigureAwait(false);
                LogStage(logger, "serving");
                _ready = true;
            },
            _ =>
            {
                _ready = false;
                LogStage(logger, "stopping");
                return Task.CompletedTask;
            });
    }

    [LoggerMessage(EventId = 2000, Level = LogLevel.Information, Message = "Silo stage: {Stage}")]
    private static partial void LogStage(ILogger logger, string stage);
}

internal sealed class SiloReadyCheck(SiloLifecycle lifecycle) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(lifecycle.IsReady ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy("starting or stopping"));
}

/// <summary>Marker so the admin API can name limit kinds in routes.</summary>
internal static class LimitKinds
{
    public static bool TryParse(string text, out LimitKind kind)
    {
        kind = text switch
        {
            "user" => LimitKind.User,
            "trunk" => LimitKind.Trunk,
            "key" => LimitKind.Key,
            "tenant" => LimitKind.Tenant,
            _ => 0,
        };
        return kind != 0;
    }
}
