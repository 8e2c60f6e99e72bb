using CallState.Runtime.Storage;
using CallState.Runtime.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace CallState.Runtime.Tests.Storage;

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

    protected override IGrainStorage CreateStorage() => new PostgresGrainStorage(Options, NullLogger<PostgresGrainStorage>.Instance);

    // Tests of one class run one after another, so emptying the table gives each a clean start.
    protected override Task ResetAsync() => PostgresTestDatabase.ExecuteAsync($"TRUNCATE {fixture.Schema}.callstate_grains");

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
        Assert.Equal(2, (int?)await version.ExecuteScalarAsync(Ct));
    }

    [Fact]
    public async Task Instances_initializing_together_migrate_once()
    {
        var schema = PostgresTestDatabase.NewSchemaName("storage_init");
        var options = new StorageOptions { Provider = StorageProvider.PostgreSql, ConnectionString = fixture.ConnectionString, Schema = schema };
        var instances = Enumerable.Range(0, 4).Select(_ => new PostgresGrainStorage(options)).ToArray();
        try
        {
            await Task.WhenAll(instances.Select(i => Task.Run(() => i.InitializeAsync(Ct))));
            Assert.True(await instances[0].WriteAsync(new GrainWrite(new GrainId("limit", "user/a"), 0, [1], null), Ct));
            var stored = await instances[3].ReadAsync(new GrainId("limit", "user/a"), Ct);
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
