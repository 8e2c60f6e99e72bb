using CallState.Storage.Membership;
using CallState.Storage.Tests.Infrastructure;
using Npgsql;
using Orleans.Configuration;

namespace CallState.Storage.Tests.Membership;

/// <summary>
/// The membership contract against the PostgreSQL server of CALLSTATE_TEST_POSTGRES, in a schema of its own per test.
/// Without the server every test here fails (the connection string getter throws); none is skipped.
/// </summary>
public sealed class PostgresMembershipTableTests : MembershipTableContractTests
{
    private readonly string _connectionString = PostgresTestDatabase.ConnectionString;
    private readonly string _schema = PostgresTestDatabase.NewSchemaName("membership");

    protected override StorageOptions Options => new()
    {
        Provider = StorageProvider.PostgreSql,
        ConnectionString = _connectionString,
        Schema = _schema,
    };

    protected override Task CleanupAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    [Fact]
    public async Task The_tables_are_in_the_configured_schema_only()
    {
        await using var connection = new NpgsqlConnection(_connectionString);
        await connection.OpenAsync(Ct);
        await using var command = new NpgsqlCommand(
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = $1 AND table_name LIKE 'callstate_membership_%'",
            connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _schema });
        Assert.Equal("callstate_membership_silos,callstate_membership_versions", (string?)await command.ExecuteScalarAsync(Ct));

        await using var inPublic = new NpgsqlCommand(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'callstate_membership_%'", connection);
        Assert.Equal(0L, (long?)await inPublic.ExecuteScalarAsync(Ct));
    }

    [Fact]
    public async Task Silos_initializing_together_on_a_new_schema_all_succeed()
    {
        var clusterId = NewClusterId();
        var schema = PostgresTestDatabase.NewSchemaName("membership_init");
        try
        {
            // This test's own schema exists already (the base class initialized a table in it); these race on one that does not.
            var racing = Enumerable.Range(0, 4).Select(_ => new StorageMembershipTable(
                Microsoft.Extensions.Options.Options.Create(new StorageOptions { Provider = StorageProvider.PostgreSql, ConnectionString = _connectionString, Schema = schema }),
                Microsoft.Extensions.Options.Options.Create(new ClusterOptions { ClusterId = clusterId }))).ToArray();
            try
            {
                await Task.WhenAll(racing.Select(t => Task.Run(() => t.InitializeMembershipTableAsync(true, Ct))));
                var versions = await Task.WhenAll(racing.Select(t => t.ReadAllAsync(Ct)));
                Assert.Single(versions.Select(v => v.Version).Distinct());
            }
            finally
            {
                foreach (var table in racing)
                {
                    await table.DisposeAsync();
                }
            }
        }
        finally
        {
            await PostgresTestDatabase.DropSchemaAsync(schema);
        }
    }
}
