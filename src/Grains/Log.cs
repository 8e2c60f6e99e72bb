using Microsoft.Extensions.Logging;

namespace CallState.Grains;

internal static partial class Log
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Information, Message = "Call {CallKey} rejected by {LimitKey}: {Reason} (current {Current}, limit {Limit})")]
    public static partial void Rejected(ILogger logger, string callKey, string? limitKey, string reason, int current, int? limit);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Limit {LimitKey}: {Count} slots reclaimed after their lease ended")]
    public static partial void LeasesReclaimed(ILogger logger, string limitKey, int count);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Information, Message = "Call {CallKey}: attempt {Attempt} refused as a duplicate of attempt {StoredAttempt}, which admitted it")]
    public static partial void Duplicate(ILogger logger, string callKey, string? attempt, string? storedAttempt);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Information, Message = "Call {CallKey} admitted past {LimitKey} in shadow mode: it would have been refused, {Reason} (current {Current}, limit {Limit})")]
    public static partial void ShadowRefused(ILogger logger, string callKey, string limitKey, string reason, int current, int? limit);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Warning, Message = "Edge {Edge} could not send the BYEs of call {CallKey} ({Error}); it is forgotten until it registers again")]
    public static partial void EdgeFailed(ILogger logger, string edge, string callKey, string error);
}
