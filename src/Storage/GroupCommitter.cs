using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Storage;

/// <summary>
/// Group commit (docs/architecture.md, "Storage"): callers queue conditional writes; one loop takes the first
/// queued write plus whatever else is already waiting (up to <see cref="MaxBatchSize"/>), commits them
/// together, and completes each caller with its own result. While one batch is being made durable the
/// next one accumulates, so the cost of a commit (an fsync, a round trip) is shared by every write
/// that arrived meanwhile.
/// </summary>
public sealed class GroupCommitter : IAsyncDisposable
{
    /// <summary>Default largest number of writes in one transaction.</summary>
    public const int DefaultMaxBatchSize = 256;

    /// <summary>Default number of writes that may wait for the loop before writers are held back.</summary>
    public const int DefaultQueueCapacity = 8192;

    private readonly Channel<PendingWrite> _queue;
    private readonly Func<IReadOnlyList<StateWrite>, CancellationToken, Task<bool[]>> _commitBatchAsync;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _loop;
    private long _batchCount;
    private long _writeCount;
    private int _disposed;

    /// <param name="commitBatchAsync">
    /// The provider: executes all the writes in one transaction (one round trip where it can) and returns,
    /// per write and in the same order, whether its version condition held; throws when the transaction
    /// failed as a whole or its outcome is unknown. The list is reused for the next batch, so it is valid
    /// only until the returned task completes.
    /// </param>
    /// <param name="maxBatchSize">Largest batch; bounds one transaction's duration and lock footprint.</param>
    /// <param name="queueCapacity">
    /// Writes that may wait; when full, <see cref="WriteAsync"/> waits for room, so a storage that falls
    /// behind slows its callers instead of growing memory without bound.
    /// </param>
    /// <param name="logger">Receives batch failures.</param>
    /// <param name="time">Clock of the <see cref="CommitDurations"/> and <see cref="QueueWaits"/> statistics.</param>
    /// <param name="dedicatedThread">
    /// Run the loop on a thread of its own, for a provider that commits synchronously (SQLite blocks in fsync): a
    /// thread-pool thread blocked there is one fewer for the SIP receive loops and grain turns, and on a 2-core
    /// machine the pool then injects threads late, which shows up as tail latency.
    /// </param>
    public GroupCommitter(
        Func<IReadOnlyList<StateWrite>, CancellationToken, Task<bool[]>> commitBatchAsync,
        int maxBatchSize = DefaultMaxBatchSize,
        int queueCapacity = DefaultQueueCapacity,
        ILogger? logger = null,
        bool dedicatedThread = false,
        TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(commitBatchAsync);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueCapacity, 1);
        _commitBatchAsync = commitBatchAsync;
        MaxBatchSize = maxBatchSize;
        _logger = logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
        _queue = Channel.CreateBounded<PendingWrite>(new BoundedChannelOptions(queueCapacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _loop = dedicatedThread ? RunOnThreadAsync() : Task.Run(RunAsync);
    }

    /// <summary>Largest number of writes handed to the provider at once.</summary>
    public int MaxBatchSize { get; }

    /// <summary>Batches handed to the provider so far (including failed ones).</summary>
    public long BatchCount => Interlocked.Read(ref _batchCount);

    /// <summary>Writes handed to the provider so far (including those in failed batches).</summary>
    public long WriteCount => Interlocked.Read(ref _writeCount);

    /// <summary>How long each batch that committed took the provider (one transaction: statements, commit, fsync or round trip).</summary>
    public LatencyHistogram CommitDurations { get; } = new();

    /// <summary>How long each write waited in the queue before a batch took it (behind the batch being committed).</summary>
    public LatencyHistogram QueueWaits { get; } = new();

    /// <summary>
    /// Queues <paramref name="write"/> and completes when its batch has committed: true when its version
    /// condition held, false when it did not (nothing was changed). Throws the provider's exception when
    /// the batch failed (outcome unknown), <see cref="ObjectDisposedException"/> after disposal, and
    /// <see cref="OperationCanceledException"/> when cancelled before the loop took the write (it then
    /// was not executed). Once taken, the write is awaited to its end despite cancellation, so the caller
    /// learns a definite outcome whenever the storage gives one.
    /// </summary>
    public Task<bool> WriteAsync(StateWrite write, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(write);
        if (Volatile.Read(ref _disposed) != 0)
        {
            return Task.FromException<bool>(new ObjectDisposedException(nameof(GroupCommitter)));
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled<bool>(cancellationToken);
        }

        var pending = new PendingWrite(write, _time.GetTimestamp(), cancellationToken);
        var span = StorageTelemetry.Source.StartActivity("callstate.storage.write");
        var queued = _queue.Writer.TryWrite(pending) ? pending.Task : EnqueueSlowAsync(pending, cancellationToken);
        return span is null ? queued : TracedAsync(queued, span);
    }

    /// <summary>Ends <paramref name="span"/> (the write, from the caller's grain call to its batch's commit) with the write.</summary>
    private static async Task<bool> TracedAsync(Task<bool> write, System.Diagnostics.Activity span)
    {
        using (span)
        {
            try
            {
                var held = await write.ConfigureAwait(false);
                span.SetTag("callstate.storage.condition_held", held);
                return held;
            }
            catch (Exception ex)
            {
                span.SetStatus(System.Diagnostics.ActivityStatusCode.Error, ex.GetType().Name);
                throw;
            }
        }
    }

    private async Task<bool> EnqueueSlowAsync(PendingWrite pending, CancellationToken cancellationToken)
    {
        try
        {
            await _queue.Writer.WriteAsync(pending, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            pending.Dispose();
            throw new ObjectDisposedException(nameof(GroupCommitter));
        }
        catch (OperationCanceledException)
        {
            pending.Dispose();
            throw;
        }

        return await pending.Task.ConfigureAwait(false);
    }

    private async Task RunAsync()
    {
        var batch = new List<PendingWrite>(MaxBatchSize);
        var writes = new List<StateWrite>(MaxBatchSize);
        while (await WaitAsync().ConfigureAwait(false))
        {
            if (TakeBatch(batch, writes))
            {
                await CommitAsync(batch, writes).ConfigureAwait(false);
                batch.Clear();
                writes.Clear();
            }
        }

        FailQueued();
    }

    private Task RunOnThreadAsync()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            var batch = new List<PendingWrite>(MaxBatchSize);
            var writes = new List<StateWrite>(MaxBatchSize);
            while (WaitAsync().AsTask().GetAwaiter().GetResult())
            {
                if (TakeBatch(batch, writes))
                {
                    // The provider completes synchronously; callers' continuations run on the pool (RunContinuationsAsynchronously).
                    CommitAsync(batch, writes).GetAwaiter().GetResult();
                    batch.Clear();
                    writes.Clear();
                }
            }

            FailQueued();
            done.SetResult();
        })
        {
            IsBackground = true,
            Name = "CallState group commit",
        };
        thread.Start();
        return done.Task;
    }

    /// <summary>Waits for a queued write; false when the committer is stopping.</summary>
    private async ValueTask<bool> WaitAsync()
    {
        try
        {
            return await _queue.Reader.WaitToReadAsync(_stopping.Token).ConfigureAwait(false) && !_stopping.IsCancellationRequested;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Takes what is queued, up to <see cref="MaxBatchSize"/>, skipping writes whose callers cancelled; false when none.</summary>
    private bool TakeBatch(List<PendingWrite> batch, List<StateWrite> writes)
    {
        var now = _time.GetTimestamp();
        while (batch.Count < MaxBatchSize && _queue.Reader.TryRead(out var pending))
        {
            if (pending.TryTake())
            {
                var waited = _time.GetElapsedTime(pending.QueuedAt, now);
                QueueWaits.Record(waited);
                StorageTelemetry.QueueDuration.Record(waited.TotalSeconds);
                batch.Add(pending);
                writes.Add(pending.Write);
            }
        }

        if (batch.Count == 0)
        {
            return false;
        }

        Interlocked.Increment(ref _batchCount);
        Interlocked.Add(ref _writeCount, batch.Count);
        return true;
    }

    private void FailQueued()
    {
        var disposed = new ObjectDisposedException(nameof(GroupCommitter));
        while (_queue.Reader.TryRead(out var pending))
        {
            if (pending.TryTake())
            {
                pending.Fail(disposed);
            }
        }
    }

    private async Task CommitAsync(List<PendingWrite> batch, List<StateWrite> writes)
    {
        bool[] results;
        var started = _time.GetTimestamp();
        try
        {
            // Not cancelled by disposal: an interrupted commit would leave every caller in the batch with an
            // unknown outcome, while letting it finish (bounded by the provider's command timeout) answers them.
            results = await _commitBatchAsync(writes, CancellationToken.None).ConfigureAwait(false);
            if (results is null || results.Length != batch.Count)
            {
                throw new InvalidOperationException(
                    $"The storage provider returned {results?.Length ?? 0} results for a batch of {batch.Count} writes.");
            }
        }
#pragma warning disable CA1031 // Any provider failure belongs to the callers of this batch; the loop must survive it.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.BatchFailed(_logger, ex, batch.Count);
            StorageTelemetry.CommitDuration.Record(_time.GetElapsedTime(started).TotalSeconds, StorageTelemetry.Failed);
            StorageTelemetry.Writes.Add(batch.Count, StorageTelemetry.Failed);
            foreach (var pending in batch)
            {
                pending.Fail(ex);
            }

            return;
        }

        var took = _time.GetElapsedTime(started);
        CommitDurations.Record(took);
        StorageTelemetry.CommitDuration.Record(took.TotalSeconds, StorageTelemetry.Committed);
        StorageTelemetry.Writes.Add(batch.Count, StorageTelemetry.Committed);
        for (var i = 0; i < batch.Count; i++)
        {
            batch[i].Complete(results[i]);
        }
    }

    /// <summary>
    /// Stops taking writes, lets a batch already executing finish, and fails every write still queued with
    /// <see cref="ObjectDisposedException"/>.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _queue.Writer.TryComplete();
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        _stopping.Dispose();
    }

    /// <summary>A queued write and its caller's completion.</summary>
    private sealed class PendingWrite : IDisposable
    {
        private const int Queued = 0;
        private const int Taken = 1;
        private const int Cancelled = 2;

        private readonly TaskCompletionSource<bool> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenRegistration _registration;
        private int _state;

        public PendingWrite(StateWrite write, long queued, CancellationToken cancellationToken)
        {
            Write = write;
            QueuedAt = queued;
            if (cancellationToken.CanBeCanceled)
            {
                _registration = cancellationToken.UnsafeRegister(
                    static (state, token) => ((PendingWrite)state!).TryCancel(token), this);
            }
        }

        public StateWrite Write { get; }

        /// <summary>When the write was queued (<see cref="TimeProvider.GetTimestamp"/>).</summary>
        public long QueuedAt { get; }

        public Task<bool> Task => _completion.Task;

        /// <summary>Claims the write for a batch; false when its caller cancelled first.</summary>
        public bool TryTake()
        {
            if (Interlocked.CompareExchange(ref _state, Taken, Queued) != Queued)
            {
                return false;
            }

            // Cancellation no longer applies: the write is about to execute and its outcome will be reported.
            _registration.Dispose();
            return true;
        }

        public void Complete(bool result) => _completion.TrySetResult(result);

        public void Fail(Exception exception) => _completion.TrySetException(exception);

        public void Dispose() => _registration.Dispose();

        private void TryCancel(CancellationToken token)
        {
            if (Interlocked.CompareExchange(ref _state, Cancelled, Queued) == Queued)
            {
                _completion.TrySetCanceled(token);
            }
        }
    }
}
