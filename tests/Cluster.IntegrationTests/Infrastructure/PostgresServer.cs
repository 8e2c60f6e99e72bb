using System.Diagnostics;
using System.Globalization;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>
/// A PostgreSQL server of the test's own (initdb in a temporary directory, a free loopback port), for tests that stop
/// and restart the database under load without disturbing the shared one. Uses the binaries scripts/test.sh found
/// (CALLSTATE_PG_BIN); run as the <c>postgres</c> user when the tests run as root.
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    private readonly string _directory;
    private readonly string _bin;

    private PostgresServer(string directory, string bin, int port)
    {
        _directory = directory;
        _bin = bin;
        Port = port;
    }

    public int Port { get; }

    public string ConnectionString => $"Host=127.0.0.1;Port={Port.ToString(CultureInfo.InvariantCulture)};Username=callstate;Database=postgres;Timeout=3;Command Timeout=5";

    public static async Task<PostgresServer> StartAsync()
    {
        var bin = Environment.GetEnvironmentVariable("CALLSTATE_PG_BIN") is { Length: > 0 } b
            ? b
            : throw new InvalidOperationException("CALLSTATE_PG_BIN is not set: run the tests through scripts/test.sh, which finds PostgreSQL and sets it.");
        var directory = Directory.CreateTempSubdirectory("callstate-pg-it-").FullName;
        await RunAsync("chown", ["postgres", directory], asPostgres: false, allowFailure: true);
        var server = new PostgresServer(directory, bin, SipEdgeProcess.FreeUdpAndTcpPort());
        await server.RunPgAsync("initdb", ["-D", server.DataDirectory, "-A", "trust", "-U", "callstate"]);
        await server.StartServerAsync();
        return server;
    }

    private string DataDirectory => Path.Combine(_directory, "data");

    /// <summary>Starts (again) the server on the same data and port.</summary>
    public Task StartServerAsync() => RunPgAsync("pg_ctl", ["-D", DataDirectory, "-l", Path.Combine(_directory, "postgres.log"), "-w", "-t", "30", "start",
        "-o", $"-p {Port.ToString(CultureInfo.InvariantCulture)} -k {_directory} -c listen_addresses=127.0.0.1"]);

    /// <summary>Stops the server (fast shutdown: connections are cut, committed data stays).</summary>
    public Task StopServerAsync() => RunPgAsync("pg_ctl", ["-D", DataDirectory, "-m", "fast", "-w", "-t", "30", "stop"]);

    public async ValueTask DisposeAsync()
    {
        if (File.Exists(Path.Combine(DataDirectory, "postmaster.pid")))
        {
            await RunPgAsync("pg_ctl", ["-D", DataDirectory, "-m", "immediate", "-w", "stop"], allowFailure: true);
        }

        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private Task RunPgAsync(string tool, string[] args, bool allowFailure = false) =>
        RunAsync(Path.Combine(_bin, tool), args, asPostgres: Environment.UserName == "root", allowFailure, _directory);

    private static async Task RunAsync(string file, string[] args, bool asPostgres, bool allowFailure, string? workingDirectory = null)
    {
        var info = new ProcessStartInfo(asPostgres ? "runuser" : file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        if (asPostgres)
        {
            foreach (var a in new[] { "-u", "postgres", "--", file })
            {
                info.ArgumentList.Add(a);
            }
        }

        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        if (process.ExitCode != 0 && !allowFailure)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {process.ExitCode}: {await stdout}{await stderr}");
        }
    }
}
