using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;

namespace CallState.Grains;

/// <summary>
/// The calls of one shard as an Orleans grain. Each call is a <see cref="CallAdmission"/> over a record of its own (a row
/// of its own in the state store, compare-and-set on its version), loaded when an operation first names it and dropped
/// from memory once the call never was, was refused or has ended. The grain is reentrant so that the calls of a shard do
/// not wait for each other's limits and writes; the operations of one call are chained and run one at a time, in the
/// order they arrived. An operation that throws (a limit could not answer, storage failed, another activation wrote
/// first) drops that call's in-memory record so the next operation reloads it.
/// </summary>
[Reentrant]
public sealed class CallShardGrain : Grain, ICallShardGrain, ILimitGrainClient
{
    private readonly IStateStore _store;
    private readonly GrainOptions _options;
    private readonly TimeProvider _time;
    private readonly GrainMetrics _metrics;
    private readonly ILogger<CallShardGrain> _logger;
    private readonly Dictionary<string, CallSlot> _calls = new(StringComparer.Ordinal);

    /// <summary>
    /// Limits whose last reservation from this shard left room for at least one more call (or that set no maximum), and
    /// until when that is believed: a check of such a limit is answered "admit" here, without a message to the limit, so
    /// the check that spares refusals their writes costs nothing on limits with room. A refusal (of a check or a
    /// reservation) forgets the limit. docs/architecture.md, "Refusals write nothing".
    /// </summary>
    private readonly Dictionary<LimitKey, DateTimeOffset> _roomy = [];

    /// <summary>How long a limit seen with room is believed to have it (<see cref="_roomy"/>).</summary>
    private static readonly TimeSpan RoomyFor = TimeSpan.FromSeconds(1);

    /// <summary>Most limits <see cref="_roomy"/> remembers; past it, it starts again (a flood of fresh keys must not grow it).</summary>
    private const int MaxRoomy = 4096;

    /// <summary>
    /// Attempts abandoned before their admission ran here (the edge's deadline passed while the admission was still on
    /// its way, and its abandon overtook it), until when: such an admission is refused when it arrives, rather than
    /// holding slots that no edge will end before the early lease. docs/architecture.md, "Overload control".
    /// </summary>
    private readonly Dictionary<string, (string Attempt, DateTimeOffset Until)> _abandoned = new(StringComparer.Ordinal);

    /// <summary>How long an abandoned attempt is remembered: far past any admission deadline.</summary>
    private static readonly TimeSpan AbandonedFor = TimeSpan.FromMinutes(1);

    /// <summary>Most attempts <see cref="_abandoned"/> remembers; past it, expired ones go, and if none has, all do.</summary>
    private const int MaxAbandoned = 16_384;

    public CallShardGrain(IStateStore store, IOptions<GrainOptions> options, TimeProvider time, GrainMetrics metrics, ILogger<CallShardGrain> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _store = store;
        _options = options.Value;
        _time = time;
        _metrics = metrics;
        _logger = logger;
    }

    public async Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CallLeg? leg, CancellationToken cancellationToken = default)
    {
        if (GrainTypes.ValidateCallKey(callKey) is { } error)
        {
            _metrics.Admission(AdmitStatus.Invalid, RejectReason.None, TimeSpan.Zero);
            return AdmitResult.Invalid(error);
        }

        var started = _time.GetTimestamp();
        // The re-run after CallRecordExistsException (RunAfterAsync) carries the same leg: it is the same attempt.
        var result = await RunAsync(callKey, (admission, _) => WasAbandoned(callKey, leg)
            ? Task.FromResult(AdmitResult.Invalid($"attempt '{leg!.Attempt}' of call '{callKey}' was abandoned before its admission arrived"))
            : admission.AdmitAsync(limits, leg, cancellationToken), unreadIfNew: true);
        _metrics.Admission(result.Status, result.Reason, _time.GetElapsedTime(started));
        if (result.Status == AdmitStatus.Rejected && _logger.IsEnabled(LogLevel.Information))
        {
#pragma warning disable CA1873 // guarded by IsEnabled above; ToCode returns a literal
            Log.Rejected(_logger, callKey, result.LimitKey, result.Reason.ToCode(), result.Current, result.Limit);
#pragma warning restore CA1873
        }
        else if (result.Status == AdmitStatus.Duplicate)
        {
            // A duplicate leaves the call up, so it is still in memory (unless an end came in between: then no attempt).
            Log.Duplicate(_logger, callKey, leg?.Attempt, _calls.TryGetValue(callKey, out var call) ? call.Admission?.Attempt : null);
        }

        return result;
    }

    public Task<bool> ConfirmAsync(string callKey, CallAnswer? answer) => Valid(callKey) ? RunAsync(callKey, admission => admission.ConfirmAsync(answer, CancellationToken.None)) : Task.FromResult(false);

    public Task<bool> RenewAsync(string callKey) => Valid(callKey) ? RunAsync(callKey, static admission => admission.RenewAsync(CancellationToken.None)) : Task.FromResult(false);

    public Task<bool> EndAsync(string callKey) => Valid(callKey) ? RunAsync(callKey, static admission => admission.EndAsync(CancellationToken.None)) : Task.FromResult(false);

    public Task<bool> AbandonAsync(string callKey, string attempt) =>
        Valid(callKey)
            ? RunAsync(callKey, admission =>
            {
                if (admission.Attempt is { } admitted && string.Equals(admitted, attempt, StringComparison.Ordinal))
                {
                    return admission.EndAsync(CancellationToken.None);
                }

                // Not admitted by this attempt (yet): its admission may still be on its way, overtaken by this abandon
                // (found by the past-capacity benchmark, docs/benchmarks.md): remembered, so it is refused when it comes.
                RememberAbandoned(callKey, attempt);
                return Task.FromResult(false);
            })
            : Task.FromResult(false);

    private void RememberAbandoned(string callKey, string attempt)
    {
        var now = _time.GetUtcNow();
        if (_abandoned.Count >= MaxAbandoned && !_abandoned.ContainsKey(callKey))
        {
            foreach (var (key, entry) in _abandoned)
            {
                if (entry.Until <= now)
                {
                    _abandoned.Remove(key);
                }
            }
            if (_abandoned.Count >= MaxAbandoned)
            {
                _abandoned.Clear();
            }
        }
        _abandoned[callKey] = (attempt, now + AbandonedFor);
    }

    /// <summary>Whether <paramref name="leg"/>'s attempt was abandoned before its admission ran.</summary>
    private bool WasAbandoned(string callKey, CallLeg? leg)
    {
        if (leg is null || _abandoned.Count == 0 || !_abandoned.TryGetValue(callKey, out var entry))
        {
            return false;
        }
        if (entry.Until <= _time.GetUtcNow())
        {
            _abandoned.Remove(callKey);
            return false;
        }
        return string.Equals(entry.Attempt, leg.Attempt, StringComparison.Ordinal);
    }

    public Task<CallSnapshot> GetSnapshotAsync(string callKey)
    {
        if (GrainTypes.ValidateCallKey(callKey) is { } error)
        {
            throw new ArgumentException(error, nameof(callKey));
        }

        return RunAsync(callKey, static admission => Task.FromResult(admission.Snapshot()));
    }

    /// <summary>In the call's order like every operation, so a dialog asked for after a confirm shows it.</summary>
    public Task<CallDialog?> GetDialogAsync(string callKey) =>
        Valid(callKey) ? RunAsync(callKey, static admission => Task.FromResult(admission.Dialog())) : Task.FromResult<CallDialog?>(null);

    public Task<CallTeardownInfo> GetTeardownAsync(string callKey) =>
        Valid(callKey) ? RunAsync(callKey, static admission => Task.FromResult(admission.TeardownInfo())) : Task.FromResult(new CallTeardownInfo(CallPhase.New, false, null));

    public Task WakeAsync(string callKey) => !Valid(callKey) ? Task.CompletedTask : RunAsync(callKey, async (admission, slot) =>
    {
        // A call in memory knows its own due time; the stored one (earlier for an admission in progress, so that a crash
        // is recovered) does not apply to it.
        if (slot.DueAt is { } due && due <= _time.GetUtcNow())
        {
            await admission.OnTimerAsync(CancellationToken.None);
        }

        return true;
    });

    private static bool Valid(string callKey) => GrainTypes.ValidateCallKey(callKey) is null;

    private Task<T> RunAsync<T>(string callKey, Func<CallAdmission, Task<T>> body) => RunAsync(callKey, (admission, _) => body(admission));

    /// <summary>
    /// Runs <paramref name="body"/> on the call after every operation on it that arrived before. With
    /// <paramref name="unreadIfNew"/> a call not in memory is taken to be new without reading storage (an admission: one
    /// read fewer per call); when its record turns out to exist, it is read and the operation runs again.
    /// </summary>
    private Task<T> RunAsync<T>(string callKey, Func<CallAdmission, CallSlot, Task<T>> body, bool unreadIfNew = false)
    {
        if (!_calls.TryGetValue(callKey, out var slot))
        {
            slot = new CallSlot(this, callKey);
            _calls.Add(callKey, slot);
        }

        slot.Pending++;
        var run = RunAfterAsync(slot, slot.Tail, body, unreadIfNew);
        slot.Tail = run;
        return run;
    }

    private async Task<T> RunAfterAsync<T>(CallSlot slot, Task previous, Func<CallAdmission, CallSlot, Task<T>> body, bool unreadIfNew)
    {
        try
        {
            // Only the order matters here: the previous operation's outcome went to its own caller.
            await previous.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Current);
            if (unreadIfNew && (slot.Admission is null || slot.State.Phase == CallPhase.Ended))
            {
                // An admission queued behind the call's end (another INVITE with its Call-ID and From tag) finds the
                // record deleted: it is a new call, as it is once the ended call has left memory, not an ended one
                // answered 500 by the edge (found by the fuzz run, docs/testing.md "Fuzzing").

                slot.Admission = slot.AssumeNew();
                try
                {
                    return await body(slot.Admission, slot);
                }
                catch (CallRecordExistsException exists)
                {
                    slot.Admission = await slot.LoadAsync();
                    var result = await body(slot.Admission, slot);
                    await slot.Admission.ReleaseNotHeldAsync(exists.Taken, CancellationToken.None);
                    return result;
                }
            }

            slot.Admission ??= await slot.LoadAsync();
            return await body(slot.Admission, slot);
        }
        catch (Exception ex)
        {
            slot.Admission = null;
            var failure = GrainStorageException.ForCaller(ex);
            if (ReferenceEquals(failure, ex))
            {
                throw;
            }

            throw failure;
        }
        finally
        {
            if (--slot.Pending == 0 && (slot.Admission is null || slot.State.Phase is CallPhase.New or CallPhase.Rejected or CallPhase.Ended))
            {
                // Settled (everything is durable, and the due scan finds a stored record when it is due) or failed (the
                // next operation reloads it): nothing to keep in memory.
                _calls.Remove(slot.CallKey);
            }
        }
    }

    // The limits, reached through Orleans wherever they are activated.
    async Task<ReserveOutcome> ILimitGrainClient.TryReserveAsync(LimitKey key, string callKey, Direction direction, TimeSpan lease, int? perCallMax, string? tenant, CancellationToken cancellationToken)
    {
        var outcome = await Limit(key).TryReserveAsync(callKey, direction, lease, perCallMax, tenant).WaitAsync(cancellationToken);
        // A limit with a call rate is never remembered: its next call may find the bucket empty, and only a check refuses
        // without a write (docs/architecture.md, "Call rates").
        if (outcome.Admitted && !outcome.HasRate && (outcome.Limit is not { } max || outcome.Current + 1 < max))
        {
            if (_roomy.Count >= MaxRoomy && !_roomy.ContainsKey(key))
            {
                _roomy.Clear();
            }

            _roomy[key] = _time.GetUtcNow() + RoomyFor;
        }
        else
        {
            _roomy.Remove(key);
        }

        return outcome;
    }

    Task<ReserveOutcome> ILimitGrainClient.CheckAsync(LimitKey key, string callKey, Direction direction, int? perCallMax, string? tenant, CancellationToken cancellationToken) =>
        _roomy.TryGetValue(key, out var until) && until > _time.GetUtcNow()
            ? Task.FromResult(ReserveOutcome.Admit(null, 0))
            : CheckLimitAsync(key, callKey, direction, perCallMax, tenant, cancellationToken);

    private async Task<ReserveOutcome> CheckLimitAsync(LimitKey key, string callKey, Direction direction, int? perCallMax, string? tenant, CancellationToken cancellationToken)
    {
        var outcome = await Limit(key).CheckAsync(callKey, direction, perCallMax, tenant).WaitAsync(cancellationToken);
        if (!outcome.Admitted)
        {
            _roomy.Remove(key);
        }

        return outcome;
    }

    Task<bool> ILimitGrainClient.ConfirmAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
        Limit(key).ConfirmAsync(callKey, lease).WaitAsync(cancellationToken);

    Task<bool> ILimitGrainClient.RenewAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
        Limit(key).RenewAsync(callKey, lease).WaitAsync(cancellationToken);

    Task<int> ILimitGrainClient.DropAsync(LimitKey key, string callKey) => Limit(key).DropAsync(callKey);

    Task<bool> ILimitGrainClient.ReleaseAsync(LimitKey key, string callKey, CancellationToken cancellationToken) =>
        Limit(key).ReleaseAsync(callKey).WaitAsync(cancellationToken);

    private ILimitGrain Limit(LimitKey key) => GrainFactory.GetGrain<ILimitGrain>(key.ToString());

    /// <summary>One call of the shard: its record as loaded and written, and the chain of its operations.</summary>
    private sealed class CallSlot(CallShardGrain shard, string callKey) : IDurableState<CallGrainState>
    {
        private readonly StateId _id = new(GrainTypes.Call, callKey);
        private long _version;

        public string CallKey => callKey;

        public CallAdmission? Admission { get; set; }

        /// <summary>The last operation queued on this call; the next one runs after it.</summary>
        public Task Tail { get; set; } = Task.CompletedTask;

        /// <summary>Operations queued or running.</summary>
        public int Pending { get; set; }

        /// <summary>When this call next has work of its own; a wake before it is ignored (a live admission is stored as due for recovery).</summary>
        public DateTimeOffset? DueAt { get; private set; }

        public CallGrainState State { get; private set; } = new();

        /// <summary>A call taken to be new: no record read; its first write is an insert.</summary>
        public CallAdmission AssumeNew() => Start(null, unread: true);

        public async Task<CallAdmission> LoadAsync() => Start(await shard._store.ReadAsync(_id, CancellationToken.None), unread: false);

        private CallAdmission Start(StoredState? stored, bool unread)
        {
            State = stored is null ? new CallGrainState() : StateSerializer.DeserializeCall(stored.Data);
            _version = stored?.Version ?? 0;
            DueAt = stored?.DueAt;
            return new CallAdmission(callKey, this, shard, shard._options.Leases, shard._time, unread);
        }

        public async Task WriteAsync(DateTimeOffset? dueAt, DateTimeOffset? recoverAt, CancellationToken cancellationToken)
        {
            // A record stored as due earlier than the call's own due time (an admission in progress) is recovered only
            // after the recovery delay: live admissions are not woken by every due scan.
            var stored = recoverAt is { } recover && recover != dueAt ? Earliest(dueAt, recover + shard._options.RecoveryDelay) : dueAt;
            var write = new StateWrite(_id, _version, StateSerializer.Serialize(State), stored);
            if (!await shard._store.WriteAsync(write, cancellationToken))
            {
                throw Stale();
            }

            _version++;
            DueAt = dueAt;
        }

        public async Task ClearAsync(CancellationToken cancellationToken)
        {
            if (_version == 0)
            {
                return;
            }

            if (!await shard._store.WriteAsync(new StateWrite(_id, _version, null, null), cancellationToken))
            {
                throw Stale();
            }

            // The in-memory record keeps its phase (Ended, Rejected) while operations on it are queued.
            _version = 0;
            DueAt = null;
        }

        /// <summary>Another activation wrote the record first: counted, and thrown to the operation's caller.</summary>
        private StaleGrainStateException Stale()
        {
            shard._metrics.StaleWrite(GrainTypes.Call);
            return new StaleGrainStateException($"call {callKey} was written by another activation");
        }

        private static DateTimeOffset? Earliest(DateTimeOffset? a, DateTimeOffset b) => a is { } value && value < b ? value : b;
    }
}
