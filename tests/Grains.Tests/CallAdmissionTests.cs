using CallState.Grains.Tests.Infrastructure;

namespace CallState.Grains.Tests;

/// <summary>A call's admission across its limits: all or nothing, in a fixed order, idempotent, crash-safe.</summary>
public sealed class CallAdmissionTests
{
    private readonly List<string> _events = [];
    private readonly FakeTimeProvider _time = new();
    private readonly LeaseOptions _leases = new();
    private readonly InMemoryLimitClient _limits;

    public CallAdmissionTests() => _limits = new InMemoryLimitClient(_time, _events);

    private CallAdmission NewCall(InMemoryGrainState<CallGrainState> state, string callKey = "call-1") =>
        new(callKey, state, _limits, _leases, _time);

    private (CallAdmission Call, InMemoryGrainState<CallGrainState> State) NewCall(string callKey = "call-1")
    {
        var state = new InMemoryGrainState<CallGrainState>(events: _events);
        return (NewCall(state, callKey), state);
    }

    private static LimitRequest[] UserTrunkKey(Direction direction = Direction.Inbound) =>
    [
        new("user/alice", direction),
        new("trunk/carrier", direction),
        new("key/+12345678", direction, 3),
    ];

    private Task<AdmitResult> AdmitAsync(string callKey, params LimitRequest[] requests) =>
        NewCall(callKey).Call.AdmitAsync(requests, CancellationToken.None);

    [Fact]
    public async Task A_call_within_every_limit_is_admitted_and_holds_a_slot_on_each()
    {
        var (call, state) = NewCall();

        var result = await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        Assert.Equal(AdmitResult.Admitted(_leases.Early), result);
        Assert.Equal(CallPhase.Admitted, state.State.Phase);
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
        Assert.Equal(1, _limits.Held("key/+12345678"));
        // Written once, together with the reservations: storage holds an admitted, unconfirmed call as Admitting.
        Assert.Equal(CallPhase.Admitting, state.Persisted!.Phase);
        Assert.Single(state.Writes);
        Assert.Equal(_time.GetUtcNow() + _leases.Early + CallAdmission.LeaseGrace, state.TimerDueAt);
        Assert.Equal(_time.GetUtcNow() + _leases.Early, call.Snapshot().LeaseEnd);
    }

    [Fact]
    public async Task A_caller_that_gives_up_while_a_reservation_is_on_its_way_leaves_no_slot_held()
    {
        // The edge's deadline passes while the reservation on user/svc is still on its way to its limit (forwarded to an
        // activation that moved while a silo shut down). A release sent at once would reach the limit first and find
        // nothing, and the slot would stay held until the early lease (docs/reliability.md, "Rolling restart of the silos").
        var arrives = new TaskCompletionSource();
        var sent = _limits.Delay("user/svc", arrives.Task);
        var (call, _) = NewCall();
        using var cancel = new CancellationTokenSource();
        var admit = Task.Run(() => call.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound), new LimitRequest("user/svc", Direction.Inbound)], cancel.Token));
        await sent.WaitAsync(TimeSpan.FromSeconds(30));

        await cancel.CancelAsync();
        arrives.SetResult();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => admit.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(0, _limits.Held("user/svc"));
        var reserved = _events.IndexOf("reserved:user/svc");
        Assert.True(reserved >= 0 && reserved < _events.LastIndexOf("release:user/svc"), string.Join(", ", _events));
    }

    [Fact]
    public async Task A_caller_that_gives_up_while_the_record_is_queued_and_a_release_fails_leaves_a_record_that_ends_the_call()
    {
        // The deadline passes while the record's write waits in the group commit's queue and the reservation on user/svc
        // is on its way; the release of user/svc then fails (the shard's silo is stopping). The record must still be
        // written, so that the edge's abandon (or the due scan) finds the call and gives its slots back.
        var state = new InMemoryGrainState<CallGrainState>(events: _events);
        var queue = new TaskCompletionSource();
        state.Queue = queue.Task;
        var arrives = new TaskCompletionSource();
        var sent = _limits.Delay("user/svc", arrives.Task);
        var call = NewCall(state);
        using var cancel = new CancellationTokenSource();
        var admit = Task.Run(() => call.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound), new LimitRequest("user/svc", Direction.Inbound)], cancel.Token));
        await sent.WaitAsync(TimeSpan.FromSeconds(30));

        await cancel.CancelAsync();
        _limits.Fail("user/svc");
        queue.SetResult();
        arrives.SetResult();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => admit.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(1, _limits.Held("user/svc"));

        Assert.Equal(CallPhase.Admitting, state.Persisted?.Phase);
        _limits.Heal("user/svc");
        Assert.True(await NewCall(state.Reload()).EndAsync(CancellationToken.None));
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(0, _limits.Held("user/svc"));
    }

    [Fact]
    public async Task A_call_a_limit_would_refuse_is_refused_without_reserving_or_writing_anything()
    {
        // Sorted order: key/+1..., trunk/carrier, user/alice. The trunk (second) is full.
        _limits.Configure("trunk/carrier", new LimitSettings(Total: 1));
        Assert.Equal(AdmitStatus.Admitted, (await AdmitAsync("other", new LimitRequest("trunk/carrier", Direction.Inbound))).Status);
        _events.Clear();

        var (call, state) = NewCall();
        var result = await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        Assert.Equal(new AdmitResult(AdmitStatus.Rejected, "trunk/carrier", RejectReason.TrunkTotalLimitReached, 1, 1, null), result);
        // Every limit is asked what it would answer, all at once; the trunk's refusal ends it: no reservation, no release,
        // no write of the call's record.
        Assert.Equal(["check:key/+12345678", "check:trunk/carrier", "check:user/alice"], _events);
        Assert.Empty(state.Writes);
        Assert.Equal(0, state.Clears);
        Assert.Equal(0, _limits.Held("key/+12345678"));
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
        Assert.Equal(CallPhase.Rejected, call.Snapshot().Phase);
        Assert.Equal(RejectReason.TrunkTotalLimitReached, call.Snapshot().Reason);

        // A retransmission to the same activation gets the same refusal from memory, asking nothing.
        _events.Clear();
        Assert.Equal(result, await call.AdmitAsync(UserTrunkKey(), CancellationToken.None));
        Assert.Empty(_events);
    }

    [Fact]
    public async Task When_the_second_limit_refuses_the_others_are_released_and_the_result_names_the_refusal()
    {
        // Sorted order: key/+1..., trunk/carrier, user/alice. The trunk (second) is full, and its check says otherwise: a
        // racing call took the slot between the check and the reservation.
        _limits.Configure("trunk/carrier", new LimitSettings(Total: 1));
        Assert.Equal(AdmitStatus.Admitted, (await AdmitAsync("other", new LimitRequest("trunk/carrier", Direction.Inbound))).Status);
        _limits.ChecksAdmit = true;
        _events.Clear();

        var (call, state) = NewCall();
        var result = await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        Assert.Equal(new AdmitResult(AdmitStatus.Rejected, "trunk/carrier", RejectReason.TrunkTotalLimitReached, 1, 1, null), result);
        Assert.Equal(0, _limits.Held("key/+12345678"));
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
        // Every limit is asked at once; those that admitted give their slot back; then the limits are asked again one at
        // a time in key order, stopping at the refusal (user/alice, after it, is not asked again).
        Assert.Equal(
            ["reserve:key/+12345678", "reserve:trunk/carrier", "reserve:user/alice", "release:key/+12345678", "release:user/alice",
             "reserve:key/+12345678", "reserve:trunk/carrier", "release:key/+12345678"],
            _events.Where(e => !e.StartsWith("write", StringComparison.Ordinal) && !e.StartsWith("clear", StringComparison.Ordinal) && !e.StartsWith("check", StringComparison.Ordinal)));
        // The refusal holds nothing, so nothing is kept in storage; the activation remembers it until it goes.
        Assert.Null(state.Persisted);
        Assert.Equal(CallPhase.Rejected, call.Snapshot().Phase);
        Assert.Equal(RejectReason.TrunkTotalLimitReached, call.Snapshot().Reason);
    }

    [Fact]
    public async Task Limits_are_reserved_in_sorted_order_whatever_the_request_order()
    {
        LimitRequest[] forward = [new("key/b", Direction.Inbound), new("trunk/t", Direction.Inbound), new("user/u", Direction.Inbound)];
        var backward = forward.Reverse().ToArray();
        LimitRequest[] mixed = [forward[1], forward[2], forward[0]];
        string[] expected = ["reserve:key/b", "reserve:trunk/t", "reserve:user/u"];

        foreach (var (requests, i) in new[] { forward, backward, mixed }.Select((r, i) => (r, i)))
        {
            _events.Clear();
            var (call, state) = NewCall($"call-{i}");
            Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(requests, CancellationToken.None)).Status);
            Assert.Equal(expected, _events.Where(e => e.StartsWith("reserve", StringComparison.Ordinal)));
            Assert.Equal(["key/b", "trunk/t", "user/u"], state.Persisted!.Limits.Select(l => l.Key));
        }
    }

    [Fact]
    public async Task Admitting_is_written_with_the_limits_and_the_early_lease_as_due_time_before_any_answer()
    {
        var (call, state) = NewCall();

        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        // After the checks (which write nothing), the record's write goes out first, then the reservations.
        var events = _events.SkipWhile(e => e.StartsWith("check:", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, _events.Count - events.Count);
        Assert.Equal("write", events[0]);
        Assert.StartsWith("reserve:", events[1], StringComparison.Ordinal);
        var (first, dueAt) = state.Writes[0];
        Assert.Equal(CallPhase.Admitting, first.Phase);
        Assert.Equal(3, first.Limits.Count);
        // Stored due now: a runtime that loads it after a crash finishes it at once. This activation wakes at the lease end.
        Assert.Equal(_time.GetUtcNow(), dueAt);
        Assert.Equal(_time.GetUtcNow() + _leases.Early + CallAdmission.LeaseGrace, state.TimerDueAt);
    }

    [Fact]
    public async Task Admit_twice_returns_the_stored_outcome_without_counting_twice()
    {
        _limits.Configure("user/alice", new LimitSettings(Total: 1));
        var (call, state) = NewCall();

        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(UserTrunkKey(), CancellationToken.None)).Status);
        var writes = state.Writes.Count;
        _events.Clear();
        var again = await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        Assert.Equal(AdmitResult.Admitted(_leases.Early), again);
        Assert.Empty(_events);
        Assert.Equal(writes, state.Writes.Count);
        Assert.Equal(1, _limits.Held("user/alice"));

        // The same INVITE landing on another edge: a new activation over the persisted record.
        var elsewhere = NewCall(state.Reload());
        Assert.Equal(AdmitResult.Admitted(_leases.Early), await elsewhere.AdmitAsync(UserTrunkKey(), CancellationToken.None));
        Assert.Equal(1, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task A_rejected_call_gets_the_same_rejection_on_retry_even_after_the_limit_frees_up()
    {
        _limits.Configure("user/alice", new LimitSettings(Total: 1, Outbound: 1));
        var (first, _) = NewCall("first");
        Assert.Equal(AdmitStatus.Admitted, (await first.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], CancellationToken.None)).Status);
        var (call, _) = NewCall("second");

        var rejected = await call.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], CancellationToken.None);
        Assert.True(await first.EndAsync(CancellationToken.None));
        var retry = await call.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], CancellationToken.None);

        Assert.Equal(new AdmitResult(AdmitStatus.Rejected, "user/alice", RejectReason.UserOutLimitReached, 1, 1, null), rejected);
        Assert.Equal(rejected, retry);
        Assert.Equal(0, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task End_releases_every_slot_and_is_idempotent()
    {
        var (call, state) = NewCall();
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        Assert.True(await call.EndAsync(CancellationToken.None));
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(0, _limits.Held("trunk/carrier"));
        Assert.Equal(0, _limits.Held("key/+12345678"));
        Assert.Null(state.Persisted);
        Assert.Equal(1, state.Clears);
        Assert.Equal(CallPhase.Ended, call.Snapshot().Phase);

        _events.Clear();
        Assert.False(await call.EndAsync(CancellationToken.None));
        Assert.False(await NewCall(state.Reload()).EndAsync(CancellationToken.None));
        Assert.Empty(_events);

        var admitAfterEnd = await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);
        Assert.Equal(AdmitStatus.Invalid, admitAfterEnd.Status);
        Assert.Equal(0, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task End_from_another_edge_knowing_only_the_call_key_releases_the_slots()
    {
        var (call, state) = NewCall();
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        Assert.True(await NewCall(state.Reload()).EndAsync(CancellationToken.None));

        Assert.Equal(0, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task End_of_a_call_never_seen_is_harmless()
    {
        var (call, state) = NewCall("unknown");

        Assert.False(await call.EndAsync(CancellationToken.None));

        Assert.Empty(_events);
        Assert.Empty(state.Writes);
        Assert.Equal(CallPhase.New, state.State.Phase);
    }

    [Theory]
    [InlineData("group/sales", null, "unknown limit key prefix")]
    [InlineData("user/", null, "empty value")]
    [InlineData("key/+1", -1, "must be 0 or more")]
    public async Task Invalid_requests_are_refused_with_an_error_and_nothing_is_reserved(string badKey, int? max, string error)
    {
        var (call, state) = NewCall();

        var result = await call.AdmitAsync([new LimitRequest("user/alice", Direction.Inbound), new LimitRequest(badKey, Direction.Inbound, max)], CancellationToken.None);

        Assert.Equal(AdmitStatus.Invalid, result.Status);
        Assert.Contains(error, result.Error, StringComparison.Ordinal);
        Assert.Empty(_events);
        Assert.Equal(CallPhase.New, state.State.Phase);
        Assert.Equal(0, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task A_limit_requested_twice_is_invalid()
    {
        var (call, _) = NewCall();

        var result = await call.AdmitAsync([new LimitRequest("user/alice", Direction.Inbound), new LimitRequest("trunk/t", Direction.Inbound), new LimitRequest("user/alice", Direction.Outbound)], CancellationToken.None);

        Assert.Equal(AdmitStatus.Invalid, result.Status);
        Assert.Contains("'user/alice' is requested twice", result.Error, StringComparison.Ordinal);
        Assert.Empty(_events);
    }

    [Fact]
    public async Task Too_many_limits_or_an_unknown_direction_are_invalid()
    {
        var many = Enumerable.Range(0, CallAdmission.MaxLimitsPerCall + 1).Select(i => new LimitRequest($"key/k{i}", Direction.Inbound)).ToArray();
        Assert.Equal(AdmitStatus.Invalid, (await NewCall("a").Call.AdmitAsync(many, CancellationToken.None)).Status);
        Assert.Equal(AdmitStatus.Invalid, (await NewCall("b").Call.AdmitAsync([new LimitRequest("user/alice", (Direction)7)], CancellationToken.None)).Status);
        Assert.Empty(_events);
    }

    [Fact]
    public async Task A_limit_that_cannot_answer_fails_the_admission_and_what_was_taken_is_released()
    {
        _limits.Fail("trunk/carrier");
        var (call, state) = NewCall();

        await Assert.ThrowsAsync<TimeoutException>(() => call.AdmitAsync(UserTrunkKey(), CancellationToken.None));

        Assert.Equal(0, _limits.Held("key/+12345678"));
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(CallPhase.Admitting, state.Persisted!.Phase);

        // The runtime wakes it at the early lease's end and it releases every limit again (the trunk's outcome was unknown).
        _limits.Heal("trunk/carrier");
        _time.Advance(_leases.Early + CallAdmission.LeaseGrace);
        await call.OnTimerAsync(CancellationToken.None);
        Assert.Null(state.Persisted);
        Assert.Equal(CallPhase.Ended, call.Snapshot().Phase);
    }

    /// <summary>
    /// The process dies right after the first reservation succeeds (nothing else reaches a limit); returns what
    /// storage holds, as a new silo loads it, with the limits answering again.
    /// </summary>
    private async Task<InMemoryGrainState<CallGrainState>> CrashAfterFirstReservationAsync()
    {
        _limits.DieAfterReservations = 1;
        var (call, state) = NewCall();
        await Assert.ThrowsAnyAsync<Exception>(() => call.AdmitAsync(UserTrunkKey(), CancellationToken.None));
        _limits.Dead = false;
        return state.Reload();
    }

    [Fact]
    public async Task Crash_mid_admission_keeps_the_limits_a_retry_finishes_it_without_counting_twice()
    {
        var stored = await CrashAfterFirstReservationAsync();

        Assert.Equal(1, _limits.Held("key/+12345678"));
        Assert.Equal(CallPhase.Admitting, stored.State.Phase);
        Assert.Equal(["key/+12345678", "trunk/carrier", "user/alice"], stored.State.Limits.Select(l => l.Key));

        // A new silo activates the call from storage: the edge's retry finishes the admission, one slot on each limit.
        var recovered = NewCall(stored);
        var retry = await recovered.AdmitAsync(UserTrunkKey(), CancellationToken.None);
        Assert.Equal(AdmitStatus.Admitted, retry.Status);
        Assert.Equal(1, _limits.Held("key/+12345678"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
        Assert.Equal(1, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task Crash_mid_admission_is_finished_by_the_restarted_runtime_all_limits_or_none()
    {
        var stored = await CrashAfterFirstReservationAsync();
        var recovered = NewCall(stored);

        // The stored due time (now) wakes it as soon as a runtime loads it.
        await recovered.OnTimerAsync(CancellationToken.None);

        Assert.Equal(1, _limits.Held("key/+12345678"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.Equal(CallPhase.Admitted, stored.Persisted!.Phase);
        Assert.Equal(AdmitStatus.Admitted, (await recovered.AdmitAsync(UserTrunkKey(), CancellationToken.None)).Status);
    }

    [Fact]
    public async Task Crash_mid_admission_finished_where_a_limit_is_now_full_holds_none()
    {
        var stored = await CrashAfterFirstReservationAsync();
        _limits.Configure("user/alice", new LimitSettings(Total: 1));
        Assert.Equal(AdmitStatus.Admitted, (await AdmitAsync("other", new LimitRequest("user/alice", Direction.Inbound))).Status);

        await NewCall(stored).OnTimerAsync(CancellationToken.None);

        Assert.Equal(0, _limits.Held("key/+12345678"));
        Assert.Equal(0, _limits.Held("trunk/carrier"));
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.Null(stored.Persisted);
    }

    [Fact]
    public async Task Crash_mid_admission_without_a_retry_is_released_by_the_early_lease()
    {
        var recovered = NewCall(await CrashAfterFirstReservationAsync());

        _time.Advance(_leases.Early + CallAdmission.LeaseGrace);
        await recovered.OnTimerAsync(CancellationToken.None);

        Assert.Equal(0, _limits.Held("key/+12345678"));
        Assert.Equal(0, _limits.Held("trunk/carrier"));
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(CallPhase.Ended, recovered.Snapshot().Phase);
    }

    [Fact]
    public async Task Reloading_an_admitted_call_touches_no_limit_and_it_confirms()
    {
        var (call, state) = NewCall();
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);
        _events.Clear();

        var stored = state.Reload();
        var reloaded = NewCall(stored);

        Assert.Empty(_events);
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.True(await reloaded.ConfirmAsync(CancellationToken.None));
        Assert.True(stored.Persisted!.Confirmed);
    }

    [Fact]
    public async Task Timer_ends_an_admitted_call_whose_lease_has_passed()
    {
        var (call, state) = NewCall();
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        _time.Advance(_leases.Early - TimeSpan.FromSeconds(1));
        await call.OnTimerAsync(CancellationToken.None);
        Assert.Equal(CallPhase.Admitted, state.State.Phase);
        Assert.Equal(1, _limits.Held("user/alice"));

        _time.SetUtcNow(state.TimerDueAt!.Value);
        await call.OnTimerAsync(CancellationToken.None);

        Assert.Null(state.Persisted);
        Assert.Equal(CallPhase.Ended, state.State.Phase);
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(0, _limits.Held("trunk/carrier"));
    }

    [Fact]
    public async Task Confirmed_call_keeps_its_slots_past_the_early_lease_until_the_confirmed_one()
    {
        var (call, state) = NewCall();
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);
        _time.Advance(TimeSpan.FromSeconds(3));

        Assert.True(await call.ConfirmAsync(CancellationToken.None));
        var confirmedAt = _time.GetUtcNow();
        Assert.True(state.Persisted!.Confirmed);
        Assert.Equal(confirmedAt + _leases.Confirmed + CallAdmission.LeaseGrace, state.LastDueAt);
        Assert.All(_limits.Grain("user/alice").Snapshot().Calls, c => Assert.Equal(HoldPhase.Confirmed, c.Phase));

        _time.Advance(TimeSpan.FromHours(1));
        _limits.ExpireAll();
        await call.OnTimerAsync(CancellationToken.None);
        Assert.Equal(1, _limits.Held("user/alice"));

        // A session refresh extends the lease from now.
        Assert.True(await call.RenewAsync(CancellationToken.None));
        Assert.Equal(_time.GetUtcNow() + _leases.Confirmed + CallAdmission.LeaseGrace, state.LastDueAt);
        _time.SetUtcNow(confirmedAt + _leases.Confirmed + TimeSpan.FromMinutes(1));
        _limits.ExpireAll();
        Assert.Equal(1, _limits.Held("user/alice"));

        // Lease runs out without news: the limits reclaim, the call record ends.
        _time.SetUtcNow(state.LastDueAt!.Value);
        _limits.ExpireAll();
        await call.OnTimerAsync(CancellationToken.None);
        Assert.Equal(0, _limits.Held("user/alice"));
        Assert.Equal(1, _limits.Grain("user/alice").State.Reclaimed);
        Assert.Equal(CallPhase.Ended, state.State.Phase);
    }

    [Fact]
    public async Task A_repeated_early_renewal_and_confirm_are_harmless_and_a_confirm_after_the_lease_lapsed_ends_the_call()
    {
        // What the edge relies on when it retries: a renewal or confirm whose answer was lost may arrive twice.
        var (call, state) = NewCall();
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);
        _time.Advance(_leases.Early - TimeSpan.FromSeconds(10));
        Assert.True(await call.RenewAsync(CancellationToken.None));
        Assert.True(await call.RenewAsync(CancellationToken.None));
        Assert.Equal(_time.GetUtcNow() + _leases.Early + CallAdmission.LeaseGrace, state.LastDueAt);

        // Past the first early lease's end the renewed call still holds every slot, once.
        _time.Advance(TimeSpan.FromSeconds(20));
        _limits.ExpireAll();
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.True(await call.ConfirmAsync(new CallAnswer("callee", ["udp:127.0.0.1:5090"]), CancellationToken.None));
        Assert.True(await call.ConfirmAsync(new CallAnswer("other", []), CancellationToken.None));
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
        Assert.Equal("callee", call.Dialog()!.CalleeTag);
        Assert.All(_limits.Grain("user/alice").Snapshot().Calls, c => Assert.Equal(HoldPhase.Confirmed, c.Phase));

        // Another call whose early lease lapsed unrenewed: its limits reclaim it, and its confirm ends it (false).
        var (late, lateState) = NewCall("call-2");
        await late.AdmitAsync([new LimitRequest("user/bob", Direction.Inbound)], CancellationToken.None);
        _time.Advance(_leases.Early + TimeSpan.FromSeconds(1));
        _limits.ExpireAll();
        Assert.False(await late.ConfirmAsync(CancellationToken.None));
        Assert.False(await late.ConfirmAsync(CancellationToken.None));
        Assert.Equal(0, _limits.Held("user/bob"));
        Assert.Equal(CallPhase.Ended, lateState.State.Phase);
        Assert.Null(late.Dialog());
    }

    [Fact]
    public async Task Confirm_and_renew_of_a_call_not_admitted_return_false()
    {
        var (call, _) = NewCall();
        Assert.False(await call.ConfirmAsync(CancellationToken.None));
        Assert.False(await call.RenewAsync(CancellationToken.None));

        _limits.Configure("user/alice", new LimitSettings(Total: 0));
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);
        Assert.False(await call.ConfirmAsync(CancellationToken.None));
        Assert.False(await call.RenewAsync(CancellationToken.None));
        Assert.DoesNotContain(_events, e => e.StartsWith("confirm", StringComparison.Ordinal) || e.StartsWith("renew", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Rejected_and_ended_calls_leave_no_record(bool reject)
    {
        _limits.Configure("user/alice", new LimitSettings(Total: reject ? 0 : 5));
        var (call, state) = NewCall();
        await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);

        // A refusal a check foresaw writes nothing; an admitted call's record is written, then cleared at its end.
        Assert.Equal(reject ? 0 : 1, state.Writes.Count);
        if (!reject)
        {
            Assert.True(await call.EndAsync(CancellationToken.None));
        }

        Assert.Equal(reject ? 0 : 1, state.Clears);
        Assert.Null(state.Persisted);
        Assert.Equal(0, _limits.Held("user/alice"));

        // The same activation answers a retransmission from memory; a new one starts from nothing.
        var again = await call.AdmitAsync(UserTrunkKey(), CancellationToken.None);
        Assert.Equal(reject ? AdmitStatus.Rejected : AdmitStatus.Invalid, again.Status);
        Assert.Equal(0, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task A_closed_record_left_by_an_earlier_version_is_cleared_when_woken()
    {
        var stored = new InMemoryGrainState<CallGrainState>(new CallGrainState { Phase = CallPhase.Ended }, _events);

        await NewCall(stored).OnTimerAsync(CancellationToken.None);

        Assert.Equal(1, stored.Clears);
    }

    [Fact]
    public async Task Stale_state_on_the_first_write_reserves_nothing()
    {
        var (call, state) = NewCall();
        state.ThrowStale = true;

        await Assert.ThrowsAsync<StaleGrainStateException>(() => call.AdmitAsync(UserTrunkKey(), CancellationToken.None));

        Assert.All(_events, e => Assert.StartsWith("check:", e, StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_unread_call_whose_record_exists_keeps_what_it_reserved_and_says_so()
    {
        // Another admission of this call holds its limits; this one took the call for new and its insert fails.
        Assert.Equal(AdmitStatus.Admitted, (await AdmitAsync("call-1", UserTrunkKey())).Status);
        var state = new InMemoryGrainState<CallGrainState>(events: _events) { FaultStale = true };
        var call = new CallAdmission("call-1", state, _limits, _leases, _time, unread: true);
        _events.Clear();

        var exists = await Assert.ThrowsAsync<CallRecordExistsException>(() => call.AdmitAsync(UserTrunkKey(), CancellationToken.None));

        // Nothing given back: those slots are the stored call's own.
        Assert.DoesNotContain(_events, e => e.StartsWith("release", StringComparison.Ordinal));
        Assert.Equal(["key/+12345678", "trunk/carrier", "user/alice"], exists.Taken);
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
    }

    [Fact]
    public async Task After_a_second_admission_on_the_stored_record_what_the_call_does_not_hold_is_given_back()
    {
        var (call, _) = NewCall();
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync([new LimitRequest("user/alice", Direction.Inbound)], CancellationToken.None)).Status);
        Assert.Equal(AdmitStatus.Admitted, (await AdmitAsync("call-1", new LimitRequest("trunk/carrier", Direction.Inbound))).Status);

        await call.ReleaseNotHeldAsync(["trunk/carrier", "user/alice"], CancellationToken.None);

        Assert.Equal(0, _limits.Held("trunk/carrier"));
        Assert.Equal(1, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task Per_key_maximum_from_the_call_is_enforced_across_calls()
    {
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(AdmitStatus.Admitted, (await AdmitAsync($"c{i}", new LimitRequest("key/+12345678", Direction.Inbound, 3))).Status);
        }

        var fourth = await AdmitAsync("c4", new LimitRequest("key/+12345678", Direction.Inbound, 3), new LimitRequest("user/bob", Direction.Inbound));
        var outbound = await AdmitAsync("c5", new LimitRequest("key/+12345678", Direction.Outbound, 3));

        Assert.Equal(new AdmitResult(AdmitStatus.Rejected, "key/+12345678", RejectReason.InPerKeyCacLimitReached, 3, 3, null), fourth);
        Assert.Equal(RejectReason.OutPerKeyCacLimitReached, outbound.Reason);
        Assert.Equal(0, _limits.Held("user/bob"));
    }
}
