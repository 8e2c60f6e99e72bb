namespace CallState.Grains;

/// <summary>
/// One limit (key <c>user/…</c>, <c>trunk/…</c> or <c>key/…</c>) and the calls holding a slot on it. Every operation is
/// idempotent per call key and answered only once its effect is durable.
/// </summary>
[Alias("CallState.ILimitGrain")]
public interface ILimitGrain : IGrainWithStringKey
{
    /// <summary>
    /// Reserves a slot unless a limit is reached; a call that holds one already is admitted again. On a trunk,
    /// <paramref name="tenant"/> is the call's tenant, counted against the trunk's reservations (docs/policies.md).
    /// </summary>
    [Alias("TryReserve")]
    Task<ReserveOutcome> TryReserveAsync(string callKey, Direction direction, TimeSpan lease, int? perCallMax, string? tenant = null);

    /// <summary>
    /// What a reservation would answer now, from the activation's memory, writing nothing: advice that lets a call a limit
    /// would refuse be refused without a durable write (docs/architecture.md, "Refusals write nothing").
    /// </summary>
    [Alias("Check")]
    Task<ReserveOutcome> CheckAsync(string callKey, Direction direction, int? perCallMax, string? tenant = null);

    /// <summary>
    /// The call's admission was given up (the edge's deadline passed): its reservations still waiting here for a turn are
    /// answered <see cref="ReserveOutcome.Dropped"/>, reserving and writing nothing; one a turn already took is decided as
    /// usual. Returns how many were dropped (docs/architecture.md, "Overload control").
    /// </summary>
    [Alias("Drop")]
    Task<int> DropAsync(string callKey);

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

    /// <summary>Sets every field (or with null clears) the run-time limits; persisted.</summary>
    [Alias("SetLimits")]
    Task<LimitSnapshot> SetLimitsAsync(LimitSettings? limits);

    /// <summary>
    /// Changes the run-time limits field by field (what is not named is kept), persisted before the answer and in force for
    /// the next call; the limit before and after (without calls). <see cref="ArgumentException"/> for values that may not be set.
    /// </summary>
    [Alias("ChangeLimits")]
    Task<LimitChangeResult> ChangeLimitsAsync(LimitChange change);

    /// <summary>
    /// Sets a trunk's reservations at run time (null: back to configuration), persisted before the answer; the trunk
    /// before and after. Validated by the caller, which knows the tenants (docs/policies.md, "Guaranteed reservations").
    /// </summary>
    [Alias("SetReservations")]
    Task<LimitChangeResult> SetReservationsAsync(TrunkReservations? reservations);

    /// <summary>Its due time passed (the due scan): reclaims the slots whose lease ended.</summary>
    [Alias("Wake")]
    Task WakeAsync();
}

/// <summary>
/// The calls of one shard (<see cref="CallShards.Of"/> of the call key: Call-ID and From-tag). Each call is reserved on
/// its limits all or nothing and released when it ends; any edge can end a call knowing only its key. A grain per shard,
/// not per call: an activation per call cost about half of an admission's CPU (docs/architecture.md, "Calls").
/// Operations on one call run one at a time, in the order they arrive; calls of one shard run side by side.
/// </summary>
[Alias("CallState.ICallShardGrain")]
public interface ICallShardGrain : IGrainWithIntegerKey
{
    /// <summary>
    /// Admits the call on every limit it asks for, all or nothing; answers once durable. A caller that cancels stops
    /// waiting: what was reserved is released, or the caller ends the call. <paramref name="leg"/> (the INVITE
    /// transaction and the caller's targets) is stored with the call; another attempt at a call being admitted or up is
    /// answered <see cref="AdmitStatus.Duplicate"/> without touching it. A null leg is not compared with anything.
    /// </summary>
    [Alias("Admit")]
    Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CallLeg? leg, CancellationToken cancellationToken = default);

    /// <summary>
    /// The call was answered: confirmed leases on all its limits, and the dialog <paramref name="answer"/> names (the
    /// first answer's tag is kept). False for an unknown or ended call.
    /// </summary>
    [Alias("Confirm")]
    Task<bool> ConfirmAsync(string callKey, CallAnswer? answer);

    /// <summary>An in-dialog refresh extends the call's leases.</summary>
    [Alias("Renew")]
    Task<bool> RenewAsync(string callKey);

    /// <summary>The call ended: releases every slot. Idempotent; false when nothing was held.</summary>
    [Alias("End")]
    Task<bool> EndAsync(string callKey);

    /// <summary>
    /// An admission whose answer never reached its edge is given up: the call ends only when that attempt is the one
    /// that admitted it (an attempt answered Duplicate never ends the call it copied). False when nothing was ended.
    /// </summary>
    [Alias("Abandon")]
    Task<bool> AbandonAsync(string callKey, string attempt);

    [Alias("Snapshot")]
    Task<CallSnapshot> GetSnapshotAsync(string callKey);

    /// <summary>The dialog of a call being admitted or up, to check in-dialog requests against; null for any other call.</summary>
    [Alias("GetDialog")]
    Task<CallDialog?> GetDialogAsync(string callKey);

    /// <summary>The call's due time passed (the due scan): finishes an interrupted admission or ends a call whose lease ran out.</summary>
    [Alias("Wake")]
    Task WakeAsync(string callKey);

    /// <summary>What an operator's end needs of the call (its phase, and the BYEs stored with its answer), in the call's order.</summary>
    [Alias("GetTeardown")]
    Task<CallTeardownInfo> GetTeardownAsync(string callKey);
}

/// <summary>Which shard grain holds a call: a hash of its key that every edge and silo computes alike.</summary>
public static class CallShards
{
    /// <summary>Shards of calls: enough to spread calls over many silos and keep each shard's turns short.</summary>
    public const int Count = 128;

    /// <summary>The shard of <paramref name="callKey"/> (FNV-1a over its UTF-16 code units: stable across processes, unlike <see cref="string.GetHashCode()"/>).</summary>
    public static long Of(string callKey)
    {
        ArgumentNullException.ThrowIfNull(callKey);
        var hash = 2166136261u;
        foreach (var c in callKey)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return hash % Count;
    }
}

/// <summary>One call reached through its shard grain: what the edge, the admin API and tests hold.</summary>
public readonly struct CallHandle(IGrainFactory grains, string callKey)
{
    private ICallShardGrain Shard => grains.GetGrain<ICallShardGrain>(CallShards.Of(callKey));

    public string CallKey => callKey;

    /// <summary>An admission without a leg (tests, admin tools): never a duplicate of another attempt.</summary>
    public Task<AdmitResult> AdmitAsync(IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken = default) => Shard.AdmitAsync(callKey, limits, null, cancellationToken);

    public Task<AdmitResult> AdmitAsync(IReadOnlyList<LimitRequest> limits, CallLeg? leg, CancellationToken cancellationToken = default) => Shard.AdmitAsync(callKey, limits, leg, cancellationToken);

    public Task<bool> ConfirmAsync() => Shard.ConfirmAsync(callKey, null);

    public Task<bool> ConfirmAsync(CallAnswer? answer) => Shard.ConfirmAsync(callKey, answer);

    public Task<bool> RenewAsync() => Shard.RenewAsync(callKey);

    public Task<bool> EndAsync() => Shard.EndAsync(callKey);

    public Task<bool> AbandonAsync(string attempt) => Shard.AbandonAsync(callKey, attempt);

    public Task<CallSnapshot> GetSnapshotAsync() => Shard.GetSnapshotAsync(callKey);

    public Task<CallDialog?> GetDialogAsync() => Shard.GetDialogAsync(callKey);

    public Task<CallTeardownInfo> GetTeardownAsync() => Shard.GetTeardownAsync(callKey);

    public Task WakeAsync() => Shard.WakeAsync(callKey);
}

/// <summary>Reaching calls through their shard grains.</summary>
public static class CallGrainFactoryExtensions
{
    /// <summary>The call <paramref name="callKey"/>, in the shard grain that holds it.</summary>
    public static CallHandle GetCall(this IGrainFactory grains, string callKey) => new(grains, callKey);
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
