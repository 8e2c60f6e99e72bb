using CallState.Silo;
using CallState.Silo.Hosting;
using CallState.Storage.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;

namespace CallState.Grains.Tests.Infrastructure;

/// <summary>
/// Real Orleans silos in this process (Microsoft.Orleans.TestingHost) with the silo's own grain services over real storage
/// (a SQLite file or a PostgreSQL schema from <see cref="TestStorage"/>). Settings are configuration keys, as an operator
/// writes them (<c>CallState:Limits:Users:alice:Total</c>).
/// </summary>
public sealed class GrainTestCluster : IAsyncDisposable
{
    private readonly InProcessTestCluster _cluster;

    private GrainTestCluster(InProcessTestCluster cluster) => _cluster = cluster;

    public IClusterClient Client => _cluster.Client;

    public InProcessTestCluster Cluster => _cluster;

    /// <summary>
    /// Starts <paramref name="silos"/> silos on <paramref name="storage"/> with <paramref name="settings"/>; <paramref name="clusterId"/> null is a
    /// fresh one. <paramref name="services"/>, when given, runs on each silo's services after the silo's own registrations
    /// (to put something between the grains and the store, for example).
    /// </summary>
    public static async Task<GrainTestCluster> StartAsync(TestStorage storage, IReadOnlyDictionary<string, string?>? settings = null, short silos = 1, string? clusterId = null, Action<IServiceCollection>? services = null)
    {
        var values = new Dictionary<string, string?>
        {
            ["CallState:Storage:Provider"] = storage.Options.Provider.ToString(),
            ["CallState:Storage:ConnectionString"] = storage.Options.ConnectionString,
            ["CallState:Storage:Schema"] = storage.Options.Schema,
            // The tests drive the due scan themselves (ScanAsync) unless they ask for a short interval.
            ["CallState:Grains:DueScanInterval"] = "01:00:00",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            values[key] = value;
        }

        var configuration = new ConfigurationBuilder().AddInMemoryCollection(values).Build();
        var builder = new InProcessTestClusterBuilder(silos);
        if (clusterId is not null)
        {
            builder.Options.ClusterId = clusterId;
        }

        builder.ConfigureSiloHost((_, host) =>
        {
            host.Services.AddCallStateGrainServices(configuration);
            services?.Invoke(host.Services);
        });
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return new GrainTestCluster(cluster);
    }

    public ILimitGrain Limit(string key) => Client.GetGrain<ILimitGrain>(key);

    public CallHandle Call(string callKey) => Client.GetCall(callKey);

    /// <summary>A service of the first silo (the state store, the due scanner, the metrics).</summary>
    public T Service<T>(int silo = 0)
        where T : notnull => _cluster.Silos[silo].ServiceProvider.GetRequiredService<T>();

    internal DueScanner Scanner(int silo = 0) => Service<DueScanner>(silo);

    /// <summary>Runs the due scan on every silo now (only the scanning silo does the work).</summary>
    public async Task<int> ScanAsync()
    {
        var woken = 0;
        for (var i = 0; i < _cluster.Silos.Count; i++)
        {
            woken += await Scanner(i).ScanAsync(CancellationToken.None);
        }

        return woken;
    }

    public GrainAccess Access(int silo = 0) => Service<GrainAccess>(silo);

    public async ValueTask DisposeAsync()
    {
        await _cluster.StopAllSilosAsync();
        await _cluster.DisposeAsync();
    }
}
