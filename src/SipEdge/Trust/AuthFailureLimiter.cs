using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace CallState.SipEdge.Trust;

/// <summary>
/// Stops password guessing per source: <see cref="MaxFailures"/> failures within <see cref="Window"/> of the first one block the
/// source for <see cref="BlockTime"/>. An IPv4 address (or IPv4-mapped IPv6) is one source; an IPv6 address counts for its /64,
/// the block a single host is usually given, so rotating addresses inside it gains nothing. Success does not reset the count:
/// a source holding one account's password could otherwise interleave logins to guess another's. Thread-safe; memory bounded
/// by <see cref="MaxSources"/>.
/// </summary>
public sealed class AuthFailureLimiter
{
    public const int DefaultMaxFailures = 10;

    /// <summary>Default bound: about 64 bytes a source with the dictionary's overhead, so about 6 MB.</summary>
    public const int DefaultMaxSources = 100_000;

    public static readonly TimeSpan DefaultWindow = TimeSpan.FromSeconds(60);

    public static readonly TimeSpan DefaultBlockTime = TimeSpan.FromMinutes(5);

    /// <summary>A full table is swept for expired sources at most this often, so a flood of new sources costs no sweep per failure.</summary>
    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly Dictionary<UInt128, Entry> _sources = [];
    private readonly long _windowMs;
    private readonly long _blockMs;
    private long _nextSweep = long.MinValue;

    public AuthFailureLimiter(TimeProvider time, int maxFailures = DefaultMaxFailures, TimeSpan? window = null, TimeSpan? blockTime = null,
        int maxSources = DefaultMaxSources)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxFailures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSources, 1);
        Window = window ?? DefaultWindow;
        BlockTime = blockTime ?? DefaultBlockTime;
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(Window, TimeSpan.Zero, nameof(window));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(BlockTime, TimeSpan.Zero, nameof(blockTime));
        _time = time;
        MaxFailures = maxFailures;
        MaxSources = maxSources;
        _windowMs = (long)Window.TotalMilliseconds;
        _blockMs = (long)BlockTime.TotalMilliseconds;
    }

    public int MaxFailures { get; }

    public TimeSpan Window { get; }

    public TimeSpan BlockTime { get; }

    public int MaxSources { get; }

    /// <summary>Sources tracked now (blocked or with failures in their window, and expired ones not yet swept).</summary>
    public int TrackedSources
    {
        get
        {
            lock (_lock)
            {
                return _sources.Count;
            }
        }
    }

    /// <summary>True while <paramref name="source"/> is blocked: refuse its requests before verifying them.</summary>
    public bool IsBlocked(IPAddress source)
    {
        var key = KeyOf(source);
        lock (_lock)
        {
            return _sources.TryGetValue(key, out var entry) && entry.BlockedUntil > Now();
        }
    }

    /// <summary>
    /// Counts a failed verification (<see cref="DigestResult.IsFailure"/>) from <paramref name="source"/>; true when the source is
    /// blocked afterwards. When the table is full of live sources, a new source is not tracked rather than forgetting a blocked
    /// one: an attacker needs more than <see cref="MaxSources"/> live sources for that, beyond what a per-source limit can stop.
    /// </summary>
    public bool RecordFailure(IPAddress source)
    {
        var key = KeyOf(source);
        lock (_lock)
        {
            var now = Now();
            if (!_sources.TryGetValue(key, out var entry))
            {
                if (_sources.Count >= MaxSources && !TrySweep(now))
                {
                    return false;
                }

                entry = new Entry(now, 0, 0);
            }

            if (entry.BlockedUntil > now)
            {
                return true;
            }

            if (entry.BlockedUntil != 0 || now - entry.WindowStart > _windowMs)
            {
                entry = new Entry(now, 0, 0);
            }

            var failures = entry.Failures + 1;
            entry = failures >= MaxFailures ? new Entry(now, 0, now + _blockMs) : entry with { Failures = failures };
            _sources[key] = entry;
            return entry.BlockedUntil != 0;
        }
    }

    /// <summary>Drops sources neither blocked nor within their window; true when there is room afterwards.</summary>
    private bool TrySweep(long now)
    {
        if (now >= _nextSweep)
        {
            _nextSweep = now + (long)SweepInterval.TotalMilliseconds;
            foreach (var (key, entry) in _sources)
            {
                if (entry.BlockedUntil <= now && now - entry.WindowStart > _windowMs)
                {
                    _sources.Remove(key);
                }
            }
        }

        return _sources.Count < MaxSources;
    }

    private long Now() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    /// <summary>IPv4 as its IPv4-mapped IPv6 form (low 64 bits non-zero); IPv6 as its /64 (low 64 bits zero), so the two never meet.</summary>
    private static UInt128 KeyOf(IPAddress source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var v6 = source.AddressFamily == AddressFamily.InterNetwork ? source.MapToIPv6() : source;
        Span<byte> bytes = stackalloc byte[16];
        v6.TryWriteBytes(bytes, out _);
        var key = BinaryPrimitives.ReadUInt128BigEndian(bytes);
        return v6.IsIPv4MappedToIPv6 ? key : key & ~(UInt128)ulong.MaxValue;
    }

    /// <summary>Failures since <see cref="WindowStart"/>; <see cref="BlockedUntil"/> is 0 when not blocked.</summary>
    private readonly record struct Entry(long WindowStart, int Failures, long BlockedUntil);
}
