using System.Net;
using CallState.Sip.Proxy;

namespace CallState.Sip.Tests.Proxy;

/// <summary>The token bucket and the bounded per-source budget table on a fake clock.</summary>
public sealed class SourceBudgetTests
{
    private readonly FakeTimeProvider _clock = new();

    [Fact]
    public void Token_bucket_starts_full_refills_at_its_rate_and_never_above_its_capacity()
    {
        var bucket = new TokenBucket(ratePerSecond: 10, capacity: 5, _clock.GetTimestamp(), _clock.TimestampFrequency);
        for (var i = 0; i < 5; i++)
        {
            Assert.True(bucket.TryTake(_clock.GetTimestamp()));
        }
        Assert.False(bucket.TryTake(_clock.GetTimestamp()));

        // 10 a second: one token per 100 ms.
        _clock.Advance(TimeSpan.FromMilliseconds(99));
        Assert.False(bucket.TryTake(_clock.GetTimestamp()));
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(bucket.TryTake(_clock.GetTimestamp()));
        Assert.False(bucket.TryTake(_clock.GetTimestamp()));

        // A long quiet spell fills it to its capacity, not beyond.
        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(5, bucket.Available(_clock.GetTimestamp()));
    }

    [Fact]
    public void Token_bucket_ignores_a_timestamp_older_than_the_last_one()
    {
        var start = _clock.GetTimestamp();
        var bucket = new TokenBucket(1, 1, start, _clock.TimestampFrequency);
        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.True(bucket.TryTake(_clock.GetTimestamp()));
        Assert.False(bucket.TryTake(start));
    }

    [Fact]
    public void A_source_over_its_rate_is_refused_and_its_refusals_are_answered_only_so_many_a_second()
    {
        var budgets = new SipSourceBudgets(Options(rate: 2, burst: 2, refusals: 1), _clock);
        var source = budgets.Get(IPAddress.Parse("192.0.2.1"));
        var now = _clock.GetTimestamp();
        Assert.True(source.TryTakeRequest(now));
        Assert.True(source.TryTakeRequest(now));
        Assert.False(source.TryTakeRequest(now));
        Assert.True(source.TryTakeRefusal(now));
        Assert.False(source.TryTakeRefusal(now));

        // Another source has a budget of its own.
        Assert.True(budgets.Get(IPAddress.Parse("192.0.2.2")).TryTakeRequest(now));

        _clock.Advance(TimeSpan.FromSeconds(1));
        now = _clock.GetTimestamp();
        Assert.True(source.TryTakeRefusal(now));
        Assert.True(source.TryTakeRequest(now));
    }

    [Fact]
    public void Transactions_in_flight_are_capped_per_source_and_released()
    {
        var budgets = new SipSourceBudgets(Options(maxTransactions: 2), _clock);
        var source = budgets.Get(IPAddress.Parse("192.0.2.1"));
        Assert.True(source.TryEnter());
        Assert.True(source.TryEnter());
        Assert.False(source.TryEnter());
        source.Exit();
        Assert.True(source.TryEnter());
        Assert.Equal(2, budgets.Find(IPAddress.Parse("192.0.2.1"))!.Value.InFlight);
    }

    [Fact]
    public void Trunks_and_trusted_peers_get_their_own_budgets_and_unknown_sources_the_default()
    {
        var options = Options(rate: 1, burst: 1);
        options.Trunks = new SipSourceBudgetOptions { RequestsPerSecond = 1000, Burst = 50, MaxTransactions = 10 };
        options.Peers = new SipSourceBudgetOptions { RequestsPerSecond = 1000, Burst = 20, MaxTransactions = 10 };
        var trunk = IPAddress.Parse("192.0.2.10");
        var peer = IPAddress.Parse("192.0.2.20");
        var budgets = new SipSourceBudgets(options, _clock, a => a.Equals(trunk) ? SipSourceKind.Trunk : a.Equals(peer) ? SipSourceKind.Peer : SipSourceKind.Default);
        var now = _clock.GetTimestamp();
        Assert.Equal(50, Accepted(budgets.Get(trunk), now));
        Assert.Equal(20, Accepted(budgets.Get(peer), now));
        Assert.Equal(1, Accepted(budgets.Get(IPAddress.Parse("192.0.2.30")), now));
        Assert.Equal(SipSourceKind.Trunk, budgets.Find(trunk)!.Value.Kind);
        Assert.Equal(SipSourceKind.Peer, budgets.Find(peer)!.Value.Kind);
    }

    [Fact]
    public void Addresses_of_one_IPv6_64_share_a_budget_and_IPv4_mapped_addresses_are_their_IPv4_source()
    {
        var budgets = new SipSourceBudgets(Options(), _clock);
        Assert.Same(budgets.Get(IPAddress.Parse("2001:db8:1:2::1")), budgets.Get(IPAddress.Parse("2001:db8:1:2:ffff::9")));
        Assert.NotSame(budgets.Get(IPAddress.Parse("2001:db8:1:2::1")), budgets.Get(IPAddress.Parse("2001:db8:1:3::1")));
        Assert.Same(budgets.Get(IPAddress.Parse("192.0.2.7")), budgets.Get(IPAddress.Parse("::ffff:192.0.2.7")));
    }

    [Fact]
    public void The_table_is_bounded_new_sources_past_it_share_one_budget_and_idle_entries_expire()
    {
        var options = Options(rate: 1, burst: 1);
        options.MaxSources = 3;
        options.SourceIdleTime = TimeSpan.FromSeconds(60);
        var budgets = new SipSourceBudgets(options, _clock);
        var now = _clock.GetTimestamp();

        // A spoofing flood: many addresses, one request each.
        var accepted = 0;
        for (var i = 0; i < 1000; i++)
        {
            if (budgets.Get(new IPAddress([198, 51, (byte)(i / 256), (byte)(i % 256)])).TryTakeRequest(now))
            {
                accepted++;
            }
        }
        Assert.Equal(3, budgets.Count);
        Assert.Equal(997, budgets.Overflowed);

        // The three tracked sources had a token each; the 997 others shared one budget of one token.
        Assert.Equal(4, accepted);

        // An entry with a transaction in flight stays; idle ones go once their idle time has passed.
        var busy = budgets.Get(new IPAddress([198, 51, 0, 0]));
        Assert.True(busy.TryEnter());
        _clock.Advance(TimeSpan.FromSeconds(61));
        budgets.Get(IPAddress.Parse("203.0.113.1"));
        Assert.Equal(2, budgets.Count);
        Assert.NotNull(budgets.Find(new IPAddress([198, 51, 0, 0])));
        Assert.NotNull(budgets.Find(IPAddress.Parse("203.0.113.1")));
        busy.Exit();
        _clock.Advance(TimeSpan.FromSeconds(61));
        budgets.Get(IPAddress.Parse("203.0.113.2"));
        Assert.Null(budgets.Find(new IPAddress([198, 51, 0, 0])));
        Assert.True(budgets.Count <= 2);
    }

    [Fact]
    public void Looking_up_a_known_source_allocates_nothing()
    {
        var budgets = new SipSourceBudgets(Options(rate: 1_000_000, burst: 1_000_000), _clock);
        var address = IPAddress.Parse("192.0.2.1");
        budgets.Get(address).TryTakeRequest(_clock.GetTimestamp());
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            budgets.Get(address).TryTakeRequest(_clock.GetTimestamp());
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Theory]
    [InlineData("MaxTransactions", "CallState:Sip:Overload:MaxTransactions")]
    [InlineData("Default.RequestsPerSecond", "CallState:Sip:Overload:Default:RequestsPerSecond")]
    [InlineData("Peers.Burst", "CallState:Sip:Overload:Peers:Burst")]
    [InlineData("Trunks.MaxTransactions", "CallState:Sip:Overload:Trunks:MaxTransactions")]
    [InlineData("MaxLag", "CallState:Sip:Overload:MaxLag")]
    [InlineData("MaxSources", "CallState:Sip:Overload:MaxSources")]
    [InlineData("RefusalsPerSecond", "CallState:Sip:Overload:RefusalsPerSecond")]
    public void A_bad_value_is_reported_naming_its_field(string field, string path)
    {
        var options = new SipProxyOptions();
        var overload = options.Overload;
        switch (field)
        {
            case "MaxTransactions": overload.MaxTransactions = options.MaxTransactions; break;
            case "Default.RequestsPerSecond": overload.Default.RequestsPerSecond = 0; break;
            case "Peers.Burst": overload.Peers.Burst = 0; break;
            case "Trunks.MaxTransactions": overload.Trunks.MaxTransactions = -1; break;
            case "MaxLag": overload.MaxLag = TimeSpan.Zero; break;
            case "MaxSources": overload.MaxSources = 0; break;
            case "RefusalsPerSecond": overload.RefusalsPerSecond = -1; break;
        }
        var errors = options.Validate();
        Assert.Single(errors);
        Assert.StartsWith(path + ":", errors[0], StringComparison.Ordinal);
    }

    [Fact]
    public void The_defaults_are_valid_and_give_trunks_and_peers_larger_budgets()
    {
        var options = new SipProxyOptions();
        Assert.Empty(options.Validate());
        Assert.True(options.Overload.Trunks.RequestsPerSecond > options.Overload.Default.RequestsPerSecond);
        Assert.True(options.Overload.Peers.MaxTransactions > options.Overload.Default.MaxTransactions);

        // Unset, the shedding threshold (transactions in progress) is a quarter of the hard limit.
        Assert.Equal(50_000, options.Overload.EffectiveMaxTransactions(options.MaxTransactions));
        options.MaxTransactions = 2;
        Assert.Empty(options.Validate());

        // Off, its values are not checked.
        options.Overload.Enabled = false;
        options.Overload.MaxSources = 0;
        Assert.Empty(options.Validate());
    }

    private static int Accepted(SourceBudget source, long now)
    {
        var accepted = 0;
        while (accepted < 10_000 && source.TryTakeRequest(now))
        {
            accepted++;
        }
        return accepted;
    }

    private static SipOverloadOptions Options(double rate = 100, int burst = 100, int maxTransactions = 100, int refusals = 10) => new()
    {
        Default = new SipSourceBudgetOptions { RequestsPerSecond = rate, Burst = burst, MaxTransactions = maxTransactions },
        RefusalsPerSecond = refusals,
    };
}

/// <summary>The thread-pool lag probe on a fake clock, its work items run by the test.</summary>
public sealed class LagProbeTests
{
    [Fact]
    public void A_lag_counts_once_it_lasts_two_samples_and_a_stalled_pool_shows_before_its_item_runs()
    {
        var clock = new FakeTimeProvider();
        var queued = new Queue<Action<object?>>();
        using var probe = new LagProbe(clock, TimeSpan.FromMilliseconds(100), queued.Enqueue);
        TimeSpan Lag() => TimeSpan.FromSeconds((double)probe.LagTicks / clock.TimestampFrequency);

        // Items that run at once: no lag.
        clock.Advance(TimeSpan.FromMilliseconds(100));
        queued.Dequeue()(null);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(TimeSpan.Zero, Lag());

        // One item 80 ms late: one sample, not yet counted.
        clock.Advance(TimeSpan.FromMilliseconds(80));
        queued.Dequeue()(null);
        clock.Advance(TimeSpan.FromMilliseconds(20));
        Assert.Equal(TimeSpan.Zero, Lag());

        // A stall: the next item does not run; every tick counts it as late up to then.
        clock.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(TimeSpan.FromMilliseconds(80), Lag());
        clock.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(TimeSpan.FromMilliseconds(100), Lag());
        clock.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(TimeSpan.FromMilliseconds(200), Lag());
        Assert.Single(queued);

        // The pool catches up: the lag falls back once two samples say so.
        queued.Dequeue()(null);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        queued.Dequeue()(null);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(TimeSpan.Zero, Lag());
    }
}
