namespace CallState.Grains;

/// <summary>Why a limit refused a call. The codes are what logs, metrics and the admin API show.</summary>
[GenerateSerializer]
public enum RejectReason : byte
{
    None = 0,
    UserTotalLimitReached,
    UserInLimitReached,
    UserOutLimitReached,
    TrunkTotalLimitReached,
    TrunkInLimitReached,
    TrunkOutLimitReached,
    InPerKeyCacLimitReached,
    OutPerKeyCacLimitReached,
    DirectionBarred,
    UserTotalRateLimitReached,
    UserInRateLimitReached,
    UserOutRateLimitReached,
    TrunkTotalRateLimitReached,
    TrunkInRateLimitReached,
    TrunkOutRateLimitReached,
    InPerKeyRateLimitReached,
    OutPerKeyRateLimitReached,
}

public static class RejectReasons
{
    /// <summary>Whether a call rate (not a concurrent count) refused the call (docs/policies.md, "Call rates").</summary>
    public static bool IsRate(this RejectReason reason) => reason >= RejectReason.UserTotalRateLimitReached;

    /// <summary>The stable upper-case code, e.g. <c>USER_TOTAL_LIMIT_REACHED</c>.</summary>
    public static string ToCode(this RejectReason reason) => reason switch
    {
        RejectReason.None => "NONE",
        RejectReason.UserTotalLimitReached => "USER_TOTAL_LIMIT_REACHED",
        RejectReason.UserInLimitReached => "USER_IN_LIMIT_REACHED",
        RejectReason.UserOutLimitReached => "USER_OUT_LIMIT_REACHED",
        RejectReason.TrunkTotalLimitReached => "TRUNK_TOTAL_LIMIT_REACHED",
        RejectReason.TrunkInLimitReached => "TRUNK_IN_LIMIT_REACHED",
        RejectReason.TrunkOutLimitReached => "TRUNK_OUT_LIMIT_REACHED",
        RejectReason.InPerKeyCacLimitReached => "IN_PER_KEY_CAC_LIMIT_REACHED",
        RejectReason.OutPerKeyCacLimitReached => "OUT_PER_KEY_CAC_LIMIT_REACHED",
        RejectReason.DirectionBarred => "DIRECTION_BARRED",
        RejectReason.UserTotalRateLimitReached => "USER_TOTAL_RATE_LIMIT_REACHED",
        RejectReason.UserInRateLimitReached => "USER_IN_RATE_LIMIT_REACHED",
        RejectReason.UserOutRateLimitReached => "USER_OUT_RATE_LIMIT_REACHED",
        RejectReason.TrunkTotalRateLimitReached => "TRUNK_TOTAL_RATE_LIMIT_REACHED",
        RejectReason.TrunkInRateLimitReached => "TRUNK_IN_RATE_LIMIT_REACHED",
        RejectReason.TrunkOutRateLimitReached => "TRUNK_OUT_RATE_LIMIT_REACHED",
        RejectReason.InPerKeyRateLimitReached => "IN_PER_KEY_RATE_LIMIT_REACHED",
        RejectReason.OutPerKeyRateLimitReached => "OUT_PER_KEY_RATE_LIMIT_REACHED",
        _ => throw new ArgumentOutOfRangeException(nameof(reason)),
    };
}
