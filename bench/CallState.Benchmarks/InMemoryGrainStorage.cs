using CallState.Runtime.Storage;

namespace CallState.Benchmarks;

/// <summary>
/// Grain storage held in a dictionary, with the same compare-and-set rules as the real providers. For
/// the benchmark only: it measures what the runtime itself costs per turn when storage costs nothing.
/// </summary>
internal sealed class InMemoryGrainStorage : IGrainStorage
{
    private readonly Lock _lock = new();
    private readonly Dictionary<GrainId, StoredGrain> _rows = [];

    public Task InitializeAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<StoredGrain?> ReadAsync(GrainId id, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_rows.GetValueOrDefault(id));
        }
    }

    public Task<bool> WriteAsync(GrainWrite write, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var current = _rows.TryGetValue(write.Id, out var row) ? row.Version : 0;
            if (current != write.ExpectedVersion)
            {
                return Task.FromResult(false);
            }

            if (write.Data is null)
            {
                _rows.Remove(write.Id);
            }
            else
            {
                _rows[write.Id] = new StoredGrain(write.Data, current + 1, write.DueAt);
            }

            return Task.FromResult(true);
        }
    }

    public Task<IReadOnlyList<(string Key, StoredGrain Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            IReadOnlyList<(string, StoredGrain)> rows = _rows.Where(r => r.Key.Type == type).Select(r => (r.Key.Key, r.Value)).ToList();
            return Task.FromResult(rows);
        }
    }

    public Task<IReadOnlyList<DueGrain>> ReadDueAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            IReadOnlyList<DueGrain> due = _rows.Where(r => r.Value.DueAt is not null).Select(r => new DueGrain(r.Key, r.Value.DueAt!.Value)).ToList();
            return Task.FromResult(due);
        }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
