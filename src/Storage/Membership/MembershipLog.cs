using Microsoft.Extensions.Logging;

namespace CallState.Storage.Membership;

/// <summary>Membership table log messages; event ids 4100-4199 belong to this area.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 4100, Level = LogLevel.Information,
        Message = "Cluster membership table ready: {Provider} at {Target}, cluster {ClusterId}")]
    public static partial void MembershipTableReady(ILogger logger, StorageProvider provider, string target, string clusterId);

    [LoggerMessage(EventId = 4101, Level = LogLevel.Information, Message = "Created the membership table version of cluster {ClusterId}")]
    public static partial void TableVersionCreated(ILogger logger, string clusterId);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Debug,
        Message = "Membership {Operation} of {Silo} in cluster {ClusterId} refused: {Outcome}")]
    public static partial void WriteRefused(ILogger logger, string operation, SiloAddress silo, string clusterId, MembershipWrite outcome);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Debug,
        Message = "Membership {Operation} of {Silo} in cluster {ClusterId}: status {Status}, table version {Version}")]
    public static partial void RowWritten(ILogger logger, string operation, SiloAddress silo, string clusterId, SiloStatus status, int version);

    [LoggerMessage(EventId = 4104, Level = LogLevel.Warning,
        Message = "IAmAlive update of {Silo} in cluster {ClusterId} found no row: it was removed or never inserted")]
    public static partial void IAmAliveWithoutRow(ILogger logger, SiloAddress silo, string clusterId);

    [LoggerMessage(EventId = 4105, Level = LogLevel.Information,
        Message = "Removed {Count} dead silo entries of cluster {ClusterId} last updated before {BeforeDate}")]
    public static partial void DefunctEntriesRemoved(ILogger logger, int count, string clusterId, DateTimeOffset beforeDate);

    [LoggerMessage(EventId = 4106, Level = LogLevel.Warning,
        Message = "Deleted the membership table of cluster {ClusterId}: its version and {Count} silo entries")]
    public static partial void ClusterEntriesDeleted(ILogger logger, string clusterId, int count);
}
