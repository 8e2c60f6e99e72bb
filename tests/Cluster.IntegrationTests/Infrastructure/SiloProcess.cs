using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>
/// A real silo process (the built CallState.Silo.dll) on loopback ports. <see cref="Kill"/> sends SIGKILL:
/// no graceful shutdown, no flush, exactly what a crash leaves.
/// </summary>
public sealed class SiloProcess : IAsyncDisposable
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { Converters = { new JsonStringEnumConverter() } };

    private readonly HostProcess _host;

    private SiloProcess(HostProcess host, int port, int healthPort, int siloPort, int gatewayPort)
    {
        _host = host;
        Port = port;
        HealthPort = healthPort;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
        Http = AdminTokens.Client(port, AdminTokens.Write, TimeSpan.FromSeconds(30));
        Health = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{healthPort}"), Timeout = TimeSpan.FromSeconds(30) };
    }

    /// <summary>The health probes' port (no token).</summary>
    public int HealthPort { get; }

    /// <summary>The probes' listener.</summary>
    public HttpClient Health { get; }

    /// <summary>The admin API's HTTP port.</summary>
    public int Port { get; }

    /// <summary>Orleans' silo-to-silo port.</summary>
    public int SiloPort { get; }

    /// <summary>Orleans' gateway port, where edges connect.</summary>
    public int GatewayPort { get; }

    /// <summary>The admin API, with the write token.</summary>
    public HttpClient Http { get; }

    public string Output => _host.Output;

    public bool HasExited => _host.HasExited;

    public int ExitCode => _host.ExitCode;

    public int Id => _host.Id;

    /// <summary>
    /// Starts a silo with the given configuration (command-line form <c>--Section:Key=value</c>) on the given ports, or
    /// free ones: never Orleans' defaults (11111, 30000), which silos of parallel tests would share.
    /// </summary>
    public static SiloProcess Start(IEnumerable<string> settings, int? port = null, int? siloPort = null, int? gatewayPort = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var chosenPort = port ?? FreePort();
        var chosenSiloPort = siloPort ?? FreePort();
        var chosenGatewayPort = gatewayPort ?? FreePort();
        var healthPort = FreePort();
        var host = HostProcess.Start("silo", RepoPaths.BuiltAssembly("Silo", "CallState.Silo.dll"),
        [
            $"--urls=http://127.0.0.1:{chosenPort}", $"--CallState:Admin:HealthPort={healthPort}", .. AdminTokens.Settings,
            "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:CallState=Information",

            // Orleans warns with a stack trace per failed probe or connection while a peer is down, which would bury
            // our own lines; its errors stay, and so do the membership table's lines about this silo being dead.
            "--Logging:LogLevel:Orleans=Error", "--Logging:LogLevel:Orleans.Runtime.MembershipService.MembershipTableManager=Warning",
            $"--CallState:Orleans:SiloPort={chosenSiloPort}", $"--CallState:Orleans:GatewayPort={chosenGatewayPort}",
            .. settings,
        ], environment);
        return new SiloProcess(host, chosenPort, healthPort, chosenSiloPort, chosenGatewayPort);
    }

    /// <summary>Waits until the readiness probe answers 200 (storage initialised, timers re-armed).</summary>
    public Task WaitReadyAsync(TimeSpan timeout) => _host.WaitReadyAsync(Health, timeout);

    public async Task<T> GetAsync<T>(string path) =>
        (await Http.GetFromJsonAsync<T>(path, Json))!;

    public async Task<(HttpStatusCode Status, T? Body)> PostAsync<T>(string path, object body)
    {
        using var response = await Http.PostAsJsonAsync(path, body, Json);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length == 0 ? default : JsonSerializer.Deserialize<T>(text, Json));
    }

    /// <summary>SIGKILL, then wait for the process to be gone.</summary>
    public void Kill() => _host.Kill();

    public void Pause() => _host.Pause();

    /// <summary>SIGTERM (a pod being stopped): Orleans' graceful shutdown, then the process exits by itself.</summary>
    public void Terminate() => _host.Terminate();

    public void Resume() => _host.Resume();

    public Task<int> WaitForExitAsync(TimeSpan timeout) => _host.WaitForExitAsync(timeout);

    public ValueTask DisposeAsync()
    {
        _host.Dispose();
        Http.Dispose();
        Health.Dispose();
        return ValueTask.CompletedTask;
    }

    private static int FreePort() => SipEdgeProcess.FreeUdpAndTcpPort();
}
