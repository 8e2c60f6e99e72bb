using System.Text;
using CallState.Grains.Tests.Infrastructure;

namespace CallState.Grains.Tests;

/// <summary>
/// Shadow mode (docs/policies.md, "Shadow mode"): a limit in shadow mode decides as it would when enforced, counts what it
/// would refuse, and lets the call through holding a slot like any admitted call.
/// </summary>
public sealed class ShadowModeTests
{
    private static readonly TimeSpan Early = TimeSpan.FromSeconds(180);

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));

    private static LimitLedger NewLedger(string key, LimitSettings limits) => new(LimitKey.Parse(key), new LimitGrainState(), limits);

    private ReserveOutcome Reserve(LimitLedger ledger, string callKey, Direction direction = Direction.Outbound, int? perCallMax = null) =>
        ledger.TryReserve(callKey, direction, Early, perCallMax, _time.GetUtcNow(), out _);

    [Fact]
    public void A_limit_of_2_in_shadow_admits_5_calls_holds_all_of_them_and_counts_3_would_be_refusals()
    {
        var bob = NewLedger("user/bob", new LimitSettings(Total: 2, Shadow: true));

        var outcomes = Enumerable.Range(0, 5).Select(i => Reserve(bob, $"call-{i}")).ToList();

        Assert.All(outcomes, o => Assert.True(o.Admitted));
        Assert.All(outcomes, o => Assert.Equal(RejectReason.None, o.Reason));
        Assert.Equal([RejectReason.None, RejectReason.None, RejectReason.UserTotalLimitReached, RejectReason.UserTotalLimitReached, RejectReason.UserTotalLimitReached],
            outcomes.Select(o => o.ShadowReason));
        Assert.Equal([2, 3, 4], outcomes.Skip(2).Select(o => o.Current));
        var snapshot = bob.Snapshot();
        Assert.Equal(5, snapshot.Total);
        Assert.Equal(3, snapshot.ShadowRefused);
        Assert.Equal(0, snapshot.Refused);
        var told = bob.TakeShadowRefusals();
        Assert.Equal(["call-2", "call-3", "call-4"], told.Select(r => r.CallKey));
        Assert.All(told, r => Assert.Equal(RejectReason.UserTotalLimitReached, r.Reason));
        Assert.Empty(bob.TakeShadowRefusals());

        // Every hold is released exactly: nothing stays behind.
        for (var i = 0; i < 5; i++)
        {
            Assert.True(bob.Release($"call-{i}"));
        }

        Assert.Equal(0, bob.Snapshot().Total);
        Assert.False(bob.Release("call-4"));
    }

    [Fact]
    public void The_same_limit_enforced_refuses_the_same_calls_and_counts_them_as_refused()
    {
        var bob = NewLedger("user/bob", new LimitSettings(Total: 2));

        var admitted = Enumerable.Range(0, 5).Count(i => Reserve(bob, $"call-{i}").Admitted);

        Assert.Equal(2, admitted);
        Assert.Equal(3, bob.Snapshot().Refused);
        Assert.Equal(0, bob.Snapshot().ShadowRefused);
        Assert.Empty(bob.TakeShadowRefusals());
    }

    [Fact]
    public void A_call_asked_again_is_counted_once_and_a_retransmission_of_a_held_call_not_at_all()
    {
        var bob = NewLedger("user/bob", new LimitSettings(Total: 1, Shadow: true));
        Reserve(bob, "first");
        Reserve(bob, "second");

        // A retransmitted INVITE of a held call: admitted again, not counted again.
        Assert.True(Reserve(bob, "second").Admitted);
        Assert.Equal(1, bob.Snapshot().ShadowRefused);

        // Given back (another limit refused the call) and asked again: still one would-be refusal for that call.
        bob.Release("second");
        Assert.Equal(RejectReason.UserTotalLimitReached, Reserve(bob, "second").ShadowReason);
        Assert.Equal(1, bob.Snapshot().ShadowRefused);
        Assert.Single(bob.TakeShadowRefusals());

        // Enforced, a refusal checked then reserved again is counted once too.
        var carol = NewLedger("user/carol", new LimitSettings(Total: 0));
        Assert.False(carol.Check("c", Direction.Outbound, null, _time.GetUtcNow()).Admitted);
        Assert.False(Reserve(carol, "c").Admitted);
        Assert.Equal(1, carol.Snapshot().Refused);
    }

    [Fact]
    public void A_check_of_a_shadowed_limit_admits_and_counts_nothing_the_reservation_counts()
    {
        var bob = NewLedger("user/bob", new LimitSettings(Total: 1, Shadow: true));
        Reserve(bob, "first");

        var check = bob.Check("second", Direction.Outbound, null, _time.GetUtcNow());

        Assert.True(check.Admitted);
        Assert.Equal(RejectReason.UserTotalLimitReached, check.ShadowReason);
        Assert.Equal(0, bob.Snapshot().ShadowRefused);
        Assert.Equal(1, bob.Snapshot().Total);
    }

    [Fact]
    public void A_rate_in_shadow_lets_every_call_through_and_counts_what_the_bucket_would_refuse_taking_no_token_for_them()
    {
        var rita = NewLedger("user/rita", new LimitSettings(OutboundRate: 10, OutboundBurst: 5, Shadow: true));

        var outcomes = Enumerable.Range(0, 8).Select(i => Reserve(rita, $"call-{i}")).ToList();

        Assert.All(outcomes, o => Assert.True(o.Admitted));
        Assert.All(outcomes, o => Assert.Null(o.RetryAfter));
        Assert.Equal(3, outcomes.Count(o => o.ShadowReason == RejectReason.UserOutRateLimitReached));
        Assert.Equal(3, rita.Snapshot().ShadowRefused);

        // The would-be refusals took no token: 100 ms later exactly one token is back, as when enforced.
        _time.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(RejectReason.None, Reserve(rita, "later-1").ShadowReason);
        Assert.Equal(RejectReason.UserOutRateLimitReached, Reserve(rita, "later-2").ShadowReason);
    }

    [Fact]
    public void Shadow_is_set_and_reverted_at_run_time_like_the_other_fields_and_a_per_key_limit_takes_it()
    {
        var bob = NewLedger("user/bob", new LimitSettings(Total: 1));
        bob.Change(new LimitChange(new LimitSettings(Shadow: true), LimitFields.Shadow, LimitFields.None));
        Assert.Equal(new LimitSettings(Total: 1, Shadow: true), bob.Effective);
        Assert.Equal(LimitFields.Shadow, bob.Overridden);
        Reserve(bob, "a");
        Assert.True(Reserve(bob, "b").Admitted);

        // A PUT that does not send shadow keeps it; a revert goes back to configuration (enforced).
        bob.Change(LimitChange.Replace(new LimitSettings(Total: 1), LimitFields.Total));
        Assert.True(bob.Effective.Shadow);
        bob.Change(new LimitChange(LimitSettings.Unlimited, LimitFields.None, LimitFields.Shadow));
        Assert.Null(bob.Effective.Shadow);
        Assert.False(Reserve(bob, "c").Admitted);

        var key = NewLedger("key/+1555", LimitSettings.Unlimited);
        key.Change(new LimitChange(new LimitSettings(Shadow: true), LimitFields.Shadow, LimitFields.None));
        Reserve(key, "x", perCallMax: 1);
        Assert.Equal(RejectReason.OutPerKeyCacLimitReached, Reserve(key, "y", perCallMax: 1).ShadowReason);
        LimitGrain.ValidateChange(LimitKey.Parse("key/+1555"), new LimitChange(new LimitSettings(Shadow: true), LimitFields.Shadow, LimitFields.None));

        // The global switch reaches a per-key limit through its configured settings.
        var global = NewLedger("key/+1666", new LimitSettings(Shadow: true));
        Reserve(global, "x", perCallMax: 1);
        Assert.True(Reserve(global, "y", perCallMax: 1).Admitted);
    }

    [Fact]
    public void The_counts_and_a_run_time_shadow_mode_are_stored_in_the_row_and_read_back()
    {
        var state = new LimitGrainState { Refused = 7, ShadowRefused = 3, Override = new LimitSettings(Shadow: true), OverrideFields = LimitFields.Shadow };

        var row = StateSerializer.SerializeLimitRow(state);
        var read = StateSerializer.DeserializeLimit(new StoredState(row, 1, null), out _);

        Assert.Equal(7, read.Refused);
        Assert.Equal(3, read.ShadowRefused);
        Assert.True(new LimitLedger(LimitKey.Parse("user/bob"), read, new LimitSettings(Total: 2)).Effective.Shadow);

        // Left out while 0: a row written before the counts existed reads the same.
        Assert.DoesNotContain("Refused", Encoding.UTF8.GetString(StateSerializer.SerializeLimitRow(new LimitGrainState())), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_call_past_a_shadowed_limit_holds_the_enforced_limits_too_and_a_refusal_by_an_enforced_one_leaks_no_slot()
    {
        // Key order: the shadowed trunk is asked before the enforced user, also when the limits are asked again in order.
        var limits = new InMemoryLimitClient(_time);
        limits.Configure("trunk/carrier", new LimitSettings(Total: 1, Shadow: true));
        limits.Configure("user/alice", new LimitSettings(Total: 2));
        var leases = new LeaseOptions();
        Task<AdmitResult> Admit(string callKey) =>
            new CallAdmission(callKey, new InMemoryGrainState<CallGrainState>(), limits, leases, _time)
                .AdmitAsync([new LimitRequest("user/alice", Direction.Outbound), new LimitRequest("trunk/carrier", Direction.Outbound)], CancellationToken.None);

        Assert.Equal(AdmitStatus.Admitted, (await Admit("one")).Status);
        Assert.Equal(AdmitStatus.Admitted, (await Admit("two")).Status);
        Assert.Equal(2, limits.Held("trunk/carrier"));

        // As if a racing call took alice's last slot after the check: the reservations refuse, the slots taken are given
        // back, and the limits are asked again in key order (the trunk first, again).
        limits.ChecksAdmit = true;
        var third = await Admit("three");

        Assert.Equal(AdmitStatus.Rejected, third.Status);
        Assert.Equal("user/alice", third.LimitKey);
        Assert.Equal(2, limits.Held("trunk/carrier"));
        Assert.Equal(2, limits.Held("user/alice"));
        Assert.Equal(2, limits.Grain("trunk/carrier").Snapshot().ShadowRefused);
        Assert.Equal(1, limits.Grain("user/alice").Snapshot().Refused);
    }
}
