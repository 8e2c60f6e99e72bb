using System.Data.Common;

namespace CallState.Runtime.Storage;

/// <summary>
/// Reading grain rows back, the same for every ADO.NET provider: the queries select
/// <c>version, data, due_at</c> (after <c>grain_key</c> for listings, or <c>grain_type, grain_key, due_at</c> for timers).
/// </summary>
internal static class GrainRows
{
    /// <summary>One row of <c>version, data, due_at</c>, or null when the query found none.</summary>
    public static async Task<StoredGrain?> ReadOneAsync(DbCommand command, CancellationToken cancellationToken)
    {
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? ReadGrain(reader, 0) : null;
        }
    }

    /// <summary>Rows of <c>grain_key, version, data, due_at</c>.</summary>
    public static async Task<IReadOnlyList<(string Key, StoredGrain Grain)>> ReadAllAsync(DbCommand command, CancellationToken cancellationToken)
    {
        var result = new List<(string Key, StoredGrain Grain)>();
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                result.Add((reader.GetString(0), ReadGrain(reader, 1)));
            }
        }

        return result;
    }

    /// <summary>Rows of <c>grain_type, grain_key, due_at</c>.</summary>
    public static async Task<IReadOnlyList<DueGrain>> ReadDueAsync(DbCommand command, CancellationToken cancellationToken)
    {
        var result = new List<DueGrain>();
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                result.Add(new DueGrain(new GrainId(reader.GetString(0), reader.GetString(1)), GrainWrites.FromDbDueAt(reader.GetInt64(2))));
            }
        }

        return result;
    }

    private static StoredGrain ReadGrain(DbDataReader reader, int first) =>
        new(
            reader.GetFieldValue<byte[]>(first + 1),
            reader.GetInt64(first),
            reader.IsDBNull(first + 2) ? null : GrainWrites.FromDbDueAt(reader.GetInt64(first + 2)));
}
