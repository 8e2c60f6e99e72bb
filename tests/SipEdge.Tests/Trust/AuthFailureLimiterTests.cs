using System.Net;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Trust;

public sealed class AuthFailureLimiterTests
{
    private static readonly IPAddress Attacker = IPAddress.Parse("198.51.100.7");
    private static readonly IPAddress Neighbour = IPAddress.Parse("198.51.100.8");

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2025, 3, 1, 12, 0, 0, TimeSpan.Zero));

    private static void Fail(AuthFailureLimiter limiter, IPAddress source, int times)
    {
        for (var i = 0; i < times; i++)
        {
            limiter.RecordFailure(source);
        }
    }

    [Fact]
    public void The_tenth_failure_blocks_the_source_for_the_block_time_only()
    {
        var limiter = new AuthFailureLimiter(_time);

        Fail(limiter, Attacker, 9);
        Assert.False(limiter.IsBlocked(Attacker));
        Assert.True(limiter.RecordFailure(Attacker));
        Assert.True(limiter.IsBlocked(Attacker));
        Assert.False(limiter.IsBlocked(Neighbour));

        _time.Advance(AuthFailureLimiter.DefaultBlockTime - TimeSpan.FromMilliseconds(1));
        Assert.True(limiter.IsBlocked(Attacker));
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.False(limiter.IsBlocked(Attacker));

        // The count starts again after a block.
        Assert.False(limiter.RecordFailure(Attacker));
        Assert.False(limiter.IsBlocked(Attacker));
    }

    [Fact]
    public void Failures_further_apart_than_the_window_do_not_block()
    {
        var limiter = new AuthFailureLimiter(_time, maxFailures: 3, window: TimeSpan.FromSeconds(10));

        Fail(limiter, Attacker, 2);
        _time.Advance(TimeSpan.FromSeconds(11));
        Fail(limiter, Attacker, 2);

        Assert.False(limiter.IsBlocked(Attacker));
        Assert.True(limiter.RecordFailure(Attacker));
    }

    [Fact]
    public void An_IPv6_source_counts_for_its_64_and_a_mapped_IPv4_address_as_itself()
    {
        var limiter = new AuthFailureLimiter(_time, maxFailures: 2);

        limiter.RecordFailure(IPAddress.Parse("2001:db8:1:2::1"));
        limiter.RecordFailure(IPAddress.Parse("2001:db8:1:2:ffff::9"));
        Assert.True(limiter.IsBlocked(IPAddress.Parse("2001:db8:1:2::77")));
        Assert.False(limiter.IsBlocked(IPAddress.Parse("2001:db8:1:3::1")));

        limiter.RecordFailure(Attacker);
        limiter.RecordFailure(Attacker.MapToIPv6());
        Assert.True(limiter.IsBlocked(Attacker));
        Assert.True(limiter.IsBlocked(Attacker.MapToIPv6()));
    }

    [Fact]
    public void The_table_is_bounded_and_keeps_blocked_sources_when_full()
    {
        var limiter = new AuthFailureLimiter(_time, maxFailures: 3, window: TimeSpan.FromSeconds(10), maxSources: 2);
        var third = IPAddress.Parse("203.0.113.1");

        Fail(limiter, Attacker, 3);
        Fail(limiter, Neighbour, 1);
        Fail(limiter, third, 5);

        Assert.Equal(2, limiter.TrackedSources);
        Assert.False(limiter.IsBlocked(third));
        Assert.True(limiter.IsBlocked(Attacker));

        // The neighbour's window ends; its entry makes room, the blocked source's does not.
        _time.Advance(TimeSpan.FromSeconds(11));
        Fail(limiter, third, 3);
        Assert.True(limiter.IsBlocked(third));
        Assert.True(limiter.IsBlocked(Attacker));
        Assert.Equal(2, limiter.TrackedSources);
    }
}
