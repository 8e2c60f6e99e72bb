
namespace CallState.Storage.Tests.Storage;

/// <summary>
/// The group-commit loop on its own. The provider here is a scripted batch executor so each test can hold
/// a batch "in the database" and decide what is queued meanwhile; the real providers are covered by the
/// storage contract tests.
/// </summary>
public sealed class GroupCommitterTests
{
    // One instance per number: StateWrite's record equality compares the Data array by reference.
    private static readonly StateWrite[] Writes = Enumerable.Range(0, 16).Select(n => new StateWrite(new StateId("limit", $"user/{n}"), 0, [(byte)n], null)).ToArray();

    private static StateWrite Write(int n) => Writes[n];

    [Fact]
    public async Task Writes_queued_while_a_batch_commits_go_together_in_the_next_batch()
    {
        var provider = new ScriptedProvider();
        var hold = provider.HoldNextBatch();
        await using var committer = new GroupCommitter(provider.CommitAsync);

        var first = committer.WriteAsync(Write(0), CancellationToken.None);
        await hold.Entered;
        var queued = Enumerable.Range(1, 9).Select(i => committer.WriteAsync(Write(i), CancellationToken.None)).ToArray();
        Assert.All(queued, task => Assert.False(task.IsCompleted));
        hold.Release();

        Assert.True(await first);
        Assert.All(await Task.WhenAll(queued), Assert.True);
        Assert.Equal([1, 9], provider.Batches.Select(b => b.Length));
        Assert.Equal(Enumerable.Range(1, 9).Select(Write), provider.Batches[1]);
        Assert.Equal(2, committer.BatchCount);
        Assert.Equal(10, committer.WriteCount);
    }

    [Fact]
    public async Task Commit_durations_and_queue_waits_are_measured_on_the_committers_clock()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var provider = new ScriptedProvider();
        var hold = provider.HoldNextBatch();
        await using var committer = new GroupCommitter(provider.CommitAsync, time: time);

        // The first batch is "in the database" for 3 ms; two writes wait behind it meanwhile.
        var first = committer.WriteAsync(Write(0), CancellationToken.None);
        await hold.Entered;
        var queued = new[] { committer.WriteAsync(Write(1), CancellationToken.None), committer.WriteAsync(Write(2), CancellationToken.None) };
        time.Advance(TimeSpan.FromMilliseconds(3));
        hold.Release();
        await first;
        await Task.WhenAll(queued);

        var commits = committer.CommitDurations.Snapshot();
        var waits = committer.QueueWaits.Snapshot();
        Assert.Equal(2, commits.Counts.Sum());
        Assert.Equal(3, waits.Counts.Sum());

        // One batch took 3 ms (bucket bounds are within an eighth), the other no time on this clock; one write went
        // straight into a batch and two waited the 3 ms.
        Assert.Equal([1L, 1L], Buckets(commits).Select(b => b.Count));
        Assert.InRange(Buckets(commits)[1].UpperMicros, 3_000, 3_375);
        Assert.Equal([1L, 2L], Buckets(waits).Select(b => b.Count));
        Assert.InRange(Buckets(waits)[1].UpperMicros, 3_000, 3_375);
    }

    private static (long UpperMicros, long Count)[] Buckets(LatencyHistogramDto histogram) =>
        histogram.UpperMicros.Zip(histogram.Counts).Where(b => b.Second > 0).ToArray();

    [Fact]
    public async Task A_batch_never_exceeds_the_maximum_size()
    {
        var provider = new ScriptedProvider();
        var hold = provider.HoldNextBatch();
        await using var committer = new GroupCommitter(provider.CommitAsync, maxBatchSize: 4);

        var first = committer.WriteAsync(Write(0), CancellationToken.None);
        await hold.Entered;
        var queued = Enumerable.Range(1, 10).Select(i => committer.WriteAsync(Write(i), CancellationToken.None)).ToArray();
        hold.Release();
        await first;
        await Task.WhenAll(queued);

        Assert.Equal([1, 4, 4, 2], provider.Batches.Select(b => b.Length));
        Assert.Equal(Enumerable.Range(0, 11).Select(Write), provider.Batches.SelectMany(b => b));
    }

    [Fact]
    public async Task Each_caller_gets_the_result_of_its_own_write()
    {
        var provider = new ScriptedProvider { Results = writes => writes.Select(w => w.Data![0] % 2 == 0).ToArray() };
        var hold = provider.HoldNextBatch();
        await using var committer = new GroupCommitter(provider.CommitAsync);

        var first = committer.WriteAsync(Write(0), CancellationToken.None);
        await hold.Entered;
        var queued = Enumerable.Range(1, 6).Select(i => committer.WriteAsync(Write(i), CancellationToken.None)).ToArray();
        hold.Release();

        Assert.True(await first);
        var results = await Task.WhenAll(queued);
        Assert.Equal(new[] { false, true, false, true, false, true }, results);
    }

    [Fact]
    public async Task A_failed_batch_fails_each_of_its_callers_with_the_error_and_the_next_batch_still_commits()
    {
        var provider = new ScriptedProvider();
        var hold = provider.HoldNextBatch();
        var failure = new InvalidOperationException("connection lost during COMMIT");
        provider.FailBatch(1, failure);
        await using var committer = new GroupCommitter(provider.CommitAsync);

        var first = committer.WriteAsync(Write(0), CancellationToken.None);
        await hold.Entered;
        var doomed = Enumerable.Range(1, 3).Select(i => committer.WriteAsync(Write(i), CancellationToken.None)).ToArray();
        hold.Release();

        Assert.True(await first);
        foreach (var task in doomed)
        {
            Assert.Same(failure, await Assert.ThrowsAsync<InvalidOperationException>(() => task));
        }

        Assert.True(await committer.WriteAsync(Write(4), CancellationToken.None));
        Assert.Equal(3, provider.Batches.Count);
    }

    [Fact]
    public async Task A_provider_answering_with_the_wrong_number_of_results_fails_the_batch()
    {
        var provider = new ScriptedProvider { Results = _ => [true, true] };
        await using var committer = new GroupCommitter(provider.CommitAsync);

        await Assert.ThrowsAsync<InvalidOperationException>(() => committer.WriteAsync(Write(0), CancellationToken.None));
    }

    [Fact]
    public async Task Dispose_lets_the_running_batch_finish_and_fails_queued_and_later_writes()
    {
        var provider = new ScriptedProvider();
        var hold = provider.HoldNextBatch();
        var committer = new GroupCommitter(provider.CommitAsync);

        var running = committer.WriteAsync(Write(0), CancellationToken.None);
        await hold.Entered;
        var queued = Enumerable.Range(1, 3).Select(i => committer.WriteAsync(Write(i), CancellationToken.None)).ToArray();
        var disposing = committer.DisposeAsync().AsTask();
        Assert.False(disposing.IsCompleted);
        hold.Release();
        await disposing;

        Assert.True(await running);
        foreach (var task in queued)
        {
            await Assert.ThrowsAsync<ObjectDisposedException>(() => task);
        }

        await Assert.ThrowsAsync<ObjectDisposedException>(() => committer.WriteAsync(Write(9), CancellationToken.None));
        Assert.Single(provider.Batches);
    }

    [Fact]
    public async Task A_write_cancelled_while_queued_is_never_executed()
    {
        var provider = new ScriptedProvider();
        var hold = provider.HoldNextBatch();
        await using var committer = new GroupCommitter(provider.CommitAsync);
        using var cancel = new CancellationTokenSource();

        var first = committer.WriteAsync(Write(0), CancellationToken.None);
        await hold.Entered;
        var cancelled = committer.WriteAsync(Write(1), cancel.Token);
        var kept = committer.WriteAsync(Write(2), CancellationToken.None);
        await cancel.CancelAsync();
        hold.Release();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.True(await first);
        Assert.True(await kept);
        Assert.DoesNotContain(Write(1), provider.Batches.SelectMany(b => b));
    }

    [Fact]
    public async Task A_write_cancelled_after_its_batch_started_still_reports_its_outcome()
    {
        var provider = new ScriptedProvider();
        var hold = provider.HoldNextBatch();
        await using var committer = new GroupCommitter(provider.CommitAsync);
        using var cancel = new CancellationTokenSource();

        var running = committer.WriteAsync(Write(0), cancel.Token);
        await hold.Entered;
        await cancel.CancelAsync();
        hold.Release();

        Assert.True(await running);
    }

    /// <summary>Records every batch; can hold one batch until released, or fail one with a given error.</summary>
    private sealed class ScriptedProvider
    {
        private readonly Lock _lock = new();
        private readonly List<StateWrite[]> _batches = [];
        private readonly Dictionary<int, Exception> _failures = [];
        private Hold? _nextHold;

        public Func<IReadOnlyList<StateWrite>, bool[]> Results { get; init; } = writes => writes.Select(_ => true).ToArray();

        public IReadOnlyList<StateWrite[]> Batches
        {
            get
            {
                lock (_lock)
                {
                    return [.. _batches];
                }
            }
        }

        public Hold HoldNextBatch()
        {
            var hold = new Hold();
            lock (_lock)
            {
                _nextHold = hold;
            }

            return hold;
        }

        /// <summary>Makes the batch with this zero-based index throw <paramref name="error"/>.</summary>
        public void FailBatch(int index, Exception error)
        {
            lock (_lock)
            {
                _failures[index] = error;
            }
        }

        public async Task<bool[]> CommitAsync(IReadOnlyList<StateWrite> writes, CancellationToken cancellationToken)
        {
            Hold? hold;
            Exception? failure;
            lock (_lock)
            {
                failure = _failures.GetValueOrDefault(_batches.Count);
                _batches.Add([.. writes]);
                hold = _nextHold;
                _nextHold = null;
            }

            if (hold is not null)
            {
                hold.SignalEntered();
                await hold.Released;
            }

            return failure is not null ? throw failure : Results(writes);
        }
    }

    private sealed class Hold
    {
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Entered => _entered.Task;

        public Task Released => _released.Task;

        public void SignalEntered() => _entered.TrySetResult();

        public void Release() => _released.TrySetResult();
    }
}
