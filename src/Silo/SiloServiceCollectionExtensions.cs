using System.Text.Json.Serialization;
using CallState.Grains;
using CallState.Runtime;
using CallState.Runtime.Cluster;
using CallState.Runtime.Rpc;
using CallState.Storage;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace CallState.Silo;

public static class SiloServiceCollectionExtensions
{
    /// <summary>Options, validation at start, the grain runtime over the configured storage, health checks, telemetry.</summary>
    public static IServiceCollection AddCallStateSilo(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<StorageOptions>().Bind(configuration.GetSection(StorageOptions.SectionName)).ValidateOnStart();
        services.AddOptions<GrainOptions>().Bind(configuration.GetSection(GrainOptions.SectionName)).ValidateOnStart();
        services.AddOptions<LimitsOptions>().Bind(configuration.GetSection(LimitsOptions.SectionName)).ValidateOnStart();
        services.AddLimitsUsersFile();
        services.AddSingleton<IValidateOptions<StorageOptions>, StorageOptionsValidator>();
        services.AddSingleton<IValidateOptions<GrainOptions>, SiloOptionsValidator>();
        services.AddSingleton<IValidateOptions<LimitsOptions>, SiloOptionsValidator>();

        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp => new GrainMetrics(sp.GetService<System.Diagnostics.Metrics.IMeterFactory>()));
        services.AddSingleton<ILimitSettingsSource>(sp =>
        {
            var monitor = sp.GetRequiredService<IOptionsMonitor<LimitsOptions>>();
            return new ConfiguredLimits(() => monitor.CurrentValue);
        });
        services.AddSingleton(sp => new GrainRuntime(
            StateStoreFactory.Create(sp.GetRequiredService<IOptions<StorageOptions>>().Value, sp.GetRequiredService<ILoggerFactory>()),
            sp.GetRequiredService<IOptions<GrainOptions>>().Value,
            sp.GetRequiredService<ILimitSettingsSource>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILoggerFactory>(),
            sp.GetRequiredService<GrainMetrics>()));

        services.AddClusterOptions(configuration);
        if (configuration.GetValue<bool>(ClusterOptions.SectionName + ":" + nameof(ClusterOptions.Enabled)))
        {
            services.AddRpc();
            services.AddSingleton(sp => new SiloCluster(
                sp.GetRequiredService<GrainRuntime>(),
                MembershipTable.Create(sp.GetRequiredService<IOptions<StorageOptions>>().Value),
                sp.GetRequiredService<IOptions<ClusterOptions>>().Value,
                sp.GetRequiredService<IOptions<RpcOptions>>().Value,
                sp.GetRequiredService<RpcClient>(),
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<ILoggerFactory>(),
                sp.GetRequiredService<RpcMetrics>()));
            services.AddSingleton(sp => new GrainAccess(sp.GetRequiredService<GrainRuntime>(), sp.GetRequiredService<SiloCluster>()));
        }
        else
        {
            services.AddSingleton(sp => new GrainAccess(sp.GetRequiredService<GrainRuntime>()));
        }

        services.AddSingleton<SiloLifecycle>();
        services.AddHostedService(sp => sp.GetRequiredService<SiloLifecycle>());
        services.AddHealthChecks().AddCheck<SiloReadyCheck>("runtime", tags: ["ready"]);
        services.AddHostedService<SiloTelemetry>();

        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.Converters.Add(new JsonStringEnumConverter());
            o.SerializerOptions.TypeInfoResolverChain.Insert(0, AdminJsonContext.Default);
        });
        return services;
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
/// Starts the silo in stages: storage (schema, persisted timers), then serving. Readiness reports
/// healthy only after the last stage, so a half-started silo gets no traffic.
/// </summary>
internal sealed partial class SiloLifecycle(GrainRuntime runtime, ILogger<SiloLifecycle> logger, SiloCluster? cluster = null) : IHostedService
{
    private volatile bool _ready;

    public bool IsReady => _ready;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        LogStage(logger, "storage");
        await runtime.StartAsync(cancellationToken).ConfigureAwait(false);
        if (cluster is not null)
        {
            LogStage(logger, "membership and RPC");
            await cluster.StartAsync(cancellationToken).ConfigureAwait(false);
        }

        LogStage(logger, "serving");
        _ready = true;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _ready = false;
        LogStage(logger, "stopping");
        if (cluster is not null)
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
        }

        await runtime.DisposeAsync().ConfigureAwait(false);
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
            _ => 0,
        };
        return kind != 0;
    }
}
