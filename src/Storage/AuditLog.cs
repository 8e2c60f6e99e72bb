using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace CallState.Storage;

/// <summary>One admin change: who, what (action and target), the value before and after (JSON text), when.</summary>
public sealed record AuditEntry(long Id, DateTimeOffset At, string Actor, string Action, string Target, string? Before, string? After);

/// <summary>Which entries to read: newest first, older than <see cref="BeforeId"/>, of one target or all.</summary>
public sealed record AuditQuery(int Limit, long? BeforeId = null, string? Target = null);

/// <summary>
/// The audit trail, kept in the same database as grain state (table <c>callstate_audit</c>, created by the state store's
/// schema migrations, so <see cref="IStateStore.InitializeAsync"/> runs first). Changes are rare: each is its own
/// statement, outside the group commit.
/// </summary>
public interface IAuditLog
{
    /// <summary>Stores <paramref name="entry"/> (its <see cref="AuditEntry.Id"/> is assigned); the new id.</summary>
    Task<long> AppendAsync(AuditEntry entry, CancellationToken cancellationToken);

    Task<IReadOnlyList<AuditEntry>> ReadAsync(AuditQuery query, CancellationToken cancellationToken);
}

/// <summary>Creates the <see cref="IAuditLog"/> of the configured storage.</summary>
public static class AuditLogFactory
{
    /// <summary>Most entries one read returns.</summary>
    public const int MaxReadLimit = 1000;

    public static IAuditLog Create(StorageOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.Provider == StorageProvider.PostgreSql
            ? new PostgresAuditLog(options)
            : new SqliteAuditLog(options);
    }

    internal static async Task<IReadOnlyList<AuditEntry>> ReadEntriesAsync(DbCommand command, CancellationToken cancellationToken)
    {
        var list = new List<AuditEntry>();
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                list.Add(new AuditEntry(
                    reader.GetInt64(0),
                    DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(1)),
                    reader.GetString(2),
                    reader.GetString(3),
                    reader.GetString(4),
                    reader.IsDBNull(5) ? null : reader.GetString(5),
                    reader.IsDBNull(6) ? null : reader.GetString(6)));
            }
        }

        return list;
    }

    internal static (string Where, int Limit) Filter(AuditQuery query, string parameterPrefix)
    {
        var where = new List<string>();
        if (query.BeforeId is not null)
        {
            where.Add($"id < {parameterPrefix}before");
        }

        if (query.Target is not null)
        {
            where.Add($"target = {parameterPrefix}target");
        }

        return (where.Count == 0 ? "" : "WHERE " + string.Join(" AND ", where), Math.Clamp(query.Limit, 1, MaxReadLimit));
    }
}

internal sealed class SqliteAuditLog(StorageOptions options) : IAuditLog
{
    private readonly string _connectionString = new SqliteConnectionStringBuilder(options.EffectiveConnectionString)
    {
        Mode = SqliteOpenMode.ReadWrite,
        Pooling = true,
    }.ConnectionString;

    public async Task<long> AppendAsync(AuditEntry entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var connection = new SqliteConnection(_connectionString);
        await using (connection.ConfigureAwait(false))
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            using var command = connection.CreateCommand();
            command.CommandText = """
                INSERT INTO callstate_audit (at, actor, action, target, before, after) VALUES ($at, $actor, $action, $target, $before, $after)
                RETURNING id
                """;
            command.Parameters.AddWithValue("$at", entry.At.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$actor", entry.Actor);
            command.Parameters.AddWithValue("$action", entry.Action);
            command.Parameters.AddWithValue("$target", entry.Target);
            command.Parameters.AddWithValue("$before", (object?)entry.Before ?? DBNull.Value);
            command.Parameters.AddWithValue("$after", (object?)entry.After ?? DBNull.Value);
            return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }
    }

    public async Task<IReadOnlyList<AuditEntry>> ReadAsync(AuditQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        var connection = new SqliteConnection(_connectionString);
        await using (connection.ConfigureAwait(false))
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            using var command = connection.CreateCommand();
            var (where, limit) = AuditLogFactory.Filter(query, "$");
            command.CommandText = $"SELECT id, at, actor, action, target, before, after FROM callstate_audit {where} ORDER BY id DESC LIMIT {limit}";
            if (query.BeforeId is { } before)
            {
                command.Parameters.AddWithValue("$before", before);
            }

            if (query.Target is { } target)
            {
                command.Parameters.AddWithValue("$target", target);
            }

            return await AuditLogFactory.ReadEntriesAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }
}

internal sealed class PostgresAuditLog : IAuditLog, IAsyncDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly string _table;

    public PostgresAuditLog(StorageOptions options)
    {
        _dataSource = NpgsqlDataSource.Create(options.ConnectionString!);
        _table = options.Schema + ".callstate_audit";
    }

    public async Task<long> AppendAsync(AuditEntry entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var command = _dataSource.CreateCommand(
            $"INSERT INTO {_table} (at, actor, action, target, before, after) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id");
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(new NpgsqlParameter { Value = entry.At.ToUnixTimeMilliseconds() });
            command.Parameters.Add(new NpgsqlParameter { Value = entry.Actor });
            command.Parameters.Add(new NpgsqlParameter { Value = entry.Action });
            command.Parameters.Add(new NpgsqlParameter { Value = entry.Target });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)entry.Before ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)entry.After ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }
    }

    public async Task<IReadOnlyList<AuditEntry>> ReadAsync(AuditQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        var (where, limit) = AuditLogFactory.Filter(query, "@");
        var command = _dataSource.CreateCommand($"SELECT id, at, actor, action, target, before, after FROM {_table} {where} ORDER BY id DESC LIMIT {limit}");
        await using (command.ConfigureAwait(false))
        {
            if (query.BeforeId is { } before)
            {
                command.Parameters.Add(new NpgsqlParameter("before", before));
            }

            if (query.Target is { } target)
            {
                command.Parameters.Add(new NpgsqlParameter("target", target));
            }

            return await AuditLogFactory.ReadEntriesAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync() => _dataSource.DisposeAsync();
}
