namespace CallState.Grains;

/// <summary>One tenant's share of a trunk: slots it always gets, and the most it may hold (null: up to the trunk's total).</summary>
[GenerateSerializer, Immutable]
public readonly record struct TenantReservation([property: Id(0)] int Guaranteed, [property: Id(1)] int? Maximum = null);

/// <summary>
/// How a shared trunk's capacity (its <see cref="LimitSettings.Total"/>) is divided among tenants (docs/policies.md,
/// "Guaranteed reservations"): each listed tenant gets its guaranteed slots whenever it asks, and may borrow free slots
/// above them up to its maximum, but never the unused part of another tenant's guarantee. A call of a tenant not listed
/// (or of no tenant) has no guarantee and borrows like the others. Treated as immutable once built.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record TrunkReservations([property: Id(0)] Dictionary<string, TenantReservation> Tenants)
{
    /// <summary>Most tenants one trunk may list: each decision sums over them.</summary>
    public const int MaxTenants = 64;

    /// <summary>
    /// Whether a new call of <paramref name="tenant"/> fits, given the trunk's <paramref name="capacity"/> (null: unlimited),
    /// the calls it holds in all (<paramref name="held"/>) and per tenant (<paramref name="tenantCalls"/>). Asked after the
    /// trunk's own maxima admitted the call. Admitting keeps <c>held + Σ unused guarantees ≤ capacity</c>, so a tenant
    /// below its guarantee always finds a slot.
    /// </summary>
    public ReserveOutcome Decide(string? tenant, int? capacity, int held, IReadOnlyDictionary<string, int> tenantCalls)
    {
        ArgumentNullException.ThrowIfNull(tenantCalls);
        var own = tenant is null ? 0 : tenantCalls.GetValueOrDefault(tenant);
        var share = tenant is not null && Tenants.TryGetValue(tenant, out var s) ? s : default;
        if (share.Maximum is { } max && own >= max)
        {
            return ReserveOutcome.Reject(RejectReason.TrunkTenantMaxReached, max, own);
        }

        if (capacity is not { } c)
        {
            return ReserveOutcome.Admit(share.Maximum, own);
        }

        var kept = 0;
        foreach (var (name, other) in Tenants)
        {
            if (!string.Equals(name, tenant, StringComparison.Ordinal))
            {
                kept += Math.Max(0, other.Guaranteed - tenantCalls.GetValueOrDefault(name));
            }
        }

        return held + 1 + kept > c
            ? ReserveOutcome.Reject(RejectReason.TrunkReservedForOtherTenants, Math.Max(0, c - kept), held)
            : ReserveOutcome.Admit(c, held);
    }

    /// <summary>
    /// Errors, each naming its field under <paramref name="path"/> (e.g. <c>CallState:Limits:Trunks:shared:Reservations</c>):
    /// a negative guarantee, a maximum below its guarantee, guarantees adding up to more than <paramref name="capacity"/>
    /// (or any guarantee on a trunk without a total), a tenant not in <paramref name="knownTenants"/>.
    /// </summary>
    public IEnumerable<string> Validate(string path, int? capacity, ICollection<string>? knownTenants)
    {
        if (Tenants.Count > MaxTenants)
        {
            yield return $"{path}: {Tenants.Count} tenants; at most {MaxTenants}.";
        }

        var sum = 0L;
        foreach (var (name, share) in Tenants)
        {
            var field = $"{path}:{name}";
            if (string.IsNullOrEmpty(name) || name.Length > LimitKey.MaxValueLength)
            {
                yield return $"{field}: a tenant name must have 1 to {LimitKey.MaxValueLength} characters.";
            }
            else if (knownTenants is not null && !knownTenants.Contains(name))
            {
                yield return $"{field}: no tenant '{name}' is configured (CallState:Limits:Tenants).";
            }

            if (share.Guaranteed < 0)
            {
                yield return $"{field}:Guaranteed must be 0 or more (was {share.Guaranteed}).";
            }

            if (share.Maximum is { } max && max < Math.Max(0, share.Guaranteed))
            {
                yield return $"{field}:Maximum ({max}) must not be below {field}:Guaranteed ({share.Guaranteed}).";
            }

            sum += Math.Max(0, share.Guaranteed);
        }

        if (sum > 0 && capacity is null)
        {
            yield return $"{path}: guarantees need the trunk's Total (the capacity they divide).";
        }
        else if (capacity is { } c && sum > c)
        {
            yield return $"{path}: the guarantees add up to {sum}, more than the trunk's Total ({c}).";
        }
    }
}
