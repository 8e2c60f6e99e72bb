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
    TenantTotalLimitReached,
    TenantInLimitReached,
    TenantOutLimitReached,
    TenantTotalRateLimitReached,
    TenantInRateLimitReached,
    TenantOutRateLimitReached,

    /// <summary>A shared trunk: the call's tenant holds its maximum there (docs/policies.md, "Guaranteed reservations").</summary>
    TrunkTenantMaxReached,

    /// <summary>A shared trunk: the free slots left are other tenants' unused guarantees.</summary>
    TrunkReservedForOtherTenants,
}

public static class RejectReasons
{
    /// <summary>Whether a call rate (not a concurrent count) refused the call (docs/policies.md, "Call rates").</summary>
    public static bool IsRate(this RejectReason reason) =>
        reason is (>= RejectReason.UserTotalRateLimitReached and <= RejectReason.OutPerKeyRateLimitReached)
            or (>= RejectReason.TenantTotalRateLimitReached and <= RejectReason.TenantOutRateLimitReached);

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
        RejectReason.TenantTotalLimitReached => "TENANT_TOTAL_LIMIT_REACHED",
        RejectReason.TenantInLimitReached => "TENANT_IN_LIMIT_REACHED",
        RejectReason.TenantOutLimitReached => "TENANT_OUT_LIMIT_REACHED",
        RejectReason.TenantTotalRateLimitReached => "TENANT_TOTAL_RATE_LIMIT_REACHED",
        RejectReason.TenantInRateLimitReached => "TENANT_IN_RATE_LIMIT_REACHED",
        RejectReason.TenantOutRateLimitReached => "TENANT_OUT_RATE_LIMIT_REACHED",
        RejectReason.TrunkTenantMaxReached => "TRUNK_TENANT_MAX_REACHED",
        RejectReason.TrunkReservedForOtherTenants => "TRUNK_RESERVED_FOR_OTHER_TENANTS",
        _ => throw new ArgumentOutOfRangeException(nameof(reason)),
    };
}
