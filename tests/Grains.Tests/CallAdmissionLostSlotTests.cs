using CallState.Grains.Tests.Infrastructure;

namespace CallState.Grains.Tests;

/// <summary>A 2xx or refresh that arrives after a limit reclaimed the call's slot must not leave the call up uncounted.</summary>
public sealed class CallAdmissionLostSlotTests
{
    private readonly FakeTimeProvider _time = new();
    private readonly LeaseOptions _leases = new();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_2xx_or_refresh_after_the_limit_reclaimed_the_slot_ends_the_call(bool confirm)
    {
        var limits = new InMemoryLimitClient(_time).Configure("trunk/carrier", new LimitSettings(Total: 1));
        var state = new InMemoryGrainState<CallGrainState>();
        var call = new CallAdmission("slow-answer", state, limits, _leases, _time);
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync([new LimitRequest("trunk/carrier", Direction.Outbound)], CancellationToken.None)).Status);

        // Rings past the early lease; the trunk's timer reclaims at lease end, the call's timer is due 1 s later.
        _time.Advance(_leases.Early + TimeSpan.FromMilliseconds(500));
        limits.ExpireAll();
        Assert.Equal(1, limits.Grain("trunk/carrier").State.Reclaimed);

        // The 200 OK (or a re-INVITE/UPDATE) arrives in that window: the call is ended, not kept up uncounted.
        var stillUp = confirm ? await call.ConfirmAsync(CancellationToken.None) : await call.RenewAsync(CancellationToken.None);
        Assert.False(stillUp);
        Assert.Equal(CallPhase.Ended, call.Snapshot().Phase);

        var other = await new CallAdmission("other", new InMemoryGrainState<CallGrainState>(), limits, _leases, _time)
            .AdmitAsync([new LimitRequest("trunk/carrier", Direction.Outbound)], CancellationToken.None);
        Assert.Equal(AdmitStatus.Admitted, other.Status);
        Assert.Equal(1, limits.Held("trunk/carrier"));
    }

    [Fact]
    public void A_late_confirm_on_an_expired_lease_is_refused_even_before_the_timer_runs()
    {
        var trunk = new LimitLedger(LimitKey.Trunk("carrier"), new LimitGrainState(), new LimitSettings(Total: 1));
        var start = _time.GetUtcNow();
        Assert.True(trunk.TryReserve("late", Direction.Inbound, _leases.Early, null, start, out _).Admitted);

        Assert.False(trunk.Confirm("late", _leases.Confirmed, start + _leases.Early));
        Assert.Equal(0, trunk.Snapshot().Total);
        Assert.Equal(1, trunk.State.Reclaimed);
    }
}
