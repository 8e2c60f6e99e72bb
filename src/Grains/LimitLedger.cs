namespace CallState.Grains;

/// <summary>
/// The decisions of one limit (<c>user/…</c>, <c>trunk/…</c>, <c>key/…</c>) over its state. Pure logic:
/// the hosting runtime owns persistence, turn scheduling and timers, calls these methods one turn at a
/// time, and persists the state whenever a method reports that it changed it.
/// Every operation is idempotent per call key.
/// </summary>
public sealed class LimitLedger
{
    // Derived from State.Calls and kept in step by every method that changes it, so a decision does
    // not walk every held call (a busy trunk holds thousands): the counts, and the held calls ordered by
    // lease end (the earliest is the next due time; expiry takes from the front and stops at the first
    // lease still running).
    private readonly SortedSet<LeaseEntry> _leases = new(LeaseEntryComparer.Instance);
    private readonly HashSet<string> _changedCalls = new(StringComparer.Ordinal);

    // The calls most recently counted as refused or shadow-refused, so one call is counted once on this limit when it is
    // asked again (a call with several limits asks again in key order after a refusal; a retransmitted INVITE).
    private readonly HashSet<string> _counted = new(StringComparer.Ordinal);
    private readonly Queue<string> _countedOrder = new();
    private readonly List<ShadowRefusal> _shadowRefusals = [];
    private readonly Dictionary<string, int> _tenantCalls = new(StringComparer.Ordinal);
    private int _inbound;
    private int _outbound;

    public LimitLedger(LimitKey key, LimitGrainState state, LimitSettings configured, RateBuckets? rates = null)
    {
        Key = key;
        State = state;
        Configured = configured;
        Rates = rates ?? new RateBuckets();
        foreach (var (callKey, call) in state.Calls)
        {
            Count(call, +1);
            _leases.Add(new LeaseEntry(call.LeaseEndMs, callKey));
        }
    }

    public LimitKey Key { get; }

    public LimitGrainState State { get; }

    /// <summary>
    /// The call-rate buckets: not part of <see cref="State"/> (never written; docs/architecture.md, "Call rates"). The host
    /// hands the same buckets to every ledger it loads, so a reload keeps what they hold.
    /// </summary>
    public RateBuckets Rates { get; }

    /// <summary>
    /// The configured limits. The host sets them again before each turn, so a configuration change applies to the next
    /// call even on a busy limit whose activation never goes idle.
    /// </summary>
    public LimitSettings Configured { get; set; }

    /// <summary>
    /// A trunk's configured reservations (docs/policies.md, "Guaranteed reservations"); set by the host before each turn,
    /// like <see cref="Configured"/>.
    /// </summary>
    public TrunkReservations? ConfiguredReservations { get; set; }

    /// <summary>The reservations in force: those set at run time, else the configured ones; null for none.</summary>
    public TrunkReservations? Reservations => Key.Kind == LimitKind.Trunk ? State.Reservations ?? ConfiguredReservations : null;

    /// <summary>Sets (or with null clears) the run-time reservations.</summary>
    public void SetReservations(TrunkReservations? reservations) => State.Reservations = reservations;

    /// <summary>The fields set at run time (<see cref="LimitGrainState.Override"/>); the others follow configuration.</summary>
    public LimitFields Overridden => State.Override is null ? LimitFields.None : State.OverrideFields ?? LimitFields.Maxima;

    /// <summary>
    /// The limits in force, field by field: a run-time override, else configuration. A per-key limit's maximum comes with
    /// each call unless a run-time maximum is set.
    /// </summary>
    public LimitSettings Effective
    {
        get
        {
            var overridden = Overridden;
            var values = State.Override ?? LimitSettings.Unlimited;
            if (Key.Kind == LimitKind.Key)
            {
                // A per-key limit's rate is set at run time only (one rate, its total, whatever the direction).
                var rate = (overridden & LimitFields.TotalRate) != 0;
                return new LimitSettings(
                    Total: (overridden & LimitFields.Total) != 0 ? values.Total : State.LastPerCallMax,
                    TotalRate: rate ? values.TotalRate : null,
                    TotalBurst: rate ? values.TotalBurst : null,
                    Shadow: (overridden & LimitFields.Shadow) != 0 ? values.Shadow : Configured.Shadow);
            }

            if (overridden == LimitFields.None)
            {
                return Configured;
            }

            var (total, inbound, outbound) = (Has(LimitFields.TotalRate), Has(LimitFields.InboundRate), Has(LimitFields.OutboundRate));
            return new LimitSettings(
                Has(LimitFields.Total) ? values.Total : Configured.Total,
                Has(LimitFields.Inbound) ? values.Inbound : Configured.Inbound,
                Has(LimitFields.Outbound) ? values.Outbound : Configured.Outbound,
                total ? values.TotalRate : Configured.TotalRate,
                total ? values.TotalBurst : Configured.TotalBurst,
                inbound ? values.InboundRate : Configured.InboundRate,
                inbound ? values.InboundBurst : Configured.InboundBurst,
                outbound ? values.OutboundRate : Configured.OutboundRate,
                outbound ? values.OutboundBurst : Configured.OutboundBurst,
                Has(LimitFields.Shadow) ? values.Shadow : Configured.Shadow);

            bool Has(LimitFields wanted) => (overridden & wanted) != 0;
        }
    }

    /// <summary>The earliest lease end, when the runtime must wake this grain; null when nothing is held.</summary>
    public DateTimeOffset? NextDue => _leases.Count == 0 ? null : DateTimeOffset.FromUnixTimeMilliseconds(_leases.Min.LeaseEndMs);

    /// <summary>
    /// Keys of the calls added, changed or removed since <see cref="AcceptChanges"/>: what the host must persist
    /// besides the rest of <see cref="State"/> (a key no longer in <c>State.Calls</c> was removed).
    /// </summary>
    public IReadOnlyCollection<string> ChangedCalls => _changedCalls;

    /// <summary>Most call keys remembered as counted (see <see cref="TryReserve(string, Direction, TimeSpan, int?, string?, DateTimeOffset, out bool)"/>): a call asks its limits again within one admission.</summary>
    public const int CountedCallsKept = 256;

    /// <summary>
    /// The shadow refusals counted since the last <see cref="TakeShadowRefusals"/>: the host logs and exports them once
    /// their holds are durable (a turn decided again after a lost write starts from a new ledger, so none is told twice).
    /// </summary>
    public IReadOnlyList<ShadowRefusal> TakeShadowRefusals()
    {
        if (_shadowRefusals.Count == 0)
        {
            return [];
        }

        var taken = _shadowRefusals.ToArray();
        _shadowRefusals.Clear();
        return taken;
    }

    /// <summary>The host persisted every change: forget them.</summary>
    public void AcceptChanges() => _changedCalls.Clear();

    /// <summary>Counts every held call as changed (the host loaded them from a form it no longer writes).</summary>
    public void MarkAllCallsChanged()
    {
        foreach (var callKey in State.Calls.Keys)
        {
            _changedCalls.Add(callKey);
        }
    }

    /// <summary>
    /// Reserves a slot for <paramref name="callKey"/> unless a limit is reached. A call that already holds
    /// a slot is admitted again without counting twice (a retransmitted INVITE).
    /// </summary>
    public ReserveOutcome TryReserve(string callKey, Direction direction, TimeSpan lease, int? perCallMax, DateTimeOffset now, out bool changed) =>
        TryReserve(callKey, direction, lease, perCallMax, null, now, out changed);

    /// <summary>
    /// Like <see cref="TryReserve(string, Direction, TimeSpan, int?, DateTimeOffset, out bool)"/>, for a call of
    /// <paramref name="tenant"/>: on a trunk the call is counted for it, and the trunk's reservations decide too.
    /// </summary>
    public ReserveOutcome TryReserve(string callKey, Direction direction, TimeSpan lease, int? perCallMax, string? tenant, DateTimeOffset now, out bool changed)
    {
        changed = ExpireLeases(now) > 0;
        var (inbound, outbound) = (_inbound, _outbound);

        if (State.Calls.ContainsKey(callKey))
        {
            return ReserveOutcome.Admit(Effective.Total, inbound + outbound);
        }

        var effective = Effective;
        var outcome = Key.Kind == LimitKind.Key
            ? DecidePerKey(direction, (Overridden & LimitFields.Total) != 0 ? State.Override!.Total : perCallMax ?? State.LastPerCallMax, inbound + outbound)
            : Decide(effective, direction, inbound, outbound);
        if (outcome.Admitted && Reservations is { } reservations)
        {
            outcome = Shared(reservations.Decide(tenant, effective.Total, inbound + outbound, _tenantCalls), outcome);
        }

        if (Key.Kind == LimitKind.Key && perCallMax is { } max && State.LastPerCallMax != max)
        {
            State.LastPerCallMax = max;
            changed = true;
        }

        // The rate is asked only of a call the counts admit, so a call refused for its count takes no token; a refusal by
        // rate changes nothing to write.
        outcome = DecideRate(outcome, effective, direction, now, take: true);
        if (!outcome.Admitted)
        {
            if (effective.Shadow != true)
            {
                CountRefusal(callKey);
                return outcome;
            }

            // Shadow mode (docs/policies.md, "Shadow mode"): counted as a refusal would be, then held like any admitted
            // call, so the count shows what the limit would hold and the release stays exact. It took no rate token, as a
            // refusal takes none.
            outcome = Shadowed(outcome);
            if (FirstCount(callKey))
            {
                State.ShadowRefused++;
                _shadowRefusals.Add(new ShadowRefusal(callKey, direction, outcome.ShadowReason, outcome.Current, outcome.Limit));
            }
        }

        var nowMs = now.ToUnixTimeMilliseconds();
        var held = new HeldCall
        {
            Direction = direction,
            Phase = HoldPhase.Early,
            SinceMs = nowMs,
            LeaseEndMs = nowMs + (long)lease.TotalMilliseconds,
            Tenant = Key.Kind == LimitKind.Trunk ? tenant : null,
        };
        State.Calls[callKey] = held;
        Count(held, +1);
        _leases.Add(new LeaseEntry(held.LeaseEndMs, callKey));
        _changedCalls.Add(callKey);
        changed = true;
        return outcome;
    }

    /// <summary>
    /// What <see cref="TryReserve(string, Direction, TimeSpan, int?, string?, DateTimeOffset, out bool)"/> would answer now, without changing anything (leases that have ended are not
    /// counted, as a reservation would reclaim them first). The answer is advice: only a reservation holds a slot.
    /// </summary>
    public ReserveOutcome Check(string callKey, Direction direction, int? perCallMax, DateTimeOffset now) =>
        Check(callKey, direction, perCallMax, null, now);

    /// <summary>Like <see cref="Check(string, Direction, int?, DateTimeOffset)"/>, for a call of <paramref name="tenant"/>.</summary>
    public ReserveOutcome Check(string callKey, Direction direction, int? perCallMax, string? tenant, DateTimeOffset now)
    {
        var nowMs = now.ToUnixTimeMilliseconds();
        var (inbound, outbound) = (_inbound, _outbound);
        var ownLeaseEnded = false;
        var reservations = Reservations;
        Dictionary<string, int>? tenantCalls = null;
        foreach (var entry in _leases)
        {
            if (entry.LeaseEndMs > nowMs)
            {
                break;
            }

            var ended = State.Calls[entry.CallKey];
            if (reservations is not null && ended.Tenant is { } endedTenant)
            {
                tenantCalls ??= new Dictionary<string, int>(_tenantCalls, StringComparer.Ordinal);
                tenantCalls[endedTenant]--;
            }

            if (ended.Direction == Direction.Inbound)
            {
                inbound--;
            }
            else
            {
                outbound--;
            }

            ownLeaseEnded |= entry.CallKey == callKey;
        }

        if (!ownLeaseEnded && State.Calls.ContainsKey(callKey))
        {
            return ReserveOutcome.Admit(Effective.Total, inbound + outbound);
        }

        var effective = Effective;
        var outcome = Key.Kind == LimitKind.Key
            ? DecidePerKey(direction, perCallMax ?? State.LastPerCallMax, inbound + outbound)
            : Decide(effective, direction, inbound, outbound);
        if (outcome.Admitted && reservations is not null)
        {
            outcome = Shared(reservations.Decide(tenant, effective.Total, inbound + outbound, tenantCalls ?? _tenantCalls), outcome);
        }

        outcome = DecideRate(outcome, effective, direction, now, take: false);
        if (outcome.Admitted)
        {
            return outcome;
        }

        // A limit in shadow mode admits; its reservation counts the would-be refusal. A refusal is counted here: no
        // reservation follows it.
        if (effective.Shadow == true)
        {
            return Shadowed(outcome);
        }

        CountRefusal(callKey);
        return outcome;
    }

    /// <summary>A refusal turned into an admission by shadow mode, naming the reason it would have been refused for.</summary>
    private static ReserveOutcome Shadowed(ReserveOutcome refusal) =>
        refusal with { Admitted = true, Reason = RejectReason.None, RetryAfter = null, ShadowReason = refusal.Reason };

    /// <summary>A refusal, counted once per call; kept in memory until the limit writes for another reason (a refusal writes nothing).</summary>
    private void CountRefusal(string callKey)
    {
        if (FirstCount(callKey))
        {
            State.Refused++;
        }
    }

    private bool FirstCount(string callKey)
    {
        if (!_counted.Add(callKey))
        {
            return false;
        }

        _countedOrder.Enqueue(callKey);
        if (_countedOrder.Count > CountedCallsKept)
        {
            _counted.Remove(_countedOrder.Dequeue());
        }

        return true;
    }

    /// <summary>The answer of a trunk's maxima, refined by its reservations: their refusal, else the maxima's admission.</summary>
    private static ReserveOutcome Shared(ReserveOutcome reservations, ReserveOutcome maxima) => reservations.Admitted ? maxima : reservations;

    /// <summary>A call the counts admitted, asked of the rates too; with <paramref name="take"/> an admitted call takes its tokens.</summary>
    private ReserveOutcome DecideRate(ReserveOutcome outcome, LimitSettings effective, Direction direction, DateTimeOffset now, bool take)
    {
        if (!outcome.Admitted || !effective.HasRates)
        {
            return outcome;
        }

        var reason = Rates.Decide(Key.Kind, effective, direction, now, take, out var retryAfter);
        return reason == RejectReason.None
            ? outcome with { HasRate = true }
            : ReserveOutcome.Reject(reason, outcome.Limit, outcome.Current) with { RetryAfter = retryAfter, HasRate = true };
    }

    /// <summary>
    /// Nothing here needs storing: no call is held and no run-time override is set (the configured limits live in
    /// configuration; the reclaimed count and a per-key limit's last maximum are only shown in listings).
    /// </summary>
    public bool IsIdle => State.Calls.Count == 0 && State.Override is null && State.Reservations is null;

    /// <summary>
    /// Marks the call answered (2xx) and gives it the confirmed lease. False when the call holds no slot
    /// here (never did, released, or its lease ended: the caller must then end the call).
    /// </summary>
    public bool Confirm(string callKey, TimeSpan lease, DateTimeOffset now)
    {
        if (!TryGetLive(callKey, now, out var call))
        {
            return false;
        }

        call.Phase = HoldPhase.Confirmed;
        SetLeaseEnd(callKey, call, now.ToUnixTimeMilliseconds() + (long)lease.TotalMilliseconds);
        _changedCalls.Add(callKey);
        return true;
    }

    /// <summary>Extends the lease (re-INVITE, UPDATE, session refresh). False when the call holds no slot here.</summary>
    public bool Renew(string callKey, TimeSpan lease, DateTimeOffset now)
    {
        if (!TryGetLive(callKey, now, out var call))
        {
            return false;
        }

        SetLeaseEnd(callKey, call, Math.Max(call.LeaseEndMs, now.ToUnixTimeMilliseconds() + (long)lease.TotalMilliseconds));
        return true;
    }

    /// <summary>
    /// The call's hold, unless its lease has already ended: then the slot is reclaimed now, so a late
    /// 2xx or refresh gets the same answer whether or not the lease timer has run yet.
    /// </summary>
    private bool TryGetLive(string callKey, DateTimeOffset now, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out HeldCall? call)
    {
        if (!State.Calls.TryGetValue(callKey, out call))
        {
            return false;
        }

        if (call.LeaseEndMs <= now.ToUnixTimeMilliseconds())
        {
            Remove(callKey, call);
            State.Reclaimed++;
            call = null;
            return false;
        }

        return true;
    }

    /// <summary>Frees the call's slot. False (and no change) when it held none: releasing twice is harmless.</summary>
    public bool Release(string callKey)
    {
        if (!State.Calls.TryGetValue(callKey, out var call))
        {
            return false;
        }

        Remove(callKey, call);
        return true;
    }

    /// <summary>
    /// Reclaims every slot whose lease has ended; returns how many. Called before every decision, so it looks
    /// only at the earliest lease ends: O(1) when none has ended, O(log n) per reclaimed slot.
    /// </summary>
    public int ExpireLeases(DateTimeOffset now)
    {
        var nowMs = now.ToUnixTimeMilliseconds();
        var expired = 0;
        while (_leases.Count > 0)
        {
            var earliest = _leases.Min;
            if (earliest.LeaseEndMs > nowMs)
            {
                break;
            }

            Remove(earliest.CallKey, State.Calls[earliest.CallKey]);
            expired++;
        }

        State.Reclaimed += expired;
        return expired;
    }

    /// <summary>Sets every field (or with null clears) the run-time limits.</summary>
    public void SetOverride(LimitSettings? limits) => Change(limits is null ? LimitChange.Clear : LimitChange.Replace(limits));

    /// <summary>
    /// Applies a run-time change field by field (<see cref="LimitChange"/>). A per-key limit takes only a total (its
    /// maximum whatever the direction): <see cref="InvalidOperationException"/> for a direction.
    /// </summary>
    public void Change(LimitChange change)
    {
        ArgumentNullException.ThrowIfNull(change);
        if (Key.Kind == LimitKind.Key && (change.Set & ~(LimitFields.Total | LimitFields.TotalRate | LimitFields.Shadow)) != 0
            && (change.Values.Inbound is not null || change.Values.Outbound is not null || change.Values.InboundRate is not null || change.Values.OutboundRate is not null))
        {
            throw new InvalidOperationException("a per-key limit has one maximum (total) whatever the direction");
        }

        var current = State.Override ?? LimitSettings.Unlimited;
        var fields = (Overridden | change.Set) & ~(change.Revert & ~change.Set);
        if (Key.Kind == LimitKind.Key)
        {
            fields &= LimitFields.Total | LimitFields.TotalRate | LimitFields.Shadow;
        }

        if (fields == LimitFields.None)
        {
            State.Override = null;
            State.OverrideFields = null;
            return;
        }

        State.Override = new LimitSettings(
            Pick(LimitFields.Total, change.Values.Total, current.Total),
            Pick(LimitFields.Inbound, change.Values.Inbound, current.Inbound),
            Pick(LimitFields.Outbound, change.Values.Outbound, current.Outbound),
            PickRate(LimitFields.TotalRate, change.Values.TotalRate, current.TotalRate),
            Pick(LimitFields.TotalRate, change.Values.TotalBurst, current.TotalBurst),
            PickRate(LimitFields.InboundRate, change.Values.InboundRate, current.InboundRate),
            Pick(LimitFields.InboundRate, change.Values.InboundBurst, current.InboundBurst),
            PickRate(LimitFields.OutboundRate, change.Values.OutboundRate, current.OutboundRate),
            Pick(LimitFields.OutboundRate, change.Values.OutboundBurst, current.OutboundBurst),
            (fields & LimitFields.Shadow) == 0 ? null : (change.Set & LimitFields.Shadow) != 0 ? change.Values.Shadow : current.Shadow);
        State.OverrideFields = fields;

        int? Pick(LimitFields field, int? sent, int? kept) =>
            (fields & field) == 0 ? null : (change.Set & field) != 0 ? sent : kept;

        double? PickRate(LimitFields field, double? sent, double? kept) =>
            (fields & field) == 0 ? null : (change.Set & field) != 0 ? sent : kept;
    }

    public LimitSnapshot Snapshot() => Snapshot(includeCalls: true);

    /// <summary>What the limit holds now; the calls only when <paramref name="includeCalls"/> (a busy trunk holds thousands).</summary>
    public LimitSnapshot Snapshot(bool includeCalls)
    {
        var (inbound, outbound) = (_inbound, _outbound);
        var calls = new List<HeldCallSnapshot>(includeCalls ? State.Calls.Count : 0);
        foreach (var (callKey, call) in State.Calls)
        {
            if (!includeCalls)
            {
                break;
            }

            calls.Add(new HeldCallSnapshot(
                callKey,
                call.Direction,
                call.Phase,
                DateTimeOffset.FromUnixTimeMilliseconds(call.SinceMs),
                DateTimeOffset.FromUnixTimeMilliseconds(call.LeaseEndMs)));
        }

        calls.Sort(static (a, b) => string.CompareOrdinal(a.CallKey, b.CallKey));
        var reservations = Reservations;
        return new LimitSnapshot(Key.ToString(), Key.Kind, Effective, inbound, outbound, inbound + outbound, State.Reclaimed, calls, Overridden, State.Refused, State.ShadowRefused)
        {
            Reservations = reservations,
            TenantCalls = reservations is null ? null : new Dictionary<string, int>(_tenantCalls.Where(static t => t.Value > 0), StringComparer.Ordinal),
            ReservationsOverridden = State.Reservations is not null,
        };
    }

    private void Count(HeldCall call, int delta)
    {
        if (call.Tenant is { } tenant)
        {
            var count = _tenantCalls.GetValueOrDefault(tenant) + delta;
            if (count == 0)
            {
                _tenantCalls.Remove(tenant);
            }
            else
            {
                _tenantCalls[tenant] = count;
            }
        }

        if (call.Direction == Direction.Inbound)
        {
            _inbound += delta;
        }
        else
        {
            _outbound += delta;
        }
    }

    private void Remove(string callKey, HeldCall call)
    {
        State.Calls.Remove(callKey);
        Count(call, -1);
        _leases.Remove(new LeaseEntry(call.LeaseEndMs, callKey));
        _changedCalls.Add(callKey);
    }

    private void SetLeaseEnd(string callKey, HeldCall call, long leaseEndMs)
    {
        if (leaseEndMs == call.LeaseEndMs)
        {
            return;
        }

        _leases.Remove(new LeaseEntry(call.LeaseEndMs, callKey));
        call.LeaseEndMs = leaseEndMs;
        _leases.Add(new LeaseEntry(leaseEndMs, callKey));
        _changedCalls.Add(callKey);
    }

    private ReserveOutcome Decide(LimitSettings limits, Direction direction, int inbound, int outbound)
    {
        var total = inbound + outbound;
        var kind = Key.Kind;
        var directionLimit = direction == Direction.Inbound ? limits.Inbound : limits.Outbound;
        var directionCount = direction == Direction.Inbound ? inbound : outbound;

        // A zero limit bars the direction (or, for total, every call): miniSIPServer's "zero inbound
        // means the trunk can only carry outgoing calls", and a user with total 0 has no calls at all.
        if (limits.Total == 0)
        {
            return ReserveOutcome.Reject(RejectReason.DirectionBarred, 0, total);
        }

        if (directionLimit == 0)
        {
            return ReserveOutcome.Reject(RejectReason.DirectionBarred, 0, directionCount);
        }

        if (directionLimit is { } dl && directionCount >= dl)
        {
            var reason = (kind, direction) switch
            {
                (LimitKind.User, Direction.Inbound) => RejectReason.UserInLimitReached,
                (LimitKind.User, _) => RejectReason.UserOutLimitReached,
                (LimitKind.Tenant, Direction.Inbound) => RejectReason.TenantInLimitReached,
                (LimitKind.Tenant, _) => RejectReason.TenantOutLimitReached,
                (_, Direction.Inbound) => RejectReason.TrunkInLimitReached,
                _ => RejectReason.TrunkOutLimitReached,
            };
            return ReserveOutcome.Reject(reason, dl, directionCount);
        }

        if (limits.Total is { } tl && total >= tl)
        {
            var reason = kind switch
            {
                LimitKind.User => RejectReason.UserTotalLimitReached,
                LimitKind.Tenant => RejectReason.TenantTotalLimitReached,
                _ => RejectReason.TrunkTotalLimitReached,
            };
            return ReserveOutcome.Reject(reason, tl, total);
        }

        return ReserveOutcome.Admit(directionLimit ?? limits.Total, limits.Total is null ? directionCount : total);
    }

    /// <summary>A held call in lease-end order.</summary>
    private readonly record struct LeaseEntry(long LeaseEndMs, string CallKey);

    private sealed class LeaseEntryComparer : IComparer<LeaseEntry>
    {
        public static readonly LeaseEntryComparer Instance = new();

        public int Compare(LeaseEntry x, LeaseEntry y)
        {
            var byEnd = x.LeaseEndMs.CompareTo(y.LeaseEndMs);
            return byEnd != 0 ? byEnd : string.CompareOrdinal(x.CallKey, y.CallKey);
        }
    }

    private static ReserveOutcome DecidePerKey(Direction direction, int? max, int total)
    {
        // AudioCodes 'cac=key|max': one maximum for the key, whatever the direction; the reason names
        // the direction of the refused call.
        if (max is { } m && total >= m)
        {
            var reason = direction == Direction.Inbound ? RejectReason.InPerKeyCacLimitReached : RejectReason.OutPerKeyCacLimitReached;
            return ReserveOutcome.Reject(reason, m, total);
        }

        return ReserveOutcome.Admit(max, total);
    }
}

/// <summary>A call a limit in shadow mode let through that it would have refused, and why (docs/policies.md, "Shadow mode").</summary>
public readonly record struct ShadowRefusal(string CallKey, Direction Direction, RejectReason Reason, int Current, int? Limit);
