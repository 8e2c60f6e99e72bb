namespace CallState.Grains;

/// <summary>Where a call is in its admission.</summary>
[GenerateSerializer]
public enum CallPhase : byte
{
    New = 0,

    /// <summary>Reserving, or admitted and not yet confirmed: written together with the reservations, so it is what storage holds for an admitted call until its 2xx.</summary>
    Admitting = 1,
    Admitted = 2,
    Rejected = 3,
    Ended = 4,
}

/// <summary>One limit a call asks for: the limit key (<c>user/alice</c>), direction, and for per-key limits the maximum from the call.</summary>
/// <remarks>
/// <see cref="Tenant"/>: for a trunk, the tenant the call belongs to, counted against the trunk's guaranteed reservations
/// (docs/policies.md, "Guaranteed reservations"); null for none, and ignored by other limits.
/// </remarks>
[GenerateSerializer, Immutable]
public sealed record LimitRequest([property: Id(0)] string Key, [property: Id(1)] Direction Direction, [property: Id(2)] int? PerCallMax = null, [property: Id(3)] string? Tenant = null);

[GenerateSerializer]
public enum AdmitStatus : byte
{
    Admitted = 1,
    Rejected = 2,

    /// <summary>The request itself is wrong (unknown key prefix, duplicate key, negative maximum, ended call, a malformed leg).</summary>
    Invalid = 3,

    /// <summary>
    /// Another attempt (another INVITE transaction) admitted this call, which is being admitted or is up: this one was
    /// not counted, and nothing of the call was changed or released.
    /// </summary>
    Duplicate = 4,
}

/// <summary>The answer to an admission: admitted, or which limit refused and why.</summary>
/// <remarks>
/// <see cref="EarlyLease"/> is the early lease the admitted call holds (null in other answers and from silos before it
/// existed): an edge cannot see the silos' configuration, so it learns the lease here to renew it in time while the call
/// rings and to check it against its own Timer C (docs/architecture.md, "Leases that fit SIP").
/// </remarks>
[GenerateSerializer, Immutable]
public sealed record AdmitResult([property: Id(0)] AdmitStatus Status, [property: Id(1)] string? LimitKey, [property: Id(2)] RejectReason Reason, [property: Id(3)] int? Limit, [property: Id(4)] int Current, [property: Id(5)] string? Error, [property: Id(6)] TimeSpan? EarlyLease = null, [property: Id(7)] TimeSpan? RetryAfter = null)
{
    public static AdmitResult Admitted() => new(AdmitStatus.Admitted, null, RejectReason.None, null, 0, null);

    /// <summary>Admitted, holding an early lease of <paramref name="earlyLease"/> until the call is answered.</summary>
    public static AdmitResult Admitted(TimeSpan earlyLease) => new(AdmitStatus.Admitted, null, RejectReason.None, null, 0, null, earlyLease);

    /// <summary>The reason as logs and metrics spell it (<c>USER_TOTAL_LIMIT_REACHED</c>).</summary>
    public string ReasonCode => Reason.ToCode();

    public static AdmitResult Invalid(string error) => new(AdmitStatus.Invalid, null, RejectReason.None, null, 0, error);

    /// <summary>See <see cref="AdmitStatus.Duplicate"/>.</summary>
    public static AdmitResult Duplicate() => new(AdmitStatus.Duplicate, null, RejectReason.None, null, 0, null);
}

/// <summary>A requested limit as persisted with the call.</summary>
public sealed class CallLimit
{
    public string Key { get; set; } = "";

    public Direction Direction { get; set; }

    public int? PerCallMax { get; set; }

    /// <summary>See <see cref="LimitRequest.Tenant"/>.</summary>
    public string? Tenant { get; set; }
}

/// <summary>The persisted record of one call (a row of its own, written by its shard grain).</summary>
public sealed class CallGrainState
{
    public CallPhase Phase { get; set; }

    /// <summary>The limits, sorted by key: the order of reservation.</summary>
    public List<CallLimit> Limits { get; set; } = [];

    public bool Confirmed { get; set; }

    public string? RejectedKey { get; set; }

    public RejectReason Reason { get; set; }

    public int? Limit { get; set; }

    public int Current { get; set; }

    /// <summary>For a refusal by a call rate: milliseconds until its bucket holds a token again (docs/policies.md, "Call rates").</summary>
    public long? RetryAfterMs { get; set; }

    public long StartedMs { get; set; }

    public long LeaseEndMs { get; set; }

    /// <summary>The attempt (<see cref="CallLeg.Attempt"/>) that admitted the call; null when it was admitted without a leg.</summary>
    public string? Attempt { get; set; }

    /// <summary>Where requests toward the caller may go (<see cref="CallLeg.CallerTargets"/>); null when none were given.</summary>
    public List<string>? CallerTargets { get; set; }

    /// <summary>The callee's tag from the first answer that carried one (<see cref="CallAnswer.CalleeTag"/>).</summary>
    public string? CalleeTag { get; set; }

    /// <summary>Where requests toward the callee may go, from the same answer as <see cref="CalleeTag"/>.</summary>
    public List<string>? CalleeTargets { get; set; }

    /// <summary>The BYEs that end the call, from the same answer as <see cref="CalleeTag"/> (<see cref="CallAnswer.Teardown"/>); null when none was given or it was too long.</summary>
    public DialogTeardown? Teardown { get; set; }
}

/// <summary>A call as the admin API shows it.</summary>
[GenerateSerializer, Immutable]
public sealed record CallSnapshot([property: Id(0)] string CallKey, [property: Id(1)] CallPhase Phase, [property: Id(2)] bool Confirmed, [property: Id(3)] IReadOnlyList<LimitRequest> Limits, [property: Id(4)] string? RejectedKey, [property: Id(5)] RejectReason Reason, [property: Id(6)] DateTimeOffset? LeaseEnd, [property: Id(7)] string? CalleeTag);

/// <summary>
/// One call (key: Call-ID and From-tag). Reserves its limits in a fixed order, all or nothing, records the
/// outcome, and releases everything when the call ends. Any edge can end a call knowing only its key.
/// A call stored as <see cref="CallPhase.Admitting"/> that a restarted runtime loads (a crash came before or after its
/// answer) is finished: it ends up holding all of its limits or none. The edge ends an admission it had no answer for.
/// </summary>
public sealed class CallAdmission
{
    /// <summary>Most limits one call may touch; a user, a trunk, a few per-key tags.</summary>
    public const int MaxLimitsPerCall = 16;

    private readonly string _callKey;
    private readonly IDurableState<CallGrainState> _state;
    private readonly ILimitGrainClient _limits;
    private readonly LeaseOptions _leases;
    private readonly TimeProvider _time;

    private bool _unread;

    /// <param name="callKey">Call-ID and From-tag.</param>
    /// <param name="state">The call's durable record.</param>
    /// <param name="limits">The limit grains.</param>
    /// <param name="leases">Early and confirmed leases.</param>
    /// <param name="time">The clock.</param>
    /// <param name="unread">
    /// The record was not read: the call is taken to be new (the usual case for an admission), so its first write is an
    /// insert, which fails when a record exists; <see cref="AdmitAsync(IReadOnlyList{LimitRequest}, CallLeg, CancellationToken)"/> then throws <see cref="CallRecordExistsException"/>.
    /// </param>
    public CallAdmission(string callKey, IDurableState<CallGrainState> state, ILimitGrainClient limits, LeaseOptions leases, TimeProvider time, bool unread = false)
    {
        _callKey = callKey;
        _state = state;
        _limits = limits;
        _leases = leases;
        _time = time;
        _unread = unread;
    }

    private CallGrainState S => _state.State;

    /// <summary>
    /// When the call record wakes after its lease: a little after the limits' own lease ends, so the
    /// limits reclaim (and count) their slots first; the call then closes its record.
    /// </summary>
    private DateTimeOffset LeaseDue => DateTimeOffset.FromUnixTimeMilliseconds(S.LeaseEndMs) + LeaseGrace;

    /// <summary>See <see cref="LeaseDue"/>.</summary>
    public static readonly TimeSpan LeaseGrace = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Reserves every limit and records the call, all in one round of durable writes: the record (phase
    /// <see cref="CallPhase.Admitting"/>, with its limits and the early lease as due time) and every reservation are
    /// issued together, so group commit makes them durable in one batch, and the answer waits for all of them.
    /// When a limit refuses a call with several limits, what was taken is released and the limits are asked again one at a
    /// time in key order (so two calls racing for the last slot of two shared limits do not refuse each other); a refusal
    /// then is recorded. No call is ever admitted past a limit.
    /// </summary>
    public Task<AdmitResult> AdmitAsync(IReadOnlyList<LimitRequest> requests, CancellationToken cancellationToken) =>
        AdmitAsync(requests, null, cancellationToken);

    /// <summary>
    /// Like <see cref="AdmitAsync(IReadOnlyList{LimitRequest}, CancellationToken)"/>, for the attempt <paramref name="leg"/>
    /// names: its attempt id and caller targets are stored with the call's record, in the same write. A call being
    /// admitted or up that another attempt admitted answers <see cref="AdmitStatus.Duplicate"/> and is left as it is; the
    /// same attempt again (a retry) answers as the call stands. A null leg is not compared with anything.
    /// </summary>
    public async Task<AdmitResult> AdmitAsync(IReadOnlyList<LimitRequest> requests, CallLeg? leg, CancellationToken cancellationToken)
    {
        if (leg is not null && CallDialogs.Validate(leg) is { } legError)
        {
            return AdmitResult.Invalid(legError);
        }

        switch (S.Phase)
        {
            case CallPhase.Admitting or CallPhase.Admitted when leg is not null && !string.Equals(leg.Attempt, S.Attempt, StringComparison.Ordinal):
                // Another INVITE with this call's Call-ID and From tag (a retransmission reaching another edge, a merged
                // request, a forgery): counting or failing it must not touch the call that holds the slots.
                return AdmitResult.Duplicate();
            case CallPhase.Admitted:
                return AdmitResult.Admitted(_leases.Early);
            case CallPhase.Rejected:
                return StoredRejection();
            case CallPhase.Ended:
                return AdmitResult.Invalid($"call '{_callKey}' has already ended");
        }

        if (!TryNormalize(requests, out var limits, out var error))
        {
            return AdmitResult.Invalid(error);
        }

        if (S.Phase == CallPhase.New && limits.Count > 0 && await FirstCheckedRefusalAsync(limits, cancellationToken) is { } refusal)
        {
            // A limit would refuse the call as it stands: refused without reserving or writing anything, so a flood of
            // calls past a limit costs no storage (docs/architecture.md, "Refusals write nothing").
            S.Phase = CallPhase.Rejected;
            S.Limits = limits;
            S.RejectedKey = limits[refusal.Index].Key;
            S.Reason = refusal.Outcome.Reason;
            S.Limit = refusal.Outcome.Limit;
            S.Current = refusal.Outcome.Current;
            S.RetryAfterMs = (long?)refusal.Outcome.RetryAfter?.TotalMilliseconds;
            return StoredRejection();
        }

        if (S.Phase == CallPhase.Admitting && !SameLimits(S.Limits, limits))
        {
            // A crash cut an admission of other limits: give those back first (releasing is idempotent).
            await ReleaseAsync(S.Limits, cancellationToken);
        }

        var now = _time.GetUtcNow();
        S.Phase = CallPhase.Admitting;
        S.Limits = limits;
        S.StartedMs = now.ToUnixTimeMilliseconds();
        S.LeaseEndMs = (now + _leases.Early).ToUnixTimeMilliseconds();
        if (leg is not null)
        {
            S.Attempt = leg.Attempt;
            S.CallerTargets = CallDialogs.Keep(leg.CallerTargets);
        }

        // The record is serialized now, so the reservations below may run while it is being written. This activation
        // wakes at the lease end; a runtime that loads the record after a crash wakes it at once to finish it.
        // Never cancelled by the caller: should the releases below fail too (a silo that is stopping refuses the shard's
        // messages), the record is what the edge's abandon, or the due scan, finds to give the slots back; a write
        // dropped from its queue at the deadline left them to the early lease (docs/reliability.md, "Rolling restart of
        // the silos").
        var record = _state.WriteAsync(LeaseDue, now, CancellationToken.None);

        // The limits' own answers: a reservation once sent is answered by its limit whether or not the caller still
        // waits, so only the wait below takes the caller's cancellation.
        var answers = ReserveAll(limits, CancellationToken.None);
        var reservations = cancellationToken.CanBeCanceled ? Array.ConvertAll(answers, a => a.WaitAsync(cancellationToken)) : answers;
        try
        {
            await Task.WhenAll(reservations);
            await record;
        }
        catch (Exception)
        {
            await ObserveAsync(record);
            if (cancellationToken.IsCancellationRequested)
            {
                // The caller gave up (the edge's deadline) with reservations on their way. A release sent now can reach a
                // limit before its reservation (forwarded to an activation that moved while a silo shut down), find
                // nothing, and the slot then stays held until the early lease, with no record to recover it if the
                // record's write was cancelled (found by SiloRollingRestartTests, docs/reliability.md "Rolling restart
                // of the silos"). So the releases below go out after the limits' answers (Orleans' response timeout
                // bounds the wait). First the limits still deciding are told the admission was given up: a reservation
                // still waiting for its limit's turn is then answered Dropped, reserving and writing nothing, so past
                // capacity the hot limits do not spend turns on calls already refused (docs/architecture.md, "Overload
                // control").
                await Task.WhenAll(limits.Where((_, i) => !answers[i].IsCompleted).Select(l => ObserveAsync(_limits.DropAsync(LimitKey.Parse(l.Key), _callKey))));
                await Task.WhenAll(Array.ConvertAll(answers, ObserveAsync));
                reservations = answers;
            }

            if (_unread && record.Exception?.InnerException is StaleGrainStateException)
            {
                // Not new after all: a record exists that was not read. What was reserved may be that call's own slots
                // (reserving is idempotent), so nothing is given back here; the caller reads the record, asks again,
                // and then gives back what this attempt took and the call does not hold. (Every reservation has
                // completed: Task.WhenAll above was awaited before the record.)
                throw new CallRecordExistsException(_callKey, MayHold(limits, reservations).ConvertAll(static l => l.Key));
            }

            // A limit could not answer or the record was not written: give back whatever was taken. If that fails
            // too, the record (when it was written) keeps the limits, and the early lease releases them.
            await TryReleaseAsync(MayHold(limits, reservations));
            throw;
        }

        _unread = false;

        var refused = FirstRefusal(reservations);
        if (refused >= 0 && limits.Count > 1)
        {
            // Calls racing for the last slots of the same limits can refuse each other when they reserve in parallel
            // (one holds the caller's last slot, the other the callee's). Give back what was taken and ask again one limit
            // at a time in key order: calls that share their limits then never refuse each other.
            await ReleaseAsync(MayHold(limits, reservations), cancellationToken);
            reservations = await ReserveInOrderAsync(limits, cancellationToken);
            refused = FirstRefusal(reservations);
        }

        if (refused >= 0)
        {
            await RejectAsync(limits, reservations, refused, cancellationToken);
            return StoredRejection();
        }

        // Durable as Admitting with every limit held: that is what an admitted, unconfirmed call is on recovery.
        S.Phase = CallPhase.Admitted;
        return AdmitResult.Admitted(_leases.Early);
    }

    /// <summary>
    /// The call was answered (2xx): every limit moves to the confirmed lease. False when the call is not
    /// admitted, or a limit had already reclaimed its slot (the call is then ended and must be torn down).
    /// </summary>
    public Task<bool> ConfirmAsync(CancellationToken cancellationToken) => ConfirmAsync(null, cancellationToken);

    /// <summary>
    /// Like <see cref="ConfirmAsync(CancellationToken)"/>; the call also learns its dialog from <paramref name="answer"/>,
    /// in the same write. The first answer with a storable tag is kept: a later 2xx (another fork's, RFC 3261 13.2.2.4)
    /// does not replace it. Targets past <see cref="CallDialogs.MaxTargets"/>, empty or over-long ones are not stored;
    /// the leases are confirmed whatever the answer holds.
    /// </summary>
    public async Task<bool> ConfirmAsync(CallAnswer? answer, CancellationToken cancellationToken)
    {
        if (S.Phase is not (CallPhase.Admitted or CallPhase.Admitting))
        {
            return false;
        }

        // Every limit and the record are written together (one group commit); the record's longer lease only
        // matters once the limits hold the confirmed lease too, and a lost limit ends the call below.
        var confirms = StartEach(
            S.Limits,
            static (grain, limit, ct) => grain._limits.ConfirmAsync(LimitKey.Parse(limit.Key), grain._callKey, grain._leases.Confirmed, ct),
            cancellationToken);

        S.Phase = CallPhase.Admitted;
        S.Confirmed = true;
        S.LeaseEndMs = (_time.GetUtcNow() + _leases.Confirmed).ToUnixTimeMilliseconds();
        if (answer is not null && S.CalleeTag is null && CallDialogs.IsStorableTag(answer.CalleeTag))
        {
            S.CalleeTag = answer.CalleeTag;
            S.CalleeTargets = CallDialogs.Keep(answer.CalleeTargets);
            S.Teardown = CallDialogs.IsStorable(answer.Teardown) ? answer.Teardown : null;
        }

        var record = _state.WriteAsync(LeaseDue, cancellationToken);
        try
        {
            await Task.WhenAll(confirms);
        }
        catch (Exception)
        {
            await ObserveAsync(record);
            throw;
        }

        await record;
        if (Array.Exists(confirms, static c => !c.Result))
        {
            await EndLostAsync(cancellationToken);
            return false;
        }

        return true;
    }

    /// <summary>An in-dialog refresh (re-INVITE, UPDATE, session timer): extends every lease.</summary>
    public async Task<bool> RenewAsync(CancellationToken cancellationToken)
    {
        if (S.Phase is not (CallPhase.Admitted or CallPhase.Admitting))
        {
            return false;
        }

        var lease = S.Confirmed ? _leases.Confirmed : _leases.Early;
        var lost = false;
        foreach (var limit in S.Limits)
        {
            lost |= !await _limits.RenewAsync(LimitKey.Parse(limit.Key), _callKey, lease, cancellationToken);
        }

        if (lost)
        {
            await EndLostAsync(cancellationToken);
            return false;
        }

        S.LeaseEndMs = Math.Max(S.LeaseEndMs, (_time.GetUtcNow() + lease).ToUnixTimeMilliseconds());
        await _state.WriteAsync(LeaseDue, cancellationToken);
        return true;
    }

    /// <summary>The call ended (BYE, CANCEL, final non-2xx, timeout): releases every slot. Idempotent.</summary>
    public async Task<bool> EndAsync(CancellationToken cancellationToken)
    {
        if (S.Phase is CallPhase.New or CallPhase.Rejected or CallPhase.Ended)
        {
            return false;
        }

        await ReleaseAsync(S.Limits, cancellationToken);
        S.Phase = CallPhase.Ended;
        await _state.ClearAsync(cancellationToken);
        return true;
    }

    /// <summary>The runtime woke the grain at its due time.</summary>
    public async Task OnTimerAsync(CancellationToken cancellationToken)
    {
        var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        switch (S.Phase)
        {
            case CallPhase.Admitting when S.LeaseEndMs > nowMs:
                await FinishAsync(cancellationToken);
                break;
            case CallPhase.Admitted or CallPhase.Admitting when S.LeaseEndMs <= nowMs:
                // The limits reclaim their own slots when the lease ends; this releases them in case a
                // limit's lease was renewed without the call record, and closes the record.
                await EndAsync(cancellationToken);
                break;
            case CallPhase.Rejected or CallPhase.Ended:
                // A closed record kept by an earlier version (which deleted it after a retention time).
                await _state.ClearAsync(cancellationToken);
                break;
        }
    }

    public CallSnapshot Snapshot() => new(
        _callKey,
        S.Phase,
        S.Confirmed,
        S.Limits.ConvertAll(static l => new LimitRequest(l.Key, l.Direction, l.PerCallMax, l.Tenant)),
        S.RejectedKey,
        S.Reason,
        S.Phase == CallPhase.Admitted ? DateTimeOffset.FromUnixTimeMilliseconds(S.LeaseEndMs) : null,
        S.CalleeTag);

    /// <summary>
    /// The dialog an edge checks an in-dialog request against: null unless the call is being admitted or is up. Before
    /// the answer its callee tag is null and it is not confirmed.
    /// </summary>
    public CallDialog? Dialog() => S.Phase is CallPhase.Admitting or CallPhase.Admitted
        ? new CallDialog(S.CalleeTag, S.CallerTargets is { } caller ? [.. caller] : [], S.CalleeTargets is { } callee ? [.. callee] : [], S.Confirmed)
        : null;

    /// <summary>What an operator's end needs: the phase, whether the call was answered, and the BYEs stored with its answer.</summary>
    public CallTeardownInfo TeardownInfo() => new(S.Phase, S.Confirmed, S.Phase == CallPhase.Admitted && S.Confirmed ? S.Teardown : null);

    /// <summary>The attempt that admitted the call, as stored (null when none).</summary>
    public string? Attempt => S.Attempt;

    /// <summary>
    /// Recovery of a call stored as <see cref="CallPhase.Admitting"/> (a crash came before or after its answer): every
    /// limit is asked again (a limit that holds the call admits it without counting it twice), so the call ends up
    /// holding all of its limits, admitted, or none of them, rejected.
    /// </summary>
    private async Task FinishAsync(CancellationToken cancellationToken)
    {
        var limits = S.Limits;
        var reservations = ReserveAll(limits, cancellationToken);
        await Task.WhenAll(reservations);
        var refused = FirstRefusal(reservations);
        if (refused >= 0)
        {
            await RejectAsync(limits, reservations, refused, cancellationToken);
            return;
        }

        S.Phase = CallPhase.Admitted;
        await _state.WriteAsync(LeaseDue, cancellationToken);
    }

    /// <summary>
    /// Asks every limit at once what a reservation would answer (from memory, no write) and returns the first refusal in
    /// key order, or null. Advice only: a limit that cannot answer (or a silo of a version without the question, during a
    /// rolling upgrade) leaves the decision to the reservations, and a limit that would admit is still asked for the slot.
    /// </summary>
    private async Task<(int Index, ReserveOutcome Outcome)?> FirstCheckedRefusalAsync(List<CallLimit> limits, CancellationToken cancellationToken)
    {
        var checks = StartEach(
            limits,
            static (grain, limit, ct) => grain._limits.CheckAsync(LimitKey.Parse(limit.Key), grain._callKey, limit.Direction, limit.PerCallMax, limit.Tenant, ct),
            cancellationToken);
        try
        {
            await Task.WhenAll(checks);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
#pragma warning disable CA1031 // advice only (see the summary): the reservations report a limit that cannot answer
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        for (var i = 0; i < checks.Length; i++)
        {
            if (checks[i].IsCompletedSuccessfully && !checks[i].Result.Admitted)
            {
                return (i, checks[i].Result);
            }
        }

        return null;
    }

    /// <summary>Asks every limit for a slot at once (one group commit).</summary>
    private Task<ReserveOutcome>[] ReserveAll(List<CallLimit> limits, CancellationToken cancellationToken) =>
        StartEach(
            limits,
            static (grain, limit, ct) => grain._limits.TryReserveAsync(LimitKey.Parse(limit.Key), grain._callKey, limit.Direction, grain._leases.Early, limit.PerCallMax, limit.Tenant, ct),
            cancellationToken);

    /// <summary>
    /// Asks the limits one after another in key order, stopping at the first refusal; the limits after it are not asked
    /// (their outcome is a refusal that holds nothing and is never the first).
    /// </summary>
    private async Task<Task<ReserveOutcome>[]> ReserveInOrderAsync(List<CallLimit> limits, CancellationToken cancellationToken)
    {
        var outcomes = new Task<ReserveOutcome>[limits.Count];
        var refused = false;
        for (var i = 0; i < limits.Count; i++)
        {
            if (refused)
            {
                outcomes[i] = Task.FromResult(ReserveOutcome.Reject(RejectReason.None, null, 0));
                continue;
            }

            var limit = limits[i];
            var outcome = await _limits.TryReserveAsync(LimitKey.Parse(limit.Key), _callKey, limit.Direction, _leases.Early, limit.PerCallMax, limit.Tenant, cancellationToken);
            outcomes[i] = Task.FromResult(outcome);
            refused = !outcome.Admitted;
        }

        return outcomes;
    }

    /// <summary>
    /// Starts one operation per limit without waiting between them, so their writes share a group commit. A limit
    /// that throws at once gives a faulted task: every other limit is still asked, and the caller sees the failure
    /// when it awaits.
    /// </summary>
    private Task<T>[] StartEach<T>(List<CallLimit> limits, Func<CallAdmission, CallLimit, CancellationToken, Task<T>> start, CancellationToken cancellationToken)
    {
        var tasks = new Task<T>[limits.Count];
        for (var i = 0; i < tasks.Length; i++)
        {
            try
            {
                tasks[i] = start(this, limits[i], cancellationToken);
            }
#pragma warning disable CA1031 // kept in its task (see the summary)
            catch (Exception ex)
#pragma warning restore CA1031
            {
                tasks[i] = Task.FromException<T>(ex);
            }
        }

        return tasks;
    }

    /// <summary>The first limit, in reservation order, that refused; -1 when every one admitted.</summary>
    private static int FirstRefusal(Task<ReserveOutcome>[] reservations) =>
        Array.FindIndex(reservations, static r => !r.Result.Admitted);

    /// <summary>Limit <paramref name="refused"/> refused: the limits that admitted give their slot back and the refusal is recorded.</summary>
    private async Task RejectAsync(List<CallLimit> limits, Task<ReserveOutcome>[] reservations, int refused, CancellationToken cancellationToken)
    {
        await ReleaseAsync(MayHold(limits, reservations), cancellationToken);
        var outcome = reservations[refused].Result;
        S.Phase = CallPhase.Rejected;
        S.RejectedKey = limits[refused].Key;
        S.Reason = outcome.Reason;
        S.Limit = outcome.Limit;
        S.Current = outcome.Current;
        S.RetryAfterMs = (long?)outcome.RetryAfter?.TotalMilliseconds;
        await _state.ClearAsync(cancellationToken);
    }

    private AdmitResult StoredRejection() =>
        new(AdmitStatus.Rejected, S.RejectedKey, S.Reason, S.Limit, S.Current, null, RetryAfter: S.RetryAfterMs is { } ms ? TimeSpan.FromMilliseconds(ms) : null);

    /// <summary>
    /// A limit no longer holds the call (its lease ended first): keeping the call up would count it
    /// nowhere, so every slot is released and the call ends; the edge must tear it down.
    /// </summary>
    private async Task EndLostAsync(CancellationToken cancellationToken)
    {
        await ReleaseAsync(S.Limits, cancellationToken);
        S.Phase = CallPhase.Ended;
        await _state.ClearAsync(cancellationToken);
    }

    private async Task TryReleaseAsync(List<CallLimit> limits)
    {
        try
        {
            await ReleaseAsync(limits, CancellationToken.None);
        }
#pragma warning disable CA1031 // the caller rethrows the first failure; recovery completes the release
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    /// <summary>Releases every limit in <paramref name="limits"/> at once (one group commit).</summary>
    private Task ReleaseAsync(List<CallLimit> limits, CancellationToken cancellationToken) =>
        limits.Count == 0
            ? Task.CompletedTask
            : Task.WhenAll(StartEach(limits, static (grain, limit, ct) => grain._limits.ReleaseAsync(LimitKey.Parse(limit.Key), grain._callKey, ct), cancellationToken));

    /// <summary>The limits a concurrent reservation may have taken: those that admitted and those whose outcome is unknown.</summary>
    private static List<CallLimit> MayHold(List<CallLimit> limits, Task<ReserveOutcome>[] reservations)
    {
        var held = new List<CallLimit>(limits.Count);
        for (var i = 0; i < limits.Count; i++)
        {
            if (!reservations[i].IsCompletedSuccessfully || reservations[i].Result.Admitted)
            {
                held.Add(limits[i]);
            }
        }

        return held;
    }

    /// <summary>
    /// Gives back, after a <see cref="CallRecordExistsException"/> and a second admission on the stored record, what the
    /// first attempt took that the call does not hold now.
    /// </summary>
    public Task ReleaseNotHeldAsync(IReadOnlyList<string> taken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(taken);
        var holds = S.Phase is CallPhase.Admitting or CallPhase.Admitted;
        var release = new List<CallLimit>();
        foreach (var key in taken)
        {
            if (!holds || !S.Limits.Exists(l => l.Key == key))
            {
                release.Add(new CallLimit { Key = key });
            }
        }

        return ReleaseAsync(release, cancellationToken);
    }

    private static async Task ObserveAsync(Task task)
    {
        try
        {
            await task;
        }
#pragma warning disable CA1031 // the first failure is the one rethrown; this one only must not go unobserved
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private static bool SameLimits(List<CallLimit> a, List<CallLimit> b)
    {
        if (a.Count != b.Count)
        {
            return false;
        }

        for (var i = 0; i < a.Count; i++)
        {
            if (a[i].Key != b[i].Key || a[i].Direction != b[i].Direction || a[i].Tenant != b[i].Tenant)
            {
                return false;
            }
        }

        return true;
    }

    private static bool TryNormalize(IReadOnlyList<LimitRequest> requests, out List<CallLimit> limits, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error)
    {
        limits = new List<CallLimit>(requests.Count);
        if (requests.Count > MaxLimitsPerCall)
        {
            error = $"a call may touch at most {MaxLimitsPerCall} limits (got {requests.Count})";
            return false;
        }

        foreach (var request in requests)
        {
            if (!LimitKey.TryParse(request.Key, out var key, out error))
            {
                return false;
            }

            if (request.PerCallMax < 0)
            {
                error = $"per-call maximum for '{request.Key}' must be 0 or more (was {request.PerCallMax})";
                return false;
            }

            if (request.Direction is not (Direction.Inbound or Direction.Outbound))
            {
                error = $"direction of '{request.Key}' must be Inbound or Outbound";
                return false;
            }

            if (request.Tenant is { Length: 0 or > LimitKey.MaxValueLength })
            {
                error = $"tenant of '{request.Key}' must have 1 to {LimitKey.MaxValueLength} characters";
                return false;
            }

            limits.Add(new CallLimit { Key = key.ToString(), Direction = request.Direction, PerCallMax = request.PerCallMax, Tenant = request.Tenant });
        }

        // The fixed order every call reserves in, so two calls never hold each other's first limit
        // while waiting for the second.
        limits.Sort(static (a, b) => string.CompareOrdinal(a.Key, b.Key));
        for (var i = 1; i < limits.Count; i++)
        {
            if (limits[i].Key == limits[i - 1].Key)
            {
                error = $"limit '{limits[i].Key}' is requested twice";
                return false;
            }
        }

        error = null;
        return true;
    }
}

/// <summary>
/// An admission that took its call for new found a stored record (see <see cref="CallAdmission"/>'s <c>unread</c>):
/// nothing was given back; <see cref="Taken"/> names the limits the attempt may hold.
/// </summary>
public sealed class CallRecordExistsException(string callKey, IReadOnlyList<string> taken)
    : Exception($"call {callKey} has a stored record that was not read")
{
    public IReadOnlyList<string> Taken { get; } = taken;
}
