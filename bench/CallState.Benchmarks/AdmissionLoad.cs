using System.Diagnostics;
using System.Globalization;
using CallState.Grains;
using CallState.Runtime;
using CallState.Storage;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Benchmarks;

/// <summary>
/// Durable admissions through one grain runtime: a fixed number of calls from a fixed number of
/// concurrent callers, each call admitted on a user and a trunk limit and then ended. Prints calls
/// admitted per second, slot reservations per second, and admission latency percentiles.
/// Bounded in count; every call ends, so the run stops by itself.
/// </summary>
internal static class AdmissionLoad
{
    public static async Task<int> RunAsync(string[] args)
    {
        var storage = Arg(args, "--storage", "sqlite");
        var calls = int.Parse(Arg(args, "--calls", "20000"), CultureInfo.InvariantCulture);
        var concurrency = int.Parse(Arg(args, "--concurrency", "64"), CultureInfo.InvariantCulture);
        var users = int.Parse(Arg(args, "--users", "1000"), CultureInfo.InvariantCulture);
        var directory = Path.Combine(Path.GetTempPath(), "callstate-bench-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);

        var options = storage switch
        {
            "memory" => null,
            "sqlite" => new StorageOptions { Provider = StorageProvider.Sqlite, ConnectionString = $"Data Source={Path.Combine(directory, "bench.db")}" },
            "postgres" => new StorageOptions
            {
                Provider = StorageProvider.PostgreSql,
                ConnectionString = Environment.GetEnvironmentVariable("CALLSTATE_BENCH_POSTGRES") ?? throw new InvalidOperationException("set CALLSTATE_BENCH_POSTGRES to an Npgsql connection string"),
                Schema = "bench_" + Guid.NewGuid().ToString("N")[..12],
            },
            _ => throw new ArgumentException("--storage must be memory, sqlite or postgres"),
        };

        await using var runtime = new GrainRuntime(
            options is null ? new InMemoryGrainStorage() : StateStoreFactory.Create(options, NullLoggerFactory.Instance),
            new GrainOptions(),
            new ConfiguredLimits(new LimitsOptions()),
            TimeProvider.System,
            NullLoggerFactory.Instance);
        await runtime.StartAsync(CancellationToken.None).ConfigureAwait(false);

        var latencies = new double[calls];
        var next = -1;
        var failures = 0;
        var total = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            int n;
            while ((n = Interlocked.Increment(ref next)) < calls)
            {
                var callKey = "bench-" + n.ToString(CultureInfo.InvariantCulture);
                LimitRequest[] limits =
                [
                    new("user/u" + (n % users).ToString(CultureInfo.InvariantCulture), Direction.Outbound),
                    new("trunk/t" + (n % 10).ToString(CultureInfo.InvariantCulture), Direction.Outbound),
                ];
                var started = Stopwatch.GetTimestamp();
                var result = await runtime.AdmitAsync(callKey, limits, CancellationToken.None).ConfigureAwait(false);
                latencies[n] = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                if (result.Status != AdmitStatus.Admitted)
                {
                    Interlocked.Increment(ref failures);
                }

                await runtime.EndCallAsync(callKey, CancellationToken.None).ConfigureAwait(false);
            }
        })).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        total.Stop();

        Array.Sort(latencies);
        var seconds = total.Elapsed.TotalSeconds;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"storage={storage} calls={calls} concurrency={concurrency} failures={failures}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"calls admitted and ended per second: {calls / seconds:F0}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"slot reservations per second: {2 * calls / seconds:F0}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"admission latency ms: p50={Percentile(latencies, 0.50):F2} p99={Percentile(latencies, 0.99):F2} max={latencies[^1]:F2}"));

        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }

        return failures == 0 ? 0 : 1;
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];

    private static string Arg(string[] args, string name, string fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }
}
