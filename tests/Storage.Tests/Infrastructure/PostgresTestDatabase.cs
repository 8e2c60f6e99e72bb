using Npgsql;

namespace CallState.Storage.Tests.Infrastructure;

/// <summary>The throwaway PostgreSQL server that scripts/test.sh starts for the test run.</summary>
public static class PostgresTestDatabase
{
    public const string EnvironmentVariable = "CALLSTATE_TEST_POSTGRES";

    /// <summary>
    /// The server's connection string. Throws (failing the test, never skipping it) when the variable is
    /// missing: these tests exist to run against a real server.
    /// </summary>
    public static string ConnectionString
    {
        get
        {
            var value = Environment.GetEnvironmentVariable(EnvironmentVariable);
            if (string.IsNullOrWhiteSpace(value))
            {
                throw new InvalidOperationException(
                    $"{EnvironmentVariable} is not set. Run the tests through scripts/test.sh, which starts a throwaway PostgreSQL " +
                    $"and sets it (for example {EnvironmentVariable}=\"Host=127.0.0.1;Port=55432;Username=callstate;Database=postgres\").");
            }

            return value;
        }
    }

    /// <summary>A schema name no other test uses.</summary>
    public static string NewSchemaName(string prefix) => $"{prefix}_{Guid.NewGuid():N}";

    public static async Task ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    public static async Task DropSchemaAsync(string schema)
    {
        await ExecuteAsync($"DROP SCHEMA IF EXISTS {schema} CASCADE");
    }
}
