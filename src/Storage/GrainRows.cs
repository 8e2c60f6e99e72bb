using System.Data.Common;

namespace CallState.Storage;

/// <summary>
/// Reading grain rows back, the same for every ADO.NET provider: the queries select
/// <c>version, data, due_at, item_key, item_data</c> (after <c>grain_key</c> for listings), one result
/// row per item of the grain (a grain row LEFT JOINed to its items, so one statement and one snapshot
/// give the row and its items together), ordered by grain key then item key; or
/// <c>grain_type, grain_key, due_at</c> for timers.
/// </summary>
internal static class GrainRows
{
    /// <summary>One grain with its items, or null when the query found none.</summary>
    public static async Task<StoredState?> ReadOneAsync(DbCommand command, CancellationToken cancellationToken)
    {
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                return null;
            }

            var (grain, _) = await ReadGrainAsync(reader, 0, cancellationToken).ConfigureAwait(false);
            return grain;
        }
    }

    /// <summary>Grains of one type with their items (rows of <c>grain_key, version, data, due_at, item_key, item_data</c>).</summary>
    public static async Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(DbCommand command, CancellationToken cancellationToken)
    {
        var result = new List<(string Key, StoredState Grain)>();
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            var more = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            while (more)
            {
                var key = reader.GetString(0);
                (var grain, more) = await ReadGrainAsync(reader, 1, cancellationToken).ConfigureAwait(false);
                result.Add((key, grain));
            }
        }

        return result;
    }

    /// <summary>Rows of <c>grain_type, grain_key, due_at</c>.</summary>
    public static async Task<IReadOnlyList<DueState>> ReadDueAsync(DbCommand command, CancellationToken cancellationToken)
    {
        var result = new List<DueState>();
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                result.Add(new DueState(new StateId(reader.GetString(0), reader.GetString(1)), GrainWrites.FromDbDueAt(reader.GetInt64(2))));
            }
        }

        return result;
    }

    /// <summary>
    /// Reads the grain on the current row and its items from this and the following rows of the same grain.
    /// Returns whether the reader stands on a row of the next grain (false at the end).
    /// </summary>
    private static async Task<(StoredState Grain, bool More)> ReadGrainAsync(DbDataReader reader, int first, CancellationToken cancellationToken)
    {
        var version = reader.GetInt64(first);
        var data = reader.GetFieldValue<byte[]>(first + 1);
        DateTimeOffset? dueAt = reader.IsDBNull(first + 2) ? null : GrainWrites.FromDbDueAt(reader.GetInt64(first + 2));
        var key = first > 0 ? reader.GetString(0) : null;
        List<StateItem>? items = null;
        bool more;
        do
        {
            if (!reader.IsDBNull(first + 3))
            {
                (items ??= []).Add(new StateItem(reader.GetString(first + 3), reader.GetFieldValue<byte[]>(first + 4)));
            }

            more = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        while (more && (key is null || string.Equals(reader.GetString(0), key, StringComparison.Ordinal)));

        return (new StoredState(data, version, dueAt) { Items = items is null ? [] : items }, more);
    }
}
