using System.Threading.Channels;
using CallState.Runtime.Storage;

namespace CallState.Runtime;

/// <summary>
/// One grain in memory: a bounded inbox and one loop that runs its turns one at a time (Orleans' single
/// threaded activation). Deactivation closes the inbox only when nothing is queued or running, so a
/// message is never lost: a sender that finds the activation closed creates a fresh one.
/// </summary>
internal abstract class Activation<TWork>
    where TWork : class
{
    private readonly Channel<TWork> _inbox;
    private readonly Lock _gate = new();
    private int _pending;
    private bool _closed;
    private long _lastActiveTimestamp;

    protected Activation(GrainId id, GrainRuntime runtime)
    {
        Id = id;
        Runtime = runtime;
        _inbox = Channel.CreateBounded<TWork>(new BoundedChannelOptions(runtime.Options.InboxCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _lastActiveTimestamp = runtime.Time.GetTimestamp();
    }

    public GrainId Id { get; }

    protected GrainRuntime Runtime { get; }

    public Task? Loop { get; private set; }

    public void Start() => Loop = Task.Run(RunAsync);

    /// <summary>Queues work. False when the activation has been deactivated (the caller makes a new one).</summary>
    public bool TryPost(TWork work)
    {
        lock (_gate)
        {
            if (_closed)
            {
                return false;
            }

            if (!_inbox.Writer.TryWrite(work))
            {
                throw new GrainOverloadedException($"grain {Id} has {Runtime.Options.InboxCapacity} queued operations");
            }

            _pending++;
            return true;
        }
    }

    /// <summary>Closes the activation if it has had nothing to do for <paramref name="idleTimeout"/>.</summary>
    public bool TryDeactivateIfIdle(TimeSpan idleTimeout)
    {
        lock (_gate)
        {
            if (_closed || _pending > 0 || Runtime.Time.GetElapsedTime(Volatile.Read(ref _lastActiveTimestamp)) < idleTimeout)
            {
                return false;
            }

            _closed = true;
            _inbox.Writer.TryComplete();
            return true;
        }
    }

    /// <summary>Closes the inbox for shutdown; queued work still runs.</summary>
    public void Close()
    {
        lock (_gate)
        {
            _closed = true;
            _inbox.Writer.TryComplete();
        }
    }

    private async Task RunAsync()
    {
        var reader = _inbox.Reader;
        var batch = new List<TWork>();
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            batch.Clear();
            while (batch.Count < Runtime.Options.MaxTurnBatch && reader.TryRead(out var work))
            {
                batch.Add(work);
            }

            if (batch.Count == 0)
            {
                continue;
            }

            try
            {
                await RunTurnAsync(batch).ConfigureAwait(false);
            }
            finally
            {
                Volatile.Write(ref _lastActiveTimestamp, Runtime.Time.GetTimestamp());
                bool closedItself;
                lock (_gate)
                {
                    _pending -= batch.Count;
                    closedItself = !_closed && _pending == 0 && IsSettled;
                    if (closedItself)
                    {
                        _closed = true;
                        _inbox.Writer.TryComplete();
                    }
                }

                if (closedItself)
                {
                    OnClosedItself();
                }
            }
        }
    }

    /// <summary>
    /// True after a turn when everything the grain knows is in storage and nothing in memory is worth keeping (a
    /// call that ended): the activation then closes as soon as its inbox is empty instead of after the idle timeout,
    /// so memory (and the garbage collector's work) follows the calls in progress, not the calls of the last minutes.
    /// </summary>
    protected virtual bool IsSettled => false;

    /// <summary>The activation closed itself after a turn (<see cref="IsSettled"/>); the runtime forgets it.</summary>
    protected virtual void OnClosedItself()
    {
    }

    /// <summary>Runs queued work; must complete every item's caller, successfully or with an exception.</summary>
    protected abstract Task RunTurnAsync(List<TWork> batch);
}
