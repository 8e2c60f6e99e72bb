using CallState.Storage.Membership;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Configuration;

namespace CallState.Storage.Tests.Membership;

/// <summary>The membership contract against a SQLite file of its own per test.</summary>
public sealed class SqliteMembershipTableTests : MembershipTableContractTests
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "callstate-membership-" + Guid.NewGuid().ToString("N"));

    private string FilePath => Path.Combine(_directory, "nested", "callstate.db");

    protected override StorageOptions Options => new() { Provider = StorageProvider.Sqlite, ConnectionString = $"Data Source={FilePath}" };

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
    public async Task The_tables_are_in_the_configured_file_in_WAL_mode()
    {
        await using var connection = new SqliteConnection($"Data Source={FilePath};Pooling=False");
        await connection.OpenAsync(Ct);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT group_concat(name) FROM (SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'callstate_membership_%' ORDER BY name)";
        Assert.Equal("callstate_membership_silos,callstate_membership_versions", (string?)await command.ExecuteScalarAsync(Ct));
        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", (string?)await command.ExecuteScalarAsync(Ct));
    }

    [Fact]
    public void Invalid_storage_options_are_refused_naming_the_key_to_fix()
    {
        var error = Assert.Throws<ArgumentException>(() => new StorageMembershipTable(
            Microsoft.Extensions.Options.Options.Create(new StorageOptions { Provider = StorageProvider.PostgreSql }),
            Microsoft.Extensions.Options.Options.Create(new ClusterOptions { ClusterId = "c" }),
            NullLogger<StorageMembershipTable>.Instance));
        Assert.Contains("CallState:Storage:ConnectionString", error.Message, StringComparison.Ordinal);
    }
}
