using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace CallState.SipEdge.Trust;

/// <summary>What <see cref="NonceCountCache.TryAccept"/> decided.</summary>
public enum NonceCountResult
{
    /// <summary>First use of this (nonce, nc) at this edge.</summary>
    Accepted = 0,

    /// <summary>This (nonce, nc) was accepted before, or nc is too far below the highest one seen to tell (RFC 7616 3.4).</summary>
    Replay = 1,

    /// <summary>
    /// The cache holds <see cref="NonceCountCache.MaxEntries"/> live nonces and this one is new: refused rather than forgetting a
    /// live nonce (which would let its counts be replayed). The caller re-challenges with <c>stale=true</c>.
    /// </summary>
    Full = 2,
}

/// <summary>
/// Remembers which nonce counts each nonce was accepted with, until the nonce expires, so a request replayed to the edge that saw
/// it is refused (RFC 7616 5.12). Per nonce: the highest count accepted and a 64-bit map of the counts below it (an anti-replay
/// window): counts may arrive out of order over UDP, each once. Thread-safe; memory bounded by <see cref="MaxEntries"/>.
/// </summary>
public sealed class NonceCountCache
{
    /// <summary>Default bound: an entry is about 100 bytes with the dictionary's and the queue's overhead, so about 10 MB.</summary>
    public const int DefaultMaxEntries = 100_000;

    /// <summary>Counts this far below the highest one accepted for a nonce are still told apart.</summary>
    public const int Window = 64;

    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly Dictionary<NonceKey, Entry> _entries = [];

    // Insertion order; nonces expire a fixed lifetime after issue, so this is close to expiry order and its head is where
    // expired entries are found.
    private readonly Queue<(NonceKey Key, long Expires)> _order = new();

    public NonceCountCache(TimeProvider time, int maxEntries = DefaultMaxEntries)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxEntries, 1);
        _time = time;
        MaxEntries = maxEntries;
    }

    public int MaxEntries { get; }

    /// <summary>Nonces remembered now (expired ones are dropped on the next <see cref="TryAccept"/>).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>
    /// Records the use of <paramref name="nonceCount"/> with <paramref name="nonce"/> (a nonce <see cref="NonceService.Verify"/>
    /// found valid, <see cref="NonceService.NonceLength"/> bytes) that stops being valid at <paramref name="expires"/>.
    /// </summary>
    public NonceCountResult TryAccept(ReadOnlySpan<byte> nonce, uint nonceCount, DateTimeOffset expires)
    {
        var key = NonceKey.From(nonce);
        var expiresMs = expires.ToUnixTimeMilliseconds();
        lock (_lock)
        {
            var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
            EvictExpired(now);
            ref var entry = ref CollectionsMarshal.GetValueRefOrNullRef(_entries, key);
            if (!Unsafe.IsNullRef(ref entry))
            {
                return entry.TryAccept(nonceCount) ? NonceCountResult.Accepted : NonceCountResult.Replay;
            }

            if (_entries.Count >= MaxEntries)
            {
                return NonceCountResult.Full;
            }

            _entries.Add(key, new Entry { Highest = nonceCount, Seen = 1 });
            _order.Enqueue((key, expiresMs));
            return NonceCountResult.Accepted;
        }
    }

    private void EvictExpired(long now)
    {
        while (_order.TryPeek(out var head) && head.Expires < now)
        {
            _order.Dequeue();
            _entries.Remove(head.Key);
        }
    }

    private struct Entry
    {
        public uint Highest;

        /// <summary>Bit i set: count <c>Highest - i</c> was accepted.</summary>
        public ulong Seen;

        public bool TryAccept(uint count)
        {
            if (count > Highest)
            {
                var shift = count - Highest;
                Seen = shift >= Window ? 1 : (Seen << (int)shift) | 1;
                Highest = count;
                return true;
            }

            var back = Highest - count;
            if (back >= Window)
            {
                return false;
            }

            var bit = 1UL << (int)back;
            if ((Seen & bit) != 0)
            {
                return false;
            }

            Seen |= bit;
            return true;
        }
    }

    /// <summary>The 32 bytes of a nonce as a key, without allocating.</summary>
    private readonly record struct NonceKey(ulong A, ulong B, ulong C, ulong D)
    {
        public static NonceKey From(ReadOnlySpan<byte> nonce)
        {
            if (nonce.Length != NonceService.NonceLength)
            {
                throw new ArgumentException($"A nonce of {NonceService.NonceLength} bytes is expected (was {nonce.Length}).", nameof(nonce));
            }

            var words = MemoryMarshal.Cast<byte, ulong>(nonce);
            return new(words[0], words[1], words[2], words[3]);
        }
    }
}
