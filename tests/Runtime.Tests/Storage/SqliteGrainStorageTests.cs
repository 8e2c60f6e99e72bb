using CallState.Runtime.Storage;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Runtime.Tests.Storage;

/// <summary>The storage contract against a SQLite file of its own per test.</summary>
public sealed class SqliteGrainStorageTests : GrainStorageContractTests
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "callstate-sqlite-" + Guid.NewGuid().ToString("N"));

    private StorageOptions Options => new()
    {
        Provider = StorageProvider.Sqlite,
        ConnectionString = $"Data Source={Path.Combine(_directory, "nested", "grains.db")}",
    };

    protected override IGrainStorage CreateStorage() => new SqliteGrainStorage(Options, NullLogger<SqliteGrainStorage>.Instance);

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
    public async Task The_file_is_in_WAL_mode_with_a_schema_version_recorded()
    {
        await using var connection = new SqliteConnection($"Data Source={Path.Combine(_directory, "nested", "grains.db")};Pooling=False");
        await connection.OpenAsync(Ct);
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", (string?)await command.ExecuteScalarAsync(Ct));
        command.CommandText = "SELECT MAX(version) FROM callstate_schema_version";
        Assert.Equal(2L, (long?)await command.ExecuteScalarAsync(Ct));
        command.CommandText = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'callstate_grains_due_at' AND sql LIKE '%WHERE due_at IS NOT NULL%'";
        Assert.Equal(1L, (long?)await command.ExecuteScalarAsync(Ct));
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
