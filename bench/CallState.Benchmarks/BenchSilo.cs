using System.Globalization;
using CallState.Grains;
using CallState.Silo;
using CallState.Storage;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace CallState.Benchmarks;

/// <summary>Which store a benchmark silo keeps grain state in.</summary>
internal enum BenchStorage
{
    /// <summary>SQLite in a temp directory, the store's defaults (WAL, <c>synchronous=FULL</c>).</summary>
    Sqlite,

    /// <summary>PostgreSQL from <see cref="BenchSilo.PostgresEnvironmentVariable"/> (or <c>--postgres</c>), a fresh schema per silo.</summary>
    Postgres,

    /// <summary><see cref="InMemoryGrainStorage"/>: what Orleans and the grains cost when storage costs nothing.</summary>
    Memory,
}

/// <summary>
/// One Orleans silo in this process, registered exactly as the silo and the standalone edge register theirs
/// (<see cref="SiloServiceCollectionExtensions.AddCallStateSilo"/>: localhost clustering, free silo port, no gateway), with
/// the state store wrapped in a <see cref="CountingStateStore"/> so a benchmark can count the rows it writes.
/// </summary>
internal sealed class BenchSilo : IAsyncDisposable
{
    /// <summary>The Npgsql connection string of the PostgreSQL runs when <c>--postgres</c> is not given.</summary>
    public const string PostgresEnvironmentVariable = "CALLSTATE_BENCH_POSTGRES";

    private readonly IHost _host;
    private readonly string _directory;

    private BenchSilo(IHost host, string directory)
    {
        _host = host;
        _directory = directory;
        Grains = host.Services.GetRequiredService<IGrainFactory>();
        Store = host.Services.GetRequiredService<CountingStateStore>();
    }

    public IGrainFactory Grains { get; }

    /// <summary>The store every grain of this silo writes through.</summary>
    public CountingStateStore Store { get; }

    /// <summary>The group commit of the real store (null for <see cref="BenchStorage.Memory"/>).</summary>
    public GroupCommitter? GroupCommit => Store.GroupCommit;

    /// <summary>Starts a silo; <paramref name="settings"/> are more configuration keys (<c>CallState:Grains:MaxTurnBatch</c>).</summary>
    public static async Task<BenchSilo> StartAsync(BenchStorage storage, string? postgres, IReadOnlyDictionary<string, string?>? settings = null)
    {
        var directory = Path.Combine(Path.GetTempPath(), "callstate-bench-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        var values = new Dictionary<string, string?>
        {
            // One silo alone, as in standalone mode: no membership table, a free silo port, no gateway.
            ["CallState:Orleans:Clustering"] = "Localhost",
            ["CallState:Orleans:SiloPort"] = "0",
            ["CallState:Orleans:GatewayPort"] = "0",
            ["CallState:Orleans:ClusterId"] = "bench-" + Guid.NewGuid().ToString("N")[..8],
            // High enough never to refuse: the benchmarks measure admissions, not refusals.
            ["CallState:Limits:DefaultUser:Total"] = "1000000",
            ["CallState:Limits:DefaultUser:Inbound"] = "1000000",
            ["CallState:Limits:DefaultUser:Outbound"] = "1000000",
            ["CallState:Storage:ConnectionString"] = $"Data Source={Path.Combine(directory, "bench.db")}",
        };
        if (storage == BenchStorage.Postgres)
        {
            values["CallState:Storage:Provider"] = nameof(StorageProvider.PostgreSql);
            values["CallState:Storage:ConnectionString"] = postgres
                ?? Environment.GetEnvironmentVariable(PostgresEnvironmentVariable)
                ?? throw new ArgumentException($"PostgreSQL needs --postgres or {PostgresEnvironmentVariable} (an Npgsql connection string)");
            values["CallState:Storage:Schema"] = "bench_" + Guid.NewGuid().ToString("N")[..12];
        }

        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            values[key] = value;
        }

        // No default sources: appsettings.json files copied beside the binary from the silo project must not apply.
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(values);
        // Warnings and errors to stderr, so what the benchmark prints on stdout stays its results.
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace).SetMinimumLevel(LogLevel.Warning);
        // The silo watchdog warns once per run about the machine's uptime (/work/shared/ORLEANS.md); nothing else from Orleans matters here.
        builder.Logging.AddFilter("Orleans.Runtime.Watchdog", LogLevel.Error);
        // As the silo does: a misspelt --set key stops the run instead of being ignored.
        SiloHost.ThrowOnUnknownKeys(builder.Configuration, SiloHost.Sections);
        builder.Services.AddCallStateSilo(builder.Configuration);

        // The store the silo registered, wrapped so that every write is counted; the memory store instead of it on request.
        builder.Services.AddSingleton(sp => new CountingStateStore(storage == BenchStorage.Memory
            ? new InMemoryGrainStorage()
            : StateStoreFactory.Create(sp.GetRequiredService<IOptions<StorageOptions>>().Value, sp.GetRequiredService<ILoggerFactory>())));
        builder.Services.Replace(ServiceDescriptor.Singleton<IStateStore>(sp => sp.GetRequiredService<CountingStateStore>()));

        var host = builder.Build();
        await host.StartAsync().ConfigureAwait(false);
        return new BenchSilo(host, directory);
    }

    /// <summary>The machine: cores and load average (others' work on the shared cores skews every figure).</summary>
    public static string Machine() =>
        string.Create(CultureInfo.InvariantCulture, $"cores={Environment.ProcessorCount} loadavg={LoadAverage(3)} date={DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC");

    /// <summary>The first <paramref name="count"/> load averages (1, 5, 15 minutes) of the machine, or n/a off Linux.</summary>
    public static string LoadAverage(int count) =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(count)) : "n/a";

    public static BenchStorage ParseStorage(string text) => text switch
    {
        "sqlite" => BenchStorage.Sqlite,
        "postgres" => BenchStorage.Postgres,
        "memory" => BenchStorage.Memory,
        _ => throw new ArgumentException($"--storage must be sqlite, postgres or memory (was '{text}')"),
    };

    public static string Name(BenchStorage storage) => storage switch
    {
        BenchStorage.Sqlite => "sqlite",
        BenchStorage.Postgres => "postgres",
        _ => "memory",
    };

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync().ConfigureAwait(false);
        _host.Dispose();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }
}

/// <summary>The command-line arguments of a program mode: <c>--name value</c> pairs.</summary>
internal sealed class BenchArgs(string[] args)
{
    public string Text(string name, string fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }

    public string? Text(string name)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    public int Int(string name, int fallback) => int.Parse(Text(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);

    public double Double(string name, double fallback) => double.Parse(Text(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);

    public bool Flag(string name) => Array.IndexOf(args, name) >= 0;

    /// <summary>Repeated <c>--set key=value</c>: more configuration keys for the silo.</summary>
    public Dictionary<string, string?> Settings()
    {
        var settings = new Dictionary<string, string?>(StringComparer.Ordinal);
        for (var i = 0; i + 1 < args.Length; i++)
        {
            if (args[i] == "--set" && args[i + 1].IndexOf('=', StringComparison.Ordinal) is var eq and > 0)
            {
                settings[args[i + 1][..eq]] = args[i + 1][(eq + 1)..];
            }
        }

        return settings;
    }
}
