using Microsoft.Extensions.Logging;

namespace CallState.Storage;

/// <summary>Creates the configured <see cref="IStateStore"/>; the caller runs <see cref="IStateStore.InitializeAsync"/>.</summary>
public static class StateStoreFactory
{
    /// <summary>Validates <paramref name="options"/> and creates the provider it names.</summary>
    /// <exception cref="ArgumentException">The options are invalid; the message names each field to fix.</exception>
    public static IStateStore Create(StorageOptions options, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var errors = StorageOptionsValidator.Validate(options);
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        }

        return options.Provider switch
        {
            StorageProvider.PostgreSql => new PostgresStateStore(options, loggerFactory.CreateLogger<PostgresStateStore>()),
            _ => new SqliteStateStore(options, loggerFactory.CreateLogger<SqliteStateStore>()),
        };
    }
}
