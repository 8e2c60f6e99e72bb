using CallState.Runtime.Storage;

namespace CallState.Runtime;

/// <summary>
/// One timer for every grain's due time (lease ends, recoveries, record expiry) on <see cref="TimeProvider"/>.
/// Each grain has at most one wanted due time; the queue keeps at most a few entries per grain because a
/// later due time only updates the wanted time and is re-queued when the earlier entry pops.
/// </summary>
internal sealed class GrainTimerScheduler : IDisposable
{
    private readonly TimeProvider _time;
    private readonly Action<GrainId> _fire;
    private readonly Lock _lock = new();
    private readonly PriorityQueue<GrainId, DateTimeOffset> _queue = new();
    private readonly Dictionary<GrainId, DateTimeOffset> _wanted = [];
    private readonly ITimer _timer;
    private DateTimeOffset _armedFor = DateTimeOffset.MaxValue;
    private bool _disposed;

    public GrainTimerScheduler(TimeProvider time, Action<GrainId> fire)
    {
        _time = time;
        _fire = fire;
        _timer = time.CreateTimer(static s => ((GrainTimerScheduler)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _wanted.Count;
            }
        }
    }

    /// <summary>Sets (or with null clears) when <paramref name="id"/> must be woken.</summary>
    public void Set(GrainId id, DateTimeOffset? dueAt)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            if (dueAt is not { } due)
            {
                _wanted.Remove(id);
                return;
            }

            var hadEarlier = _wanted.TryGetValue(id, out var current) && current <= due;
            _wanted[id] = due;
            if (!hadEarlier)
            {
                _queue.Enqueue(id, due);
                ArmLocked();
            }
        }
    }

    private void OnTimer()
    {
        List<GrainId>? due = null;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            var now = _time.GetUtcNow();
            _armedFor = DateTimeOffset.MaxValue;
            while (_queue.TryPeek(out var id, out var at) && at <= now)
            {
                _queue.Dequeue();
                if (!_wanted.TryGetValue(id, out var wanted))
                {
                    continue;
                }

                if (wanted > now)
                {
                    // The grain moved its due time later since this entry was queued.
                    if (wanted != at)
                    {
                        _queue.Enqueue(id, wanted);
                    }

                    continue;
                }

                _wanted.Remove(id);
                (due ??= []).Add(id);
            }

            ArmLocked();
        }

        if (due is not null)
        {
            foreach (var id in due)
            {
                _fire(id);
            }
        }
    }

    private void ArmLocked()
    {
        if (!_queue.TryPeek(out _, out var next) || next >= _armedFor)
        {
            return;
        }

        _armedFor = next;
        var delay = next - _time.GetUtcNow();
        _timer.Change(delay < TimeSpan.Zero ? TimeSpan.Zero : delay, Timeout.InfiniteTimeSpan);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _queue.Clear();
            _wanted.Clear();
        }

        _timer.Dispose();
    }
}
