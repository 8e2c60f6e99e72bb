namespace CallState.Sip.Tests.Timers;

/// <summary>
/// A TimeProvider whose clock moves only when a test says so. Timers fire on the thread calling
/// <see cref="Advance"/>, in due order, with the clock set to each timer's due time as it fires.
/// </summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private static readonly DateTimeOffset Epoch = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly Lock _lock = new();
    private readonly List<ManualTimer> _timers = [];
    private long _now;
    private long _sequence;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp()
    {
        lock (_lock)
        {
            return _now;
        }
    }

    public override DateTimeOffset GetUtcNow() => Epoch + TimeSpan.FromTicks(GetTimestamp());

    public TimeSpan Elapsed => TimeSpan.FromTicks(GetTimestamp());

    /// <summary>Timers that are armed (due at some point).</summary>
    public int ArmedTimers
    {
        get
        {
            lock (_lock)
            {
                return _timers.Count(t => t.DueAt >= 0);
            }
        }
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        lock (_lock)
        {
            _timers.Add(timer);
        }
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Moves the clock forward, firing each timer as its due time is reached.</summary>
    public void Advance(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        long target;
        lock (_lock)
        {
            target = _now + by.Ticks;
        }
        while (true)
        {
            ManualTimer? next = null;
            lock (_lock)
            {
                foreach (var timer in _timers)
                {
                    if (timer.DueAt >= 0 && timer.DueAt <= target && (next is null || timer.DueAt < next.DueAt || (timer.DueAt == next.DueAt && timer.Order < next.Order)))
                    {
                        next = timer;
                    }
                }
                if (next is null)
                {
                    _now = target;
                    return;
                }
                _now = Math.Max(_now, next.DueAt);
                next.DueAt = next.Period > 0 ? next.DueAt + next.Period : -1;
            }
            next.Callback(next.State);
        }
    }

    /// <summary>Moves the clock without firing anything, as if the process had stalled.</summary>
    public void Jump(TimeSpan by)
    {
        lock (_lock)
        {
            _now += by.Ticks;
        }
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public TimerCallback Callback { get; } = callback;
        public object? State { get; } = state;
        public long DueAt { get; set; } = -1;
        public long Period { get; set; }
        public long Order { get; set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._lock)
            {
                if (!owner._timers.Contains(this))
                {
                    return false;
                }
                DueAt = dueTime == Timeout.InfiniteTimeSpan ? -1 : owner._now + dueTime.Ticks;
                Period = period == Timeout.InfiniteTimeSpan ? 0 : period.Ticks;
                Order = owner._sequence++;
                return true;
            }
        }

        public void Dispose()
        {
            lock (owner._lock)
            {
                owner._timers.Remove(this);
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
