using CallState.Grains;
using CallState.Storage;

namespace CallState.Benchmarks;

/// <summary>
/// Counts what the grains write through a state store, per grain type: conditional writes, grain rows and item rows
/// (a <see cref="StateWrite"/> is one grain row plus one row per item it names; a delete is one row), failed
/// compare-and-sets and reads. Only writes that committed are counted as rows.
/// </summary>
internal sealed class CountingStateStore(IStateStore inner) : IGroupCommitStore
{
    private readonly Counters _limit = new();
    private readonly Counters _call = new();
    private long _reads;

    public IStateStore Inner => inner;

    public GroupCommitter? GroupCommit => (inner as IGroupCommitStore)?.GroupCommit;

    /// <summary>The counts so far; two snapshots subtract.</summary>
    public StoreCounts Snapshot() => new(_limit.Snapshot(), _call.Snapshot(), Interlocked.Read(ref _reads));

    public Task InitializeAsync(CancellationToken cancellationToken) => inner.InitializeAsync(cancellationToken);

    public Task<StoredState?> ReadAsync(StateId id, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _reads);
        return inner.ReadAsync(id, cancellationToken);
    }

    public async Task<bool> WriteAsync(StateWrite write, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(write);
        var written = await inner.WriteAsync(write, cancellationToken).ConfigureAwait(false);
        var counters = write.Id.Type == GrainTypes.Call ? _call : _limit;
        if (!written)
        {
            Interlocked.Increment(ref counters.Stale);
        }
        else if (write.RowUnchanged)
        {
            // Items only: the grain's row is checked, not written.
            Interlocked.Increment(ref counters.ItemsOnly);
            Interlocked.Add(ref counters.Items, write.Items?.Count ?? 0);
        }
        else if (write.Data is null)
        {
            Interlocked.Increment(ref counters.Deletes);
        }
        else
        {
            Interlocked.Increment(ref counters.Writes);
            Interlocked.Add(ref counters.Items, write.Items?.Count ?? 0);
        }

        return written;
    }

    public Task<long> ReadVersionAsync(StateId id, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _reads);
        return inner.ReadVersionAsync(id, cancellationToken);
    }

    public Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken) =>
        inner.ReadAllAsync(type, cancellationToken);

    public Task<IReadOnlyList<DueState>> ReadDueAsync(DateTimeOffset until, int limit, CancellationToken cancellationToken) =>
        inner.ReadDueAsync(until, limit, cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();

    private sealed class Counters
    {
        public long Writes;
        public long Items;
        public long Deletes;
        public long Stale;
        public long ItemsOnly;

        public TypeCounts Snapshot() => new(Interlocked.Read(ref Writes), Interlocked.Read(ref Items), Interlocked.Read(ref Deletes), Interlocked.Read(ref Stale), Interlocked.Read(ref ItemsOnly));
    }
}

/// <summary>
/// Committed writes of one grain type: row writes (with data), item rows they carried, deletes, lost compare-and-sets,
/// and writes of items only (the row checked, not written).
/// </summary>
internal readonly record struct TypeCounts(long Writes, long Items, long Deletes, long Stale, long ItemsOnly = 0)
{
    /// <summary>Rows written: one per write or delete, one per item.</summary>
    public long Rows => Writes + Items + Deletes;

    public static TypeCounts operator -(TypeCounts a, TypeCounts b) => new(a.Writes - b.Writes, a.Items - b.Items, a.Deletes - b.Deletes, a.Stale - b.Stale, a.ItemsOnly - b.ItemsOnly);

    public static TypeCounts operator +(TypeCounts a, TypeCounts b) => new(a.Writes + b.Writes, a.Items + b.Items, a.Deletes + b.Deletes, a.Stale + b.Stale, a.ItemsOnly + b.ItemsOnly);
}

/// <summary>A snapshot of <see cref="CountingStateStore"/>.</summary>
internal readonly record struct StoreCounts(TypeCounts Limit, TypeCounts Call, long Reads)
{
    public long Rows => Limit.Rows + Call.Rows;

    /// <summary>Conditional writes that committed (deletes included).</summary>
    public long Writes => Limit.Writes + Limit.Deletes + Limit.ItemsOnly + Call.Writes + Call.Deletes + Call.ItemsOnly;

    public static StoreCounts operator -(StoreCounts a, StoreCounts b) => new(a.Limit - b.Limit, a.Call - b.Call, a.Reads - b.Reads);

    public static StoreCounts operator +(StoreCounts a, StoreCounts b) => new(a.Limit + b.Limit, a.Call + b.Call, a.Reads + b.Reads);
}
