using System.Text.Json;

namespace CallState.Grains.Tests.Infrastructure;

/// <summary>
/// The runtime's persisted grain state, in memory. Every write keeps a copy of what was written (the
/// "durable" record) and its due time; <see cref="Reload"/> gives what a new activation would load.
/// </summary>
public sealed class InMemoryGrainState<T> : IDurableState<T>
    where T : class, new()
{
    private readonly List<string> _events;

    public InMemoryGrainState(T? state = null, List<string>? events = null)
    {
        State = state ?? new T();
        _events = events ?? [];
    }

    public T State { get; private set; }

    /// <summary>Each successful write: a copy of the state as written, and the due time asked for.</summary>
    public List<(T State, DateTimeOffset? DueAt)> Writes { get; } = [];

    public int Clears { get; private set; }

    /// <summary>What storage holds: the last write, or null before any write or after a clear.</summary>
    public T? Persisted { get; private set; }

    /// <summary>When set, the next write or clear throws, as if another activation had written first.</summary>
    public bool ThrowStale { get; set; }

    /// <summary>When set, writes return a faulted task (as the store does asynchronously) instead of throwing.</summary>
    public bool FaultStale { get; set; }

    public DateTimeOffset? LastDueAt => Writes.Count == 0 ? null : Writes[^1].DueAt;

    /// <summary>When the running activation asked to be woken by its last write.</summary>
    public DateTimeOffset? TimerDueAt { get; private set; }

    /// <summary><see cref="Writes"/> records <paramref name="recoverAt"/>: what storage holds.</summary>
    public Task WriteAsync(DateTimeOffset? dueAt, DateTimeOffset? recoverAt, CancellationToken cancellationToken)
    {
        if (Queue is { } queue)
        {
            return QueuedWriteAsync(queue, dueAt, recoverAt, cancellationToken);
        }

        return Write(dueAt, recoverAt);
    }

    /// <summary>
    /// When set, a write waits for it, as one queued for a group commit does; a write whose caller cancelled meanwhile is
    /// dropped (never executed), as the committer drops a write it had not taken yet.
    /// </summary>
    public Task? Queue { get; set; }

    private async Task QueuedWriteAsync(Task queue, DateTimeOffset? dueAt, DateTimeOffset? recoverAt, CancellationToken cancellationToken)
    {
        await queue;
        cancellationToken.ThrowIfCancellationRequested();
        await Write(dueAt, recoverAt);
    }

    private Task Write(DateTimeOffset? dueAt, DateTimeOffset? recoverAt)
    {
        if (ThrowStale)
        {
            throw new StaleGrainStateException();
        }

        if (FaultStale)
        {
            return Task.FromException(new StaleGrainStateException());
        }

        var copy = Clone(State);
        Writes.Add((copy, recoverAt));
        TimerDueAt = dueAt;
        Persisted = Clone(State);
        _events.Add("write");
        return Task.CompletedTask;
    }

    public Task ClearAsync(CancellationToken cancellationToken)
    {
        if (ThrowStale)
        {
            throw new StaleGrainStateException();
        }

        Clears++;
        _events.Add("clear");
        // Like the grain: the activation keeps its in-memory record (its phase) until it goes.
        Persisted = null;
        return Task.CompletedTask;
    }

    /// <summary>The state a fresh activation would load after a crash: the last durable write.</summary>
    public InMemoryGrainState<T> Reload() => new(Persisted is null ? null : Clone(Persisted), _events);

    private static T Clone(T value) => JsonSerializer.Deserialize<T>(JsonSerializer.Serialize(value))!;
}
