using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace CallState.Runtime.Rpc;

public static class RpcServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="RpcOptions"/> (bound from <c>CallState:Cluster:Rpc</c>, validated at start), a singleton
    /// <see cref="RpcMetrics"/> and a singleton <see cref="RpcClient"/>. A silo builds its <see cref="RpcServer"/> itself,
    /// with its listen endpoint and handler, from the same options and metrics.
    /// </summary>
    public static IServiceCollection AddRpc(this IServiceCollection services, Action<RpcOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = services.AddOptions<RpcOptions>().BindConfiguration(RpcOptions.SectionName);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RpcOptions>, RpcOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(provider => new RpcMetrics(provider.GetService<IMeterFactory>()));
        services.TryAddSingleton(provider => new RpcClient(
            provider.GetRequiredService<IOptions<RpcOptions>>().Value,
            provider.GetRequiredService<TimeProvider>(),
            provider.GetRequiredService<ILogger<RpcClient>>(),
            provider.GetRequiredService<RpcMetrics>()));
        return services;
    }
}

/// <summary>Checks <see cref="RpcOptions"/> through <see cref="RpcOptions.Validate"/>; every message names the key to fix.</summary>
public sealed class RpcOptionsValidator : IValidateOptions<RpcOptions>
{
    public ValidateOptionsResult Validate(string? name, RpcOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
