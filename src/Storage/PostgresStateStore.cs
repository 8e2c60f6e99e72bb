using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using NpgsqlTypes;

namespace CallState.Storage;

/// <summary>
/// Grain storage in PostgreSQL, shared by the silos of a cluster. Each group-commit batch is one
/// transaction whose conditional statements travel as one <see cref="NpgsqlBatch"/> (one round trip),
/// committed with the server's default <c>synchronous_commit</c> (durable).
/// </summary>
public sealed class PostgresStateStore : IGroupCommitStore
{
    private readonly StorageOptions _options;
    private readonly NpgsqlDataSource _dataSource;
    private readonly ILogger _logger;
    private readonly string _target;
    private readonly string _insertSql;
    private readonly string _updateSql;
    private readonly string _deleteSql;
    private readonly string _insertWithItemsSql;
    private readonly string _itemsOnlySql;
    private readonly string _updateWithItemsSql;
    private readonly string _readSql;
    private readonly string _readAllSql;
    private readonly string _readVersionSql;
    private readonly string _readDueSql;
    private readonly SemaphoreSlim _initializeLock = new(1, 1);
    private GroupCommitter? _committer;
    private volatile bool _disposed;

    public PostgresStateStore(StorageOptions options, ILogger<PostgresStateStore>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Provider != StorageProvider.PostgreSql)
        {
            throw new ArgumentException($"{StorageOptions.SectionName}:Provider must be PostgreSql for {nameof(PostgresStateStore)}.", nameof(options));
        }

        var errors = StorageOptionsValidator.Validate(options);
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        }

        _options = options;
        _logger = logger ?? NullLogger<PostgresStateStore>.Instance;
        var builder = new NpgsqlDataSourceBuilder(options.ConnectionString);
        if (builder.ConnectionStringBuilder.MaxAutoPrepare == 0)
        {
            // The same few statements run on every connection; let Npgsql prepare them server-side.
            builder.ConnectionStringBuilder.MaxAutoPrepare = 16;
        }

        // Every statement here is a primary-key lookup, and the prepared ones keep the plan made when they were
        // first run. On a fresh database the items table looks empty then, so that plan is a sequential scan, and
        // it stays one while the table fills with held calls and dead rows: each write then reads the whole table
        // (measured: admission p50 15 ms and p99 1.3 s at 300 calls/s with 1 s calls). Index plans regardless.
        const string IndexPlans = "-c enable_seqscan=off";
        var sessionOptions = builder.ConnectionStringBuilder.Options;
        if (sessionOptions is null || !sessionOptions.Contains("enable_seqscan", StringComparison.Ordinal))
        {
            builder.ConnectionStringBuilder.Options = string.IsNullOrWhiteSpace(sessionOptions) ? IndexPlans : sessionOptions + " " + IndexPlans;
        }

        if (!MentionsPoolSize(options.ConnectionString ?? ""))
        {
            // Reads of new grains come one per call; past a few dozen connections PostgreSQL only queues them
            // (its default max_connections is 100, shared with the membership table and other silos), and a pool
            // allowed to reach that limit fails opens with "too many clients" and churns connections.
            builder.ConnectionStringBuilder.MaxPoolSize = DefaultMaxPoolSize;
        }

        if (string.IsNullOrEmpty(builder.ConnectionStringBuilder.ApplicationName))
        {
            builder.ConnectionStringBuilder.ApplicationName = "callstate";
        }

        _target = $"{builder.ConnectionStringBuilder.Host}:{builder.ConnectionStringBuilder.Port}/{builder.ConnectionStringBuilder.Database}, schema {options.Schema}";
        _dataSource = builder.Build();

        // The schema name was checked against a lower-case identifier pattern by the validator: safe to splice.
        var table = $"{options.Schema}.callstate_grains";
        var items = $"{options.Schema}.callstate_grain_items";

        // Every write statement returns one row when its version condition held and none when it did not; the
        // batch reader reads that per statement (RecordsAffected of a statement ending in SELECT counts rows
        // selected, not rows the compare-and-set changed).
        var insertCas = $"""
            INSERT INTO {table} (grain_type, grain_key, version, data, due_at) VALUES ($1, $2, $5, $3, $4)
            ON CONFLICT (grain_type, grain_key) DO NOTHING RETURNING 1
            """;
        var updateCas = $"UPDATE {table} SET version = $3 + 1, data = $4, due_at = $5 WHERE grain_type = $1 AND grain_key = $2 AND version = $3 RETURNING 1";
        _insertSql = insertCas;
        _updateSql = updateCas;

        // Items ride in the same statement as their row's compare-and-set (one statement per write, so a batch
        // stays one round trip): data-modifying CTEs that touch items only when the cas CTE returned its row.
        // All sub-statements see one snapshot, so a key is never both deleted and upserted: GrainWrites.Validate
        // refuses a write naming one key twice. The row's lock (taken by cas) serializes every writer of its items.
        // Items only: the row is not written, but its version is checked and the row share-locked until commit, so a
        // writer that takes the grain over (an update of the row, which waits for that lock) and this write exclude each other.
        _itemsOnlySql = WithItems($"SELECT 1 FROM {table} WHERE grain_type = $1 AND grain_key = $2 AND version = $3 FOR SHARE", items, deletesParameter: 4);
        _insertWithItemsSql = WithItems(insertCas, items, deletesParameter: 6);
        _updateWithItemsSql = WithItems(updateCas, items, deletesParameter: 6);
        _deleteSql = $"""
            WITH cas AS (DELETE FROM {table} WHERE grain_type = $1 AND grain_key = $2 AND version = $3 RETURNING 1),
            gone AS (DELETE FROM {items} WHERE grain_type = $1 AND grain_key = $2 AND EXISTS (SELECT 1 FROM cas))
            SELECT 1 FROM cas
            """;

        // One statement, so the row and its items come from one snapshot. COLLATE "C": byte order, like SQLite's.
        _readSql = $"""
            SELECT g.version, g.data, g.due_at, i.item_key, i.data
            FROM {table} g LEFT JOIN {items} i ON i.grain_type = g.grain_type AND i.grain_key = g.grain_key
            WHERE g.grain_type = $1 AND g.grain_key = $2
            ORDER BY i.item_key COLLATE "C"
            """;
        _readAllSql = $"""
            SELECT g.grain_key, g.version, g.data, g.due_at, i.item_key, i.data
            FROM {table} g LEFT JOIN {items} i ON i.grain_type = g.grain_type AND i.grain_key = g.grain_key
            WHERE g.grain_type = $1
            ORDER BY g.grain_key COLLATE "C", i.item_key COLLATE "C"
            """;
        _readVersionSql = $"SELECT version FROM {table} WHERE grain_type = $1 AND grain_key = $2";
        _readDueSql = $"SELECT grain_type, grain_key, due_at FROM {table} WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT $2";
    }

    /// <inheritdoc />
    public GroupCommitter? GroupCommit => _committer;

    internal GroupCommitter Committer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _committer ?? throw new InvalidOperationException(
                $"{nameof(PostgresStateStore)}.{nameof(InitializeAsync)} must complete before it is used.");
        }
    }

    /// <summary>Each entry moves the schema from version (index) to version (index + 1). Append only.</summary>
    private static string[] Migrations(string schema) =>
    [
        $"""
        CREATE TABLE {schema}.callstate_grains (
            grain_type text NOT NULL,
            grain_key text NOT NULL,
            version bigint NOT NULL,
            data bytea NOT NULL,
            due_at bigint NULL,
            PRIMARY KEY (grain_type, grain_key)
        );
        CREATE INDEX callstate_grains_due_at ON {schema}.callstate_grains (due_at) WHERE due_at IS NOT NULL;
        """,
        $"""
        CREATE TABLE {schema}.callstate_silos (
            silo_id text NOT NULL PRIMARY KEY,
            endpoint text NOT NULL,
            epoch bigint NOT NULL,
            status smallint NOT NULL,
            heartbeat_at bigint NOT NULL,
            started_at bigint NOT NULL
        );
        """,
        $"""
        CREATE TABLE {schema}.callstate_grain_items (
            grain_type text NOT NULL,
            grain_key text NOT NULL,
            item_key text NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (grain_type, grain_key, item_key)
        );
        """,

        // The membership of the runtime that Orleans replaced; Orleans' membership is in Membership/.
        $"DROP TABLE IF EXISTS {schema}.callstate_silos;",

        // The audit trail of admin changes (AuditLog.cs).
        $"""
        CREATE TABLE {schema}.callstate_audit (
            id bigserial PRIMARY KEY,
            at bigint NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            target text NOT NULL,
            before text NULL,
            after text NULL
        );
        CREATE INDEX callstate_audit_target ON {schema}.callstate_audit (target, id);
        """,
    ];

    /// <summary>
    /// <paramref name="cas"/> (returning one row when it held) followed by the item changes of the write: keys to
    /// delete in parameter <paramref name="deletesParameter"/>, keys and data to upsert in the next two.
    /// </summary>
    private static string WithItems(string cas, string items, int deletesParameter) => $"""
        WITH cas AS ({cas}),
        removed AS (
            DELETE FROM {items} WHERE grain_type = $1 AND grain_key = $2 AND item_key = ANY(${deletesParameter}::text[])
            AND EXISTS (SELECT 1 FROM cas)),
        upserted AS (
            INSERT INTO {items} (grain_type, grain_key, item_key, data)
            SELECT $1, $2, u.k, u.d FROM unnest(${deletesParameter + 1}::text[], ${deletesParameter + 2}::bytea[]) AS u(k, d)
            WHERE EXISTS (SELECT 1 FROM cas)
            ON CONFLICT (grain_type, grain_key, item_key) DO UPDATE SET data = EXCLUDED.data)
        SELECT 1 FROM cas
        """;

    /// <summary>Connections per silo when the connection string does not set <c>Maximum Pool Size</c>.</summary>
    public const int DefaultMaxPoolSize = 16;

    private static bool MentionsPoolSize(string connectionString)
    {
        var parts = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = connectionString };
        return parts.Keys.Cast<string>().Any(static k => k.Replace(" ", "", StringComparison.Ordinal).Equals("MaxPoolSize", StringComparison.OrdinalIgnoreCase)
            || k.Replace(" ", "", StringComparison.Ordinal).Equals("MaximumPoolSize", StringComparison.OrdinalIgnoreCase));
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

            var (previous, current) = await MigrateAsync(cancellationToken).ConfigureAwait(false);
            Log.StorageReady(_logger, StorageProvider.PostgreSql, _target, current, previous);
            _committer = new GroupCommitter(CommitBatchAsync, _options.MaxBatchSize, _options.QueueCapacity, _logger);
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
        var command = _dataSource.CreateCommand(_readSql);
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = id.Type });
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = id.Key });
            return await GrainRows.ReadOneAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async Task<long> ReadVersionAsync(StateId id, CancellationToken cancellationToken)
    {
        GrainWrites.ValidateId(id);
        _ = Committer;
        var command = _dataSource.CreateCommand(_readVersionSql);
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = id.Type });
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = id.Key });
            return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is long version ? version : 0;
        }
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken)
    {
        GrainWrites.ValidateType(type);
        _ = Committer;
        var command = _dataSource.CreateCommand(_readAllSql);
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = type });
            return await GrainRows.ReadAllAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<DueState>> ReadDueAsync(DateTimeOffset until, int limit, CancellationToken cancellationToken)
    {
        _ = Committer;
        var command = _dataSource.CreateCommand(_readDueSql);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = until.ToUnixTimeMilliseconds() });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = limit });
        await using (command.ConfigureAwait(false))
        {
            return await GrainRows.ReadDueAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Stops the committer (queued writes fail) and closes the connection pool.</summary>
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

            await _dataSource.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            _initializeLock.Release();
        }
    }

    private async Task<bool[]> CommitBatchAsync(IReadOnlyList<StateWrite> writes, CancellationToken cancellationToken)
    {
        // Statements go in (type, key) order so that two silos committing overlapping keys lock rows in the
        // same order and cannot deadlock. The sort is stable: two writes to one key keep their queue order.
        var order = new int[writes.Count];
        for (var i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }

        var sorted = order.OrderBy(i => writes[i].Id.Type, StringComparer.Ordinal).ThenBy(i => writes[i].Id.Key, StringComparer.Ordinal).ToArray();

        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                var batch = new NpgsqlBatch(connection, transaction);
                await using (batch.ConfigureAwait(false))
                {
                    foreach (var index in sorted)
                    {
                        batch.BatchCommands.Add(CreateCommand(writes[index]));
                    }

                    var results = new bool[writes.Count];
                    var reader = await batch.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                    await using (reader.ConfigureAwait(false))
                    {
                        for (var position = 0; position < sorted.Length; position++)
                        {
                            // Each statement is conditional and returns a row exactly when its version condition held.
                            if (position > 0 && !await reader.NextResultAsync(cancellationToken).ConfigureAwait(false))
                            {
                                throw new InvalidOperationException($"The batch returned {position} results for {sorted.Length} statements.");
                            }

                            results[sorted[position]] = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                        }
                    }

                    await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                    return results;
                }
            }
        }
    }

    private NpgsqlBatchCommand CreateCommand(StateWrite write)
    {
        NpgsqlBatchCommand command;
        if (write.RowUnchanged)
        {
            command = new NpgsqlBatchCommand(_itemsOnlySql);
            AddKey(command, write.Id);
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = write.ExpectedVersion });
            AddItems(command, write.Items);
        }
        else if (write.Data is null)
        {
            command = new NpgsqlBatchCommand(_deleteSql);
            AddKey(command, write.Id);
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = write.ExpectedVersion });
        }
        else if (write.ExpectedVersion == 0)
        {
            command = new NpgsqlBatchCommand(write.Items is { Count: > 0 } ? _insertWithItemsSql : _insertSql);
            AddKey(command, write.Id);
            command.Parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = write.Data });
            command.Parameters.Add(DueAtParameter(write.DueAt));
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = write.InsertVersion });
            AddItems(command, write.Items);
        }
        else
        {
            command = new NpgsqlBatchCommand(write.Items is { Count: > 0 } ? _updateWithItemsSql : _updateSql);
            AddKey(command, write.Id);
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = write.ExpectedVersion });
            command.Parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = write.Data });
            command.Parameters.Add(DueAtParameter(write.DueAt));
            AddItems(command, write.Items);
        }

        return command;
    }

    /// <summary>The three array parameters of <see cref="WithItems"/>: keys to delete, keys and data to upsert.</summary>
    private static void AddItems(NpgsqlBatchCommand command, IReadOnlyList<StateItemWrite>? items)
    {
        if (items is not { Count: > 0 })
        {
            return;
        }

        var deletes = 0;
        foreach (var item in items)
        {
            if (item.Data is null)
            {
                deletes++;
            }
        }

        var deleteKeys = new string[deletes];
        var upsertKeys = new string[items.Count - deletes];
        var upsertData = new byte[items.Count - deletes][];
        int d = 0, u = 0;
        foreach (var item in items)
        {
            if (item.Data is null)
            {
                deleteKeys[d++] = item.ItemKey;
            }
            else
            {
                upsertKeys[u] = item.ItemKey;
                upsertData[u++] = item.Data;
            }
        }

        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = deleteKeys });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = upsertKeys });
        command.Parameters.Add(new NpgsqlParameter<byte[][]> { TypedValue = upsertData });
    }

    private static void AddKey(NpgsqlBatchCommand command, StateId id)
    {
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = id.Type });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = id.Key });
    }

    private static NpgsqlParameter DueAtParameter(DateTimeOffset? dueAt) =>
        new() { NpgsqlDbType = NpgsqlDbType.Bigint, Value = GrainWrites.ToDbDueAt(dueAt) };

    private async Task<(int Previous, int Current)> MigrateAsync(CancellationToken cancellationToken)
    {
        var schema = _options.Schema;
        var migrations = Migrations(schema);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                // Silos may start together: one migrates while the others wait here, then find it done.
                // DDL is transactional in PostgreSQL, so a failed migration leaves no half-made schema.
                await ExecuteAsync(connection, transaction, "SELECT pg_advisory_xact_lock(hashtext($1))", cancellationToken, "callstate.schema." + schema)
                    .ConfigureAwait(false);
                await ExecuteAsync(connection, transaction, $"CREATE SCHEMA IF NOT EXISTS {schema}", cancellationToken).ConfigureAwait(false);
                await ExecuteAsync(connection, transaction, $"CREATE TABLE IF NOT EXISTS {schema}.callstate_schema_version (version integer NOT NULL PRIMARY KEY)", cancellationToken)
                    .ConfigureAwait(false);

                int previous;
                var select = new NpgsqlCommand($"SELECT COALESCE(MAX(version), 0) FROM {schema}.callstate_schema_version", connection, transaction);
                await using (select.ConfigureAwait(false))
                {
                    previous = (int)(await select.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
                }

                if (previous > migrations.Length)
                {
                    throw new InvalidOperationException(
                        $"PostgreSQL schema {schema} has schema version {previous}, newer than this build knows ({migrations.Length}); run a newer build.");
                }

                for (var version = previous; version < migrations.Length; version++)
                {
                    await ExecuteAsync(connection, transaction, migrations[version], cancellationToken).ConfigureAwait(false);
                    await ExecuteAsync(connection, transaction, $"INSERT INTO {schema}.callstate_schema_version (version) VALUES ($1)", cancellationToken, version + 1)
                        .ConfigureAwait(false);
                }

                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                return (previous, migrations.Length);
            }
        }
    }

    private static async Task ExecuteAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, string sql, CancellationToken cancellationToken, params object[] parameters)
    {
        var command = new NpgsqlCommand(sql, connection, transaction);
        await using (command.ConfigureAwait(false))
        {
            foreach (var value in parameters)
            {
                command.Parameters.Add(new NpgsqlParameter { Value = value });
            }

            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }
}
