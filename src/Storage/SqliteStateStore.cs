using System.Globalization;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Storage;

/// <summary>
/// Grain storage in one SQLite file (the embedded default). WAL journal so readers never wait for the
/// committer; one dedicated write connection owned by the group-commit loop, one
/// <c>BEGIN IMMEDIATE ... COMMIT</c> (one fsync at <see cref="SqliteSynchronous.Full"/>) per batch.
/// </summary>
public sealed class SqliteStateStore : IGroupCommitStore
{
    /// <summary>How long a writer waits for another process's write lock before failing its batch.</summary>
    private const int BusyTimeoutMilliseconds = 5000;

    /// <summary>Each entry moves the schema from version (index) to version (index + 1). Append only.</summary>
    private static readonly string[] Migrations =
    [
        """
        CREATE TABLE callstate_grains (
            grain_type TEXT NOT NULL,
            grain_key TEXT NOT NULL,
            version INTEGER NOT NULL,
            data BLOB NOT NULL,
            due_at INTEGER NULL,
            PRIMARY KEY (grain_type, grain_key)
        );
        CREATE INDEX callstate_grains_due_at ON callstate_grains (due_at) WHERE due_at IS NOT NULL;
        """,
        """
        CREATE TABLE callstate_silos (
            silo_id TEXT NOT NULL PRIMARY KEY,
            endpoint TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            status INTEGER NOT NULL,
            heartbeat_at INTEGER NOT NULL,
            started_at INTEGER NOT NULL
        );
        """,
        """
        CREATE TABLE callstate_grain_items (
            grain_type TEXT NOT NULL,
            grain_key TEXT NOT NULL,
            item_key TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (grain_type, grain_key, item_key)
        ) WITHOUT ROWID;
        """,

        // The membership of the runtime that Orleans replaced; Orleans' membership is in Membership/.
        "DROP TABLE IF EXISTS callstate_silos;",

        // The audit trail of admin changes (AuditLog.cs).
        """
        CREATE TABLE callstate_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            before TEXT NULL,
            after TEXT NULL
        );
        CREATE INDEX callstate_audit_target ON callstate_audit (target, id);
        """,
    ];

    /// <summary>A grain row with its items, one result row per item (<see cref="GrainRows"/>).</summary>
    private const string ReadSql = """
        SELECT g.version, g.data, g.due_at, i.item_key, i.data
        FROM callstate_grains g
        LEFT JOIN callstate_grain_items i ON i.grain_type = g.grain_type AND i.grain_key = g.grain_key
        WHERE g.grain_type = $t AND g.grain_key = $k
        ORDER BY i.item_key
        """;

    private const string ReadAllSql = """
        SELECT g.grain_key, g.version, g.data, g.due_at, i.item_key, i.data
        FROM callstate_grains g
        LEFT JOIN callstate_grain_items i ON i.grain_type = g.grain_type AND i.grain_key = g.grain_key
        WHERE g.grain_type = $t
        ORDER BY g.grain_key, i.item_key
        """;

    private readonly StorageOptions _options;
    private readonly string _writeConnectionString;
    private readonly string _readConnectionString;
    private readonly string _dataSource;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _initializeLock = new(1, 1);
    private readonly CancellationTokenSource _stopCheckpoints = new();
    private Thread? _checkpointer;
    private SqliteConnection? _writeConnection;
    private SqliteCommand? _insert;
    private SqliteCommand? _update;
    private SqliteCommand? _delete;
    private SqliteCommand? _checkVersion;
    private SqliteCommand? _upsertItem;
    private SqliteCommand? _deleteItem;
    private SqliteCommand? _deleteItems;
    private GroupCommitter? _committer;
    private volatile bool _disposed;

    public SqliteStateStore(StorageOptions options, ILogger<SqliteStateStore>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Provider != StorageProvider.Sqlite)
        {
            throw new ArgumentException($"{StorageOptions.SectionName}:Provider must be Sqlite for {nameof(SqliteStateStore)}.", nameof(options));
        }

        var errors = StorageOptionsValidator.Validate(options);
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        }

        _options = options;
        _logger = logger ?? NullLogger<SqliteStateStore>.Instance;
        var builder = new SqliteConnectionStringBuilder(options.EffectiveConnectionString);
        _dataSource = builder.DataSource;

        // The write connection lives as long as this instance and belongs to the commit loop alone; a pool
        // would only hide it from other code.
        _writeConnectionString = new SqliteConnectionStringBuilder(builder.ConnectionString)
        {
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
        }.ConnectionString;

        // Readers share a pool; WAL lets them read the last committed state while a batch commits.
        _readConnectionString = new SqliteConnectionStringBuilder(builder.ConnectionString)
        {
            Mode = SqliteOpenMode.ReadWrite,
            Pooling = true,
        }.ConnectionString;
    }

    /// <inheritdoc />
    public GroupCommitter? GroupCommit => _committer;

    internal GroupCommitter Committer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _committer ?? throw new InvalidOperationException(
                $"{nameof(SqliteStateStore)}.{nameof(InitializeAsync)} must complete before it is used.");
        }
    }

    /// <inheritdoc />
    public async Task InitializeAsync(CancellationToken cancellationToken)
    {
        await _initializeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_committer is not null)
            {
                return;
            }

            CreateDirectoryFor(_dataSource);
            var connection = new SqliteConnection(_writeConnectionString);
            try
            {
                await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
                ConfigureWriteConnection(connection);
                var (previous, current) = Migrate(connection);
                PrepareCommands(connection);
                _writeConnection = connection;
                Log.StorageReady(_logger, StorageProvider.Sqlite, _dataSource, current, previous);
            }
            catch
            {
                DisposeCommands();
                await connection.DisposeAsync().ConfigureAwait(false);
                throw;
            }

            _committer = new GroupCommitter(CommitBatchAsync, _options.MaxBatchSize, _options.QueueCapacity, _logger, dedicatedThread: true);
            StartCheckpointer();
        }
        finally
        {
            _initializeLock.Release();
        }
    }

    /// <inheritdoc />
    public Task<bool> WriteAsync(StateWrite write, CancellationToken cancellationToken)
    {
        GrainWrites.Validate(write);
        return Committer.WriteAsync(write, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<StoredState?> ReadAsync(StateId id, CancellationToken cancellationToken)
    {
        GrainWrites.ValidateId(id);
        _ = Committer;
        var connection = await OpenReadConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = connection.CreateCommand();
            command.CommandText = ReadSql;
            command.Parameters.AddWithValue("$t", id.Type);
            command.Parameters.AddWithValue("$k", id.Key);
            return await GrainRows.ReadOneAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async Task<long> ReadVersionAsync(StateId id, CancellationToken cancellationToken)
    {
        GrainWrites.ValidateId(id);
        _ = Committer;
        var connection = await OpenReadConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = connection.CreateCommand();
            command.CommandText = "SELECT version FROM callstate_grains WHERE grain_type = $t AND grain_key = $k";
            command.Parameters.AddWithValue("$t", id.Type);
            command.Parameters.AddWithValue("$k", id.Key);
            return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is long version ? version : 0;
        }
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken)
    {
        GrainWrites.ValidateType(type);
        _ = Committer;
        var connection = await OpenReadConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = connection.CreateCommand();
            command.CommandText = ReadAllSql;
            command.Parameters.AddWithValue("$t", type);
            return await GrainRows.ReadAllAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<DueState>> ReadDueAsync(DateTimeOffset until, int limit, CancellationToken cancellationToken)
    {
        _ = Committer;
        var connection = await OpenReadConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = connection.CreateCommand();
            // The WHERE clause matches the partial index callstate_grains_due_at.
            command.CommandText = "SELECT grain_type, grain_key, due_at FROM callstate_grains WHERE due_at IS NOT NULL AND due_at <= $until ORDER BY due_at LIMIT $limit";
            command.Parameters.AddWithValue("$until", until.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$limit", limit);
            return await GrainRows.ReadDueAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Stops the committer (queued writes fail), closes the write connection and the idle readers.</summary>
    public async ValueTask DisposeAsync()
    {
        await _initializeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            if (_committer is not null)
            {
                await _committer.DisposeAsync().ConfigureAwait(false);
            }

            await _stopCheckpoints.CancelAsync().ConfigureAwait(false);
            _checkpointer?.Join();
            _stopCheckpoints.Dispose();

            DisposeCommands();
            if (_writeConnection is not null)
            {
                await _writeConnection.DisposeAsync().ConfigureAwait(false);
            }

            using (var pooled = new SqliteConnection(_readConnectionString))
            {
                // Closes idle pooled readers so the file is released when this instance is gone.
                SqliteConnection.ClearPool(pooled);
            }
        }
        finally
        {
            _initializeLock.Release();
        }
    }

    /// <summary>
    /// Runs on the commit loop only, so the write connection and its prepared commands are never shared.
    /// Synchronous on purpose: Microsoft.Data.Sqlite's async methods complete synchronously anyway.
    /// </summary>
    private Task<bool[]> CommitBatchAsync(IReadOnlyList<StateWrite> writes, CancellationToken cancellationToken)
    {
        var connection = _writeConnection!;
        var results = new bool[writes.Count];

        // deferred: false issues BEGIN IMMEDIATE: the write lock is taken up front, so a second process on the
        // same file waits (busy_timeout) at BEGIN instead of failing at its first write with SQLITE_BUSY.
        using (var transaction = connection.BeginTransaction(deferred: false))
        {
            for (var i = 0; i < writes.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var write = writes[i];
                var command = write.RowUnchanged ? _checkVersion! : write.Data is null ? _delete! : write.ExpectedVersion == 0 ? _insert! : _update!;
                command.Transaction = transaction;
                command.Parameters["$t"].Value = write.Id.Type;
                command.Parameters["$k"].Value = write.Id.Key;
                if (write.RowUnchanged)
                {
                    // The version check and the items are in this transaction, which holds the database's write lock.
                    command.Parameters["$v"].Value = write.ExpectedVersion;
                    results[i] = command.ExecuteScalar() is not null;
                    if (results[i])
                    {
                        WriteItems(write, transaction);
                    }

                    continue;
                }

                if (write.Data is not null)
                {
                    command.Parameters["$d"].Value = write.Data;
                    command.Parameters["$due"].Value = GrainWrites.ToDbDueAt(write.DueAt);
                }

                if (write.ExpectedVersion != 0)
                {
                    command.Parameters["$v"].Value = write.ExpectedVersion;
                }
                else
                {
                    command.Parameters["$nv"].Value = write.InsertVersion;
                }

                // Each statement is conditional; exactly one changed row means the version condition held.
                results[i] = command.ExecuteNonQuery() == 1;
                if (results[i])
                {
                    // Items follow their row: applied only when its compare-and-set held, in the same transaction.
                    WriteItems(write, transaction);
                }
            }

            transaction.Commit();
        }

        return Task.FromResult(results);
    }

    private void WriteItems(StateWrite write, SqliteTransaction transaction)
    {
        if (write.Data is null && !write.RowUnchanged)
        {
            var deleteAll = _deleteItems!;
            deleteAll.Transaction = transaction;
            deleteAll.Parameters["$t"].Value = write.Id.Type;
            deleteAll.Parameters["$k"].Value = write.Id.Key;
            deleteAll.ExecuteNonQuery();
            return;
        }

        if (write.Items is not { Count: > 0 } items)
        {
            return;
        }

        foreach (var item in items)
        {
            var command = item.Data is null ? _deleteItem! : _upsertItem!;
            command.Transaction = transaction;
            command.Parameters["$t"].Value = write.Id.Type;
            command.Parameters["$k"].Value = write.Id.Key;
            command.Parameters["$i"].Value = item.ItemKey;
            if (item.Data is not null)
            {
                command.Parameters["$d"].Value = item.Data;
            }

            command.ExecuteNonQuery();
        }
    }

    private void ConfigureWriteConnection(SqliteConnection connection)
    {
        using var command = connection.CreateCommand();

        // First, so that switching to WAL (which needs a moment of exclusive access) waits out other processes.
        command.CommandText = $"PRAGMA busy_timeout={BusyTimeoutMilliseconds}";
        command.ExecuteNonQuery();
        command.CommandText = "PRAGMA journal_mode=WAL";
        var mode = Convert.ToString(command.ExecuteScalar(), CultureInfo.InvariantCulture);
        if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidOperationException($"SQLite database '{_dataSource}' could not switch to WAL journal mode (got '{mode}').");
        }

        // synchronous is per connection and only this connection writes, so setting it here covers every commit.
        var synchronous = _options.SqliteSynchronous.ToString().ToUpperInvariant();
        command.CommandText = $"PRAGMA synchronous={synchronous}";
        command.ExecuteNonQuery();

        // No checkpoint inside a commit: an automatic one copies the WAL into the database and fsyncs it while every
        // write of the batch waits (tens of milliseconds). The checkpointer thread does it beside the writer instead.
        command.CommandText = "PRAGMA wal_autocheckpoint=0";
        command.ExecuteNonQuery();
    }

    /// <summary>How often the checkpointer copies the WAL into the database.</summary>
    internal static readonly TimeSpan CheckpointInterval = TimeSpan.FromMilliseconds(500);

    /// <summary>WAL frames (pages) past which the checkpointer restarts the WAL from its beginning.</summary>
    internal const int WalRestartFrames = 4096;

    /// <summary>
    /// Copies committed WAL pages into the database file on a connection and thread of its own. The PASSIVE
    /// checkpoint never blocks the writer or readers, but under steady writes it never finds the WAL fully copied at
    /// the moment a batch starts, so the WAL would only grow (a gigabyte in three minutes at 500 calls/s, with every
    /// commit slower as its index grows; docs/benchmarks.md). Once the WAL holds more than
    /// <see cref="WalRestartFrames"/> frames, a TRUNCATE checkpoint takes the write lock between two batches, copies
    /// the few frames written since the PASSIVE one and empties the file.
    /// </summary>
    private void StartCheckpointer()
    {
        var token = _stopCheckpoints.Token;
        _checkpointer = new Thread(() =>
        {
            using var connection = new SqliteConnection(_writeConnectionString);
            try
            {
                connection.Open();
                using var command = connection.CreateCommand();
                command.CommandText = $"PRAGMA busy_timeout={BusyTimeoutMilliseconds}";
                command.ExecuteNonQuery();
                using var passive = connection.CreateCommand();
                passive.CommandText = "PRAGMA wal_checkpoint(PASSIVE)";
                using var truncate = connection.CreateCommand();
                truncate.CommandText = "PRAGMA wal_checkpoint(TRUNCATE)";
                while (!token.WaitHandle.WaitOne(CheckpointInterval))
                {
                    try
                    {
                        if (WalFrames(passive) > WalRestartFrames)
                        {
                            truncate.ExecuteNonQuery();
                        }
                    }
                    catch (SqliteException ex)
                    {
                        Log.CheckpointFailed(_logger, ex, _dataSource);
                    }
                }
            }
            catch (SqliteException ex)
            {
                Log.CheckpointFailed(_logger, ex, _dataSource);
            }
        })
        {
            IsBackground = true,
            Name = "CallState SQLite checkpoint",
        };
        _checkpointer.Start();
    }

    /// <summary>Runs a <c>wal_checkpoint</c> pragma and returns the WAL's size in frames it reports.</summary>
    private static long WalFrames(SqliteCommand checkpoint)
    {
        using var reader = checkpoint.ExecuteReader();
        return reader.Read() ? reader.GetInt64(1) : 0;
    }

    private static (int Previous, int Current) Migrate(SqliteConnection connection)
    {
        using var transaction = connection.BeginTransaction(deferred: false);
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "CREATE TABLE IF NOT EXISTS callstate_schema_version (version INTEGER NOT NULL PRIMARY KEY)";
        command.ExecuteNonQuery();
        command.CommandText = "SELECT COALESCE(MAX(version), 0) FROM callstate_schema_version";
        var previous = Convert.ToInt32(command.ExecuteScalar(), CultureInfo.InvariantCulture);
        if (previous > Migrations.Length)
        {
            throw new InvalidOperationException(
                $"The SQLite database has schema version {previous}, newer than this build knows ({Migrations.Length}); run a newer build.");
        }

        for (var version = previous; version < Migrations.Length; version++)
        {
            command.CommandText = Migrations[version];
            command.ExecuteNonQuery();
            command.CommandText = "INSERT INTO callstate_schema_version (version) VALUES ($v)";
            command.Parameters.Clear();
            command.Parameters.AddWithValue("$v", version + 1);
            command.ExecuteNonQuery();
            command.Parameters.Clear();
        }

        transaction.Commit();
        return (previous, Migrations.Length);
    }

    private void PrepareCommands(SqliteConnection connection)
    {
        _insert = CreatePrepared(
            connection,
            """
            INSERT INTO callstate_grains (grain_type, grain_key, version, data, due_at) VALUES ($t, $k, $nv, $d, $due)
            ON CONFLICT (grain_type, grain_key) DO NOTHING
            """,
            ("$t", SqliteType.Text), ("$k", SqliteType.Text), ("$nv", SqliteType.Integer), ("$d", SqliteType.Blob), ("$due", SqliteType.Integer));
        _update = CreatePrepared(
            connection,
            """
            UPDATE callstate_grains SET version = $v + 1, data = $d, due_at = $due
            WHERE grain_type = $t AND grain_key = $k AND version = $v
            """,
            ("$t", SqliteType.Text), ("$k", SqliteType.Text), ("$v", SqliteType.Integer), ("$d", SqliteType.Blob), ("$due", SqliteType.Integer));
        _delete = CreatePrepared(
            connection,
            "DELETE FROM callstate_grains WHERE grain_type = $t AND grain_key = $k AND version = $v",
            ("$t", SqliteType.Text), ("$k", SqliteType.Text), ("$v", SqliteType.Integer));
        _checkVersion = CreatePrepared(
            connection,
            "SELECT 1 FROM callstate_grains WHERE grain_type = $t AND grain_key = $k AND version = $v",
            ("$t", SqliteType.Text), ("$k", SqliteType.Text), ("$v", SqliteType.Integer));
        _upsertItem = CreatePrepared(
            connection,
            """
            INSERT INTO callstate_grain_items (grain_type, grain_key, item_key, data) VALUES ($t, $k, $i, $d)
            ON CONFLICT (grain_type, grain_key, item_key) DO UPDATE SET data = excluded.data
            """,
            ("$t", SqliteType.Text), ("$k", SqliteType.Text), ("$i", SqliteType.Text), ("$d", SqliteType.Blob));
        _deleteItem = CreatePrepared(
            connection,
            "DELETE FROM callstate_grain_items WHERE grain_type = $t AND grain_key = $k AND item_key = $i",
            ("$t", SqliteType.Text), ("$k", SqliteType.Text), ("$i", SqliteType.Text));
        _deleteItems = CreatePrepared(
            connection,
            "DELETE FROM callstate_grain_items WHERE grain_type = $t AND grain_key = $k",
            ("$t", SqliteType.Text), ("$k", SqliteType.Text));
    }

    private static SqliteCommand CreatePrepared(SqliteConnection connection, string sql, params (string Name, SqliteType Type)[] parameters)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, type) in parameters)
        {
            command.Parameters.Add(name, type);
        }

        command.Prepare();
        return command;
    }

    private void DisposeCommands()
    {
        _insert?.Dispose();
        _update?.Dispose();
        _delete?.Dispose();
        _checkVersion?.Dispose();
        _upsertItem?.Dispose();
        _deleteItem?.Dispose();
        _deleteItems?.Dispose();
        _insert = _update = _delete = _checkVersion = _upsertItem = _deleteItem = _deleteItems = null;
    }

    private async Task<SqliteConnection> OpenReadConnectionAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_readConnectionString);
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Creates the folder of a database file (not of a <c>file:</c> URI) so a first start needs no set-up.</summary>
    internal static void CreateDirectoryFor(string dataSource)
    {
        if (dataSource.StartsWith("file:", StringComparison.OrdinalIgnoreCase))
        {
            return;
        }

        var directory = Path.GetDirectoryName(Path.GetFullPath(dataSource));
        if (!string.IsNullOrEmpty(directory))
        {
            Directory.CreateDirectory(directory);
        }
    }
}
