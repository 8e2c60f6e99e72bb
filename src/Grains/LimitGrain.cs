using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;

namespace CallState.Grains;

/// <summary>
/// A limit as an Orleans grain. It is reentrant so that a hot key (every call to one callee) is not one storage round
/// trip per call: operations that arrive while a write is in flight queue up, and the next turn decides all of them in
/// memory, in order, writes the state once (compare-and-set on the version it loaded, through the store's group commit)
/// and only then answers them. An answer is never given on a change that is not durable. When the write loses (another
/// activation of the same key wrote first: a duplicate activation during a membership change) the state is reloaded and
/// every operation of the turn decided again; none is answered from the lost write. The write is the small row (limits,
/// counters) plus one item per call the turn added, changed or released. See docs/architecture.md.
/// </summary>
[Reentrant]
public sealed class LimitGrain : Grain, ILimitGrain, ILimitUsage
{
    private readonly IStateStore _store;
    private readonly ILimitSettingsSource _settings;
    private readonly GrainOptions _options;
    private readonly TimeProvider _time;
    private readonly GrainMetrics _metrics;
    private readonly ILogger<LimitGrain> _logger;
    private List<LimitWork> _queue = [];
    private bool _turnRunning;
    private LimitKey _key;
    private StateId _id;
    private LimitLedger? _ledger;

    /// <summary>The call-rate buckets, in memory only: they outlive a reload of the ledger (docs/architecture.md, "Call rates").</summary>
    private readonly RateBuckets _rates = new();

    /// <summary>The buckets as a turn found them, so a turn decided again (after a lost write) does not take tokens twice.</summary>
    private readonly RateBuckets _ratesAtTurnStart = new();

    /// <summary>The row's version this activation holds: its fence (see <see cref="LoadAsync"/>); 0 while no row exists.</summary>
    private long _version;

    /// <summary>The row's data as stored, so a turn that changes only held calls writes only their items.</summary>
    private byte[]? _storedRow;

    /// <summary>The row's stored due time: never later than the earliest lease end (a wake before it finds nothing to do).</summary>
    private DateTimeOffset? _storedDue;

    /// <summary>
    /// Whether this activation holds the fence of an existing row (see <see cref="TakeFenceAsync"/>): taken before its
    /// first write, not at load, so an activation that only reads, checks or refuses writes nothing.
    /// </summary>
    private bool _fenced;

    /// <summary>The key has limits of its own in configuration: its row stays while it holds nothing.</summary>
    private bool _keepsRow;

    /// <summary>The lowest version a limit's inserted row gets: far above what a row's own writes ever count up to.</summary>
    private const long FirstInsertVersion = 1L << 32;

    public LimitGrain(IStateStore store, ILimitSettingsSource settings, IOptions<GrainOptions> options, TimeProvider time, GrainMetrics metrics, ILogger<LimitGrain> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _store = store;
        _settings = settings;
        _options = options.Value;
        _time = time;
        _metrics = metrics;
        _logger = logger;
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var text = this.GetPrimaryKeyString();
        if (!LimitKey.TryParse(text, out _key, out var error))
        {
            throw new InvalidOperationException($"limit grain key {text}: {error}");
        }

        _id = new StateId(GrainTypes.Limit, _key.ToString());
        _keepsRow = _settings.HasOwnLimits(_key);
        _metrics.Track(this);
        return Task.CompletedTask;
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        _metrics.Untrack(this);
        return Task.CompletedTask;
    }

    LimitKey ILimitUsage.Key => _key;

    int ILimitUsage.InUse => _ledger?.State.Calls.Count ?? 0;

    int? ILimitUsage.Maximum => _ledger?.Effective is { } limits
        ? limits.Total ?? (limits is { Inbound: { } inbound, Outbound: { } outbound } ? inbound + outbound : null)
        : null;

    public async Task<ReserveOutcome> TryReserveAsync(string callKey, Direction direction, TimeSpan lease, int? perCallMax, string? tenant = null) =>
        (await Post(new LimitWork(LimitOp.Reserve, callKey) { Direction = direction, Lease = lease, PerCallMax = perCallMax, Tenant = tenant })).Outcome;

    public Task<int> DropAsync(string callKey)
    {
        // Between the turns' awaits: what is still in the queue has not been taken by a turn, so it has decided nothing.
        var dropped = _queue.RemoveAll(work =>
        {
            if (work.Op != LimitOp.Reserve || !string.Equals(work.CallKey, callKey, StringComparison.Ordinal))
            {
                return false;
            }

            work.Completion.TrySetResult(new LimitWorkResult(ReserveOutcome.Dropped, false, null));
            return true;
        });
        if (dropped > 0)
        {
            _metrics.ReservationsDropped(dropped);
        }

        return Task.FromResult(dropped);
    }

    public Task<ReserveOutcome> CheckAsync(string callKey, Direction direction, int? perCallMax, string? tenant = null)
    {
        if (_ledger is not { } ledger)
        {
            return CheckLoadingAsync(callKey, direction, perCallMax, tenant);
        }

        // Configuration as it is now, as a turn takes it: a limit whose calls are all refused here runs no turn, and a
        // reloaded maximum (a changed ConfigMap) must still apply to its next call.
        TakeConfiguration(ledger);

        // Answered from memory, between the turns' awaits: it may count holds whose write is still in flight, which
        // can only make it refuse more, never admit a call past the limit (a reservation decides that).
        return Task.FromResult(ledger.Check(callKey, direction, perCallMax, tenant, _time.GetUtcNow()));
    }

    /// <summary>Gives <paramref name="ledger"/> the key's limits and reservations as configuration has them now.</summary>
    private void TakeConfiguration(LimitLedger ledger)
    {
        ledger.Configured = _settings.GetLimits(_key);
        ledger.ConfiguredReservations = _settings.GetReservations(_key);
    }

    private async Task<ReserveOutcome> CheckLoadingAsync(string callKey, Direction direction, int? perCallMax, string? tenant) =>
        (await Post(new LimitWork(LimitOp.Check, callKey) { Direction = direction, PerCallMax = perCallMax, Tenant = tenant })).Outcome;

    public async Task<bool> ConfirmAsync(string callKey, TimeSpan lease) => (await Post(new LimitWork(LimitOp.Confirm, callKey) { Lease = lease })).Found;

    public async Task<bool> RenewAsync(string callKey, TimeSpan lease) => (await Post(new LimitWork(LimitOp.Renew, callKey) { Lease = lease })).Found;

    public async Task<bool> ReleaseAsync(string callKey) => (await Post(new LimitWork(LimitOp.Release, callKey))).Found;

    public async Task<LimitSnapshot> GetSnapshotAsync() => (await Post(new LimitWork(LimitOp.Snapshot))).Snapshot!;

    public async Task<LimitSnapshot> SetLimitsAsync(LimitSettings? limits)
    {
        ValidateSettable(_key, limits);
        return (await Post(new LimitWork(LimitOp.SetLimits) { Change = limits is null ? LimitChange.Clear : LimitChange.Replace(limits) })).Snapshot!;
    }

    public async Task<LimitChangeResult> ChangeLimitsAsync(LimitChange change)
    {
        ArgumentNullException.ThrowIfNull(change);
        ValidateChange(_key, change);
        var result = await Post(new LimitWork(LimitOp.SetLimits) { Change = change });
        return new LimitChangeResult(result.Before!, result.Snapshot!);
    }

    public async Task<LimitChangeResult> SetReservationsAsync(TrunkReservations? reservations)
    {
        if (_key.Kind != LimitKind.Trunk)
        {
            throw new ArgumentException($"only a trunk has reservations, not {_key}", nameof(reservations));
        }

        var result = await Post(new LimitWork(LimitOp.SetReservations) { Reservations = reservations });
        return new LimitChangeResult(result.Before!, result.Snapshot!);
    }

    public Task WakeAsync() => Post(new LimitWork(LimitOp.Timer));

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="limits"/> may be set on <paramref name="key"/> at run time.</summary>
    public static void ValidateSettable(LimitKey key, LimitSettings? limits) =>
        ValidateChange(key, limits is null ? LimitChange.Clear : LimitChange.Replace(limits));

    /// <summary>
    /// Throws <see cref="ArgumentException"/> unless <paramref name="change"/> may be applied to <paramref name="key"/>:
    /// the values it sets are valid, and a per-key limit (one maximum whatever the direction) is given only a total.
    /// </summary>
    public static void ValidateChange(LimitKey key, LimitChange change)
    {
        ArgumentNullException.ThrowIfNull(change);
        var limits = change.Set == LimitFields.None ? null : change.Values;
        if (key.Kind == LimitKind.Key && limits is not null
            && (limits.Inbound is not null || limits.Outbound is not null || limits.InboundRate is not null || limits.OutboundRate is not null))
        {
            throw new ArgumentException("a per-key limit has one maximum (total) and one rate (totalRate) whatever the direction; inbound and outbound cannot be set", nameof(change));
        }

        if (limits is not null)
        {
            var errors = limits.Validate(key.Kind, key.ToString()).ToList();
            if (errors.Count > 0)
            {
                throw new ArgumentException(string.Join(" ", errors), nameof(change));
            }
        }
    }

    /// <summary>Queues the operation; the turn that takes it answers it after its write is durable.</summary>
    private Task<LimitWorkResult> Post(LimitWork work)
    {
        if (_queue.Count >= _options.QueueCapacity)
        {
            throw new GrainOverloadedException($"limit {_key} has {_options.QueueCapacity} operations waiting");
        }

        _queue.Add(work);
        if (!_turnRunning)
        {
            _turnRunning = true;
            _ = RunTurnsAsync();
        }

        return work.Completion.Task;
    }

    /// <summary>Runs turns while operations wait; the grain's scheduler keeps every step on one thread at a time.</summary>
    private async Task RunTurnsAsync()
    {
        try
        {
            while (_queue.Count > 0)
            {
                List<LimitWork> batch;
                if (_queue.Count <= _options.MaxTurnBatch)
                {
                    batch = _queue;
                    _queue = [];
                }
                else
                {
                    batch = _queue.GetRange(0, _options.MaxTurnBatch);
                    _queue.RemoveRange(0, _options.MaxTurnBatch);
                }

                await RunTurnAsync(batch);
            }
        }
        finally
        {
            _turnRunning = false;
        }
    }

    private async Task RunTurnAsync(List<LimitWork> batch)
    {
        var results = new LimitWorkResult[batch.Count];
        try
        {
            var attempt = 0;
            var loadedThisTurn = false;
            _ratesAtTurnStart.CopyFrom(_rates);
            while (true)
            {
                _rates.CopyFrom(_ratesAtTurnStart);
                if (_ledger is null)
                {
                    await LoadAsync();
                    loadedThisTurn = true;
                }

                var ledger = _ledger!;

                // Configuration as it is now: a reloaded limit applies to the next call even while this activation is busy.
                TakeConfiguration(ledger);
                var now = _time.GetUtcNow();
                var dueBefore = ledger.NextDue;
                var changed = false;
                var missed = false;
                for (var i = 0; i < batch.Count; i++)
                {
                    results[i] = Apply(ledger, batch[i], now, ref changed, ref missed);
                }

                // An operation on a call this activation does not know: the state may be stale (another activation
                // admitted it). Check against storage once before answering "not held": the row's version moves only when
                // another activation takes the fence, so an unchanged version means nothing was missed, and the hot key's
                // items are not read again for every end of a call it never held.
                if (missed && !loadedThisTurn && attempt < _options.MaxStaleRetries
                    && await _store.ReadVersionAsync(_id, CancellationToken.None) != _version)
                {
                    _ledger = null;
                    attempt++;
                    continue;
                }

                var write = WriteFor(ledger, changed, dueBefore, now, out var row);
                if (write is not null && _version > 0 && !_fenced)
                {
                    // This activation's first write to an existing row: take the fence, then decide the turn again on what
                    // the fence read (an older activation may have written items since the load).
                    if (!await TakeFenceAsync())
                    {
                        LostWrite(ref attempt, "while taking the fence");
                    }

                    loadedThisTurn = true;
                    continue;
                }

                if (write is not null)
                {
                    if (!await _store.WriteAsync(write, CancellationToken.None))
                    {
                        // Lost to another activation: the unsaved changes go with the dropped state, the reload starts
                        // from storage, and the whole turn is decided again.
                        LostWrite(ref attempt, "");
                        continue;
                    }

                    _fenced = true;
                    if (write.Data is null && !write.RowUnchanged)
                    {
                        // Deleted: the next write is an insert, which fails if another activation has written a row since.
                        _version = 0;
                        _storedRow = null;
                        _storedDue = null;
                        _metrics.IdleRowDeleted();
                    }
                    else if (!write.RowUnchanged)
                    {
                        _version = write.ExpectedVersion == 0 ? write.InsertVersion : _version + 1;
                        _storedRow = row;
                        _storedDue = write.DueAt;
                    }
                }

                ledger.AcceptChanges();
                ReportShadowRefusals(ledger.TakeShadowRefusals());
                break;
            }
        }
        catch (Exception ex)
        {
            // Storage failed: the outcome of the write is unknown, so drop the in-memory state and reload it next
            // turn; every caller of this turn gets the error (the activation stays: the next turn may succeed).
            _ledger = null;
            var failure = GrainStorageException.ForCaller(ex);
            foreach (var work in batch)
            {
                work.Completion.TrySetException(failure);
            }

            return;
        }

        for (var i = 0; i < batch.Count; i++)
        {
            batch[i].Completion.TrySetResult(results[i]);
        }
    }

    /// <summary>
    /// What the turn must write, or null: serialized before the first await, so what is written is exactly what the turn
    /// decided. A key with nothing to keep (<see cref="LimitLedger.IsIdle"/>, no limits of its own in configuration) has
    /// its row deleted, or, when it has none, nothing is written: a call admitted and released within one turn was never
    /// answered as held. Otherwise the row is written only when its own data changed, the due time must move earlier (or
    /// off a time already past), or it does not exist yet; else only the changed calls' items, checked against the fence.
    /// </summary>
    private StateWrite? WriteFor(LimitLedger ledger, bool changed, DateTimeOffset? dueBefore, DateTimeOffset now, out byte[]? row)
    {
        row = null;
        if (ledger.IsIdle && !_keepsRow)
        {
            return _version == 0 ? null : new StateWrite(_id, _version, null, null);
        }

        var due = ledger.NextDue;
        var dueMustMove = DueMustMove(due, now);
        if (!changed && due == dueBefore && ledger.ChangedCalls.Count == 0 && !dueMustMove)
        {
            return null;
        }

        row = StateSerializer.SerializeLimitRow(ledger.State);
        var items = ItemChanges(ledger);
        var writeRow = _version == 0 || items is null || !row.AsSpan().SequenceEqual(_storedRow) || dueMustMove;
        if (!writeRow)
        {
            return StateWrite.ItemsOnly(_id, _version, items!);
        }

        // A row may be deleted when idle and inserted again: the new row starts at an unpredictable version, so an
        // activation that still holds a version of the deleted row (a duplicate, a paused silo) cannot match it.
        return _version == 0
            ? new StateWrite(_id, 0, row, due, items) { InsertVersion = Random.Shared.NextInt64(FirstInsertVersion, long.MaxValue / 2) }
            : new StateWrite(_id, _version, row, due, items);
    }

    /// <summary>The calls this limit let through in shadow mode that it would have refused, told once their holds are durable.</summary>
    private void ReportShadowRefusals(IReadOnlyList<ShadowRefusal> refusals)
    {
        foreach (var refusal in refusals)
        {
            _metrics.ShadowRefusal(_key.Kind, refusal.Reason);
            if (_logger.IsEnabled(LogLevel.Information))
            {
#pragma warning disable CA1873 // guarded by IsEnabled above
                Log.ShadowRefused(_logger, refusal.CallKey, _key.ToString(), refusal.Reason.ToCode(), refusal.Current, refusal.Limit);
#pragma warning restore CA1873
            }
        }
    }

    /// <summary>A compare-and-set lost to another activation: counted, the state dropped; thrown after too many in a row.</summary>
    private void LostWrite(ref int attempt, string when)
    {
        _ledger = null;
        _metrics.StaleWrite(GrainTypes.Limit);
        attempt++;
        if (attempt >= _options.MaxStaleRetries)
        {
            throw new StaleGrainStateException($"limit {_key} lost {attempt} compare-and-set writes in a row{(when.Length > 0 ? " " + when : "")}");
        }
    }

    private LimitWorkResult Apply(LimitLedger ledger, LimitWork work, DateTimeOffset now, ref bool changed, ref bool missed)
    {
        switch (work.Op)
        {
            case LimitOp.Reserve:
                var outcome = ledger.TryReserve(work.CallKey!, work.Direction, work.Lease, work.PerCallMax, work.Tenant, now, out var reserveChanged);
                changed |= reserveChanged;
                return new LimitWorkResult(outcome, outcome.Admitted, null);
            case LimitOp.Confirm:
                changed |= ledger.ExpireLeases(now) > 0;
                return Found(ledger.Confirm(work.CallKey!, work.Lease, now), ref changed, ref missed);
            case LimitOp.Renew:
                changed |= ledger.ExpireLeases(now) > 0;
                return Found(ledger.Renew(work.CallKey!, work.Lease, now), ref changed, ref missed);
            case LimitOp.Release:
                return Found(ledger.Release(work.CallKey!), ref changed, ref missed);
            case LimitOp.Timer:
                // The due scan woke this limit because the stored row is due. If another activation wrote the row
                // (a paused silo's, before it learned it was dead), this one's memory is stale and would never look
                // again: check the version first, as for an operation on a call it does not hold.
                missed = true;
                var reclaimed = ledger.ExpireLeases(now);
                if (reclaimed > 0)
                {
                    changed = true;
                    _metrics.Reclaimed(_key.Kind, reclaimed);
                    if (_logger.IsEnabled(LogLevel.Information))
                    {
#pragma warning disable CA1873 // guarded by IsEnabled above
                        Log.LeasesReclaimed(_logger, _key.ToString(), reclaimed);
#pragma warning restore CA1873
                    }
                }

                return default;
            case LimitOp.Check:
                return new LimitWorkResult(ledger.Check(work.CallKey!, work.Direction, work.PerCallMax, work.Tenant, now), true, null);
            case LimitOp.Snapshot:
                return new LimitWorkResult(default, true, ledger.Snapshot());
            case LimitOp.SetLimits:
                var before = ledger.Snapshot(includeCalls: false);
                ledger.Change(work.Change!);
                changed = true;
                return new LimitWorkResult(default, true, ledger.Snapshot(includeCalls: false), before);
            case LimitOp.SetReservations:
                var beforeReservations = ledger.Snapshot(includeCalls: false);
                ledger.SetReservations(work.Reservations);
                changed = true;
                return new LimitWorkResult(default, true, ledger.Snapshot(includeCalls: false), beforeReservations);
            default:
                throw new InvalidOperationException($"unknown limit operation {work.Op}");
        }
    }

    /// <summary>One item per call changed since the last write: its current hold, or a delete when it was released.</summary>
    private static List<StateItemWrite>? ItemChanges(LimitLedger ledger)
    {
        if (ledger.ChangedCalls.Count == 0)
        {
            return null;
        }

        var items = new List<StateItemWrite>(ledger.ChangedCalls.Count);
        foreach (var callKey in ledger.ChangedCalls)
        {
            items.Add(new StateItemWrite(
                callKey,
                ledger.State.Calls.TryGetValue(callKey, out var call) ? StateSerializer.SerializeHeldCall(call) : null));
        }

        return items;
    }

    private static LimitWorkResult Found(bool found, ref bool changed, ref bool missed)
    {
        changed |= found;
        missed |= !found;
        return new LimitWorkResult(default, found, null);
    }

    /// <summary>
    /// Whether the row's due time must be written: it must never be later than the earliest lease end (so a lease ends on
    /// time after a crash), and a due time already past makes the due scan wake this grain again and again.
    /// </summary>
    private bool DueMustMove(DateTimeOffset? due, DateTimeOffset now) =>
        due != _storedDue && (_storedDue is not { } stored || (due is { } next && next < stored) || stored <= now);

    /// <summary>Loads the state (one read); the fence is taken before the first write (<see cref="TakeFenceAsync"/>).</summary>
    private async Task LoadAsync()
    {
        var stored = await _store.ReadAsync(_id, CancellationToken.None);

        // No row: the first write is an insert, which fails when another activation has written one since: a fence of its own.
        Start(stored, fenced: stored is null);
    }

    /// <summary>
    /// Takes the fence of the row this activation loaded: rewrites it as it was read (compare-and-set on that version, so
    /// the version moves on) and reads it again. From then on an older activation's writes, which name the older version,
    /// fail, and what it wrote before is in the second read: items-only writes cannot slip in between. False when another
    /// activation wrote first.
    /// </summary>
    private async Task<bool> TakeFenceAsync()
    {
        if (!await _store.WriteAsync(new StateWrite(_id, _version, _storedRow, _storedDue), CancellationToken.None))
        {
            return false;
        }

        var fence = _version + 1;
        var stored = await _store.ReadAsync(_id, CancellationToken.None);
        if (stored is not null && stored.Version != fence)
        {
            // Another activation took the fence between this write and this read. Keeping the version read would share
            // its fence: the items-only writes of both would pass and neither would see the other's holds (two
            // activations admitting on one limit; holds in storage no activation knows). Lost: reload and take it again.
            return false;
        }

        Start(stored, fenced: true);
        return true;
    }

    private void Start(StoredState? stored, bool fenced)
    {
        var callsInRow = false;
        var state = stored is null ? new LimitGrainState() : StateSerializer.DeserializeLimit(stored, out callsInRow);
        _version = stored?.Version ?? 0;
        _storedRow = stored?.Data;
        _storedDue = stored?.DueAt;
        _fenced = fenced;
        var ledger = new LimitLedger(_key, state, _settings.GetLimits(_key), _rates) { ConfiguredReservations = _settings.GetReservations(_key) };
        if (callsInRow)
        {
            // A row from before items: this turn writes (even without a change) the row without calls and every call as an item.
            ledger.MarkAllCallsChanged();
        }

        _ledger = ledger;
    }

    private enum LimitOp : byte
    {
        Reserve,
        Confirm,
        Renew,
        Release,
        Timer,
        Check,
        Snapshot,
        SetLimits,
        SetReservations,
    }

    /// <summary>One operation on the limit, waiting for its turn.</summary>
    private sealed class LimitWork(LimitOp op, string? callKey = null)
    {
        public LimitOp Op { get; } = op;

        public string? CallKey { get; } = callKey;

        public Direction Direction { get; init; }

        public TimeSpan Lease { get; init; }

        public int? PerCallMax { get; init; }

        public LimitChange? Change { get; init; }

        public string? Tenant { get; init; }

        public TrunkReservations? Reservations { get; init; }

        public TaskCompletionSource<LimitWorkResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly record struct LimitWorkResult(ReserveOutcome Outcome, bool Found, LimitSnapshot? Snapshot, LimitSnapshot? Before = null);
}
