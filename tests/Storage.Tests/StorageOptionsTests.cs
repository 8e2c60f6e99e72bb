using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace CallState.Storage.Tests.Storage;

/// <summary>Configuration mistakes are reported naming the key to fix, before anything starts.</summary>
public sealed class StorageOptionsTests
{
    [Fact]
    public void Defaults_are_valid_and_use_a_durable_SQLite_file()
    {
        var options = new StorageOptions();

        Assert.Empty(StorageOptionsValidator.Validate(options));
        Assert.Equal(StorageProvider.Sqlite, options.Provider);
        Assert.Equal(SqliteSynchronous.Full, options.SqliteSynchronous);
        Assert.Equal(256, options.MaxBatchSize);
        Assert.Equal("callstate", options.Schema);
        Assert.Equal(StorageOptions.DefaultSqliteConnectionString, options.EffectiveConnectionString);
    }

    [Fact]
    public void PostgreSql_without_a_connection_string_names_the_missing_key()
    {
        var errors = StorageOptionsValidator.Validate(new StorageOptions { Provider = StorageProvider.PostgreSql });

        Assert.Equal(["CallState:Storage:ConnectionString is required when Provider is PostgreSql"], errors);
    }

    [Theory]
    [InlineData("Callstate")]
    [InlineData("call-state")]
    [InlineData("1schema")]
    [InlineData("x; DROP TABLE y")]
    [InlineData("")]
    public void A_schema_that_is_not_a_plain_lower_case_identifier_is_refused(string schema)
    {
        var errors = StorageOptionsValidator.Validate(new StorageOptions
        {
            Provider = StorageProvider.PostgreSql,
            ConnectionString = "Host=127.0.0.1;Username=callstate",
            Schema = schema,
        });

        Assert.Single(errors, e => e.StartsWith("CallState:Storage:Schema ", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("Data Source=:memory:")]
    [InlineData("Data Source=x.db;Mode=Memory")]
    [InlineData("Data Source=x.db;Mode=ReadOnly")]
    [InlineData("Bogus Key=1")]
    public void A_SQLite_connection_string_that_cannot_hold_durable_grain_state_is_refused(string connectionString)
    {
        var errors = StorageOptionsValidator.Validate(new StorageOptions { ConnectionString = connectionString });

        Assert.Single(errors, e => e.StartsWith("CallState:Storage:ConnectionString ", StringComparison.Ordinal));
    }

    [Fact]
    public void Batch_and_queue_sizes_out_of_range_name_their_keys()
    {
        var errors = StorageOptionsValidator.Validate(new StorageOptions { MaxBatchSize = 0, QueueCapacity = -1 });

        Assert.Contains(errors, e => e.StartsWith("CallState:Storage:MaxBatchSize ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Storage:QueueCapacity ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_factory_creates_the_configured_provider_and_refuses_invalid_options()
    {
        await using var sqlite = StateStoreFactory.Create(new StorageOptions { ConnectionString = "Data Source=unused.db" }, NullLoggerFactory.Instance);
        await using var postgres = StateStoreFactory.Create(
            new StorageOptions { Provider = StorageProvider.PostgreSql, ConnectionString = "Host=127.0.0.1;Username=callstate" },
            NullLoggerFactory.Instance);

        Assert.IsType<SqliteStateStore>(sqlite);
        Assert.IsType<PostgresStateStore>(postgres);
        var error = Assert.Throws<ArgumentException>(() =>
            StateStoreFactory.Create(new StorageOptions { Provider = StorageProvider.PostgreSql }, NullLoggerFactory.Instance));
        Assert.Contains("CallState:Storage:ConnectionString", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AddGrainStorage_binds_the_CallState_Storage_section_and_validates_it()
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["CallState:Storage:Provider"] = "PostgreSql",
                ["CallState:Storage:Schema"] = "cluster_a",
                ["CallState:Storage:MaxBatchSize"] = "64",
            })
            .Build();
        var services = new ServiceCollection()
            .AddSingleton<IConfiguration>(configuration)
            .AddLogging()
            .AddStateStore();
        await using var provider = services.BuildServiceProvider();

        var failure = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<StorageOptions>>().Value);
        Assert.Contains("CallState:Storage:ConnectionString is required when Provider is PostgreSql", failure.Failures);

        configuration["CallState:Storage:ConnectionString"] = "Host=127.0.0.1;Username=callstate";
        await using var fixedProvider = services.BuildServiceProvider();
        var options = fixedProvider.GetRequiredService<IOptions<StorageOptions>>().Value;
        Assert.Equal(StorageProvider.PostgreSql, options.Provider);
        Assert.Equal("cluster_a", options.Schema);
        Assert.Equal(64, options.MaxBatchSize);
        Assert.IsType<PostgresStateStore>(fixedProvider.GetRequiredService<IStateStore>());
    }
}
