using Microsoft.Extensions.Logging;

namespace CallState.Storage;

/// <summary>Storage log messages; event ids 2000-2099 belong to this area.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 2000, Level = LogLevel.Warning,
        Message = "A storage batch of {Count} writes failed; every write in it is reported as failed with an unknown outcome")]
    public static partial void BatchFailed(ILogger logger, Exception exception, int count);

    [LoggerMessage(EventId = 2001, Level = LogLevel.Information,
        Message = "Grain storage ready: {Provider} at {Target}, schema version {SchemaVersion} (migrated from {PreviousVersion})")]
    public static partial void StorageReady(ILogger logger, StorageProvider provider, string target, int schemaVersion, int previousVersion);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Warning, Message = "SQLite checkpoint of {Target} failed; the WAL grows until one succeeds")]
    public static partial void CheckpointFailed(ILogger logger, Exception exception, string target);
}
