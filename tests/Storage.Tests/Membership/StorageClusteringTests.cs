using CallState.Storage.Membership;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Configuration;
using Orleans.TestingHost;

namespace CallState.Storage.Tests.Membership;

/// <summary>Real silos (Orleans' in-process test cluster) finding each other through <see cref="StorageMembershipTable"/>.</summary>
public sealed class StorageClusteringTests : IAsyncLifetime
{
    /// <summary>Bounds each wait for the cluster to converge; a healthy run takes a few seconds.</summary>
    private static readonly TimeSpan ConvergenceLimit = TimeSpan.FromSeconds(60);

    private readonly string _directory = Path.Combine(Path.GetTempPath(), "callstate-clustering-" + Guid.NewGuid().ToString("N"));

    private string ConnectionString => $"Data Source={Path.Combine(_directory, "callstate.db")}";

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        SqliteConnection.ClearAllPools();
        if (Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }

        return Task.CompletedTask;
    }

    [Fact]
    public async Task Two_silos_clustered_on_one_SQLite_file_become_Active_in_the_table_and_Dead_when_stopped()
    {
        var builder = new TestClusterBuilder(2);

        // Otherwise the test cluster configures a membership of its own, registered after ours, and that one wins.
        builder.Options.UseTestClusterMembership = false;

        // The test cluster's client finds gateways through that membership of its own; nothing here needs a client.
        builder.Options.InitializeClientOnDeploy = false;
        builder.Options.ConfigureFileLogging = false;
        builder.Options.ConnectionTransport = ConnectionTransportType.InMemory;

        // Configuration as the silo host reads it (AddStateStore binds CallState:Storage).
        builder.Properties[StorageOptions.SectionName + ":Provider"] = nameof(StorageProvider.Sqlite);
        builder.Properties[StorageOptions.SectionName + ":ConnectionString"] = ConnectionString;
        builder.AddSiloBuilderConfigurator<StorageClusteringSilo>();

        var cluster = builder.Build();
        await using (cluster)
        {
            await cluster.DeployAsync();
            var silos = cluster.Silos.Select(s => s.SiloAddress).ToHashSet();
            Assert.Equal(2, silos.Count);
            foreach (var silo in cluster.Silos)
            {
                Assert.IsType<StorageMembershipTable>(ServicesOf(silo).GetRequiredService<IMembershipTable>());
            }

            var table = new StorageMembershipTable(
                Microsoft.Extensions.Options.Options.Create(new StorageOptions { Provider = StorageProvider.Sqlite, ConnectionString = ConnectionString }),
                Microsoft.Extensions.Options.Options.Create(new ClusterOptions { ClusterId = cluster.Options.ClusterId }),
                NullLogger<StorageMembershipTable>.Instance);
            await using (table)
            {
                await table.InitializeMembershipTableAsync(tryInitTableVersion: false, CancellationToken.None);
                var active = await WaitForAsync(
                    async () => (await table.ReadAllAsync(CancellationToken.None)).Members
                        .Where(m => m.Item1.Status == SiloStatus.Active).Select(m => m.Item1.SiloAddress).ToHashSet(),
                    found => found.SetEquals(silos));
                Assert.Equal(silos, active);

                // Each silo learned of the other from the table.
                foreach (var silo in cluster.Silos)
                {
                    var membership = ServicesOf(silo).GetRequiredService<IClusterMembershipService>();
                    var seen = await WaitForAsync(
                        () => Task.FromResult(membership.CurrentSnapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress).ToHashSet()),
                        found => found.SetEquals(silos));
                    Assert.Equal(silos, seen);
                }

                await cluster.StopAllSilosAsync();
                var stopped = await table.ReadAllAsync(CancellationToken.None);
                Assert.Equal(silos, stopped.Members.Select(m => m.Item1.SiloAddress).ToHashSet());
                Assert.All(stopped.Members, m => Assert.Equal(SiloStatus.Dead, m.Item1.Status));
            }
        }
    }

    private static IServiceProvider ServicesOf(SiloHandle silo) => Assert.IsType<InProcessSiloHandle>(silo).ServiceProvider;

    /// <summary>Reads until <paramref name="done"/> holds or <see cref="ConvergenceLimit"/> passes; returns the last read.</summary>
    private static async Task<T> WaitForAsync<T>(Func<Task<T>> read, Func<T, bool> done)
    {
        var deadline = DateTime.UtcNow + ConvergenceLimit;
        var value = await read();
        while (!done(value) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
            value = await read();
        }

        return value;
    }

    /// <summary>What a silo of the test cluster adds to Orleans' defaults: storage options and our clustering.</summary>
    public sealed class StorageClusteringSilo : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.Services.AddStateStore();
            siloBuilder.UseStorageClustering();
        }
    }
}
