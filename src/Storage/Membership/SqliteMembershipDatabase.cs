using System.Data.Common;
using System.Globalization;
using Microsoft.Data.Sqlite;

namespace CallState.Storage.Membership;

/// <summary>The membership tables in the grain-state SQLite file.</summary>
internal sealed class SqliteMembershipDatabase : MembershipDatabase
{
    private const string Versions = "callstate_membership_versions";
    private const string Silos = "callstate_membership_silos";

    /// <summary>How long a statement waits for another connection's write lock (the state store's committer, another silo).</summary>
    private const int BusyTimeoutMilliseconds = 5000;

    private const string Schema = $"""
        CREATE TABLE IF NOT EXISTS {Versions} (
            cluster_id TEXT NOT NULL PRIMARY KEY,
            version INTEGER NOT NULL,
            etag TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS {Silos} (
            cluster_id TEXT NOT NULL,
            address TEXT NOT NULL,
            port INTEGER NOT NULL,
            generation INTEGER NOT NULL,
            status INTEGER NOT NULL,
            proxy_port INTEGER NOT NULL,
            host_name TEXT NULL,
            silo_name TEXT NULL,
            role_name TEXT NULL,
            update_zone INTEGER NOT NULL,
            fault_zone INTEGER NOT NULL,
            start_at INTEGER NOT NULL,
            i_am_alive_at INTEGER NOT NULL,
            last_update_at INTEGER NOT NULL,
            suspect_times TEXT NOT NULL,
            etag TEXT NOT NULL,
            PRIMARY KEY (cluster_id, address, port, generation)
        );
        """;

    private readonly string _connectionString;
    private readonly string _dataSource;
    private readonly string _synchronous;

    public SqliteMembershipDatabase(StorageOptions options)
        : base(Versions, Silos)
    {
        var builder = new SqliteConnectionStringBuilder(options.EffectiveConnectionString)
        {
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = true,
        };
        _dataSource = builder.DataSource;
        _connectionString = builder.ConnectionString;
        _synchronous = options.SqliteSynchronous.ToString().ToUpperInvariant();
    }

    public override StorageProvider Provider => StorageProvider.Sqlite;

    public override string Target => _dataSource;

    public override async Task CreateSchemaAsync(CancellationToken cancellationToken)
    {
        SqliteStateStore.CreateDirectoryFor(_dataSource);
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = connection.CreateCommand();
            await using (command.ConfigureAwait(false))
            {
                // WAL, as the state store sets it (the mode is kept in the file): readers of the membership table and the
                // state store's committer then never wait for each other.
                command.CommandText = "PRAGMA journal_mode=WAL";
                var mode = Convert.ToString(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
                if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
                {
                    throw new InvalidOperationException($"SQLite database '{_dataSource}' could not switch to WAL journal mode (got '{mode}').");
                }
            }

            var transaction = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                var create = connection.CreateCommand();
                await using (create.ConfigureAwait(false))
                {
                    create.Transaction = (SqliteTransaction)transaction;
                    create.CommandText = Schema;
                    await create.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    public override ValueTask DisposeAsync()
    {
        using (var pooled = new SqliteConnection(_connectionString))
        {
            // Closes the idle pooled connections so the file is released when this instance is gone.
            SqliteConnection.ClearPool(pooled);
        }

        return ValueTask.CompletedTask;
    }

    protected override async Task<DbConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);

            // Per connection, and pooled connections may be new: busy_timeout so a write waits for the state store's
            // commit instead of failing at once; synchronous so membership changes are as durable as grain writes.
            using var command = connection.CreateCommand();
            command.CommandText = $"PRAGMA busy_timeout={BusyTimeoutMilliseconds}; PRAGMA synchronous={_synchronous}";
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary><c>BEGIN IMMEDIATE</c>: the write lock is taken up front, so concurrent writers queue at BEGIN (busy_timeout).</summary>
    protected override Task<DbTransaction> BeginWriteAsync(DbConnection connection, CancellationToken cancellationToken) =>
        Task.FromResult<DbTransaction>(((SqliteConnection)connection).BeginTransaction(deferred: false));
}
