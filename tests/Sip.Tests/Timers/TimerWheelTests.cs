using CallState.Sip.Timers;

namespace CallState.Sip.Tests.Timers;

public sealed class TimerWheelTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    [Fact]
    public void Timers_fire_in_due_order_and_same_tick_timers_in_scheduling_order()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        var fired = new List<string>();

        wheel.Schedule(30 * Ms, s => fired.Add((string)s!), "30");
        wheel.Schedule(10 * Ms, s => fired.Add((string)s!), "10a");
        wheel.Schedule(20 * Ms, s => fired.Add((string)s!), "20");
        wheel.Schedule(10 * Ms, s => fired.Add((string)s!), "10b");

        time.AdvanceInSteps(100 * Ms);

        Assert.Equal(["10a", "10b", "20", "30"], fired);
        Assert.Equal(0, wheel.Count);
        Assert.Equal(4, wheel.Fired);
    }

    [Fact]
    public void A_timer_never_fires_before_its_delay()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        var fired = false;
        // 25 ms does not fall on a 10 ms tick: it must wait for the 30 ms tick, not fire at 20 ms.
        wheel.Schedule(25 * Ms, () => fired = true);

        time.AdvanceInSteps(29 * Ms);
        Assert.False(fired);

        time.Advance(1 * Ms);
        Assert.True(fired);
    }

    [Fact]
    public void Zero_delay_fires_on_the_next_tick_not_inside_Schedule()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        var fired = false;

        wheel.Schedule(TimeSpan.Zero, () => fired = true);
        Assert.False(fired);

        time.Advance(10 * Ms);
        Assert.True(fired);
    }

    [Fact]
    public void Cancelled_timers_do_not_fire_and_cancel_reports_whether_it_stopped_one()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        var fired = new List<int>();

        var first = wheel.Schedule(50 * Ms, s => fired.Add((int)s!), 1);
        var second = wheel.Schedule(50 * Ms, s => fired.Add((int)s!), 2);
        Assert.Equal(2, wheel.Count);
        Assert.True(first.IsPending);

        Assert.True(first.Cancel());
        Assert.False(first.Cancel());
        Assert.False(first.IsPending);
        Assert.Equal(1, wheel.Count);

        time.AdvanceInSteps(60 * Ms);

        Assert.Equal([2], fired);
        Assert.False(second.Cancel());
        Assert.False(second.IsPending);
        Assert.False(default(TimerHandle).Cancel());
    }

    [Fact]
    public void A_stale_handle_cannot_cancel_the_timer_that_reused_its_entry()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        var fired = 0;

        var old = wheel.Schedule(10 * Ms, () => { });
        Assert.True(old.Cancel());
        // The wheel pools entries, so this timer very likely reuses the cancelled one's entry.
        var current = wheel.Schedule(10 * Ms, () => fired++);

        Assert.False(old.Cancel());
        Assert.NotEqual(old, current);
        time.Advance(10 * Ms);
        Assert.Equal(1, fired);
    }

    [Fact]
    public void Delays_longer_than_a_revolution_wait_for_their_round()
    {
        var time = new FakeTimeProvider();
        // 8 slots of 10 ms: one revolution is 80 ms.
        using var wheel = new TimerWheel(time, 10 * Ms, slotCount: 8);
        var fired = new List<string>();

        wheel.Schedule(1000 * Ms, s => fired.Add((string)s!), "1000");
        wheel.Schedule(85 * Ms, s => fired.Add((string)s!), "85");
        wheel.Schedule(5 * Ms, s => fired.Add((string)s!), "5");
        // Same slot as the 1000 ms timer (1000 / 10 = 100, 100 mod 8 = 4 = 40 / 10), many rounds apart.
        wheel.Schedule(40 * Ms, s => fired.Add((string)s!), "40");

        time.AdvanceInSteps(999 * Ms);
        Assert.Equal(["5", "40", "85"], fired);

        time.Advance(1 * Ms);
        Assert.Equal(["5", "40", "85", "1000"], fired);
    }

    [Fact]
    public void Timer_C_of_over_three_minutes_fires_on_time_on_the_default_wheel()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        var timerC = TimeSpan.FromMinutes(3) + TimeSpan.FromSeconds(1);
        TimeSpan? firedAt = null;
        wheel.Schedule(timerC, () => firedAt = time.Elapsed());

        time.AdvanceInSteps(timerC - Ms);
        Assert.Null(firedAt);

        time.AdvanceInSteps(20 * Ms);
        Assert.Equal(timerC, firedAt);
    }

    [Fact]
    public void A_stall_longer_than_a_revolution_fires_everything_that_became_due()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time, 10 * Ms, slotCount: 8);
        var fired = new List<string>();
        var firedAt = new List<TimeSpan>();
        void Record(object? name)
        {
            fired.Add((string)name!);
            firedAt.Add(time.Elapsed());
        }
        wheel.Schedule(50 * Ms, Record, "50");
        wheel.Schedule(300 * Ms, Record, "300");
        wheel.Schedule(2000 * Ms, Record, "2000");

        // The process stalls for a second: no tick runs until the clock is far past two of the timers.
        // One FakeTimeProvider.Advance is such a stall: it moves the clock to its end before it runs the wheel's
        // overdue ticks, so the first tick to run already sees the clock a second on.
        time.Advance(1000 * Ms);
        time.Advance(10 * Ms);

        Assert.Equal(["50", "300"], fired);
        Assert.Equal([1000 * Ms, 1000 * Ms], firedAt);
        time.AdvanceInSteps(1000 * Ms);
        Assert.Equal(["50", "300", "2000"], fired);
    }

    [Fact]
    public void Many_timers_each_fire_once_within_one_tick_of_their_delay_unless_cancelled()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time, 10 * Ms, slotCount: 64);
        var random = new Random(3261);
        const int count = 20_000;
        var delays = new TimeSpan[count];
        var firedAt = new TimeSpan?[count];
        var firings = new int[count];
        var handles = new TimerHandle[count];
        for (var i = 0; i < count; i++)
        {
            delays[i] = TimeSpan.FromMilliseconds(random.Next(0, 10_000));
            var index = i;
            handles[i] = wheel.Schedule(delays[i], () =>
            {
                firedAt[index] = time.Elapsed();
                firings[index]++;
            });
        }
        for (var i = 0; i < count; i += 3)
        {
            Assert.True(handles[i].Cancel());
        }

        time.AdvanceInSteps(TimeSpan.FromSeconds(10.1));

        for (var i = 0; i < count; i++)
        {
            if (i % 3 == 0)
            {
                Assert.Equal(0, firings[i]);
                continue;
            }
            Assert.Equal(1, firings[i]);
            Assert.InRange(firedAt[i]!.Value, delays[i], delays[i] + 10 * Ms);
        }
        Assert.Equal(0, wheel.Count);
    }

    [Fact]
    public void A_callback_can_schedule_and_cancel_timers()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        var fired = new List<(string Name, TimeSpan At)>();
        var doomed = wheel.Schedule(100 * Ms, () => fired.Add(("doomed", time.Elapsed())));

        // RFC 3261 17.1.1.2: Timer A re-arms itself with a doubled interval on each firing.
        var interval = 500 * Ms;
        void Retransmit()
        {
            fired.Add(("A", time.Elapsed()));
            interval *= 2;
            if (fired.Count < 3)
            {
                wheel.Schedule(interval, Retransmit);
            }
        }
        wheel.Schedule(10 * Ms, () =>
        {
            Assert.True(doomed.Cancel());
            wheel.Schedule(500 * Ms, Retransmit);
        });

        time.AdvanceInSteps(TimeSpan.FromSeconds(5));

        Assert.Equal(
            [("A", 510 * Ms), ("A", 1510 * Ms), ("A", 3510 * Ms)],
            fired);
        Assert.Equal(0, wheel.Count);
    }

    [Fact]
    public void Work_per_tick_is_bounded_and_the_rest_fires_on_following_ticks()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time, 10 * Ms, maxCallbacksPerTick: 5);
        var fired = 0;
        for (var i = 0; i < 12; i++)
        {
            wheel.Schedule(10 * Ms, () => fired++);
        }

        time.Advance(10 * Ms);
        Assert.Equal(5, fired);
        time.Advance(10 * Ms);
        Assert.Equal(10, fired);
        time.Advance(10 * Ms);
        Assert.Equal(12, fired);
    }

    [Fact]
    public void A_throwing_callback_is_counted_and_the_others_still_fire()
    {
        var time = new FakeTimeProvider();
        var errors = new List<Exception>();
        using var wheel = new TimerWheel(time, 10 * Ms, onCallbackError: errors.Add);
        var fired = 0;
        wheel.Schedule(10 * Ms, () => throw new InvalidOperationException("boom"));
        wheel.Schedule(10 * Ms, () => fired++);
        wheel.Schedule(20 * Ms, () => fired++);

        time.AdvanceInSteps(20 * Ms);

        Assert.Equal(2, fired);
        Assert.Equal(1, wheel.CallbackErrors);
        Assert.Equal("boom", Assert.Single(errors).Message);
    }

    [Fact]
    public void An_idle_wheel_stops_ticking_and_resumes_on_the_next_schedule()
    {
        var time = new ArmedTimerCountingTimeProvider();
        using var wheel = new TimerWheel(time);
        Assert.Equal(0, time.ArmedTimers);

        var fired = 0;
        wheel.Schedule(20 * Ms, () => fired++);
        Assert.Equal(1, time.ArmedTimers);
        time.AdvanceInSteps(30 * Ms);
        Assert.Equal(1, fired);
        Assert.Equal(0, time.ArmedTimers);

        // After a long idle spell the wheel must neither fire early nor replay the idle ticks.
        time.Advance(TimeSpan.FromMinutes(10));
        wheel.Schedule(25 * Ms, () => fired++);
        time.AdvanceInSteps(29 * Ms);
        Assert.Equal(1, fired);
        time.Advance(1 * Ms);
        Assert.Equal(2, fired);
    }

    [Fact]
    public void Disposed_wheel_fires_nothing_and_refuses_new_timers()
    {
        var time = new FakeTimeProvider();
        var wheel = new TimerWheel(time);
        var fired = 0;
        wheel.Schedule(10 * Ms, () => fired++);

        wheel.Dispose();
        time.Advance(100 * Ms);

        Assert.Equal(0, fired);
        Assert.Throws<ObjectDisposedException>(() => wheel.Schedule(10 * Ms, () => fired++));
    }

    [Fact]
    public void Rejects_negative_delays()
    {
        var time = new FakeTimeProvider();
        using var wheel = new TimerWheel(time);
        Assert.Throws<ArgumentOutOfRangeException>(() => wheel.Schedule(-Ms, () => { }));
        Assert.Throws<ArgumentOutOfRangeException>(() => wheel.Schedule(Timeout.InfiniteTimeSpan, () => { }));
    }

    [Fact]
    public async Task Fires_on_the_system_clock()
    {
        using var wheel = new TimerWheel(TimeProvider.System);
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        wheel.Schedule(20 * Ms, () => fired.SetResult());

        await fired.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// A <see cref="FakeTimeProvider"/> that also counts its armed timers (due at some point), so a test can see whether
    /// the wheel keeps its one ticking timer running; the wheel exposes no count of its own for that. The clock and the
    /// firing of timers are the <see cref="FakeTimeProvider"/>'s.
    /// </summary>
    private sealed class ArmedTimerCountingTimeProvider : FakeTimeProvider
    {
        private int _armedTimers;

        public int ArmedTimers => Volatile.Read(ref _armedTimers);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new CountedTimer(this, callback, state);
            timer.Start(dueTime, period);
            return timer;
        }

        private ITimer CreateFakeTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
            base.CreateTimer(callback, state, dueTime, period);

        private sealed class CountedTimer(ArmedTimerCountingTimeProvider owner, TimerCallback callback, object? state) : ITimer
        {
            private readonly Lock _lock = new();
            private ITimer? _inner;
            private bool _armed;
            private bool _periodic;
            private bool _disposed;

            public void Start(TimeSpan dueTime, TimeSpan period)
            {
                // Counted before the fake timer exists: a zero due time fires inside CreateTimer.
                Track(dueTime, period);
                _inner = owner.CreateFakeTimer(static s => ((CountedTimer)s!).Fire(), this, dueTime, period);
            }

            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                lock (_lock)
                {
                    if (_disposed)
                    {
                        return false;
                    }
                }
                Track(dueTime, period);
                return _inner!.Change(dueTime, period);
            }

            public void Dispose()
            {
                lock (_lock)
                {
                    _disposed = true;
                    SetArmed(false);
                }
                _inner?.Dispose();
            }

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }

            private void Fire()
            {
                lock (_lock)
                {
                    if (!_periodic)
                    {
                        // A one-shot timer is spent once it fires.
                        SetArmed(false);
                    }
                }
                callback(state);
            }

            private void Track(TimeSpan dueTime, TimeSpan period)
            {
                lock (_lock)
                {
                    _periodic = period != Timeout.InfiniteTimeSpan && period != TimeSpan.Zero;
                    SetArmed(dueTime != Timeout.InfiniteTimeSpan);
                }
            }

            private void SetArmed(bool armed)
            {
                if (armed != _armed)
                {
                    _armed = armed;
                    Interlocked.Add(ref owner._armedTimers, armed ? 1 : -1);
                }
            }
        }
    }
}
