using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace CallState.Sip.Proxy;

/// <summary>Which budget a source gets (docs/architecture.md, "Overload control").</summary>
public enum SipSourceKind : byte
{
    /// <summary>Neither a trunk nor a trusted peer: <see cref="SipOverloadOptions.Default"/>.</summary>
    Default = 0,

    /// <summary>A trunk's source address: <see cref="SipOverloadOptions.Trunks"/>.</summary>
    Trunk = 1,

    /// <summary>A trusted peer's source address: <see cref="SipOverloadOptions.Peers"/>.</summary>
    Peer = 2,
}

/// <summary>
/// A token bucket: <c>rate</c> tokens a second up to <c>capacity</c>, full at the start, on <see cref="TimeProvider"/>
/// timestamps. Not thread-safe: its owner locks.
/// </summary>
public struct TokenBucket
{
    private readonly double _perTick;
    private readonly double _capacity;
    private double _tokens;
    private long _last;

    public TokenBucket(double ratePerSecond, double capacity, long now, long timestampFrequency)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ratePerSecond);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(timestampFrequency);
        _perTick = ratePerSecond / timestampFrequency;
        _capacity = capacity;
        _tokens = capacity;
        _last = now;
    }

    /// <summary>Takes one token if there is one at <paramref name="now"/>.</summary>
    public bool TryTake(long now)
    {
        Refill(now);
        if (_tokens < 1)
        {
            return false;
        }
        _tokens -= 1;
        return true;
    }

    /// <summary>Tokens available at <paramref name="now"/>.</summary>
    public double Available(long now)
    {
        Refill(now);
        return _tokens;
    }

    private void Refill(long now)
    {
        // A clock read on another thread may be a little behind the last one: time never runs backwards here.
        if (now > _last)
        {
            _tokens = Math.Min(_capacity, _tokens + ((now - _last) * _perTick));
            _last = now;
        }
    }
}

/// <summary>One source's budget: its request bucket, its refusal bucket and its server transactions in flight.</summary>
internal sealed class SourceBudget
{
    private readonly Lock _lock = new();
    private readonly int _maxInFlight;
    private TokenBucket _requests;
    private TokenBucket _refusals;
    private int _inFlight;
    private long _lastSeen;

    public SourceBudget(SipSourceKind kind, SipSourceBudgetOptions budget, int refusalsPerSecond, long now, long frequency)
    {
        Kind = kind;
        _maxInFlight = budget.MaxTransactions;
        _requests = new TokenBucket(budget.RequestsPerSecond, budget.Burst, now, frequency);
        _refusals = new TokenBucket(refusalsPerSecond, refusalsPerSecond, now, frequency);
        _lastSeen = now;
    }

    public SipSourceKind Kind { get; }

    public int InFlight => Volatile.Read(ref _inFlight);

    public long LastSeen => Volatile.Read(ref _lastSeen);

    /// <summary>Charges one request; false when the source is over its rate.</summary>
    public bool TryTakeRequest(long now)
    {
        Volatile.Write(ref _lastSeen, now);
        lock (_lock)
        {
            return _requests.TryTake(now);
        }
    }

    /// <summary>True when a refusal may be answered now; false: drop it (the source has had its answers this second).</summary>
    public bool TryTakeRefusal(long now)
    {
        lock (_lock)
        {
            return _refusals.TryTake(now);
        }
    }

    /// <summary>Counts a new server transaction in flight; false when the source already has its maximum.</summary>
    public bool TryEnter()
    {
        while (true)
        {
            var current = Volatile.Read(ref _inFlight);
            if (current >= _maxInFlight)
            {
                return false;
            }
            if (Interlocked.CompareExchange(ref _inFlight, current + 1, current) == current)
            {
                return true;
            }
        }
    }

    /// <summary>A transaction counted by <see cref="TryEnter"/> got its final response or ended.</summary>
    public void Exit() => Interlocked.Decrement(ref _inFlight);
}

/// <summary>
/// The per-source budgets, keyed by source address (an IPv4 address, or an IPv6 /64: the block one host is usually
/// given, so rotating addresses inside it gains nothing). Bounded: at most <see cref="SipOverloadOptions.MaxSources"/>
/// entries; an entry with nothing in flight and no request for <see cref="SipOverloadOptions.SourceIdleTime"/> is
/// swept. A new source that finds the table full of live entries shares one budget per kind with every other such
/// source, so forged source addresses cost a bounded table and together get no more than one source's budget.
/// A source's kind is asked of the host once per entry (so a configuration change reaches it when the entry expires).
/// Thread-safe; a lookup of a known source allocates nothing.
/// </summary>
public sealed class SipSourceBudgets
{
    /// <summary>A full table is swept at most this often, so a flood of new sources costs no sweep per request.</summary>
    private static readonly TimeSpan FullSweepInterval = TimeSpan.FromSeconds(1);

    private readonly SipOverloadOptions _options;
    private readonly TimeProvider _time;
    private readonly Func<IPAddress, SipSourceKind>? _classify;
    private readonly ConcurrentDictionary<UInt128, SourceBudget> _sources = new();
    private readonly SourceBudget[] _overflow;
    private readonly long _idleTicks;
    private readonly long _fullSweepTicks;
    private int _count;
    private int _sweeping;
    private long _nextSweep;
    private long _nextFullSweep;

    /// <summary><paramref name="classify"/> tells a trunk's or trusted peer's address (null: every source gets the default budget).</summary>
    public SipSourceBudgets(SipOverloadOptions options, TimeProvider time, Func<IPAddress, SipSourceKind>? classify = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        _options = options;
        _time = time;
        _classify = classify;
        var now = time.GetTimestamp();
        _overflow = [.. Enum.GetValues<SipSourceKind>().Select(k => New(k, now))];
        _idleTicks = (long)(options.SourceIdleTime.TotalSeconds * time.TimestampFrequency);
        _fullSweepTicks = (long)(FullSweepInterval.TotalSeconds * time.TimestampFrequency);
        _nextSweep = now + _idleTicks;
    }

    /// <summary>Sources tracked now (expired ones not yet swept included).</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Requests from new sources that found the table full and were charged to the shared budget of their kind.</summary>
    public long Overflowed => Interlocked.Read(ref _overflowed);

    private long _overflowed;

    /// <summary>The budget <paramref name="address"/> is charged to, made on its first request.</summary>
    internal SourceBudget Get(IPAddress address)
    {
        var key = KeyOf(address);
        if (_sources.TryGetValue(key, out var budget))
        {
            MaybeSweep();
            return budget;
        }
        return Add(key, address);
    }

    /// <summary>The kind and server transactions in flight of <paramref name="address"/>'s entry; null when it has none.</summary>
    public (SipSourceKind Kind, int InFlight)? Find(IPAddress address) =>
        _sources.TryGetValue(KeyOf(address), out var budget) ? (budget.Kind, budget.InFlight) : null;

    private SourceBudget Add(UInt128 key, IPAddress address)
    {
        MaybeSweep();
        var kind = Classify(address);
        var now = _time.GetTimestamp();
        if (Volatile.Read(ref _count) >= _options.MaxSources)
        {
            var next = Interlocked.Read(ref _nextFullSweep);
            if (now < next || Interlocked.CompareExchange(ref _nextFullSweep, now + _fullSweepTicks, next) != next || !Sweep(now))
            {
                Interlocked.Increment(ref _overflowed);
                return _overflow[(int)kind];
            }
        }
        var budget = New(kind, now);
        if (_sources.TryAdd(key, budget))
        {
            Interlocked.Increment(ref _count);
            return budget;
        }
        // Another receive loop added it first.
        return _sources.TryGetValue(key, out var existing) ? existing : budget;
    }

    private SipSourceKind Classify(IPAddress address)
    {
        if (_classify is null)
        {
            return SipSourceKind.Default;
        }
        var kind = _classify(address);
        return Enum.IsDefined(kind) ? kind : SipSourceKind.Default;
    }

    private SourceBudget New(SipSourceKind kind, long now) => new(kind, kind switch
    {
        SipSourceKind.Trunk => _options.Trunks,
        SipSourceKind.Peer => _options.Peers,
        _ => _options.Default,
    }, _options.RefusalsPerSecond, now, _time.TimestampFrequency);

    /// <summary>Sweeps once per idle time, on whichever request comes first after it.</summary>
    private void MaybeSweep()
    {
        var now = _time.GetTimestamp();
        var next = Interlocked.Read(ref _nextSweep);
        if (now >= next && Interlocked.CompareExchange(ref _nextSweep, now + _idleTicks, next) == next)
        {
            Sweep(now);
        }
    }

    /// <summary>Forgets sources idle for <see cref="SipOverloadOptions.SourceIdleTime"/> with nothing in flight; true when there is room afterwards.</summary>
    internal bool Sweep(long now)
    {
        if (Interlocked.Exchange(ref _sweeping, 1) == 1)
        {
            return Volatile.Read(ref _count) < _options.MaxSources;
        }
        try
        {
            foreach (var (key, budget) in _sources)
            {
                if (budget.InFlight <= 0 && now - budget.LastSeen > _idleTicks
                    && _sources.TryRemove(new KeyValuePair<UInt128, SourceBudget>(key, budget)))
                {
                    Interlocked.Decrement(ref _count);
                }
            }
        }
        finally
        {
            Volatile.Write(ref _sweeping, 0);
        }
        return Volatile.Read(ref _count) < _options.MaxSources;
    }

    /// <summary>IPv4 as its IPv4-mapped IPv6 form (low 64 bits non-zero); IPv6 as its /64 (low 64 bits zero), so the two never meet.</summary>
    internal static UInt128 KeyOf(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        Span<byte> bytes = stackalloc byte[16];
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            address.TryWriteBytes(bytes[12..], out _);
            return ((UInt128)0xFFFF << 32) | BinaryPrimitives.ReadUInt32BigEndian(bytes[12..]);
        }
        address.TryWriteBytes(bytes, out _);
        var key = BinaryPrimitives.ReadUInt128BigEndian(bytes);
        return address.IsIPv4MappedToIPv6 ? key : key & ~(UInt128)ulong.MaxValue;
    }
}
