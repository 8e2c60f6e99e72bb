using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Storage;

/// <summary>Creates the configured <see cref="IGrainStorage"/>; the caller runs <see cref="IGrainStorage.InitializeAsync"/>.</summary>
public static class GrainStorageFactory
{
    /// <summary>Validates <paramref name="options"/> and creates the provider it names.</summary>
    /// <exception cref="ArgumentException">The options are invalid; the message names each field to fix.</exception>
    public static IGrainStorage Create(StorageOptions options, ILoggerFactory loggerFactory)
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
            StorageProvider.PostgreSql => new PostgresGrainStorage(options, loggerFactory.CreateLogger<PostgresGrainStorage>()),
            _ => new SqliteGrainStorage(options, loggerFactory.CreateLogger<SqliteGrainStorage>()),
        };
    }
}
