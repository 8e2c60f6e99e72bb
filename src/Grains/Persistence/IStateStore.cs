namespace CallState.Grains;

/// <summary>Identifies one grain's row: its type (<c>limit</c>, <c>call</c>) and its key.</summary>
public readonly record struct StateId(string Type, string Key)
{
    public override string ToString() => Type + ":" + Key;
}

/// <summary>One child row (item) of a grain, keyed by <see cref="Key"/> within the grain.</summary>
public readonly record struct StateItem(string Key, byte[] Data);

/// <summary>A grain's persisted record. <see cref="Version"/> starts at 1 for the first write.</summary>
/// <param name="Data">Serialized grain state.</param>
/// <param name="Version">Version stored with the row; a write must name it to succeed.</param>
/// <param name="DueAt">When the grain wants to be woken (a lease end, a recovery); null when never.</param>
public sealed record StoredState(byte[] Data, long Version, DateTimeOffset? DueAt)
{
    /// <summary>The grain's items, ordered by key (ordinal on the UTF-8 bytes); empty when it has none.</summary>
    public IReadOnlyList<StateItem> Items { get; init; } = [];
}

/// <summary>
/// A change to one item of a grain: <see cref="Data"/> replaces (or creates) the item; null deletes it
/// (deleting an item that does not exist is not an error).
/// </summary>
public readonly record struct StateItemWrite(string ItemKey, byte[]? Data);

/// <summary>
/// One conditional write. <see cref="ExpectedVersion"/> 0 means "the row must not exist yet" (insert);
/// otherwise the row must have exactly that version (compare-and-set). On success the row's version
/// becomes <c>ExpectedVersion + 1</c> (an insert's, <see cref="InsertVersion"/>). <see cref="Data"/> null deletes the row and every item of the grain.
/// <see cref="Items"/> are applied in the same transaction, and only when the version condition held;
/// items not named keep their stored value. Item keys must be distinct within one write.
/// </summary>
public sealed record StateWrite(StateId Id, long ExpectedVersion, byte[]? Data, DateTimeOffset? DueAt, IReadOnlyList<StateItemWrite>? Items = null)
{
    /// <summary>
    /// Only <see cref="Items"/> change, and only when the row's version is still <see cref="ExpectedVersion"/>: the row
    /// itself (its data, due time and version) is not written. <see cref="Data"/> and <see cref="DueAt"/> must be null.
    /// The version is the writer's fence: a writer that takes over a grain writes its row first (a new version), after
    /// which an older writer's item writes fail (docs/architecture.md, "Writes per call").
    /// </summary>
    public static StateWrite ItemsOnly(StateId id, long expectedVersion, IReadOnlyList<StateItemWrite> items) =>
        new(id, expectedVersion, null, null, items) { RowUnchanged = true };

    /// <summary>See <see cref="ItemsOnly"/>.</summary>
    public bool RowUnchanged { get; init; }

    /// <summary>
    /// The version an insert (<see cref="ExpectedVersion"/> 0) gives the new row; 1 unless set. A grain whose row may be
    /// deleted and inserted again picks an unpredictable one, so a writer that still holds a version of the deleted row
    /// cannot match the new row by chance (docs/architecture.md, "Rows of idle limits").
    /// </summary>
    public long InsertVersion { get; init; } = 1;
}

/// <summary>A grain that asked to be woken at <see cref="DueAt"/>.</summary>
public readonly record struct DueState(StateId Id, DateTimeOffset DueAt);

/// <summary>
/// Durable grain state with versioned compare-and-set writes. Writes go through group commit:
/// concurrent writes from many grains share one transaction and one round trip, and each
/// caller's task completes only after that transaction is durable.
/// </summary>
public interface IStateStore : IAsyncDisposable
{
    /// <summary>Creates or migrates the schema. Idempotent; called once at start.</summary>
    Task InitializeAsync(CancellationToken cancellationToken);

    /// <summary>Reads one grain's record with all its items (one consistent snapshot), or null when it has never been written (or was deleted).</summary>
    Task<StoredState?> ReadAsync(StateId id, CancellationToken cancellationToken);

    /// <summary>
    /// Writes conditionally. Returns true when durable; false when the stored version was not
    /// <see cref="StateWrite.ExpectedVersion"/> (the caller's state is stale: reload and re-decide).
    /// Throws on a storage failure (the outcome is then unknown to the caller).
    /// </summary>
    Task<bool> WriteAsync(StateWrite write, CancellationToken cancellationToken);

    /// <summary>
    /// The stored version of one grain's row, 0 when it has none: whether another writer has written since a version was
    /// read, without reading the items.
    /// </summary>
    Task<long> ReadVersionAsync(StateId id, CancellationToken cancellationToken);

    /// <summary>Every grain of <paramref name="type"/> with its record and items (listing for operators).</summary>
    Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken);

    /// <summary>
    /// Grains whose due time is at or before <paramref name="until"/>, earliest first, at most <paramref name="limit"/>:
    /// what the due scan wakes, so leases and unfinished admissions survive a restart of every silo.
    /// </summary>
    Task<IReadOnlyList<DueState>> ReadDueAsync(DateTimeOffset until, int limit, CancellationToken cancellationToken);
}
