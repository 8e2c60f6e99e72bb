using CallState.Storage.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace CallState.Storage.Tests.Storage;

/// <summary>One schema for the whole test class, dropped when the class is done.</summary>
public sealed class PostgresSchemaFixture : IAsyncLifetime
{
    public string Schema { get; } = PostgresTestDatabase.NewSchemaName("storage_test");

    public string ConnectionString { get; private set; } = "";

    public Task InitializeAsync()
    {
        ConnectionString = PostgresTestDatabase.ConnectionString;
        return Task.CompletedTask;
    }

    public Task DisposeAsync() =>
        string.IsNullOrEmpty(ConnectionString) ? Task.CompletedTask : PostgresTestDatabase.DropSchemaAsync(Schema);
}

/// <summary>The storage contract against the PostgreSQL server that scripts/test.sh starts.</summary>
public sealed class PostgresGrainStorageTests(PostgresSchemaFixture fixture) : GrainStorageContractTests, IClassFixture<PostgresSchemaFixture>
{
    private StorageOptions Options => new()
    {
        Provider = StorageProvider.PostgreSql,
        ConnectionString = fixture.ConnectionString,
        Schema = fixture.Schema,
    };

    protected override IStateStore CreateStorage() => new PostgresStateStore(Options, NullLogger<PostgresStateStore>.Instance);

    protected override IAuditLog CreateAuditLog() => AuditLogFactory.Create(Options);

    // Tests of one class run one after another, so emptying the table gives each a clean start.
    protected override Task ResetAsync() => PostgresTestDatabase.ExecuteAsync($"TRUNCATE {fixture.Schema}.callstate_grains, {fixture.Schema}.callstate_grain_items, {fixture.Schema}.callstate_audit");

    /// <summary>Another transaction's row lock on <paramref name="blocker"/>: the batch updating it waits until it ends.</summary>
    protected override async Task<IAsyncDisposable> BlockWritesAsync(StateId blocker)
    {
        var connection = new NpgsqlConnection(fixture.ConnectionString);
        await connection.OpenAsync(Ct);
        var transaction = await connection.BeginTransactionAsync(Ct);
        await using var command = new NpgsqlCommand(
            $"SELECT 1 FROM {fixture.Schema}.callstate_grains WHERE grain_type = $1 AND grain_key = $2 FOR UPDATE", connection, transaction);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = blocker.Type });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = blocker.Key });
        Assert.Equal(1, (int?)await command.ExecuteScalarAsync(Ct));
        return connection;
    }

    [Fact]
    public async Task The_schema_holds_the_table_the_partial_index_and_the_schema_version()
    {
        await using var connection = new NpgsqlConnection(fixture.ConnectionString);
        await connection.OpenAsync(Ct);
        await using var command = new NpgsqlCommand(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'callstate_grains_due_at'", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = fixture.Schema });
        var indexDefinition = (string?)await command.ExecuteScalarAsync(Ct);
        Assert.NotNull(indexDefinition);
        Assert.Contains("WHERE (due_at IS NOT NULL)", indexDefinition, StringComparison.Ordinal);

        await using var version = new NpgsqlCommand($"SELECT MAX(version) FROM {fixture.Schema}.callstate_schema_version", connection);
        Assert.Equal(5, (int?)await version.ExecuteScalarAsync(Ct));
    }

    [Fact]
    public async Task A_schema_at_version_2_gains_the_items_table_loses_the_old_membership_and_keeps_its_rows()
    {
        // The schema as the previous build left it (migrations 1 and 2), with one limit row in it.
        var schema = PostgresTestDatabase.NewSchemaName("storage_v2");
        try
        {
            await PostgresTestDatabase.ExecuteAsync($"""
                CREATE SCHEMA {schema};
                CREATE TABLE {schema}.callstate_schema_version (version integer NOT NULL PRIMARY KEY);
                CREATE TABLE {schema}.callstate_grains (
                    grain_type text NOT NULL, grain_key text NOT NULL, version bigint NOT NULL, data bytea NOT NULL,
                    due_at bigint NULL, PRIMARY KEY (grain_type, grain_key));
                CREATE INDEX callstate_grains_due_at ON {schema}.callstate_grains (due_at) WHERE due_at IS NOT NULL;
                CREATE TABLE {schema}.callstate_silos (
                    silo_id text NOT NULL PRIMARY KEY, endpoint text NOT NULL, epoch bigint NOT NULL, status smallint NOT NULL,
                    heartbeat_at bigint NOT NULL, started_at bigint NOT NULL);
                INSERT INTO {schema}.callstate_schema_version (version) VALUES (1), (2);
                INSERT INTO {schema}.callstate_grains VALUES ('limit', 'trunk/old', 4, '\x6f6c64', NULL);
                """);

            var storage = new PostgresStateStore(new StorageOptions { Provider = StorageProvider.PostgreSql, ConnectionString = fixture.ConnectionString, Schema = schema });
            await using (storage)
            {
                await AssertVersion2RowKeptAndTakesItemsAsync(storage);
            }

            await using var connection = new NpgsqlConnection(fixture.ConnectionString);
            await connection.OpenAsync(Ct);
            await using var versions = new NpgsqlCommand($"SELECT string_agg(version::text, ',' ORDER BY version) FROM {schema}.callstate_schema_version", connection);
            Assert.Equal("1,2,3,4,5", (string?)await versions.ExecuteScalarAsync(Ct));
            await using var silos = new NpgsqlCommand($"SELECT to_regclass('{schema}.callstate_silos') IS NULL", connection);
            Assert.True((bool)(await silos.ExecuteScalarAsync(Ct))!);
        }
        finally
        {
            await PostgresTestDatabase.DropSchemaAsync(schema);
        }
    }

    [Fact]
    public async Task Instances_initializing_together_migrate_once()
    {
        var schema = PostgresTestDatabase.NewSchemaName("storage_init");
        var options = new StorageOptions { Provider = StorageProvider.PostgreSql, ConnectionString = fixture.ConnectionString, Schema = schema };
        var instances = Enumerable.Range(0, 4).Select(_ => new PostgresStateStore(options)).ToArray();
        try
        {
            await Task.WhenAll(instances.Select(i => Task.Run(() => i.InitializeAsync(Ct))));
            Assert.True(await instances[0].WriteAsync(new StateWrite(new StateId("limit", "user/a"), 0, [1], null), Ct));
            var stored = await instances[3].ReadAsync(new StateId("limit", "user/a"), Ct);
            Assert.NotNull(stored);
            Assert.Equal(new byte[] { 1 }, stored.Data);
        }
        finally
        {
            foreach (var instance in instances)
            {
                await instance.DisposeAsync();
            }

            await PostgresTestDatabase.DropSchemaAsync(schema);
        }
    }
}
