using CallState.Grains;
using CallState.Silo.Limits;
using Microsoft.Extensions.Options;

namespace CallState.Silo;

/// <summary>
/// How the admin API reaches grains: through Orleans (<see cref="IGrainFactory"/>) wherever each grain is activated, and,
/// for listings, the committed rows of the state store.
/// </summary>
public sealed class GrainAccess(IGrainFactory grains, IStateStore store, ILimitSettingsSource settings, IOptionsMonitor<LimitsOptions> limits)
{
    /// <summary>Largest page of a listing.</summary>
    public const int MaxPageSize = 1000;

    /// <summary>Changes the run-time limits field by field; <see cref="ArgumentException"/> when they may not be set.</summary>
    public Task<LimitChangeResult> ChangeLimitsAsync(LimitKey key, LimitChange change)
    {
        LimitGrain.ValidateChange(key, change);
        return grains.GetGrain<ILimitGrain>(key.ToString()).ChangeLimitsAsync(change);
    }

    /// <summary>
    /// Sets a trunk's reservations at run time (null: back to configuration), validated by field against the trunk's total
    /// in force and the configured tenants; <see cref="ArgumentException"/> naming the field otherwise.
    /// </summary>
    public async Task<LimitChangeResult> SetReservationsAsync(LimitKey trunk, TrunkReservations? reservations)
    {
        var grain = grains.GetGrain<ILimitGrain>(trunk.ToString());
        if (reservations is not null)
        {
            var current = await grain.GetSnapshotAsync().ConfigureAwait(false);
            var errors = reservations.Validate(trunk + ":Reservations", current.Limits.Total, limits.CurrentValue.Tenants.Keys).ToList();
            if (errors.Count > 0)
            {
                throw new ArgumentException(string.Join(" ", errors), nameof(reservations));
            }
        }

        return await grain.SetReservationsAsync(reservations).ConfigureAwait(false);
    }

    /// <summary>Whether <paramref name="key"/> has a stored row.</summary>
    public async Task<bool> IsStoredAsync(LimitKey key) =>
        await store.ReadVersionAsync(new StateId(GrainTypes.Limit, key.ToString()), CancellationToken.None).ConfigureAwait(false) > 0;

    /// <summary>Whether <paramref name="key"/> is named in configuration (a listed user or trunk, not a default).</summary>
    public bool IsConfigured(LimitKey key)
    {
        var options = limits.CurrentValue;
        return key.Kind switch
        {
            LimitKind.User => options.FindUser(key.Value) is not null,
            LimitKind.Trunk => options.Trunks.ContainsKey(key.Value),
            LimitKind.Tenant => options.Tenants.ContainsKey(key.Value),
            _ => false,
        };
    }

    /// <summary>
    /// Every configured limit and every stored one (the store is shared by the whole cluster), filtered by kind and by a
    /// prefix of the key or its value, then either the <paramref name="top"/> most used (by utilisation, then count) or a
    /// page in key order. The total before paging is returned with the page.
    /// </summary>
    public async Task<(IReadOnlyList<LimitEntry> Page, int Total)> ListAsync(
        LimitKind? kind, string? prefix, int? top, int offset, int pageSize, bool includeCalls, CancellationToken cancellationToken)
    {
        var all = await AllAsync(kind, prefix, includeCalls, cancellationToken).ConfigureAwait(false);
        if (top is { } n)
        {
            SortByUse(all);
            return (all.Take(Math.Clamp(n, 0, MaxPageSize)).ToList(), all.Count);
        }

        all.Sort(static (a, b) => string.CompareOrdinal(a.Key, b.Key));
        return (all.Skip(Math.Max(offset, 0)).Take(Math.Clamp(pageSize, 0, MaxPageSize)).ToList(), all.Count);
    }

    /// <summary>
    /// One read of every configured and stored limit (as <see cref="ListAsync"/> reads them) summed per kind, with the
    /// <paramref name="top"/> most used: what the dashboard shows each second (docs/dashboard.md).
    /// </summary>
    public async Task<(IReadOnlyList<LimitKindSummary> Kinds, IReadOnlyList<LimitEntry> Top, int Count)> OverviewAsync(int top, CancellationToken cancellationToken)
    {
        var all = await AllAsync(null, null, includeCalls: false, cancellationToken).ConfigureAwait(false);
        var kinds = new List<LimitKindSummary>();
        foreach (var kind in Enum.GetValues<LimitKind>())
        {
            int keys = 0, inbound = 0, outbound = 0, total = 0, unlimited = 0, limitedTotal = 0;
            long capacity = 0;
            foreach (var entry in all.Where(e => e.Kind == kind))
            {
                keys++;
                inbound += entry.Inbound;
                outbound += entry.Outbound;
                total += entry.Total;
                if (entry.Maximum is { } maximum)
                {
                    capacity += maximum;
                    limitedTotal += entry.Total;
                }
                else
                {
                    unlimited++;
                }
            }

            kinds.Add(new LimitKindSummary(LimitKey.Prefix(kind), keys, inbound, outbound, total, capacity, unlimited,
                capacity > 0 ? (double)limitedTotal / capacity : null));
        }

        SortByUse(all);
        return (kinds, all.Take(Math.Clamp(top, 0, MaxPageSize)).ToList(), all.Count);
    }

    private async Task<List<LimitEntry>> AllAsync(LimitKind? kind, string? prefix, bool includeCalls, CancellationToken cancellationToken)
    {
        var rows = await store.ReadAllAsync(GrainTypes.Limit, cancellationToken).ConfigureAwait(false);
        var entries = new Dictionary<string, LimitEntry>(StringComparer.Ordinal);
        bool Wanted(LimitKey key) =>
            (kind is not { } k || key.Kind == k)
            && (string.IsNullOrEmpty(prefix) || key.Value.StartsWith(prefix, StringComparison.Ordinal) || key.ToString().StartsWith(prefix, StringComparison.Ordinal));

        foreach (var (keyText, stored) in rows)
        {
            if (LimitKey.TryParse(keyText, out var key, out _) && Wanted(key))
            {
                var ledger = new LimitLedger(key, StateSerializer.DeserializeLimit(stored, out _), settings.GetLimits(key)) { ConfiguredReservations = settings.GetReservations(key) };
                entries[keyText] = Entry(ledger.Snapshot(includeCalls), includeCalls);
            }
        }

        var options = limits.CurrentValue;
        var configured = options.Users.Keys.Select(u => LimitKey.User(options.NormalizeConfigured(u)!))
            .Concat(options.Trunks.Keys.Select(LimitKey.Trunk))
            .Concat(options.Tenants.Keys.Select(LimitKey.Tenant));
        foreach (var key in configured)
        {
            if (Wanted(key) && !entries.ContainsKey(key.ToString()))
            {
                entries[key.ToString()] = Entry(new LimitLedger(key, new LimitGrainState(), settings.GetLimits(key)) { ConfiguredReservations = settings.GetReservations(key) }.Snapshot(includeCalls), includeCalls);
            }
        }

        return [.. entries.Values];
    }

    /// <summary>Most used first: by utilisation, then calls held, then key.</summary>
    private static void SortByUse(List<LimitEntry> all) =>
        all.Sort(static (a, b) =>
        {
            var byUse = Nullable.Compare(b.Utilisation, a.Utilisation);
            return byUse != 0 ? byUse : b.Total != a.Total ? b.Total.CompareTo(a.Total) : string.CompareOrdinal(a.Key, b.Key);
        });

    /// <summary>A snapshot as the admin API shows it: where each maximum comes from, and how full the limit is.</summary>
    public LimitEntry Entry(LimitSnapshot snapshot, bool includeCalls)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        var key = LimitKey.Parse(snapshot.Key);
        var configured = IsConfigured(key);
        string Source(LimitFields field) =>
            (snapshot.Overridden & field) != 0 ? LimitSources.Runtime
            : key.Kind == LimitKind.Key ? LimitSources.Call
            : configured ? LimitSources.Config
            : LimitSources.Default;

        // A per-key limit's rate is set at run time only (docs/policies.md, "Call rates").
        string RateSource(LimitFields field) =>
            (snapshot.Overridden & field) != 0 ? LimitSources.Runtime
            : key.Kind == LimitKind.Key ? LimitSources.Default
            : configured ? LimitSources.Config
            : LimitSources.Default;

        // Shadow mode comes from run time, the limit's own entry, or CallState:Limits:Shadow (docs/policies.md, "Shadow mode").
        string ShadowSource() =>
            (snapshot.Overridden & LimitFields.Shadow) != 0 ? LimitSources.Runtime
            : configured || key.Kind == LimitKind.Key ? LimitSources.Config
            : LimitSources.Default;

        var limits = snapshot.Limits;
        var maximum = limits.Total ?? (limits.Inbound is { } i && limits.Outbound is { } o ? i + o : null);
        double? utilisation = maximum is { } max ? (max == 0 ? (snapshot.Total > 0 ? 1 : 0) : (double)snapshot.Total / max) : null;
        return new LimitEntry(
            snapshot.Key,
            snapshot.Kind,
            limits,
            new LimitSourcesDto(
                Source(LimitFields.Total),
                Source(LimitFields.Inbound),
                Source(LimitFields.Outbound),
                RateSource(LimitFields.TotalRate),
                RateSource(LimitFields.InboundRate),
                RateSource(LimitFields.OutboundRate),
                ShadowSource()),
            snapshot.Inbound,
            snapshot.Outbound,
            snapshot.Total,
            maximum,
            utilisation,
            snapshot.Reclaimed,
            includeCalls ? snapshot.Calls : null,
            snapshot.Refused,
            snapshot.ShadowRefused,
            snapshot.Reservations?.Tenants.OrderBy(static t => t.Key, StringComparer.Ordinal)
                .Select(t => new ReservationDto(t.Key, t.Value.Guaranteed, t.Value.Maximum, snapshot.TenantCalls?.GetValueOrDefault(t.Key) ?? 0))
                .ToList(),
            snapshot.Reservations is null ? null : snapshot.ReservationsOverridden ? LimitSources.Runtime : LimitSources.Config);
    }

    public async Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken) =>
        GrainTypes.ValidateCallKey(callKey) is { } error
            ? AdmitResult.Invalid(error)
            : await grains.GetCall(callKey).AdmitAsync(limits, cancellationToken).ConfigureAwait(false);

    public Task<bool> ConfirmCallAsync(string callKey) =>
        GrainTypes.ValidateCallKey(callKey) is null ? grains.GetCall(callKey).ConfirmAsync() : Task.FromResult(false);

    public Task<bool> RenewCallAsync(string callKey) =>
        GrainTypes.ValidateCallKey(callKey) is null ? grains.GetCall(callKey).RenewAsync() : Task.FromResult(false);

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

            var ledger = new LimitLedger(key, StateSerializer.DeserializeLimit(stored, out _), settings.GetLimits(key)) { ConfiguredReservations = settings.GetReservations(key) };
            list.Add(ledger.Snapshot());
        }

        list.Sort(static (a, b) => string.CompareOrdinal(a.Key, b.Key));
        return list;
    }
}
