using Npgsql;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>
/// Storage settings for a silo under test: a fresh SQLite file, or a fresh schema on the PostgreSQL that
/// scripts/test.sh starts (CALLSTATE_TEST_POSTGRES). A missing server fails the test; it never skips.
/// </summary>
public sealed class TestDatabase : IAsyncDisposable
{
    private readonly string? _directory;
    private readonly string? _schema;

    private TestDatabase(IReadOnlyList<string> settings, string? directory, string? schema)
    {
        Settings = settings;
        _directory = directory;
        _schema = schema;
    }

    /// <summary>Command-line settings that point a silo at this database.</summary>
    public IReadOnlyList<string> Settings { get; }

    public static TestDatabase Create(string kind)
    {
        if (kind == "sqlite")
        {
            var directory = Path.Combine(Path.GetTempPath(), "callstate-it-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(directory);
            return new TestDatabase(
                ["--CallState:Storage:Provider=Sqlite", $"--CallState:Storage:ConnectionString=Data Source={Path.Combine(directory, "grains.db")}"],
                directory,
                null);
        }

        var schema = "it_" + Guid.NewGuid().ToString("N")[..16];
        return new TestDatabase(
            ["--CallState:Storage:Provider=PostgreSql", $"--CallState:Storage:ConnectionString={PostgresConnectionString}", $"--CallState:Storage:Schema={schema}"],
            null,
            schema);
    }

    public static string PostgresConnectionString =>
        Environment.GetEnvironmentVariable("CALLSTATE_TEST_POSTGRES") is { Length: > 0 } cs
            ? cs
            : throw new InvalidOperationException("CALLSTATE_TEST_POSTGRES is not set: run the tests through scripts/test.sh, which starts PostgreSQL and sets it.");

    public async ValueTask DisposeAsync()
    {
        if (_schema is not null)
        {
            await using var connection = new NpgsqlConnection(PostgresConnectionString);
            await connection.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE", connection);
            await drop.ExecuteNonQueryAsync();
        }

        if (_directory is not null)
        {
            try
            {
                Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
                // Left for the OS to clean with the rest of the temp directory.
            }
        }
    }
}
