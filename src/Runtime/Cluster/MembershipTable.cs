using System.Data.Common;
using CallState.Runtime.Storage;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace CallState.Runtime.Cluster;

/// <summary>
/// The membership table (<c>callstate_silos</c>, created by the grain storage's schema migration): one row per silo id
/// with its RPC endpoint, epoch, status and last heartbeat. Every change is conditional on the epoch, so a silo that
/// was declared dead cannot heartbeat its old incarnation back to life; it must join again.
/// </summary>
public interface IMembershipTable : IAsyncDisposable
{
    /// <summary>Writes this silo's row as active with a new epoch (one more than any previous incarnation) and returns it.</summary>
    Task<long> JoinAsync(string siloId, string endpoint, DateTimeOffset now, CancellationToken cancellationToken);

    /// <summary>Refreshes the heartbeat. False when the row is no longer this active incarnation (declared dead, or rejoined elsewhere).</summary>
    Task<bool> HeartbeatAsync(string siloId, long epoch, DateTimeOffset now, CancellationToken cancellationToken);

    /// <summary>Marks this incarnation as left (graceful shutdown).</summary>
    Task LeaveAsync(string siloId, long epoch, CancellationToken cancellationToken);

    /// <summary>Marks an incarnation dead if it is still active and its heartbeat is older than <paramref name="heartbeatBefore"/>.</summary>
    Task<bool> DeclareDeadAsync(string siloId, long epoch, DateTimeOffset heartbeatBefore, CancellationToken cancellationToken);

    Task<IReadOnlyList<SiloEntry>> ReadAllAsync(CancellationToken cancellationToken);
}

public static class MembershipTable
{
    /// <summary>The table in the configured grain storage; the storage's migration must have run (a silo's storage stage).</summary>
    public static IMembershipTable Create(StorageOptions options) => options.Provider switch
    {
        StorageProvider.PostgreSql => new PostgresMembershipTable(options),
        _ => new SqliteMembershipTable(options),
    };
}

/// <summary>The SQL both providers share; parameters are <c>$1..$5</c> in order.</summary>
internal abstract class SqlMembershipTable(string table) : IMembershipTable
{
    private readonly string _join = $"""
        INSERT INTO {table} (silo_id, endpoint, epoch, status, heartbeat_at, started_at) VALUES ($1, $2, 1, 1, $3, $3)
        ON CONFLICT (silo_id) DO UPDATE SET endpoint = excluded.endpoint, epoch = {table}.epoch + 1, status = 1,
            heartbeat_at = excluded.heartbeat_at, started_at = excluded.started_at
        RETURNING epoch
        """;

    private readonly string _heartbeat = $"UPDATE {table} SET heartbeat_at = $3 WHERE silo_id = $1 AND epoch = $2 AND status = 1";
    private readonly string _leave = $"UPDATE {table} SET status = 2 WHERE silo_id = $1 AND epoch = $2";
    private readonly string _declareDead = $"UPDATE {table} SET status = 3 WHERE silo_id = $1 AND epoch = $2 AND status = 1 AND heartbeat_at < $3";
    private readonly string _readAll = $"SELECT silo_id, endpoint, epoch, status, heartbeat_at FROM {table} ORDER BY silo_id";

    public async Task<long> JoinAsync(string siloId, string endpoint, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var result = await ExecuteAsync(_join, static (c, ct) => c.ExecuteScalarAsync(ct), cancellationToken, siloId, endpoint, now.ToUnixTimeMilliseconds())
            .ConfigureAwait(false);
        return Convert.ToInt64(result, System.Globalization.CultureInfo.InvariantCulture);
    }

    public async Task<bool> HeartbeatAsync(string siloId, long epoch, DateTimeOffset now, CancellationToken cancellationToken) =>
        await ExecuteAsync(_heartbeat, static (c, ct) => c.ExecuteNonQueryAsync(ct), cancellationToken, siloId, epoch, now.ToUnixTimeMilliseconds())
            .ConfigureAwait(false) == 1;

    public Task LeaveAsync(string siloId, long epoch, CancellationToken cancellationToken) =>
        ExecuteAsync(_leave, static (c, ct) => c.ExecuteNonQueryAsync(ct), cancellationToken, siloId, epoch);

    public async Task<bool> DeclareDeadAsync(string siloId, long epoch, DateTimeOffset heartbeatBefore, CancellationToken cancellationToken) =>
        await ExecuteAsync(_declareDead, static (c, ct) => c.ExecuteNonQueryAsync(ct), cancellationToken, siloId, epoch, heartbeatBefore.ToUnixTimeMilliseconds())
            .ConfigureAwait(false) == 1;

    public Task<IReadOnlyList<SiloEntry>> ReadAllAsync(CancellationToken cancellationToken) =>
        ExecuteAsync<IReadOnlyList<SiloEntry>>(_readAll, static async (c, ct) =>
        {
            var list = new List<SiloEntry>();
            var reader = await c.ExecuteReaderAsync(ct).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(ct).ConfigureAwait(false))
                {
                    list.Add(new SiloEntry(
                        reader.GetString(0),
                        reader.GetString(1),
                        reader.GetInt64(2),
                        (SiloStatus)Convert.ToByte(reader.GetValue(3), System.Globalization.CultureInfo.InvariantCulture),
                        DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(4))));
                }
            }

            return list;
        }, cancellationToken);

    public abstract ValueTask DisposeAsync();

    protected abstract ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken);

    protected abstract DbParameter Parameter(int position, object value);

    private async Task<T> ExecuteAsync<T>(string sql, Func<DbCommand, CancellationToken, Task<T>> run, CancellationToken cancellationToken, params object[] values)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = connection.CreateCommand();
            await using (command.ConfigureAwait(false))
            {
                command.CommandText = sql;
                for (var i = 0; i < values.Length; i++)
                {
                    command.Parameters.Add(Parameter(i + 1, values[i]));
                }

                return await run(command, cancellationToken).ConfigureAwait(false);
            }
        }
    }
}

internal sealed class PostgresMembershipTable : SqlMembershipTable
{
    private readonly NpgsqlDataSource _dataSource;

    public PostgresMembershipTable(StorageOptions options)
        : base(options.Schema + ".callstate_silos")
    {
        var builder = new NpgsqlDataSourceBuilder(options.ConnectionString);
        builder.ConnectionStringBuilder.ApplicationName ??= "callstate-membership";

        // Heartbeats must not queue behind a stuck server for longer than a failure timeout.
        builder.ConnectionStringBuilder.Timeout = Math.Min(builder.ConnectionStringBuilder.Timeout, 5);
        builder.ConnectionStringBuilder.CommandTimeout = Math.Min(builder.ConnectionStringBuilder.CommandTimeout, 5);
        _dataSource = builder.Build();
    }

    public override ValueTask DisposeAsync() => _dataSource.DisposeAsync();

    protected override async ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken) =>
        await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);

    protected override DbParameter Parameter(int position, object value) => new NpgsqlParameter { Value = value };
}

internal sealed class SqliteMembershipTable(StorageOptions options) : SqlMembershipTable("callstate_silos")
{
    private readonly string _connectionString = new SqliteConnectionStringBuilder(options.EffectiveConnectionString)
    {
        Mode = SqliteOpenMode.ReadWrite,
        Pooling = true,
        DefaultTimeout = 5,
    }.ConnectionString;

    public override ValueTask DisposeAsync() => ValueTask.CompletedTask;

    protected override async ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        using var pragma = connection.CreateCommand();
        pragma.CommandText = "PRAGMA busy_timeout=5000";
        pragma.ExecuteNonQuery();
        return connection;
    }

    protected override DbParameter Parameter(int position, object value) =>
        new SqliteParameter("$" + position.ToString(System.Globalization.CultureInfo.InvariantCulture), value);
}
