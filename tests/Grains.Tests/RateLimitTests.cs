namespace CallState.Grains.Tests;

/// <summary>Call-rate limits with burst (docs/policies.md, "Call rates"): one limit's token buckets, rule by rule.</summary>
public sealed class RateLimitTests
{
    private static readonly TimeSpan Early = TimeSpan.FromSeconds(180);

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));

    private static LimitLedger NewLedger(string key, LimitSettings limits, RateBuckets? rates = null) =>
        new(LimitKey.Parse(key), new LimitGrainState(), limits, rates);

    private ReserveOutcome Reserve(LimitLedger ledger, string callKey, Direction direction, int? perCallMax = null) =>
        ledger.TryReserve(callKey, direction, Early, perCallMax, _time.GetUtcNow(), out _);

    private int AdmitAll(LimitLedger ledger, string prefix, Direction direction, int count)
    {
        var admitted = 0;
        for (var i = 0; i < count; i++)
        {
            admitted += Reserve(ledger, $"{prefix}-{i}", direction).Admitted ? 1 : 0;
        }

        return admitted;
    }

    [Fact]
    public void A_burst_is_admitted_at_once_then_the_rate_refuses_with_its_reason_and_the_wait_for_a_token()
    {
        var bob = NewLedger("user/bob", new LimitSettings(OutboundRate: 10, OutboundBurst: 5));

        Assert.Equal(5, AdmitAll(bob, "burst", Direction.Outbound, 5));
        bob.AcceptChanges();
        var refused = bob.TryReserve("sixth", Direction.Outbound, Early, null, _time.GetUtcNow(), out var changed);

        Assert.False(refused.Admitted);
        Assert.Equal(RejectReason.UserOutRateLimitReached, refused.Reason);
        Assert.Equal("USER_OUT_RATE_LIMIT_REACHED", refused.Reason.ToCode());
        Assert.True(refused.Reason.IsRate());
        Assert.Equal(TimeSpan.FromMilliseconds(100), refused.RetryAfter);

        // A rate's refusal changes nothing to write: no count, no held call, no row.
        Assert.False(changed);
        Assert.Empty(bob.ChangedCalls);
        Assert.Equal(5, bob.Snapshot().Outbound);

        // Inbound calls have no rate here.
        Assert.True(Reserve(bob, "in", Direction.Inbound).Admitted);
    }

    [Fact]
    public void Tokens_come_back_at_the_rate_and_never_beyond_the_burst()
    {
        var bob = NewLedger("user/bob", new LimitSettings(OutboundRate: 10, OutboundBurst: 5));
        AdmitAll(bob, "burst", Direction.Outbound, 5);

        _time.Advance(TimeSpan.FromMilliseconds(250));
        Assert.Equal(2, AdmitAll(bob, "later", Direction.Outbound, 5));
        Assert.Equal(TimeSpan.FromMilliseconds(50), Reserve(bob, "wait", Direction.Outbound).RetryAfter);

        _time.Advance(TimeSpan.FromHours(1));
        Assert.Equal(5, AdmitAll(bob, "idle", Direction.Outbound, 10));
    }

    [Fact]
    public void A_retransmission_of_a_held_call_takes_no_token_and_a_call_refused_for_its_count_takes_none()
    {
        var bob = NewLedger("user/bob", new LimitSettings(Outbound: 1, OutboundRate: 1, OutboundBurst: 2));

        Assert.True(Reserve(bob, "a", Direction.Outbound).Admitted);
        Assert.True(Reserve(bob, "a", Direction.Outbound).Admitted);
        Assert.Equal(RejectReason.UserOutLimitReached, Reserve(bob, "b", Direction.Outbound).Reason);
        Assert.True(bob.Release("a"));

        // One token was taken (by a), so b gets the second.
        Assert.True(Reserve(bob, "b", Direction.Outbound).Admitted);
        bob.Release("b");
        Assert.Equal(RejectReason.UserOutRateLimitReached, Reserve(bob, "c", Direction.Outbound).Reason);
    }

    [Fact]
    public void A_total_rate_counts_both_directions_and_a_direction_rate_only_its_own()
    {
        var trunk = NewLedger("trunk/carrier", new LimitSettings(TotalRate: 2, TotalBurst: 3, InboundRate: 1, InboundBurst: 1));

        Assert.True(Reserve(trunk, "in-0", Direction.Inbound).Admitted);
        Assert.Equal(RejectReason.TrunkInRateLimitReached, Reserve(trunk, "in-1", Direction.Inbound).Reason);
        Assert.True(Reserve(trunk, "out-0", Direction.Outbound).Admitted);
        Assert.True(Reserve(trunk, "out-1", Direction.Outbound).Admitted);
        var refused = Reserve(trunk, "out-2", Direction.Outbound);
        Assert.Equal(RejectReason.TrunkTotalRateLimitReached, refused.Reason);
        Assert.Equal(TimeSpan.FromMilliseconds(500), refused.RetryAfter);

        // A call refused by its direction's rate takes nothing from the total.
        _time.Advance(TimeSpan.FromMilliseconds(500));
        Assert.Equal(RejectReason.TrunkInRateLimitReached, Reserve(trunk, "in-2", Direction.Inbound).Reason);
        Assert.True(Reserve(trunk, "out-3", Direction.Outbound).Admitted);
    }

    [Fact]
    public void A_per_key_limit_takes_a_rate_at_run_time_and_names_the_calls_direction()
    {
        var key = NewLedger("key/acme", LimitSettings.Unlimited);
        key.Change(new LimitChange(new LimitSettings(TotalRate: 1, TotalBurst: 1), LimitFields.TotalRate, LimitFields.None));

        Assert.True(Reserve(key, "a", Direction.Inbound, perCallMax: 10).Admitted);
        Assert.Equal(RejectReason.InPerKeyRateLimitReached, Reserve(key, "b", Direction.Inbound, perCallMax: 10).Reason);
        Assert.Equal("IN_PER_KEY_RATE_LIMIT_REACHED", RejectReason.InPerKeyRateLimitReached.ToCode());
        Assert.Equal(RejectReason.OutPerKeyRateLimitReached, Reserve(key, "c", Direction.Outbound, perCallMax: 10).Reason);
        Assert.Equal(new LimitSettings(Total: 10, TotalRate: 1, TotalBurst: 1), key.Snapshot().Limits);
    }

    [Fact]
    public void Check_answers_the_rate_without_taking_a_token()
    {
        var bob = NewLedger("user/bob", new LimitSettings(OutboundRate: 1, OutboundBurst: 1));
        var now = _time.GetUtcNow();

        Assert.True(bob.Check("a", Direction.Outbound, null, now).Admitted);
        Assert.True(bob.Check("a", Direction.Outbound, null, now).Admitted);
        Assert.True(Reserve(bob, "a", Direction.Outbound).Admitted);
        var checkedOutcome = bob.Check("b", Direction.Outbound, null, now);
        Assert.Equal(RejectReason.UserOutRateLimitReached, checkedOutcome.Reason);
        Assert.Equal(TimeSpan.FromSeconds(1), checkedOutcome.RetryAfter);
    }

    [Fact]
    public void The_buckets_outlive_a_reload_of_the_ledger()
    {
        var rates = new RateBuckets();
        var first = NewLedger("user/bob", new LimitSettings(OutboundRate: 1, OutboundBurst: 2), rates);
        Assert.Equal(2, AdmitAll(first, "a", Direction.Outbound, 2));

        var reloaded = NewLedger("user/bob", new LimitSettings(OutboundRate: 1, OutboundBurst: 2), rates);
        Assert.Equal(RejectReason.UserOutRateLimitReached, Reserve(reloaded, "b", Direction.Outbound).Reason);
    }

    [Fact]
    public void A_run_time_rate_overrides_configuration_field_by_field_and_reverts()
    {
        var bob = NewLedger("user/bob", new LimitSettings(Total: 3, OutboundRate: 5));

        bob.Change(new LimitChange(new LimitSettings(InboundRate: 1, InboundBurst: 1), LimitFields.InboundRate, LimitFields.None));
        Assert.Equal(new LimitSettings(Total: 3, OutboundRate: 5, InboundRate: 1, InboundBurst: 1), bob.Effective);
        Assert.Equal(LimitFields.InboundRate, bob.Overridden);

        bob.Change(new LimitChange(LimitSettings.Unlimited, LimitFields.OutboundRate, LimitFields.None));
        Assert.Equal(new LimitSettings(Total: 3, InboundRate: 1, InboundBurst: 1), bob.Effective);

        bob.Change(LimitChange.Clear);
        Assert.Equal(new LimitSettings(Total: 3, OutboundRate: 5), bob.Effective);
    }

    [Fact]
    public void An_override_row_from_before_rates_keeps_the_configured_rates()
    {
        var state = new LimitGrainState { Override = new LimitSettings(Total: 2) };
        var bob = new LimitLedger(LimitKey.Parse("user/bob"), state, new LimitSettings(Total: 9, OutboundRate: 5));

        Assert.Equal(new LimitSettings(Total: 2, OutboundRate: 5), bob.Effective);
    }

    [Fact]
    public void A_rate_without_a_burst_gets_one_seconds_worth()
    {
        Assert.Equal(10, LimitSettings.BurstOf(10, null));
        Assert.Equal(1, LimitSettings.BurstOf(0.2, null));
        Assert.Equal(3, LimitSettings.BurstOf(2.5, null));
        Assert.Equal(7, LimitSettings.BurstOf(2.5, 7));
    }

    [Theory]
    [InlineData(0.0, null, "OutboundRate must be more than 0")]
    [InlineData(-1.0, null, "OutboundRate must be more than 0")]
    [InlineData(double.NaN, null, "OutboundRate must be more than 0")]
    [InlineData(2_000_000.0, null, "OutboundRate must be more than 0")]
    [InlineData(5.0, 0, "OutboundBurst must be 1 or more")]
    [InlineData(null, 5, "OutboundBurst is set without")]
    public void Invalid_rates_are_named_by_field(double? rate, int? burst, string expected)
    {
        var errors = new LimitSettings(OutboundRate: rate, OutboundBurst: burst).Validate(LimitKind.User, "CallState:Limits:Users:bob").ToList();

        var error = Assert.Single(errors);
        Assert.StartsWith("CallState:Limits:Users:bob:", error, StringComparison.Ordinal);
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_per_key_limit_refuses_a_direction_rate_at_run_time()
    {
        var error = Assert.Throws<ArgumentException>(() => LimitGrain.ValidateChange(
            LimitKey.Parse("key/acme"), new LimitChange(new LimitSettings(InboundRate: 1), LimitFields.InboundRate, LimitFields.None)));
        Assert.Contains("totalRate", error.Message, StringComparison.Ordinal);
        LimitGrain.ValidateChange(LimitKey.Parse("key/acme"), new LimitChange(new LimitSettings(TotalRate: 1), LimitFields.TotalRate, LimitFields.None));
    }
}
