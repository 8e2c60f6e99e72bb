namespace CallState.Grains.Tests;

/// <summary>One limit's decisions, rule by rule from the seeds (miniSIPServer users and trunks, AudioCodes cac keys).</summary>
public sealed class LimitLedgerTests
{
    private static readonly TimeSpan Early = TimeSpan.FromSeconds(180);
    private static readonly TimeSpan Confirmed = TimeSpan.FromHours(12);

    private readonly FakeTimeProvider _time = new();

    private static LimitLedger NewGrain(string key, LimitSettings? limits = null) =>
        new(LimitKey.Parse(key), new LimitGrainState(), limits ?? LimitSettings.Unlimited);

    private ReserveOutcome Reserve(LimitLedger grain, string callKey, Direction direction, int? perCallMax = null) =>
        grain.TryReserve(callKey, direction, Early, perCallMax, _time.GetUtcNow(), out _);

    private void AdmitMany(LimitLedger grain, string prefix, Direction direction, int count, int? perCallMax = null)
    {
        for (var i = 0; i < count; i++)
        {
            var outcome = Reserve(grain, $"{prefix}-{i}", direction, perCallMax);
            Assert.True(outcome.Admitted, $"{prefix}-{i} should be admitted, got {outcome}");
        }
    }

    // ---- Check: what a reservation would answer, changing nothing ----

    [Fact]
    public void Check_answers_what_a_reservation_would_and_changes_nothing()
    {
        var user = NewGrain("user/alice", new LimitSettings(Total: 2, Inbound: 1));
        AdmitMany(user, "in", Direction.Inbound, 1);
        Reserve(user, "out-0", Direction.Outbound);
        user.AcceptChanges();
        var now = _time.GetUtcNow();

        // Full: a new call is refused with the reason, limit and count a reservation would give; a held call is admitted.
        Assert.Equal(ReserveOutcome.Reject(RejectReason.UserInLimitReached, 1, 1), user.Check("new", Direction.Inbound, null, now));
        Assert.Equal(ReserveOutcome.Reject(RejectReason.UserTotalLimitReached, 2, 2), user.Check("new", Direction.Outbound, null, now));
        Assert.True(user.Check("in-0", Direction.Inbound, null, now).Admitted);
        Assert.Empty(user.ChangedCalls);
        Assert.Equal(2, user.Snapshot().Total);

        // Past the leases' end the held calls no longer count, as a reservation would reclaim them first; the check
        // still reclaims nothing itself.
        _time.Advance(Early);
        var checkedOutcome = user.Check("new", Direction.Inbound, null, _time.GetUtcNow());
        Assert.Equal(ReserveOutcome.Admit(1, 0), checkedOutcome);
        Assert.Equal(0, user.State.Reclaimed);
        Assert.Equal(2, user.Snapshot().Total);
        Assert.Equal(checkedOutcome, Reserve(user, "new", Direction.Inbound));
        Assert.Equal(2, user.State.Reclaimed);
    }

    [Fact]
    public void Check_on_a_per_key_limit_uses_the_maximum_the_call_carries_and_a_barred_direction_is_refused()
    {
        var key = NewGrain("key/+1555");
        AdmitMany(key, "k", Direction.Outbound, 2, perCallMax: 3);
        var now = _time.GetUtcNow();

        Assert.True(key.Check("k-new", Direction.Inbound, 3, now).Admitted);
        Assert.Equal(ReserveOutcome.Reject(RejectReason.InPerKeyCacLimitReached, 2, 2), key.Check("k-new", Direction.Inbound, 2, now));
        Assert.Equal(3, key.State.LastPerCallMax);

        var barred = NewGrain("trunk/t", new LimitSettings(Inbound: 0));
        Assert.Equal(ReserveOutcome.Reject(RejectReason.DirectionBarred, 0, 0), barred.Check("c", Direction.Inbound, null, now));
        Assert.True(barred.IsIdle);
    }

    // ---- Per local user (miniSIPServer) ----

    [Fact]
    public void User_with_total_zero_can_neither_make_nor_receive_calls()
    {
        var user = NewGrain("user/alice", new LimitSettings(Total: 0));

        var inbound = Reserve(user, "in-1", Direction.Inbound);
        var outbound = Reserve(user, "out-1", Direction.Outbound);

        Assert.Equal(ReserveOutcome.Reject(RejectReason.DirectionBarred, 0, 0), inbound);
        Assert.Equal(ReserveOutcome.Reject(RejectReason.DirectionBarred, 0, 0), outbound);
        Assert.Equal(0, user.Snapshot().Total);
    }

    [Fact]
    public void User_outbound_limit_reached_rejects_outgoing_but_still_admits_incoming()
    {
        var user = NewGrain("user/alice", new LimitSettings(Total: 4, Outbound: 2));
        AdmitMany(user, "out", Direction.Outbound, 2);

        var third = Reserve(user, "out-3", Direction.Outbound);
        Assert.False(third.Admitted);
        Assert.Equal(RejectReason.UserOutLimitReached, third.Reason);
        Assert.Equal("USER_OUT_LIMIT_REACHED", third.Reason.ToCode());
        Assert.Equal(2, third.Limit);
        Assert.Equal(2, third.Current);

        Assert.True(Reserve(user, "in-1", Direction.Inbound).Admitted);
        Assert.True(Reserve(user, "in-2", Direction.Inbound).Admitted);
        var snapshot = user.Snapshot();
        Assert.Equal((2, 2, 4), (snapshot.Inbound, snapshot.Outbound, snapshot.Total));
    }

    [Fact]
    public void User_total_limit_counts_both_directions_together()
    {
        var user = NewGrain("user/alice", new LimitSettings(Total: 3, Outbound: 2));
        AdmitMany(user, "in", Direction.Inbound, 2);
        Assert.True(Reserve(user, "out-1", Direction.Outbound).Admitted);

        var inbound = Reserve(user, "in-3", Direction.Inbound);
        var outbound = Reserve(user, "out-2", Direction.Outbound);

        Assert.Equal(ReserveOutcome.Reject(RejectReason.UserTotalLimitReached, 3, 3), inbound);
        Assert.Equal(ReserveOutcome.Reject(RejectReason.UserTotalLimitReached, 3, 3), outbound);
    }

    [Fact]
    public void User_inbound_limit_rejects_incoming_only()
    {
        var user = NewGrain("user/alice", new LimitSettings(Total: 5, Inbound: 1));
        Assert.True(Reserve(user, "in-1", Direction.Inbound).Admitted);

        Assert.Equal(ReserveOutcome.Reject(RejectReason.UserInLimitReached, 1, 1), Reserve(user, "in-2", Direction.Inbound));
        Assert.True(Reserve(user, "out-1", Direction.Outbound).Admitted);
    }

    [Fact]
    public void Releasing_a_call_frees_its_slot_for_the_next_one()
    {
        var user = NewGrain("user/alice", new LimitSettings(Total: 1));
        Assert.True(Reserve(user, "c1", Direction.Outbound).Admitted);
        Assert.False(Reserve(user, "c2", Direction.Outbound).Admitted);

        Assert.True(user.Release("c1"));

        Assert.True(Reserve(user, "c2", Direction.Outbound).Admitted);
    }

    // ---- Per SIP trunk (miniSIPServer) ----

    [Fact]
    public void Trunk_inbound_outbound_and_total_are_independent()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 4, Inbound: 3, Outbound: 2));
        AdmitMany(trunk, "in", Direction.Inbound, 3);
        Assert.True(Reserve(trunk, "out-1", Direction.Outbound).Admitted);

        // Outbound is below its own limit (1 of 2), but the trunk carries 4 of 4.
        var fifth = Reserve(trunk, "out-2", Direction.Outbound);
        Assert.Equal(ReserveOutcome.Reject(RejectReason.TrunkTotalLimitReached, 4, 4), fifth);
        Assert.Equal("TRUNK_TOTAL_LIMIT_REACHED", fifth.Reason.ToCode());

        // Inbound is at its own limit.
        Assert.Equal(ReserveOutcome.Reject(RejectReason.TrunkInLimitReached, 3, 3), Reserve(trunk, "in-4", Direction.Inbound));
    }

    [Fact]
    public void Trunk_third_outbound_call_is_rejected_by_the_outbound_limit()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 4, Inbound: 3, Outbound: 2));
        AdmitMany(trunk, "out", Direction.Outbound, 2);
        Assert.True(Reserve(trunk, "in-1", Direction.Inbound).Admitted);

        var third = Reserve(trunk, "out-3", Direction.Outbound);

        Assert.Equal(ReserveOutcome.Reject(RejectReason.TrunkOutLimitReached, 2, 2), third);
        Assert.Equal("TRUNK_OUT_LIMIT_REACHED", third.Reason.ToCode());
    }

    [Fact]
    public void Trunk_with_outbound_above_total_is_still_capped_by_total()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 2, Outbound: 5));
        AdmitMany(trunk, "out", Direction.Outbound, 2);

        Assert.Equal(ReserveOutcome.Reject(RejectReason.TrunkTotalLimitReached, 2, 2), Reserve(trunk, "out-3", Direction.Outbound));
    }

    [Fact]
    public void Trunk_with_inbound_zero_only_carries_outgoing_calls()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Inbound: 0));

        var inbound = Reserve(trunk, "in-1", Direction.Inbound);
        Assert.False(inbound.Admitted);
        Assert.Equal(RejectReason.DirectionBarred, inbound.Reason);
        Assert.Equal(0, inbound.Limit);

        AdmitMany(trunk, "out", Direction.Outbound, 50);
    }

    [Fact]
    public void Trunk_with_outbound_zero_only_carries_incoming_calls()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 10, Inbound: 5, Outbound: 0));

        Assert.Equal(RejectReason.DirectionBarred, Reserve(trunk, "out-1", Direction.Outbound).Reason);
        AdmitMany(trunk, "in", Direction.Inbound, 5);
    }

    [Fact]
    public void Trunk_with_every_limit_zero_carries_nothing()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 0, Inbound: 0, Outbound: 0));

        Assert.Equal(RejectReason.DirectionBarred, Reserve(trunk, "in-1", Direction.Inbound).Reason);
        Assert.Equal(RejectReason.DirectionBarred, Reserve(trunk, "out-1", Direction.Outbound).Reason);
    }

    [Theory]
    [InlineData("user/alice")]
    [InlineData("trunk/carrier")]
    [InlineData("key/+12345678")]
    public void Absent_limits_mean_unlimited(string key)
    {
        var grain = NewGrain(key);

        AdmitMany(grain, "in", Direction.Inbound, 200);
        AdmitMany(grain, "out", Direction.Outbound, 200);

        Assert.Equal(400, grain.Snapshot().Total);
    }

    [Fact]
    public void Run_time_override_replaces_configured_limits_and_clearing_it_restores_them()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 1));
        Assert.True(Reserve(trunk, "c1", Direction.Inbound).Admitted);

        trunk.SetOverride(new LimitSettings(Total: 2));
        Assert.True(Reserve(trunk, "c2", Direction.Inbound).Admitted);
        Assert.Equal(new LimitSettings(Total: 2), trunk.Snapshot().Limits);

        trunk.SetOverride(null);
        Assert.Equal(RejectReason.TrunkTotalLimitReached, Reserve(trunk, "c3", Direction.Inbound).Reason);
        Assert.Throws<InvalidOperationException>(() => NewGrain("key/x").SetOverride(new LimitSettings(Inbound: 1)));
    }

    [Fact]
    public void A_change_of_one_field_keeps_the_others_and_each_field_says_where_it_comes_from()
    {
        var user = NewGrain("user/bob", new LimitSettings(Total: 4, Inbound: 2, Outbound: 2));

        user.Change(new LimitChange(new LimitSettings(Total: 3), LimitFields.Total, LimitFields.None));
        Assert.Equal(new LimitSettings(3, 2, 2), user.Snapshot().Limits);
        Assert.Equal(LimitFields.Total, user.Snapshot().Overridden);

        // Unlimited outbound at run time is a value of its own, not "back to configuration".
        user.Change(new LimitChange(LimitSettings.Unlimited, LimitFields.Outbound, LimitFields.None));
        Assert.Equal(new LimitSettings(3, 2, null), user.Snapshot().Limits);
        Assert.Equal(LimitFields.Total | LimitFields.Outbound, user.Snapshot().Overridden);

        user.Change(new LimitChange(LimitSettings.Unlimited, LimitFields.None, LimitFields.Total));
        Assert.Equal(new LimitSettings(4, 2, null), user.Snapshot().Limits);
        Assert.Equal(LimitFields.Outbound, user.Snapshot().Overridden);

        user.Change(LimitChange.Clear);
        Assert.Equal(new LimitSettings(4, 2, 2), user.Snapshot().Limits);
        Assert.Equal(LimitFields.None, user.Snapshot().Overridden);
        Assert.Null(user.State.Override);
    }

    [Fact]
    public void A_configuration_change_applies_to_the_next_call_of_a_limit_that_is_busy()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 1));
        Assert.True(Reserve(trunk, "c1", Direction.Inbound).Admitted);
        Assert.False(Reserve(trunk, "c2", Direction.Inbound).Admitted);

        trunk.Configured = new LimitSettings(Total: 2);

        Assert.True(Reserve(trunk, "c2", Direction.Inbound).Admitted);
        Assert.Equal(RejectReason.TrunkTotalLimitReached, Reserve(trunk, "c3", Direction.Inbound).Reason);
    }

    [Fact]
    public void A_run_time_maximum_of_a_per_key_limit_wins_over_the_maximum_the_calls_carry()
    {
        var key = NewGrain("key/+12345");
        AdmitMany(key, "in", Direction.Inbound, 2, perCallMax: 5);

        key.Change(new LimitChange(new LimitSettings(Total: 2), LimitFields.Total, LimitFields.None));

        Assert.Equal(RejectReason.InPerKeyCacLimitReached, Reserve(key, "in-3", Direction.Inbound, perCallMax: 5).Reason);
        Assert.Equal(2, key.Snapshot().Limits.Total);
        key.Change(LimitChange.Clear);
        Assert.True(Reserve(key, "in-3", Direction.Inbound, perCallMax: 5).Admitted);
        Assert.Equal(5, key.Snapshot().Limits.Total);
    }

    // ---- Per key (AudioCodes cac=key|max) ----

    [Fact]
    public void Per_key_maximum_comes_with_the_call_and_rejects_inbound_beyond_it()
    {
        var key = NewGrain("key/+12345678");
        AdmitMany(key, "in", Direction.Inbound, 3, perCallMax: 3);

        var fourth = Reserve(key, "in-4", Direction.Inbound, perCallMax: 3);

        Assert.Equal(ReserveOutcome.Reject(RejectReason.InPerKeyCacLimitReached, 3, 3), fourth);
        Assert.Equal("IN_PER_KEY_CAC_LIMIT_REACHED", fourth.Reason.ToCode());
    }

    [Fact]
    public void Per_key_maximum_counts_both_directions_and_names_the_outbound_reason()
    {
        var key = NewGrain("key/10.4.4.4");
        AdmitMany(key, "in", Direction.Inbound, 2, perCallMax: 3);
        Assert.True(Reserve(key, "out-1", Direction.Outbound, perCallMax: 3).Admitted);

        var fourth = Reserve(key, "out-2", Direction.Outbound, perCallMax: 3);

        Assert.Equal(ReserveOutcome.Reject(RejectReason.OutPerKeyCacLimitReached, 3, 3), fourth);
        Assert.Equal("OUT_PER_KEY_CAC_LIMIT_REACHED", fourth.Reason.ToCode());
    }

    [Fact]
    public void Per_key_maximum_changes_with_a_later_call_and_the_listing_shows_the_latest()
    {
        var key = NewGrain("key/+12345678");
        AdmitMany(key, "a", Direction.Inbound, 3, perCallMax: 3);

        // A later call carries a higher maximum (the dial plan changed): admitted.
        Assert.Equal(ReserveOutcome.Admit(5, 3), Reserve(key, "b-1", Direction.Inbound, perCallMax: 5));
        Assert.Equal(5, key.Snapshot().Limits.Total);

        // Then a lower one: 4 held, max 2 -> rejected, and the listing shows the new maximum.
        Assert.Equal(ReserveOutcome.Reject(RejectReason.InPerKeyCacLimitReached, 2, 4), Reserve(key, "c-1", Direction.Inbound, perCallMax: 2));
        var snapshot = key.Snapshot();
        Assert.Equal(2, snapshot.Limits.Total);
        Assert.Equal(4, snapshot.Total);
    }

    [Fact]
    public void Per_key_call_without_a_maximum_uses_the_last_one_seen()
    {
        var key = NewGrain("key/+12345678");
        Assert.True(Reserve(key, "a", Direction.Inbound, perCallMax: 1).Admitted);

        Assert.Equal(RejectReason.InPerKeyCacLimitReached, Reserve(key, "b", Direction.Inbound, perCallMax: null).Reason);
    }

    [Fact]
    public void Per_key_snapshot_lists_current_and_maximum_like_show_voip_tags_cac()
    {
        var key = NewGrain("key/+12345678");
        Assert.True(Reserve(key, "b-call", Direction.Inbound, perCallMax: 3).Admitted);
        Assert.True(Reserve(key, "a-call", Direction.Outbound, perCallMax: 3).Admitted);

        var snapshot = key.Snapshot();

        Assert.Equal("key/+12345678", snapshot.Key);
        Assert.Equal(LimitKind.Key, snapshot.Kind);
        Assert.Equal(3, snapshot.Limits.Total);
        Assert.Equal((1, 1, 2), (snapshot.Inbound, snapshot.Outbound, snapshot.Total));
        Assert.Equal(["a-call", "b-call"], snapshot.Calls.Select(c => c.CallKey));
        Assert.All(snapshot.Calls, c => Assert.Equal(HoldPhase.Early, c.Phase));
        Assert.All(snapshot.Calls, c => Assert.Equal(_time.GetUtcNow() + Early, c.LeaseEnd));
    }

    // ---- Idempotency ----

    [Fact]
    public void Reserving_the_same_call_twice_counts_it_once()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 1));
        Assert.True(Reserve(trunk, "c1", Direction.Inbound).Admitted);

        var again = trunk.TryReserve("c1", Direction.Inbound, Early, null, _time.GetUtcNow(), out var changed);

        Assert.True(again.Admitted);
        Assert.False(changed);
        Assert.Equal(1, trunk.Snapshot().Total);
        Assert.False(Reserve(trunk, "c2", Direction.Inbound).Admitted);
    }

    [Fact]
    public void Releasing_twice_is_harmless_and_counts_go_back_to_zero()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 2));
        Assert.True(Reserve(trunk, "c1", Direction.Inbound).Admitted);
        Assert.True(Reserve(trunk, "c2", Direction.Outbound).Admitted);

        Assert.True(trunk.Release("c1"));
        Assert.False(trunk.Release("c1"));
        Assert.True(trunk.Release("c2"));
        Assert.False(trunk.Release("c2"));
        Assert.False(trunk.Release("never-seen"));

        var snapshot = trunk.Snapshot();
        Assert.Equal((0, 0, 0), (snapshot.Inbound, snapshot.Outbound, snapshot.Total));
        Assert.Empty(snapshot.Calls);
        Assert.Null(trunk.NextDue);
    }

    [Fact]
    public void Confirm_and_renew_of_an_unknown_call_return_false_and_change_nothing()
    {
        var trunk = NewGrain("trunk/carrier");

        Assert.False(trunk.Confirm("ghost", Confirmed, _time.GetUtcNow()));
        Assert.False(trunk.Renew("ghost", Confirmed, _time.GetUtcNow()));
        Assert.Empty(trunk.State.Calls);
    }

    [Fact]
    public void A_rejected_reservation_does_not_report_a_change()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 0));
        trunk.TryReserve("c1", Direction.Inbound, Early, null, _time.GetUtcNow(), out var changed);
        Assert.False(changed);
    }

    // ---- Leases ----

    [Fact]
    public void Early_lease_expires_and_the_slot_is_reclaimed()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 1));
        Assert.True(Reserve(trunk, "lost", Direction.Inbound).Admitted);
        Assert.Equal(_time.GetUtcNow() + Early, trunk.NextDue);

        _time.Advance(Early - TimeSpan.FromMilliseconds(1));
        Assert.Equal(0, trunk.ExpireLeases(_time.GetUtcNow()));
        Assert.False(Reserve(trunk, "next", Direction.Inbound).Admitted);

        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, trunk.ExpireLeases(_time.GetUtcNow()));

        var snapshot = trunk.Snapshot();
        Assert.Equal(0, snapshot.Total);
        Assert.Equal(1, snapshot.Reclaimed);
        Assert.Null(trunk.NextDue);
        Assert.True(Reserve(trunk, "next", Direction.Inbound).Admitted);
    }

    [Fact]
    public void A_reservation_reclaims_expired_slots_first_even_before_the_timer_runs()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 1));
        Assert.True(Reserve(trunk, "lost", Direction.Inbound).Admitted);
        _time.Advance(Early);

        var outcome = trunk.TryReserve("next", Direction.Inbound, Early, null, _time.GetUtcNow(), out var changed);

        Assert.True(outcome.Admitted);
        Assert.True(changed);
        Assert.Equal(1, trunk.State.Reclaimed);
        Assert.Equal(["next"], trunk.Snapshot().Calls.Select(c => c.CallKey));
    }

    [Fact]
    public void Confirmed_lease_is_longer_than_the_early_one()
    {
        var trunk = NewGrain("trunk/carrier", new LimitSettings(Total: 1));
        Assert.True(Reserve(trunk, "c1", Direction.Inbound).Admitted);
        _time.Advance(TimeSpan.FromSeconds(5));

        Assert.True(trunk.Confirm("c1", Confirmed, _time.GetUtcNow()));
        var confirmedAt = _time.GetUtcNow();
        Assert.Equal(confirmedAt + Confirmed, trunk.NextDue);
        Assert.Equal(HoldPhase.Confirmed, Assert.Single(trunk.Snapshot().Calls).Phase);

        _time.Advance(Early + TimeSpan.FromMinutes(1));
        Assert.Equal(0, trunk.ExpireLeases(_time.GetUtcNow()));
        Assert.Equal(1, trunk.Snapshot().Total);

        _time.SetUtcNow(confirmedAt + Confirmed);
        Assert.Equal(1, trunk.ExpireLeases(_time.GetUtcNow()));
        Assert.Equal(1, trunk.Snapshot().Reclaimed);
    }

    [Fact]
    public void Renew_extends_the_lease_and_never_shortens_it()
    {
        var trunk = NewGrain("trunk/carrier");
        Assert.True(Reserve(trunk, "c1", Direction.Inbound).Admitted);
        Assert.True(trunk.Confirm("c1", TimeSpan.FromMinutes(30), _time.GetUtcNow()));

        _time.Advance(TimeSpan.FromMinutes(20));
        Assert.True(trunk.Renew("c1", TimeSpan.FromMinutes(30), _time.GetUtcNow()));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromMinutes(30), trunk.NextDue);

        // A shorter renewal does not cut the lease.
        Assert.True(trunk.Renew("c1", TimeSpan.FromMinutes(1), _time.GetUtcNow()));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromMinutes(30), trunk.NextDue);

        // Past the original 30 minutes the call still holds its slot.
        _time.Advance(TimeSpan.FromMinutes(15));
        Assert.Equal(0, trunk.ExpireLeases(_time.GetUtcNow()));
        _time.Advance(TimeSpan.FromMinutes(15));
        Assert.Equal(1, trunk.ExpireLeases(_time.GetUtcNow()));
    }

    [Fact]
    public void NextDue_is_the_earliest_lease_end()
    {
        var trunk = NewGrain("trunk/carrier");
        var start = _time.GetUtcNow();
        Assert.True(Reserve(trunk, "a", Direction.Inbound).Admitted);
        Assert.True(trunk.Confirm("a", Confirmed, start));
        _time.Advance(TimeSpan.FromSeconds(10));
        Assert.True(Reserve(trunk, "b", Direction.Outbound).Admitted);

        Assert.Equal(start + TimeSpan.FromSeconds(10) + Early, trunk.NextDue);
        Assert.True(trunk.Release("b"));
        Assert.Equal(start + Confirmed, trunk.NextDue);
    }

    // ---- What the host must persist ----

    [Fact]
    public void Every_change_to_a_held_call_names_its_key_until_the_host_accepts_the_changes()
    {
        var trunk = NewGrain("trunk/carrier");
        AdmitMany(trunk, "c", Direction.Inbound, 4);
        Assert.Equal(["c-0", "c-1", "c-2", "c-3"], trunk.ChangedCalls.Order(StringComparer.Ordinal));

        trunk.AcceptChanges();
        Assert.Empty(trunk.ChangedCalls);
        Reserve(trunk, "c-1", Direction.Inbound);
        Assert.Empty(trunk.ChangedCalls);
        Assert.False(trunk.Release("never-held"));
        Assert.Empty(trunk.ChangedCalls);

        Assert.True(trunk.Confirm("c-0", Confirmed, _time.GetUtcNow()));
        Assert.True(trunk.Release("c-1"));
        Assert.Equal(["c-0", "c-1"], trunk.ChangedCalls.Order(StringComparer.Ordinal));

        trunk.AcceptChanges();
        _time.Advance(Early);
        Assert.Equal(2, trunk.ExpireLeases(_time.GetUtcNow()));
        Assert.Equal(["c-2", "c-3"], trunk.ChangedCalls.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Leases_expire_in_lease_order_after_the_earliest_is_confirmed_renewed_or_released()
    {
        var trunk = NewGrain("trunk/carrier");
        for (var i = 0; i < 5; i++)
        {
            Reserve(trunk, $"c-{i}", Direction.Outbound);
            _time.Advance(TimeSpan.FromSeconds(1));
        }

        var start = _time.GetUtcNow() - TimeSpan.FromSeconds(5);
        Assert.True(trunk.Confirm("c-0", Confirmed, _time.GetUtcNow()));
        Assert.True(trunk.Release("c-1"));
        Assert.True(trunk.Renew("c-2", TimeSpan.FromMinutes(10), _time.GetUtcNow()));
        Assert.Equal(start + TimeSpan.FromSeconds(3) + Early, trunk.NextDue);

        Assert.Equal(0, trunk.ExpireLeases(start + TimeSpan.FromSeconds(3) + Early - TimeSpan.FromMilliseconds(1)));
        Assert.Equal(1, trunk.ExpireLeases(start + TimeSpan.FromSeconds(3) + Early));
        Assert.Equal(1, trunk.ExpireLeases(start + TimeSpan.FromSeconds(4) + Early));
        Assert.Equal(["c-0", "c-2"], trunk.Snapshot().Calls.Select(c => c.CallKey));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromMinutes(10), trunk.NextDue);
        Assert.Equal(2, trunk.State.Reclaimed);
    }
}
