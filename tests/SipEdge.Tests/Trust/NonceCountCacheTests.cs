using System.Collections.Concurrent;
using System.Text;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Trust;

public sealed class NonceCountCacheTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2025, 3, 1, 12, 0, 0, TimeSpan.Zero));

    private DateTimeOffset Expires => _time.GetUtcNow() + TimeSpan.FromSeconds(30);

    private static byte[] Nonce(int i) => Encoding.ASCII.GetBytes(i.ToString("D32", System.Globalization.CultureInfo.InvariantCulture));

    [Fact]
    public void A_nonce_count_is_accepted_once()
    {
        var cache = new NonceCountCache(_time);
        var expires = Expires;

        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(1), 1, expires));
        Assert.Equal(NonceCountResult.Replay, cache.TryAccept(Nonce(1), 1, expires));
        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(1), 2, expires));
        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(2), 1, expires));
    }

    [Fact]
    public void Counts_out_of_order_within_the_window_are_accepted_once_and_older_ones_refused()
    {
        var cache = new NonceCountCache(_time);
        var expires = Expires;

        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(1), 5, expires));
        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(1), 3, expires));
        Assert.Equal(NonceCountResult.Replay, cache.TryAccept(Nonce(1), 3, expires));
        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(1), 100, expires));
        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(1), 100 - NonceCountCache.Window + 1, expires));
        Assert.Equal(NonceCountResult.Replay, cache.TryAccept(Nonce(1), 100 - NonceCountCache.Window, expires));
        Assert.Equal(NonceCountResult.Replay, cache.TryAccept(Nonce(1), 5, expires));
    }

    [Fact]
    public void A_full_cache_refuses_new_nonces_but_keeps_counting_known_ones_until_entries_expire()
    {
        var cache = new NonceCountCache(_time, maxEntries: 3);
        var expires = Expires;
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(i), 1, expires));
        }

        Assert.Equal(NonceCountResult.Full, cache.TryAccept(Nonce(3), 1, Expires));
        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(0), 2, expires));
        Assert.Equal(NonceCountResult.Replay, cache.TryAccept(Nonce(0), 1, expires));
        Assert.Equal(3, cache.Count);

        _time.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(NonceCountResult.Accepted, cache.TryAccept(Nonce(3), 1, Expires));
        Assert.Equal(1, cache.Count);
    }

    [Fact]
    public void Concurrent_uses_of_the_same_counts_are_each_accepted_exactly_once()
    {
        var cache = new NonceCountCache(_time);
        var expires = Expires;
        var accepted = new ConcurrentBag<(int Nonce, uint Count)>();
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ =>
        {
            for (var n = 0; n < 20; n++)
            {
                for (uint nc = 1; nc <= 50; nc++)
                {
                    if (cache.TryAccept(Nonce(n), nc, expires) == NonceCountResult.Accepted)
                    {
                        accepted.Add((n, nc));
                    }
                }
            }
        });

        Assert.Equal(20 * 50, accepted.Count);
        Assert.Equal(20 * 50, accepted.Distinct().Count());
    }

    [Fact]
    public void A_key_that_is_not_a_nonce_of_the_service_is_a_caller_error()
    {
        var cache = new NonceCountCache(_time);

        Assert.Throws<ArgumentException>(() => cache.TryAccept("short"u8, 1, Expires));
    }
}
