using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>A real SIP edge process (the built CallState.SipEdge.dll) on loopback ports.</summary>
public sealed class SipEdgeProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly HttpClient _http;

    private SipEdgeProcess(Process process, int sipPort, int httpPort)
    {
        _process = process;
        SipPort = sipPort;
        _http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{httpPort}"), Timeout = TimeSpan.FromSeconds(10) };
    }

    /// <summary>The edge's HTTP endpoint (health probes; in standalone mode also the admin API).</summary>
    public HttpClient Http => _http;

    /// <summary>The UDP and TCP port of the SIP listeners.</summary>
    public int SipPort { get; }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    /// <summary>Starts an edge on a free SIP port with the given settings (<c>--Section:Key=value</c>).</summary>
    public static SipEdgeProcess Start(IEnumerable<string> settings, int? sipPort = null)
    {
        var port = sipPort ?? FreeUdpAndTcpPort();
        var httpPort = FreeUdpAndTcpPort();
        var info = new ProcessStartInfo(RepoPaths.DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(RepoPaths.BuiltAssembly("SipEdge", "CallState.SipEdge.dll"));
        info.ArgumentList.Add($"--urls=http://127.0.0.1:{httpPort}");
        info.ArgumentList.Add("--Logging:LogLevel:Default=Warning");
        info.ArgumentList.Add("--CallState:Sip:ListenAddress=127.0.0.1");
        info.ArgumentList.Add($"--CallState:Sip:Port={port}");
        foreach (var setting in settings)
        {
            info.ArgumentList.Add(setting);
        }
        info.Environment.Remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        var process = new Process { StartInfo = info };
        var edge = new SipEdgeProcess(process, port, httpPort);
        process.OutputDataReceived += (_, e) => edge.Append(e.Data);
        process.ErrorDataReceived += (_, e) => edge.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return edge;
    }

    /// <summary>Waits until /health/ready answers 200 (the SIP listeners are bound).</summary>
    public async Task WaitReadyAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"edge exited with code {_process.ExitCode}:\n{Output}");
            }
            try
            {
                using var response = await _http.GetAsync("/health/ready");
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }
            await Task.Delay(100);
        }
        throw new TimeoutException($"edge not ready after {timeout}:\n{Output}");
    }

    /// <summary>True once <paramref name="text"/> appears in the process output (the console logger writes asynchronously).</summary>
    public async Task<bool> OutputContainsAsync(string text, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (!Output.Contains(text, StringComparison.Ordinal))
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }
            await Task.Delay(50);
        }
        return true;
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    public ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: false);
        }
        _process.WaitForExit(10_000);
        _process.Dispose();
        _http.Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>A loopback port free for both UDP and TCP (the edge listens on both).</summary>
    public static int FreeUdpAndTcpPort()
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            tcp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            var port = ((IPEndPoint)tcp.LocalEndPoint!).Port;
            try
            {
                using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                udp.Bind(new IPEndPoint(IPAddress.Loopback, port));
                return port;
            }
            catch (SocketException)
            {
            }
        }
        throw new InvalidOperationException("no port free for both UDP and TCP on 127.0.0.1");
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_output)
        {
            _output.AppendLine(line);
        }
    }
}
