namespace CallState.Grains;

/// <summary>Whether a held call has had its final 2xx (confirmed) or not yet (early).</summary>
[GenerateSerializer]
public enum HoldPhase : byte
{
    Early = 1,
    Confirmed = 2,
}

/// <summary>One call holding a slot on a limit. Times are Unix milliseconds.</summary>
public sealed class HeldCall
{
    public Direction Direction { get; set; }

    public HoldPhase Phase { get; set; }

    public long SinceMs { get; set; }

    public long LeaseEndMs { get; set; }

    /// <summary>On a trunk: the tenant the call was reserved for (docs/policies.md, "Guaranteed reservations"); null for none.</summary>
    public string? Tenant { get; set; }
}

/// <summary>The persisted state of one limit grain.</summary>
public sealed class LimitGrainState
{
    /// <summary>Limits set at run time through the admin API; when null the configured limits apply.</summary>
    public LimitSettings? Override { get; set; }

    /// <summary>
    /// Which fields of <see cref="Override"/> are set at run time; the others follow configuration. Null with an
    /// <see cref="Override"/> (rows written before fields were tracked) means every field.
    /// </summary>
    public LimitFields? OverrideFields { get; set; }

    /// <summary>For a per-key limit: the maximum carried by the most recent call (what listings show).</summary>
    public int? LastPerCallMax { get; set; }

    /// <summary>Calls holding a slot, by call key.</summary>
    public Dictionary<string, HeldCall> Calls { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Slots reclaimed because their lease ran out (the end of the call was never seen).</summary>
    public long Reclaimed { get; set; }

    /// <summary>
    /// Calls this limit refused. Counted in memory and stored with the limit's next write of its own (a refusal writes
    /// nothing), so a crash may lose the refusals since (docs/policies.md, "Shadow mode").
    /// </summary>
    public long Refused { get; set; }

    /// <summary>Calls this limit, in shadow mode, would have refused and let through; stored with each one's hold.</summary>
    public long ShadowRefused { get; set; }

    /// <summary>A trunk's guaranteed reservations set at run time; when null the configured ones apply.</summary>
    public TrunkReservations? Reservations { get; set; }
}

/// <summary>The answer of one limit to a reservation.</summary>
/// <param name="Admitted">True when the call holds a slot (also when it already did).</param>
/// <param name="Reason">Why it was refused; <see cref="RejectReason.None"/> when admitted.</param>
/// <param name="Limit">The limit that applied (null when unlimited).</param>
/// <param name="Current">Calls counted against that limit before this one.</param>
/// <param name="RetryAfter">For a rate's refusal: how long until its bucket holds a token again.</param>
/// <param name="HasRate">
/// The limit has a call rate: that it had room for this call says nothing of the next one, so a shard never remembers it
/// as having room (docs/architecture.md, "Call rates").
/// </param>
/// <param name="ShadowReason">
/// The limit is in shadow mode and would have refused the call for this reason; it admitted it (docs/policies.md, "Shadow
/// mode"). <see cref="RejectReason.None"/> otherwise.
/// </param>
[GenerateSerializer, Immutable]
public readonly record struct ReserveOutcome(
    [property: Id(0)] bool Admitted,
    [property: Id(1)] RejectReason Reason,
    [property: Id(2)] int? Limit,
    [property: Id(3)] int Current,
    [property: Id(4)] TimeSpan? RetryAfter = null,
    [property: Id(5)] bool HasRate = false,
    [property: Id(6)] RejectReason ShadowReason = RejectReason.None)
{
    public static ReserveOutcome Admit(int? limit, int current) => new(true, RejectReason.None, limit, current);

    public static ReserveOutcome Reject(RejectReason reason, int? limit, int current) => new(false, reason, limit, current);

    /// <summary>
    /// A reservation dropped before its turn because its admission was given up (<see cref="ILimitGrain.DropAsync"/>):
    /// not admitted, nothing held, no reason (it was not refused).
    /// </summary>
    public static ReserveOutcome Dropped => new(false, RejectReason.None, null, 0);
}

/// <summary>A call as listed in a limit snapshot.</summary>
[GenerateSerializer, Immutable]
public sealed record HeldCallSnapshot([property: Id(0)] string CallKey, [property: Id(1)] Direction Direction, [property: Id(2)] HoldPhase Phase, [property: Id(3)] DateTimeOffset Since, [property: Id(4)] DateTimeOffset LeaseEnd);

/// <summary>What one limit holds now: like AudioCodes' <c>show voip tags-cac</c>, plus the calls.</summary>
[GenerateSerializer, Immutable]
public sealed record LimitSnapshot(
    [property: Id(0)] string Key,
    [property: Id(1)] LimitKind Kind,
    [property: Id(2)] LimitSettings Limits,
    [property: Id(3)] int Inbound,
    [property: Id(4)] int Outbound,
    [property: Id(5)] int Total,
    [property: Id(6)] long Reclaimed,
    [property: Id(7)] IReadOnlyList<HeldCallSnapshot> Calls,
    [property: Id(8)] LimitFields Overridden = LimitFields.None,
    [property: Id(20)] long Refused = 0,
    [property: Id(21)] long ShadowRefused = 0)
{
    /// <summary>A trunk's reservations in force (docs/policies.md, "Guaranteed reservations"); null when it has none.</summary>
    [Id(9)]
    public TrunkReservations? Reservations { get; init; }

    /// <summary>A trunk with reservations: calls held per tenant (a call with no tenant is not listed).</summary>
    [Id(10)]
    public IReadOnlyDictionary<string, int>? TenantCalls { get; init; }

    /// <summary>Whether <see cref="Reservations"/> were set at run time rather than configured.</summary>
    [Id(11)]
    public bool ReservationsOverridden { get; init; }
}
