using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Storage.Tests.Storage;

/// <summary>The storage contract against a SQLite file of its own per test.</summary>
public sealed class SqliteGrainStorageTests : GrainStorageContractTests
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "callstate-sqlite-" + Guid.NewGuid().ToString("N"));

    private StorageOptions Options => new()
    {
        Provider = StorageProvider.Sqlite,
        ConnectionString = $"Data Source={Path.Combine(_directory, "nested", "grains.db")}",
    };

    private string FilePath => Path.Combine(_directory, "nested", "grains.db");

    protected override IStateStore CreateStorage() => new SqliteStateStore(Options, NullLogger<SqliteStateStore>.Instance);

    protected override IAuditLog CreateAuditLog() => AuditLogFactory.Create(Options);

    /// <summary>Another connection's write transaction: the committer waits at BEGIN IMMEDIATE (busy_timeout) until it ends.</summary>
    protected override async Task<IAsyncDisposable> BlockWritesAsync(StateId blocker)
    {
        var connection = new SqliteConnection($"Data Source={FilePath};Pooling=False");
        await connection.OpenAsync(Ct);
        await using var command = connection.CreateCommand();
        command.CommandText = "BEGIN IMMEDIATE";
        await command.ExecuteNonQueryAsync(Ct);
        return connection;
    }

    protected override Task CleanupAsync()
    {
        SqliteConnection.ClearAllPools();
        if (Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }

        return Task.CompletedTask;
    }

    [Fact]
    public async Task Under_steady_writes_the_WAL_is_emptied_instead_of_growing()
    {
        // Concurrent writers keep the commit loop busy with item writes (a call's hold each, as limit grains write
        // them), batch after batch, so a PASSIVE checkpoint never finds the WAL fully copied when a batch starts (the
        // WAL reached 115 MB here without the TRUNCATE checkpoint and never shrank). Each item carries a page of data, so
        // the writes add up to at least three times the WAL size at which the checkpointer empties it. How large the WAL
        // gets before it is emptied depends on how busy the machine is, so the test asserts the emptying, not a size.
        const int pageSize = 4096;
        const int writes = 3 * SqliteStateStore.WalRestartFrames;
        var wal = FilePath + "-wal";
        var data = new byte[pageSize];
        var next = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        var largest = 0L;
        var writers = Enumerable.Range(0, 32).Select(async writer =>
        {
            var id = new StateId("limit", $"user/wal-{writer}");
            var version = 0L;
            while (Interlocked.Increment(ref next) <= writes && DateTime.UtcNow < deadline)
            {
                if (version == 0)
                {
                    Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, data, null), Ct));
                    version++;
                }
                else
                {
                    Assert.True(await Storage.WriteAsync(StateWrite.ItemsOnly(id, version, [new StateItemWrite($"call-{next}", data)]), Ct));
                }
            }
        }).ToList();
        writers.Add(Task.Run(async () =>
        {
            // Activations read while the writes go on, as grains do under load.
            while (Volatile.Read(ref next) <= writes && DateTime.UtcNow < deadline)
            {
                await Storage.ReadAsync(new StateId("limit", "user/wal-0"), Ct);
                await Storage.ReadDueAsync(DateTimeOffset.UtcNow, 100, Ct);
            }
        }));
        var all = Task.WhenAll(writers);
        var emptied = 0;
        while (!all.IsCompleted)
        {
            var size = File.Exists(wal) ? new FileInfo(wal).Length : 0;
            if (size < largest / 2 && largest > SqliteStateStore.WalRestartFrames * pageSize)
            {
                // The file shrank while the writes went on: a PASSIVE checkpoint never shortens it, only TRUNCATE does.
                emptied++;
                largest = size;
            }

            largest = Math.Max(largest, size);
            await Task.WhenAny(all, Task.Delay(20, Ct));
        }

        await all;
        Assert.True(Volatile.Read(ref next) > writes, $"only {next} of {writes} writes were made before the deadline");
        Assert.True(emptied > 0, $"the WAL was never emptied while {writes} writes were made (it reached {largest} bytes)");
    }

    [Fact]
    public async Task The_file_is_in_WAL_mode_with_a_schema_version_recorded()
    {
        await using var connection = new SqliteConnection($"Data Source={Path.Combine(_directory, "nested", "grains.db")};Pooling=False");
        await connection.OpenAsync(Ct);
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", (string?)await command.ExecuteScalarAsync(Ct));
        command.CommandText = "SELECT MAX(version) FROM callstate_schema_version";
        Assert.Equal(5L, (long?)await command.ExecuteScalarAsync(Ct));
        command.CommandText = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'callstate_grains_due_at' AND sql LIKE '%WHERE due_at IS NOT NULL%'";
        Assert.Equal(1L, (long?)await command.ExecuteScalarAsync(Ct));
    }

    [Fact]
    public async Task A_database_at_schema_version_2_gains_the_items_table_loses_the_old_membership_and_keeps_its_rows()
    {
        // The schema as the previous build left it (migrations 1 and 2), with one limit row in it.
        var file = Path.Combine(_directory, "v2", "grains.db");
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        await using (var connection = new SqliteConnection($"Data Source={file};Pooling=False"))
        {
            await connection.OpenAsync(Ct);
            await using var command = connection.CreateCommand();
            command.CommandText = """
                CREATE TABLE callstate_schema_version (version INTEGER NOT NULL PRIMARY KEY);
                CREATE TABLE callstate_grains (
                    grain_type TEXT NOT NULL, grain_key TEXT NOT NULL, version INTEGER NOT NULL, data BLOB NOT NULL,
                    due_at INTEGER NULL, PRIMARY KEY (grain_type, grain_key));
                CREATE INDEX callstate_grains_due_at ON callstate_grains (due_at) WHERE due_at IS NOT NULL;
                CREATE TABLE callstate_silos (
                    silo_id TEXT NOT NULL PRIMARY KEY, endpoint TEXT NOT NULL, epoch INTEGER NOT NULL, status INTEGER NOT NULL,
                    heartbeat_at INTEGER NOT NULL, started_at INTEGER NOT NULL);
                INSERT INTO callstate_schema_version (version) VALUES (1), (2);
                INSERT INTO callstate_grains VALUES ('limit', 'trunk/old', 4, X'6F6C64', NULL);
                """;
            await command.ExecuteNonQueryAsync(Ct);
        }

        var storage = new SqliteStateStore(
            new StorageOptions { Provider = StorageProvider.Sqlite, ConnectionString = $"Data Source={file}" }, NullLogger<SqliteStateStore>.Instance);
        await using (storage)
        {
            await AssertVersion2RowKeptAndTakesItemsAsync(storage);
        }

        await using (var connection = new SqliteConnection($"Data Source={file};Pooling=False"))
        {
            await connection.OpenAsync(Ct);
            await using var command = connection.CreateCommand();
            command.CommandText = "SELECT group_concat(version) FROM (SELECT version FROM callstate_schema_version ORDER BY version)";
            Assert.Equal("1,2,3,4,5", (string?)await command.ExecuteScalarAsync(Ct));
            command.CommandText = "SELECT count(*) FROM sqlite_master WHERE name = 'callstate_silos'";
            Assert.Equal(0L, (long)(await command.ExecuteScalarAsync(Ct))!);
        }
    }

    [Fact]
    public async Task A_database_from_a_newer_build_is_refused()
    {
        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(_directory, "nested", "grains.db")};Pooling=False"))
        {
            await connection.OpenAsync(Ct);
            await using var command = connection.CreateCommand();
            command.CommandText = "INSERT INTO callstate_schema_version (version) VALUES (99)";
            await command.ExecuteNonQueryAsync(Ct);
        }

        var error = await Assert.ThrowsAsync<InvalidOperationException>(OpenAsync);
        Assert.Contains("99", error.Message, StringComparison.Ordinal);
    }
}
