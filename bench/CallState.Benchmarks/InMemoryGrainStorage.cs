using CallState.Grains;

namespace CallState.Benchmarks;

/// <summary>
/// Grain storage held in a dictionary, with the same compare-and-set rules as the real providers. For
/// the benchmark only: it measures what Orleans and the grains cost per operation when storage costs nothing.
/// </summary>
internal sealed class InMemoryGrainStorage : IStateStore
{
    private readonly Lock _lock = new();
    private readonly Dictionary<StateId, Row> _rows = [];

    public Task InitializeAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<StoredState?> ReadAsync(StateId id, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_rows.TryGetValue(id, out var row) ? row.ToStored() : null);
        }
    }

    public Task<bool> WriteAsync(StateWrite write, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var current = _rows.TryGetValue(write.Id, out var row) ? row.Version : 0;
            if (current != write.ExpectedVersion)
            {
                return Task.FromResult(false);
            }

            if (write.RowUnchanged)
            {
                if (row is null)
                {
                    return Task.FromResult(false);
                }
            }
            else if (write.Data is null)
            {
                _rows.Remove(write.Id);
                return Task.FromResult(true);
            }
            else
            {
                row ??= _rows[write.Id] = new Row();
                row.Data = write.Data;
                row.Version = write.ExpectedVersion == 0 ? write.InsertVersion : current + 1;
                row.DueAt = write.DueAt;
            }

            foreach (var change in write.Items ?? [])
            {
                if (change.Data is null)
                {
                    row.Items.Remove(change.ItemKey);
                }
                else
                {
                    row.Items[change.ItemKey] = change.Data;
                }
            }

            return Task.FromResult(true);
        }
    }

    public Task<long> ReadVersionAsync(StateId id, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_rows.TryGetValue(id, out var row) ? row.Version : 0);
        }
    }

    public Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            IReadOnlyList<(string, StoredState)> rows = _rows.Where(r => r.Key.Type == type).Select(r => (r.Key.Key, r.Value.ToStored())).ToList();
            return Task.FromResult(rows);
        }
    }

    public Task<IReadOnlyList<DueState>> ReadDueAsync(DateTimeOffset until, int limit, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            IReadOnlyList<DueState> due = _rows
                .Where(r => r.Value.DueAt is { } at && at <= until)
                .Select(r => new DueState(r.Key, r.Value.DueAt!.Value))
                .OrderBy(d => d.DueAt)
                .Take(limit)
                .ToList();
            return Task.FromResult(due);
        }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Row
    {
        public byte[] Data { get; set; } = [];

        public long Version { get; set; }

        public DateTimeOffset? DueAt { get; set; }

        public SortedDictionary<string, byte[]> Items { get; } = new(StringComparer.Ordinal);

        public StoredState ToStored() => new(Data, Version, DueAt) { Items = Items.Select(i => new StateItem(i.Key, i.Value)).ToList() };
    }
}
