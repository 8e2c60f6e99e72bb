namespace CallState.Sip.Transport;

/// <summary>
/// A deadline that runs from <see cref="Start"/> until <see cref="Stop"/> and calls back once it is <c>timeout</c> old.
/// Starting and stopping only stamp a time: the timer is armed when a running deadline finds it idle and re-armed by
/// its own callback, so a busy connection pays at most one timer operation per timeout period, not one per message.
/// </summary>
internal sealed class ConnectionDeadline : IDisposable
{
    private const long NotRunning = long.MinValue;

    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _timeout;
    private readonly Action _onExpired;
    private readonly ITimer _timer;
    private long _since = NotRunning;
    private int _armed;

    public ConnectionDeadline(TimeProvider timeProvider, TimeSpan timeout, Action onExpired)
    {
        _timeProvider = timeProvider;
        _timeout = timeout;
        _onExpired = onExpired;
        _timer = timeProvider.CreateTimer(static s => ((ConnectionDeadline)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public bool IsRunning => Volatile.Read(ref _since) != NotRunning;

    /// <summary>Runs the deadline from now (again, if it was running).</summary>
    public void Start()
    {
        Volatile.Write(ref _since, _timeProvider.GetTimestamp());
        Arm(_timeout);
    }

    public void Stop() => Volatile.Write(ref _since, NotRunning);

    public void Dispose() => _timer.Dispose();

    /// <summary>Arms the timer unless it already is; an armed timer is never due later than a running deadline.</summary>
    private void Arm(TimeSpan due)
    {
        if (Interlocked.CompareExchange(ref _armed, 1, 0) == 0)
        {
            Change(_timer, due > TimeSpan.Zero ? due : TimeSpan.Zero);
        }
    }

    private void OnTimer()
    {
        var since = Volatile.Read(ref _since);
        if (since == NotRunning)
        {
            Volatile.Write(ref _armed, 0);
            // A Start between the read above and the reset saw the timer armed and left it: arm it for that one.
            since = Volatile.Read(ref _since);
            if (since != NotRunning)
            {
                Arm(Remaining(since));
            }
            return;
        }
        var remaining = Remaining(since);
        if (remaining <= TimeSpan.Zero)
        {
            _onExpired();
            return;
        }
        Change(_timer, remaining);
    }

    /// <summary>
    /// Re-arms <paramref name="timer"/> once; a timer disposed meanwhile (its connection closed on another thread) is left
    /// alone, since the system timer throws for it and a timer callback has no one to throw to.
    /// </summary>
    internal static void Change(ITimer timer, TimeSpan due)
    {
        try
        {
            timer.Change(due, Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    private TimeSpan Remaining(long since) => _timeout - _timeProvider.GetElapsedTime(since);
}
