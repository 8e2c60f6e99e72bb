namespace CallState.Grains;

/// <summary>
/// One limit (key <c>user/…</c>, <c>trunk/…</c> or <c>key/…</c>) and the calls holding a slot on it. Every operation is
/// idempotent per call key and answered only once its effect is durable.
/// </summary>
[Alias("CallState.ILimitGrain")]
public interface ILimitGrain : IGrainWithStringKey
{
    /// <summary>Reserves a slot unless a limit is reached; a call that holds one already is admitted again.</summary>
    [Alias("TryReserve")]
    Task<ReserveOutcome> TryReserveAsync(string callKey, Direction direction, TimeSpan lease, int? perCallMax);

    /// <summary>The call was answered: the confirmed lease. False when the call holds no slot here.</summary>
    [Alias("Confirm")]
    Task<bool> ConfirmAsync(string callKey, TimeSpan lease);

    /// <summary>An in-dialog refresh extends the lease. False when the call holds no slot here.</summary>
    [Alias("Renew")]
    Task<bool> RenewAsync(string callKey, TimeSpan lease);

    /// <summary>Frees the call's slot; false when it held none.</summary>
    [Alias("Release")]
    Task<bool> ReleaseAsync(string callKey);

    /// <summary>What the limit holds now (its durable state).</summary>
    [Alias("Snapshot")]
    Task<LimitSnapshot> GetSnapshotAsync();

    /// <summary>Sets (or with null clears) the run-time limits of a user or trunk; persisted.</summary>
    [Alias("SetLimits")]
    Task<LimitSnapshot> SetLimitsAsync(LimitSettings? limits);

    /// <summary>Its due time passed (the due scan): reclaims the slots whose lease ended.</summary>
    [Alias("Wake")]
    Task WakeAsync();
}

/// <summary>
/// One call (key: Call-ID and From-tag): reserves its limits all or nothing, and releases them when the call ends. Any
/// edge can end a call knowing only its key.
/// </summary>
[Alias("CallState.ICallGrain")]
public interface ICallGrain : IGrainWithStringKey
{
    /// <summary>
    /// Admits the call on every limit it asks for, all or nothing; answers once durable. A caller that cancels stops
    /// waiting: what was reserved is released, or the caller ends the call.
    /// </summary>
    [Alias("Admit")]
    Task<AdmitResult> AdmitAsync(IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken = default);

    /// <summary>The call was answered: confirmed leases on all its limits. False for an unknown or ended call.</summary>
    [Alias("Confirm")]
    Task<bool> ConfirmAsync();

    /// <summary>An in-dialog refresh extends the call's leases.</summary>
    [Alias("Renew")]
    Task<bool> RenewAsync();

    /// <summary>The call ended: releases every slot. Idempotent; false when nothing was held.</summary>
    [Alias("End")]
    Task<bool> EndAsync();

    [Alias("Snapshot")]
    Task<CallSnapshot> GetSnapshotAsync();

    /// <summary>Its due time passed (the due scan): finishes an interrupted admission, ends a call whose lease ran out, or deletes a closed record.</summary>
    [Alias("Wake")]
    Task WakeAsync();
}

/// <summary>Grain type names as stored in the state store's rows.</summary>
public static class GrainTypes
{
    public const string Limit = "limit";
    public const string Call = "call";

    /// <summary>Longest call key accepted (Call-ID plus From-tag); RFC 3261 sets no bound, memory does.</summary>
    public const int MaxCallKeyLength = 1024;

    /// <summary>Why a call key is unusable, or null.</summary>
    public static string? ValidateCallKey(string? callKey) => callKey switch
    {
        null or "" => "call key is empty",
        { Length: > MaxCallKeyLength } => $"call key is longer than {MaxCallKeyLength} characters",
        _ => null,
    };
}
