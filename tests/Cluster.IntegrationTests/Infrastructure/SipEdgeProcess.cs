using System.Net;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>A real SIP edge process (the built CallState.SipEdge.dll) on loopback ports.</summary>
public sealed class SipEdgeProcess : IAsyncDisposable
{
    private readonly HostProcess _host;
    private readonly HttpClient _http;
    private readonly HttpClient _health;

    private SipEdgeProcess(HostProcess host, int sipPort, int httpPort, int healthPort)
    {
        _host = host;
        SipPort = sipPort;
        HttpPort = httpPort;
        _http = AdminTokens.Client(httpPort, AdminTokens.Write, TimeSpan.FromSeconds(10));
        _health = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{healthPort}"), Timeout = TimeSpan.FromSeconds(10) };
    }

    /// <summary>The edge's admin API (in standalone mode the whole API; runtime counters otherwise), with the write token.</summary>
    public HttpClient Http => _http;

    /// <summary>The health probes' listener (no token).</summary>
    public HttpClient Health => _health;

    /// <summary>The admin API's port.</summary>
    public int HttpPort { get; }

    /// <summary>The UDP and TCP port of the SIP listeners.</summary>
    public int SipPort { get; }

    public string Output => _host.Output;

    public bool HasExited => _host.HasExited;

    public int ExitCode => _host.ExitCode;

    /// <summary>Starts an edge on a free SIP port with the given settings (<c>--Section:Key=value</c>).</summary>
    public static SipEdgeProcess Start(IEnumerable<string> settings, int? sipPort = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var port = sipPort ?? FreeUdpAndTcpPort();
        var httpPort = FreeUdpAndTcpPort();
        var healthPort = FreeUdpAndTcpPort();
        var host = HostProcess.Start("edge", RepoPaths.BuiltAssembly("SipEdge", "CallState.SipEdge.dll"),
        [
            $"--urls=http://127.0.0.1:{httpPort}", $"--CallState:Admin:HealthPort={healthPort}", .. AdminTokens.Settings,
            "--Logging:LogLevel:Default=Warning",

            // The Orleans client warns with a stack trace per failed connection attempt while no gateway answers.
            "--Logging:LogLevel:Orleans=Error",
            "--CallState:Sip:ListenAddress=127.0.0.1", $"--CallState:Sip:Port={port}", .. settings,
        ], environment);
        return new SipEdgeProcess(host, port, httpPort, healthPort);
    }

    /// <summary>Waits until /health/ready answers 200 (the SIP listeners are bound; an edge that admits calls has completed an admission warm-up round trip).</summary>
    public Task WaitReadyAsync(TimeSpan timeout) => _host.WaitReadyAsync(_health, timeout);

    /// <summary>
    /// What /health/ready answers, once the HTTP listener is up (it may start after the SIP listeners); the connection
    /// error if it is not up within 30 s or the process has exited.
    /// </summary>
    public async Task<HttpStatusCode> ReadinessAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                using var response = await _health.GetAsync("/health/ready");
                return response.StatusCode;
            }
            catch (HttpRequestException) when (DateTime.UtcNow < deadline && !_host.HasExited)
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>True once <paramref name="text"/> appears in the process output (the console logger writes asynchronously).</summary>
    public Task<bool> OutputContainsAsync(string text, TimeSpan? timeout = null) => _host.OutputContainsAsync(text, timeout);

    public Task<int> WaitForExitAsync(TimeSpan timeout) => _host.WaitForExitAsync(timeout);

    public int Id => _host.Id;

    /// <summary>SIGKILL, then wait for the process to be gone.</summary>
    public void Kill() => _host.Kill();

    /// <summary>SIGSTOP: the edge freezes with its sockets open.</summary>
    public void Pause() => _host.Pause();

    /// <summary>SIGCONT after <see cref="Pause"/>.</summary>
    public void Resume() => _host.Resume();

    /// <summary>SIGTERM (a pod being stopped): the edge drains, then exits.</summary>
    public void Terminate() => _host.Terminate();

    public ValueTask DisposeAsync()
    {
        _host.Dispose();
        _http.Dispose();
        _health.Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>A loopback port free for both UDP and TCP (the edge listens on both), from the test run's allocator.</summary>
    public static int FreeUdpAndTcpPort() => CallState.Testing.TestPorts.FreeUdpAndTcp();

    /// <summary>
    /// The settings of an edge that is a client of cluster <paramref name="clusterId"/> through the gateway on
    /// <paramref name="gatewayPort"/> and sends every call to the callee at <paramref name="uasPort"/>, with a 5 s admission
    /// deadline (a loaded test machine, not the deadline, is what the cluster tests judge); more settings follow.
    /// </summary>
    public static string[] ClusterClientSettings(string clusterId, int gatewayPort, int uasPort, params string[] more) =>
    [
        $"--CallState:Orleans:ClusterId={clusterId}",
        $"--CallState:Orleans:Gateways:0=127.0.0.1:{gatewayPort}",
        "--CallState:Admission:Deadline=00:00:05",
        "--CallState:Admission:LocalDomains:0=127.0.0.1",
        "--CallState:Admission:Routes:0:Prefix=",
        $"--CallState:Admission:Routes:0:Upstream=127.0.0.1:{uasPort}",
        .. more,
    ];
}
