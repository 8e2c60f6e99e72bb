using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace CallState.Storage;

public static class StorageServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="StorageOptions"/> (bound from <c>CallState:Storage</c>, validated at start) and a
    /// singleton <see cref="IStateStore"/>. The host's storage start-up stage must still call
    /// <see cref="IStateStore.InitializeAsync"/> before anything reads or writes.
    /// </summary>
    public static IServiceCollection AddStateStore(this IServiceCollection services, Action<StorageOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = services.AddOptions<StorageOptions>().BindConfiguration(StorageOptions.SectionName);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<StorageOptions>, StorageOptionsValidator>());
        services.TryAddSingleton(provider => StateStoreFactory.Create(
            provider.GetRequiredService<IOptions<StorageOptions>>().Value,
            provider.GetRequiredService<ILoggerFactory>()));
        return services;
    }
}
