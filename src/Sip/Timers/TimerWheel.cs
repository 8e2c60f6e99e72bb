namespace CallState.Sip.Timers;

/// <summary>
/// A hashed timing wheel for SIP transaction timers (RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2, 16.6
/// step 11): one <see cref="ITimer"/> from a <see cref="TimeProvider"/> ticks at a fixed resolution, and
/// scheduling or cancelling a timer is O(1) instead of one <c>Task.Delay</c> or timer object per transaction.
/// </summary>
/// <remarks>
/// A timer fires on the first tick at or after its due time, never earlier, so it can be late by up to one
/// resolution plus scheduling latency; SIP timers (T1 = 500 ms and up) tolerate that. Delays longer than one
/// revolution of the wheel stay in their slot and are skipped until the revolution in which they are due.
/// Callbacks run on the ticking thread, outside the wheel's lock, so a callback may schedule or cancel timers.
/// </remarks>
public sealed class TimerWheel : IDisposable
{
    /// <summary>10 ms: a fiftieth of T1, well below what SIP's retransmission timers can notice.</summary>
    public static readonly TimeSpan DefaultResolution = TimeSpan.FromMilliseconds(10);

    /// <summary>512 slots at 10 ms is one revolution per 5.12 s, which covers T1, T2 and Timer K without rounds.</summary>
    public const int DefaultSlotCount = 512;

    /// <summary>
    /// Callbacks run per tick at most, so one tick after a burst (or after the process stalled) cannot hold the
    /// ticking thread for long; the rest stay due and run on the following ticks.
    /// </summary>
    public const int DefaultMaxCallbacksPerTick = 4096;

    // Entries kept for reuse so steady-state scheduling does not allocate; bounded so a burst does not pin memory.
    private const int MaxPooledEntries = 16_384;

    private readonly TimeProvider _timeProvider;
    private readonly long _resolutionTicks;
    private readonly TimeSpan _resolution;
    private readonly Entry[] _slots;
    private readonly int _slotMask;
    private readonly Entry _due = Entry.CreateSentinel();
    private readonly int _maxCallbacksPerTick;
    private readonly Action<Exception>? _onCallbackError;
    private readonly long _startTimestamp;
    private readonly ITimer _timer;
    private readonly Lock _lock = new();
    private readonly Batch[] _batch;

    private long _currentTick;
    private int _count;
    private int _dueCount;
    private bool _timerRunning;
    private bool _disposed;
    private int _ticking;
    private Entry? _pool;
    private int _poolCount;
    private long _callbackErrors;
    private long _fired;

    public TimerWheel(TimeProvider timeProvider)
        : this(timeProvider, DefaultResolution)
    {
    }

    /// <param name="timeProvider">Source of time and of the one ticking timer.</param>
    /// <param name="resolution">Tick length; a timer is late by at most this much plus scheduling latency.</param>
    /// <param name="slotCount">Slots per revolution, rounded up to a power of two.</param>
    /// <param name="maxCallbacksPerTick">Callbacks run per tick at most; the rest wait for the next tick.</param>
    /// <param name="onCallbackError">Told of an exception thrown by a callback; the wheel goes on either way.</param>
    public TimerWheel(
        TimeProvider timeProvider,
        TimeSpan resolution,
        int slotCount = DefaultSlotCount,
        int maxCallbacksPerTick = DefaultMaxCallbacksPerTick,
        Action<Exception>? onCallbackError = null)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        if (resolution < TimeSpan.FromMilliseconds(1))
        {
            throw new ArgumentOutOfRangeException(nameof(resolution), resolution, "Resolution must be at least 1 ms.");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(slotCount, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(slotCount, 1 << 20);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCallbacksPerTick, 1);

        _timeProvider = timeProvider;
        _resolution = resolution;
        _resolutionTicks = resolution.Ticks;
        var slots = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)slotCount);
        _slots = new Entry[slots];
        for (var i = 0; i < slots; i++)
        {
            _slots[i] = Entry.CreateSentinel();
        }
        _slotMask = slots - 1;
        _maxCallbacksPerTick = maxCallbacksPerTick;
        _onCallbackError = onCallbackError;
        _batch = new Batch[Math.Min(maxCallbacksPerTick, 1024)];
        _startTimestamp = timeProvider.GetTimestamp();
        // Created stopped: the wheel only ticks while it holds timers, so an idle process does not wake up.
        _timer = timeProvider.CreateTimer(static s => ((TimerWheel)s!).OnTick(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Tick length.</summary>
    public TimeSpan Resolution => _resolution;

    /// <summary>The clock the wheel runs on.</summary>
    public TimeProvider TimeProvider => _timeProvider;

    /// <summary>Timers scheduled and neither fired nor cancelled.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _count;
            }
        }
    }

    /// <summary>Callbacks that have run.</summary>
    public long Fired => Interlocked.Read(ref _fired);

    /// <summary>Callbacks that threw.</summary>
    public long CallbackErrors => Interlocked.Read(ref _callbackErrors);

    /// <summary>Runs <paramref name="callback"/> with <paramref name="state"/> once <paramref name="delay"/> has passed.</summary>
    /// <remarks>A zero delay fires on the next tick, never inside this call.</remarks>
    public TimerHandle Schedule(TimeSpan delay, Action<object?> callback, object? state)
    {
        ArgumentNullException.ThrowIfNull(callback);
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);

        var elapsed = _timeProvider.GetElapsedTime(_startTimestamp).Ticks;
        // Round up: the timer must never fire before its delay has passed.
        var dueTick = CeilingDiv(elapsed + delay.Ticks, _resolutionTicks);

        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_timerRunning)
            {
                // The wheel was idle: nothing is pending, so skip the ticks that passed without work.
                _currentTick = Math.Max(_currentTick, elapsed / _resolutionTicks);
            }
            if (dueTick <= _currentTick)
            {
                dueTick = _currentTick + 1;
            }

            var entry = Rent();
            entry.Callback = callback;
            entry.State = state;
            entry.DueTick = dueTick;
            entry.IsDue = false;
            entry.LinkBefore(_slots[dueTick & _slotMask]);
            _count++;
            if (!_timerRunning)
            {
                _timerRunning = true;
                _timer.Change(_resolution, _resolution);
            }
            return new TimerHandle(this, entry, entry.Version);
        }
    }

    /// <summary>Runs <paramref name="callback"/> once <paramref name="delay"/> has passed.</summary>
    public TimerHandle Schedule(TimeSpan delay, Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        return Schedule(delay, static s => ((Action)s!)(), callback);
    }

    internal bool Cancel(Entry entry, int version)
    {
        lock (_lock)
        {
            if (entry.Version != version || entry.Callback is null)
            {
                // Already fired, cancelled, or the entry was reused for another timer.
                return false;
            }
            if (entry.IsDue)
            {
                _dueCount--;
            }
            entry.Unlink();
            _count--;
            Return(entry);
            return true;
        }
    }

    internal bool IsPending(Entry entry, int version)
    {
        lock (_lock)
        {
            return entry.Version == version && entry.Callback is not null;
        }
    }

    private void OnTick()
    {
        // A system timer may call back again while a slow tick is still running; the later call has nothing
        // to add because a tick catches up to the current time, so it simply returns.
        if (Interlocked.CompareExchange(ref _ticking, 1, 0) != 0)
        {
            return;
        }
        try
        {
            var total = 0;
            bool moreDue;
            do
            {
                var taken = Collect(Math.Min(_batch.Length, _maxCallbacksPerTick - total), out moreDue);
                Run(taken);
                total += taken;
            }
            while (moreDue && total < _maxCallbacksPerTick);
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    private int Collect(int limit, out bool moreDue)
    {
        lock (_lock)
        {
            moreDue = false;
            if (_disposed)
            {
                return 0;
            }
            var target = _timeProvider.GetElapsedTime(_startTimestamp).Ticks / _resolutionTicks;
            if (target - _currentTick > _slots.Length)
            {
                // Behind by more than a revolution: visiting each slot once, at the latest tick that maps to it,
                // finds every entry due by now, since an entry's slot is its due tick modulo the slot count.
                _currentTick = target - _slots.Length;
            }
            while (_currentTick < target)
            {
                _currentTick++;
                Expire(_slots[_currentTick & _slotMask], _currentTick);
            }

            var taken = 0;
            while (taken < limit && _due.Next != _due)
            {
                var entry = _due.Next!;
                entry.Unlink();
                _dueCount--;
                _count--;
                _batch[taken++] = new Batch(entry.Callback!, entry.State);
                // Returned before the callback runs: a handle cancelled from now on reports false, as it should.
                Return(entry);
            }
            moreDue = _dueCount > 0;
            if (_count == 0 && _timerRunning)
            {
                _timerRunning = false;
                _timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
            return taken;
        }
    }

    private void Expire(Entry sentinel, long tick)
    {
        var entry = sentinel.Next!;
        while (entry != sentinel)
        {
            var next = entry.Next!;
            if (entry.DueTick <= tick)
            {
                // Moved to the due list in slot order, so timers due on the same tick fire in the order scheduled.
                entry.Unlink();
                entry.IsDue = true;
                entry.LinkBefore(_due);
                _dueCount++;
            }
            entry = next;
        }
    }

    private void Run(int taken)
    {
        for (var i = 0; i < taken; i++)
        {
            var (callback, state) = _batch[i];
            _batch[i] = default;
            try
            {
                callback(state);
            }
#pragma warning disable CA1031 // A timer callback's failure must not stop the other timers due on this tick.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Interlocked.Increment(ref _callbackErrors);
                ReportCallbackError(ex);
            }
            Interlocked.Increment(ref _fired);
        }
    }

    private void ReportCallbackError(Exception ex)
    {
        if (_onCallbackError is null)
        {
            return;
        }
        try
        {
            _onCallbackError(ex);
        }
#pragma warning disable CA1031 // The error sink is the last resort; its own failure has nowhere left to go.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private Entry Rent()
    {
        var entry = _pool;
        if (entry is null)
        {
            return new Entry();
        }
        _pool = entry.Next;
        entry.Next = null;
        _poolCount--;
        return entry;
    }

    private void Return(Entry entry)
    {
        // The version bump makes every handle to the old timer stale before the entry can be reused.
        entry.Version++;
        entry.Callback = null;
        entry.State = null;
        entry.IsDue = false;
        entry.Prev = null;
        entry.Next = null;
        if (_poolCount < MaxPooledEntries)
        {
            entry.Next = _pool;
            _pool = entry;
            _poolCount++;
        }
    }

    private static long CeilingDiv(long value, long divisor) => (value + divisor - 1) / divisor;

    /// <summary>Stops ticking; pending timers never fire.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            _timerRunning = false;
        }
        _timer.Dispose();
    }

    private readonly record struct Batch(Action<object?> Callback, object? State);

    /// <summary>A timer's node in a slot's circular doubly linked list, so removal is O(1).</summary>
    internal sealed class Entry
    {
        public Entry? Prev;
        public Entry? Next;
        public Action<object?>? Callback;
        public object? State;
        public long DueTick;
        public int Version;
        public bool IsDue;

        public static Entry CreateSentinel()
        {
            var sentinel = new Entry();
            sentinel.Prev = sentinel;
            sentinel.Next = sentinel;
            return sentinel;
        }

        public void LinkBefore(Entry sentinel)
        {
            Next = sentinel;
            Prev = sentinel.Prev;
            sentinel.Prev!.Next = this;
            sentinel.Prev = this;
        }

        public void Unlink()
        {
            Prev!.Next = Next;
            Next!.Prev = Prev;
            Prev = null;
            Next = null;
        }
    }
}
