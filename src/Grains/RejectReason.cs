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
}

public static class RejectReasons
{
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
        _ => throw new ArgumentOutOfRangeException(nameof(reason)),
    };
}
