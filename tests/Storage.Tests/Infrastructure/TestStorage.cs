using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace CallState.Storage.Tests.Infrastructure;

/// <summary>
/// Real storage for runtime tests: a fresh SQLite file, or a fresh schema on the PostgreSQL server that
/// scripts/test.sh starts (CALLSTATE_TEST_POSTGRES). A missing server fails the test; it never skips.
/// </summary>
public sealed class TestStorage : IAsyncDisposable
{
    public const string PostgresVariable = "CALLSTATE_TEST_POSTGRES";

    private readonly string? _directory;

    private TestStorage(StorageOptions options, string? directory)
    {
        Options = options;
        _directory = directory;
    }

    public StorageOptions Options { get; }

    public static TestStorage Create(string kind) => kind switch
    {
        "sqlite" => Sqlite(),
        "postgres" => Postgres(),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    public static TestStorage Sqlite()
    {
        var directory = Path.Combine(Path.GetTempPath(), "callstate-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        return new TestStorage(
            new StorageOptions { Provider = StorageProvider.Sqlite, ConnectionString = $"Data Source={Path.Combine(directory, "grains.db")}" },
            directory);
    }

    public static TestStorage Postgres() => new(
        new StorageOptions { Provider = StorageProvider.PostgreSql, ConnectionString = PostgresConnectionString, Schema = "t_" + Guid.NewGuid().ToString("N")[..16] },
        null);

    public static string PostgresConnectionString =>
        Environment.GetEnvironmentVariable(PostgresVariable) is { Length: > 0 } cs
            ? cs
            : throw new InvalidOperationException($"{PostgresVariable} is not set: run the tests through scripts/test.sh, which starts PostgreSQL and sets it.");

    /// <summary>A new storage instance over the same database (a restarted process sees the same data).</summary>
    public IStateStore Open() => StateStoreFactory.Create(Options, NullLoggerFactory.Instance);

    public async ValueTask DisposeAsync()
    {
        if (Options.Provider == StorageProvider.PostgreSql)
        {
            await using var connection = new NpgsqlConnection(Options.ConnectionString);
            await connection.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{Options.Schema}\" CASCADE", connection);
            await drop.ExecuteNonQueryAsync();
        }

        if (_directory is not null)
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
                // A file still open by a pooled connection; the temp directory is cleaned by the OS.
            }
        }
    }
}
