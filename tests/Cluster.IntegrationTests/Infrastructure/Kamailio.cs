using System.Diagnostics;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>
/// A real Kamailio (Debian packages kamailio and kamailio-tls-modules) listening only on TLS on 127.0.0.1, configured
/// in a directory of the test's: it answers every INVITE with 486 (stateless) and logs each request it gets with its
/// transport, source and top Via. Run in the foreground with its log on stderr; stopped with SIGTERM to its main
/// process, which ends its children, and every process is checked gone by its own id.
/// </summary>
public sealed class Kamailio : IAsyncDisposable
{
    /// <summary>The start of the line the configuration logs for each request (the method follows).</summary>
    public const string RequestLogPrefix = "callstate-test request: ";

    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private bool _stopped;

    private Kamailio(Process process, int port)
    {
        _process = process;
        Port = port;
    }

    /// <summary>The TLS port on 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>Everything Kamailio wrote (its log, from every process).</summary>
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

    /// <summary>
    /// Writes the configuration into <paramref name="directory"/> and starts Kamailio on tls:127.0.0.1:<paramref name="port"/>
    /// with the given certificate and key; returns once a TLS handshake that checks the certificate against
    /// <paramref name="ca"/> succeeds (at most 30 s).
    /// </summary>
    public static async Task<Kamailio> StartTlsAsync(string directory, int port, string certificateFile, string keyFile, X509Certificate2 ca)
    {
        var executable = Executables.Find("kamailio") ?? throw new InvalidOperationException(
            "kamailio is not installed (Debian packages kamailio and kamailio-tls-modules); scripts/test.sh installs them");
        var tlsConfig = Path.Combine(directory, "tls.cfg");
        await File.WriteAllTextAsync(tlsConfig, $"""
            [server:default]
            method = TLSv1.2+
            verify_certificate = no
            require_certificate = no
            certificate = {certificateFile}
            private_key = {keyFile}
            """ + "\n");
        var config = Path.Combine(directory, "kamailio.cfg");
        var listen = $"tls:127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}";

        // No UDP or TCP listener: a request can reach this server only over TLS. No DNS at start (the tests' network
        // namespace has no resolver). The ACK of a 486 never reaches the script: the sl module drops the ACKs of its own
        // replies before it (seen at debug=3 as "SL local ACK found"); any other ACK is taken in silently.
        await File.WriteAllTextAsync(config, $$"""
            #!KAMAILIO
            debug=2
            auto_aliases=no
            dns=no
            rev_dns=no
            children=1
            tcp_children=1
            enable_tls=yes
            listen={{listen}}

            loadmodule "tls.so"
            loadmodule "sl.so"
            loadmodule "pv.so"
            loadmodule "xlog.so"

            modparam("tls", "config", "{{tlsConfig}}")

            request_route {
                xlog("L_NOTICE", "{{RequestLogPrefix}}$rm over $proto from $si via $hdr(Via)\n");
                if ($rm == "ACK") {
                    exit;
                }
                if ($rm == "INVITE") {
                    sl_send_reply("486", "Busy Here");
                    exit;
                }
                sl_send_reply("405", "Method Not Allowed");
            }
            """ + "\n");

        // -DD: the main process stays in the foreground (its children are forked from it); -E: the log goes to stderr.
        var info = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = directory,
        };
        foreach (var arg in new[]
        {
            "-DD", "-E", "-f", config, "-w", directory, "-Y", directory, "-P", Path.Combine(directory, "kamailio.pid"),
            "-m", "32", "-M", "4",
        })
        {
            info.ArgumentList.Add(arg);
        }
        var kamailio = new Kamailio(new Process { StartInfo = info }, port);
        kamailio._process.OutputDataReceived += (_, e) => kamailio.Append(e.Data);
        kamailio._process.ErrorDataReceived += (_, e) => kamailio.Append(e.Data);
        kamailio._process.Start();
        kamailio._process.BeginOutputReadLine();
        kamailio._process.BeginErrorReadLine();
        try
        {
            await kamailio.WaitServingAsync(ca, TimeSpan.FromSeconds(30));
        }
        catch
        {
            await kamailio.DisposeAsync();
            throw;
        }
        return kamailio;
    }

    /// <summary>Waits (bounded) until the log holds a line containing <paramref name="text"/>; fails with the log if it never does.</summary>
    public async Task WaitForLogAsync(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Output.Contains(text, StringComparison.Ordinal))
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Kamailio never logged \"{text}\" in {timeout}:\n{Tail()}");
            }
            await Task.Delay(50);
        }
    }

    /// <summary>The request lines the configuration logged, in order (the text after <see cref="RequestLogPrefix"/>).</summary>
    public string[] Requests() =>
        [.. Output.Split('\n')
            .Select(l => l.IndexOf(RequestLogPrefix, StringComparison.Ordinal) is var at and >= 0 ? l[(at + RequestLogPrefix.Length)..].TrimEnd() : null)
            .OfType<string>()];

    /// <summary>
    /// SIGTERM to the main process, then waits (at most 10 s) for it and for every child it had to be gone. Returns
    /// the processes that were still running and had to be killed (SIGKILL, each by its id): none when Kamailio
    /// stopped as it should.
    /// </summary>
    public async Task<IReadOnlyList<int>> StopAsync()
    {
        if (_stopped)
        {
            return [];
        }
        _stopped = true;
        if (_process.HasExited)
        {
            return [];
        }
        var processes = Children(_process.Id).Append(Identity(_process.Id)).OfType<(int Pid, string Start)>().ToArray();
        Signal(_process.Id, "TERM");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (processes.Any(Alive) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        var left = processes.Where(Alive).ToArray();
        foreach (var (pid, _) in left)
        {
            Signal(pid, "KILL");
        }
        _process.WaitForExit(10_000);
        return [.. left.Select(p => p.Pid)];
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _process.Dispose();
    }

    private async Task WaitServingAsync(X509Certificate2 ca, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        Exception? last = null;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException(
                    $"kamailio exited with code {_process.ExitCode} (is kamailio-tls-modules installed?):\n{Tail()}");
            }
            try
            {
                using var client = new TcpClient();
                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await client.ConnectAsync("127.0.0.1", Port, attempt.Token);
                await using var tls = new SslStream(client.GetStream());
                var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
                policy.CustomTrustStore.Add(ca);
                await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
                {
                    TargetHost = "127.0.0.1",
                    CertificateChainPolicy = policy,
                }, attempt.Token);
                return;
            }
            catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException or System.Security.Authentication.AuthenticationException)
            {
                last = ex;
            }
            await Task.Delay(100);
        }
        throw new InvalidOperationException($"kamailio did not complete a TLS handshake on 127.0.0.1:{Port} in {timeout} ({last?.Message}):\n{Tail()}");
    }

    private string Tail()
    {
        var output = Output;
        return output.Length > 6000 ? output[^6000..] : output;
    }

    /// <summary>The children of <paramref name="parent"/>, each with its start time (so a reused id is not mistaken for it).</summary>
    private static IEnumerable<(int Pid, string Start)?> Children(int parent)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && Stat(pid) is { } stat && stat.Parent == parent)
            {
                yield return (pid, stat.Start);
            }
        }
    }

    private static (int Pid, string Start)? Identity(int pid) => Stat(pid) is { } stat ? (pid, stat.Start) : null;

    private static bool Alive((int Pid, string Start) process) =>
        Stat(process.Pid) is { } stat && stat.Start == process.Start && stat.State != "Z";

    /// <summary>From /proc/PID/stat: state, parent id and start time (fields 3, 4 and 22, after the command in parentheses).</summary>
    private static (string State, int Parent, string Start)? Stat(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
        var fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
        return (fields[0], int.Parse(fields[1], CultureInfo.InvariantCulture), fields[19]);
    }

    private static void Signal(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-" + signal, pid.ToString(CultureInfo.InvariantCulture)])
        {
            UseShellExecute = false,
            RedirectStandardError = true,
        })!;
        kill.WaitForExit(10_000);
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
