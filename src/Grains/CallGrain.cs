namespace CallState.Grains;

/// <summary>Where a call is in its admission.</summary>
public enum CallPhase : byte
{
    New = 0,

    /// <summary>Reserving; persisted before the first reservation so a crash can be undone.</summary>
    Admitting = 1,
    Admitted = 2,
    Rejected = 3,
    Ended = 4,
}

/// <summary>One limit a call asks for: the limit key (<c>user/alice</c>), direction, and for per-key limits the maximum from the call.</summary>
public sealed record LimitRequest(string Key, Direction Direction, int? PerCallMax = null);

public enum AdmitStatus : byte
{
    Admitted = 1,
    Rejected = 2,

    /// <summary>The request itself is wrong (unknown key prefix, duplicate key, negative maximum, ended call).</summary>
    Invalid = 3,
}

/// <summary>The answer to an admission: admitted, or which limit refused and why.</summary>
public sealed record AdmitResult(AdmitStatus Status, string? LimitKey, RejectReason Reason, int? Limit, int Current, string? Error)
{
    public static AdmitResult Admitted() => new(AdmitStatus.Admitted, null, RejectReason.None, null, 0, null);

    /// <summary>The reason as logs and metrics spell it (<c>USER_TOTAL_LIMIT_REACHED</c>).</summary>
    public string ReasonCode => Reason.ToCode();

    public static AdmitResult Invalid(string error) => new(AdmitStatus.Invalid, null, RejectReason.None, null, 0, error);
}

/// <summary>A requested limit as persisted with the call.</summary>
public sealed class CallLimit
{
    public string Key { get; set; } = "";

    public Direction Direction { get; set; }

    public int? PerCallMax { get; set; }
}

/// <summary>The persisted state of one call grain.</summary>
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

    public long StartedMs { get; set; }

    public long LeaseEndMs { get; set; }

    /// <summary>When the call was rejected or ended; the record is deleted <see cref="LeaseOptions.EndedRetention"/> later.</summary>
    public long ClosedMs { get; set; }
}

/// <summary>A call as the admin API shows it.</summary>
public sealed record CallSnapshot(string CallKey, CallPhase Phase, bool Confirmed, IReadOnlyList<LimitRequest> Limits, string? RejectedKey, RejectReason Reason, DateTimeOffset? LeaseEnd);

/// <summary>
/// One call (key: Call-ID and From-tag). Reserves its limits in a fixed order, all or nothing, records the
/// outcome, and releases everything when the call ends. Any edge can end a call knowing only its key.
/// After a crash mid-admission, reactivation undoes the half-done reservation (the caller never had an answer).
/// </summary>
public sealed class CallGrain
{
    /// <summary>Most limits one call may touch; a user, a trunk, a few per-key tags.</summary>
    public const int MaxLimitsPerCall = 16;

    private readonly string _callKey;
    private readonly IGrainState<CallGrainState> _state;
    private readonly ILimitGrainClient _limits;
    private readonly LeaseOptions _leases;
    private readonly TimeProvider _time;

    public CallGrain(string callKey, IGrainState<CallGrainState> state, ILimitGrainClient limits, LeaseOptions leases, TimeProvider time)
    {
        _callKey = callKey;
        _state = state;
        _limits = limits;
        _leases = leases;
        _time = time;
    }

    private CallGrainState S => _state.State;

    /// <summary>
    /// When the call record wakes after its lease: a little after the limits' own lease ends, so the
    /// limits reclaim (and count) their slots first; the call then closes its record.
    /// </summary>
    private DateTimeOffset LeaseDue => DateTimeOffset.FromUnixTimeMilliseconds(S.LeaseEndMs) + LeaseGrace;

    /// <summary>See <see cref="LeaseDue"/>.</summary>
    public static readonly TimeSpan LeaseGrace = TimeSpan.FromSeconds(1);

    /// <summary>Called by the runtime when the grain is activated: finishes a crash's leftovers.</summary>
    public Task OnActivateAsync(CancellationToken cancellationToken) =>
        S.Phase == CallPhase.Admitting ? UndoAsync(cancellationToken) : Task.CompletedTask;

    public async Task<AdmitResult> AdmitAsync(IReadOnlyList<LimitRequest> requests, CancellationToken cancellationToken)
    {
        switch (S.Phase)
        {
            case CallPhase.Admitted:
                return AdmitResult.Admitted();
            case CallPhase.Rejected:
                return new AdmitResult(AdmitStatus.Rejected, S.RejectedKey, S.Reason, S.Limit, S.Current, null);
            case CallPhase.Ended:
                return AdmitResult.Invalid($"call '{_callKey}' has already ended");
            case CallPhase.Admitting:
                // A crash cut the admission and nobody was answered: undo it and admit afresh (the caller's retry).
                await UndoAsync(cancellationToken).ConfigureAwait(false);
                break;
        }

        if (!TryNormalize(requests, out var limits, out var error))
        {
            return AdmitResult.Invalid(error);
        }

        var now = _time.GetUtcNow();
        S.Phase = CallPhase.Admitting;
        S.Limits = limits;
        S.StartedMs = now.ToUnixTimeMilliseconds();

        // Persist the intent first: if this process dies between reservations, the due time makes the
        // next activation (after restart) undo whatever was taken.
        await _state.WriteAsync(now, cancellationToken).ConfigureAwait(false);

        var taken = 0;
        try
        {
            for (; taken < limits.Count; taken++)
            {
                var limit = limits[taken];
                var outcome = await _limits.TryReserveAsync(LimitKey.Parse(limit.Key), _callKey, limit.Direction, _leases.Early, limit.PerCallMax, cancellationToken).ConfigureAwait(false);
                if (!outcome.Admitted)
                {
                    await ReleaseAsync(limits, taken, cancellationToken).ConfigureAwait(false);
                    S.Phase = CallPhase.Rejected;
                    S.RejectedKey = limit.Key;
                    S.Reason = outcome.Reason;
                    S.Limit = outcome.Limit;
                    S.Current = outcome.Current;
                    await CloseAsync(cancellationToken).ConfigureAwait(false);
                    return new AdmitResult(AdmitStatus.Rejected, limit.Key, outcome.Reason, outcome.Limit, outcome.Current, null);
                }
            }
        }
        catch (Exception)
        {
            // A limit could not answer: give back what was taken. If that fails too, the persisted
            // Admitting phase (due now) makes the next activation finish the undo.
            await TryReleaseAsync(limits, taken).ConfigureAwait(false);
            throw;
        }

        S.Phase = CallPhase.Admitted;
        S.LeaseEndMs = (_time.GetUtcNow() + _leases.Early).ToUnixTimeMilliseconds();
        await _state.WriteAsync(LeaseDue, cancellationToken).ConfigureAwait(false);
        return AdmitResult.Admitted();
    }

    /// <summary>
    /// The call was answered (2xx): every limit moves to the confirmed lease. False when the call is not
    /// admitted, or a limit had already reclaimed its slot (the call is then ended and must be torn down).
    /// </summary>
    public async Task<bool> ConfirmAsync(CancellationToken cancellationToken)
    {
        if (S.Phase != CallPhase.Admitted)
        {
            return false;
        }

        var lost = false;
        foreach (var limit in S.Limits)
        {
            lost |= !await _limits.ConfirmAsync(LimitKey.Parse(limit.Key), _callKey, _leases.Confirmed, cancellationToken).ConfigureAwait(false);
        }

        if (lost)
        {
            await EndLostAsync(cancellationToken).ConfigureAwait(false);
            return false;
        }

        S.Confirmed = true;
        S.LeaseEndMs = (_time.GetUtcNow() + _leases.Confirmed).ToUnixTimeMilliseconds();
        await _state.WriteAsync(LeaseDue, cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>An in-dialog refresh (re-INVITE, UPDATE, session timer): extends every lease.</summary>
    public async Task<bool> RenewAsync(CancellationToken cancellationToken)
    {
        if (S.Phase != CallPhase.Admitted)
        {
            return false;
        }

        var lease = S.Confirmed ? _leases.Confirmed : _leases.Early;
        var lost = false;
        foreach (var limit in S.Limits)
        {
            lost |= !await _limits.RenewAsync(LimitKey.Parse(limit.Key), _callKey, lease, cancellationToken).ConfigureAwait(false);
        }

        if (lost)
        {
            await EndLostAsync(cancellationToken).ConfigureAwait(false);
            return false;
        }

        S.LeaseEndMs = Math.Max(S.LeaseEndMs, (_time.GetUtcNow() + lease).ToUnixTimeMilliseconds());
        await _state.WriteAsync(LeaseDue, cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>The call ended (BYE, CANCEL, final non-2xx, timeout): releases every slot. Idempotent.</summary>
    public async Task<bool> EndAsync(CancellationToken cancellationToken)
    {
        if (S.Phase is CallPhase.New or CallPhase.Rejected or CallPhase.Ended)
        {
            return false;
        }

        await ReleaseAsync(S.Limits, S.Limits.Count, cancellationToken).ConfigureAwait(false);
        S.Phase = CallPhase.Ended;
        await CloseAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>The runtime woke the grain at its due time.</summary>
    public async Task OnTimerAsync(CancellationToken cancellationToken)
    {
        var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        switch (S.Phase)
        {
            case CallPhase.Admitting:
                await UndoAsync(cancellationToken).ConfigureAwait(false);
                break;
            case CallPhase.Admitted when S.LeaseEndMs <= nowMs:
                // The limits reclaim their own slots when the lease ends; this releases them in case a
                // limit's lease was renewed without the call record, and closes the record.
                await EndAsync(cancellationToken).ConfigureAwait(false);
                break;
            case CallPhase.Rejected or CallPhase.Ended when S.ClosedMs + (long)_leases.EndedRetention.TotalMilliseconds <= nowMs:
                await _state.ClearAsync(cancellationToken).ConfigureAwait(false);
                break;
        }
    }

    public CallSnapshot Snapshot() => new(
        _callKey,
        S.Phase,
        S.Confirmed,
        S.Limits.ConvertAll(static l => new LimitRequest(l.Key, l.Direction, l.PerCallMax)),
        S.RejectedKey,
        S.Reason,
        S.Phase == CallPhase.Admitted ? DateTimeOffset.FromUnixTimeMilliseconds(S.LeaseEndMs) : null);

    /// <summary>
    /// Gives back whatever a cut admission took and forgets the call: no answer was ever given for it, so a retry of
    /// the same call is a fresh admission.
    /// </summary>
    private async Task UndoAsync(CancellationToken cancellationToken)
    {
        // Release is idempotent, so releasing limits that were never reserved is harmless.
        await ReleaseAsync(S.Limits, S.Limits.Count, cancellationToken).ConfigureAwait(false);
        await _state.ClearAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// A limit no longer holds the call (its lease ended first): keeping the call up would count it
    /// nowhere, so every slot is released and the call ends; the edge must tear it down.
    /// </summary>
    private async Task EndLostAsync(CancellationToken cancellationToken)
    {
        await ReleaseAsync(S.Limits, S.Limits.Count, cancellationToken).ConfigureAwait(false);
        S.Phase = CallPhase.Ended;
        await CloseAsync(cancellationToken).ConfigureAwait(false);
    }

    private Task CloseAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        S.ClosedMs = now.ToUnixTimeMilliseconds();
        return _state.WriteAsync(now + _leases.EndedRetention, cancellationToken);
    }

    private async Task TryReleaseAsync(List<CallLimit> limits, int count)
    {
        try
        {
            await ReleaseAsync(limits, count, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // the caller rethrows the first failure; recovery completes the release
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private async Task ReleaseAsync(List<CallLimit> limits, int count, CancellationToken cancellationToken)
    {
        for (var i = count - 1; i >= 0; i--)
        {
            await _limits.ReleaseAsync(LimitKey.Parse(limits[i].Key), _callKey, cancellationToken).ConfigureAwait(false);
        }
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

            limits.Add(new CallLimit { Key = key.ToString(), Direction = request.Direction, PerCallMax = request.PerCallMax });
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
