using CallState.Grains;

namespace CallState.Silo;

/// <summary>
/// How the admin API reaches grains: through Orleans (<see cref="IGrainFactory"/>) wherever each grain is activated, and,
/// for listings, the committed rows of the state store.
/// </summary>
public sealed class GrainAccess(IGrainFactory grains, IStateStore store, ILimitSettingsSource settings)
{
    public async Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken) =>
        GrainTypes.ValidateCallKey(callKey) is { } error
            ? AdmitResult.Invalid(error)
            : await grains.GetCall(callKey).AdmitAsync(limits, cancellationToken).ConfigureAwait(false);

    public Task<bool> ConfirmCallAsync(string callKey) =>
        GrainTypes.ValidateCallKey(callKey) is null ? grains.GetCall(callKey).ConfirmAsync() : Task.FromResult(false);

    public Task<bool> RenewCallAsync(string callKey) =>
        GrainTypes.ValidateCallKey(callKey) is null ? grains.GetCall(callKey).RenewAsync() : Task.FromResult(false);

    public Task<bool> EndCallAsync(string callKey) =>
        GrainTypes.ValidateCallKey(callKey) is null ? grains.GetCall(callKey).EndAsync() : Task.FromResult(false);

    public Task<CallSnapshot> GetCallAsync(string callKey) => grains.GetCall(callKey).GetSnapshotAsync();

    public Task<LimitSnapshot> GetLimitAsync(LimitKey key) => grains.GetGrain<ILimitGrain>(key.ToString()).GetSnapshotAsync();

    /// <summary>Sets (or with null clears) the run-time limits of a user or trunk; <see cref="ArgumentException"/> when they may not be set.</summary>
    public Task<LimitSnapshot> SetLimitsAsync(LimitKey key, LimitSettings? limits)
    {
        LimitGrain.ValidateSettable(key, limits);
        return grains.GetGrain<ILimitGrain>(key.ToString()).SetLimitsAsync(limits);
    }

    /// <summary>Every stored limit (optionally one kind), as committed in storage: what <c>show voip tags-cac</c> lists.</summary>
    public async Task<IReadOnlyList<LimitSnapshot>> ListLimitsAsync(LimitKind? kind, CancellationToken cancellationToken)
    {
        var rows = await store.ReadAllAsync(GrainTypes.Limit, cancellationToken).ConfigureAwait(false);
        var list = new List<LimitSnapshot>(rows.Count);
        foreach (var (keyText, stored) in rows)
        {
            if (!LimitKey.TryParse(keyText, out var key, out _) || (kind is { } k && key.Kind != k))
            {
                continue;
            }

            var ledger = new LimitLedger(key, StateSerializer.DeserializeLimit(stored, out _), settings.GetLimits(key));
            list.Add(ledger.Snapshot());
        }

        list.Sort(static (a, b) => string.CompareOrdinal(a.Key, b.Key));
        return list;
    }
}
