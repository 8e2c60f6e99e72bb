using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// One source floods a running standalone edge (raw UDP INVITEs with fresh Call-IDs and OPTIONS, sipsak's flood mode,
/// sipvicious scans) while a trusted PBX places calls through it with sipp and a load balancer probes it with OPTIONS
/// (docs/architecture.md, "Overload control"): the PBX's calls complete at the callee, the probes are answered, nothing
/// reaches an address no configuration names, the flood holds no slot, and the shedding is logged a few times, not per
/// message. The trusted PBX is 127.0.0.5 here, so sipsak (which cannot choose its source address) floods from
/// 127.0.0.1 as an untrusted source; the raw flooder and the scanners use 127.0.0.3, the prober 127.0.0.4.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class FloodTests(ITestOutputHelper output) : IDisposable
{
    // docs/benchmarks.md ("One source flooding") runs this test with larger figures through these variables.
    private static readonly int FloodRate = Setting("CALLSTATE_FLOOD_RATE", 8_000);
    private static readonly int FloodSeconds = Setting("CALLSTATE_FLOOD_SECONDS", 8);
    private static readonly int CallRate = Setting("CALLSTATE_FLOOD_CALL_RATE", 100);

    private static readonly IPAddress Pbx = IPAddress.Parse("127.0.0.5");
    private static readonly IPAddress FloodSource = IPAddress.Parse("127.0.0.3");
    private static readonly IPAddress ProbeSource = IPAddress.Parse("127.0.0.4");
    private static readonly IPAddress Unconfigured = IPAddress.Parse("127.0.0.9");

    private readonly TempDirectory _temp = new("callstate-flood-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task A_flooding_source_neither_stops_a_trusted_pbxs_calls_nor_the_balancers_probes_and_holds_nothing()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        using var victim = new CountingListener(Unconfigured, SipEdgeProcess.FreeUdpAndTcpPort());
        string[] settings =
        [
            $"--CallState:Trust:Peers:local-pbx:Sources:0={Pbx}",
            "--CallState:Limits:DefaultUser:Total=1000000",
            "--CallState:Limits:DefaultUser:Inbound=1000000",
            "--CallState:Limits:DefaultUser:Outbound=1000000",
            .. Environment.GetEnvironmentVariable("CALLSTATE_FLOOD_EDGE_ARGS")?.Split(' ', StringSplitOptions.RemoveEmptyEntries) ?? [],
        ];
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort, extra: settings);

        var calls = CallRate * FloodSeconds;
        using var flooder = new Flooder(FloodSource, edge.SipPort, victim.Port);
        using var prober = new Prober(ProbeSource, edge.SipPort);
        var flood = flooder.RunAsync(FloodRate, TimeSpan.FromSeconds(FloodSeconds));
        var probes = prober.RunAsync(TimeSpan.FromSeconds(FloodSeconds), TimeSpan.FromMilliseconds(100));
        var sipsak = Tool.RunAsync("sipsak", ["-F", "-e", Port(FloodRate * 2), "-s", "sip:bob@127.0.0.1", "-r", Port(edge.SipPort)], TimeSpan.FromSeconds(FloodSeconds + 5));
        var svmap = Tool.RunAsync("svmap", ["-b", FloodSource.ToString(), "-p", Port(edge.SipPort), "-m", "INVITE", "127.0.0.1"], TimeSpan.FromSeconds(FloodSeconds + 5));
        var svwar = Tool.RunAsync("svwar", ["-b", FloodSource.ToString(), "-p", Port(edge.SipPort), "-m", "INVITE", "-e", "100-999", "--force", "127.0.0.1"],
            TimeSpan.FromSeconds(FloodSeconds + 5));

        var users = UsersFile(Data, "pbx");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", users, "-s", "service", "-i", Pbx.ToString(),
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(calls), "-r", Port(CallRate), "-l", Port(calls), "-d", "1000",
            "-timeout", Port(FloodSeconds + 60) + "s", "-timeout_error", "-recv_timeout", "30s", "-max_retrans", "10"]);
        var caller = await uac.WaitAsync(TimeSpan.FromSeconds(FloodSeconds + 90));
        var sent = await flood;
        var (probed, answered) = await probes;
        var tools = await Task.WhenAll(sipsak, svmap, svwar);
        var callee = await uas.WaitForStatsAsync(s => s.Successful >= caller.Successful, TimeSpan.FromSeconds(20));
        callee = uas.Stop();

        var completed = 100.0 * callee.Successful / calls;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"flood: {sent} sent at {FloodRate}/s for {FloodSeconds} s, {flooder.Responses} answered ({flooder.Refusals} 503); " +
            $"calls at {CallRate}/s: {calls} offered, caller {caller}, callee {callee} ({completed:F2}% completed); probes {answered}/{probed} answered"));
        foreach (var (name, exit, text) in tools)
        {
            output.WriteLine($"{name} exited {exit}: {Tail(text)}");
        }
        var shedLogs = Count(edge.Output, "Overload control refused");
        output.WriteLine($"edge logged shedding {shedLogs} times");

        Assert.False(edge.HasExited, edge.Output);
        Assert.True(sent >= FloodRate * FloodSeconds * 9 / 10, $"the flooder sent only {sent}");
        Assert.True(callee.Successful >= calls * 99 / 100, $"{callee.Successful} of {calls} calls completed at the callee\n{uac.Describe()}");
        Assert.Equal(probed, answered);

        // The flood was refused, not answered one for one: over its budget (500 requests a second) only the first 10
        // refusals a second are answered 503, the rest dropped; and the shedding is logged a few times, not per message.
        Assert.True(flooder.Refusals > 0, "the flooder never got a 503");
        Assert.True(flooder.Refusals <= sent / 10, $"{flooder.Refusals} refusals answered to {sent} flood requests");
        Assert.InRange(shedLogs, 1, 50);

        // Nothing reached the address no configuration names, and the flood reserved nothing.
        Assert.Equal(0, victim.Datagrams);
        Assert.Equal(0, victim.Connections);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(30), "the calls and the flood ended");
        Assert.DoesNotContain(await LimitsAsync(edge), e => e.GetProperty("key").GetString() == "user/bob");
    }

    [Fact]
    public async Task A_configured_trunk_and_a_trusted_peer_get_their_larger_budgets_while_an_unknown_source_at_the_same_rate_is_refused()
    {
        // Small budget for anyone else; the trunk's and the peer's sources keep the defaults of their kinds (20,000/s).
        // The edge classifies by its own configuration: the trunk's source from CallState:Admission:Trunks, the peer's
        // from CallState:Trust:Peers (docs/architecture.md, "Overload control").
        var trunk = IPAddress.Parse("127.0.0.6");
        await using var edge = await StandaloneEdge.StartAsync(Data, SipEdgeProcess.FreeUdpAndTcpPort(), extra: [
            $"--CallState:Admission:Trunks:carrier:Sources:0={trunk}",
            $"--CallState:Trust:Peers:local-pbx:Sources:0={Pbx}",
            "--CallState:Sip:Overload:Default:RequestsPerSecond=2",
            "--CallState:Sip:Overload:Default:Burst=5",
            "--CallState:Sip:Overload:RefusalsPerSecond=1000",
        ]);
        const int Requests = 40;
        using var fromTrunk = new Asker(trunk, edge.SipPort);
        using var fromPeer = new Asker(Pbx, edge.SipPort);
        using var fromUnknown = new Asker(FloodSource, edge.SipPort);
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < Requests; i++)
        {
            fromTrunk.Send(i);
            fromPeer.Send(i);
            fromUnknown.Send(i);
        }
        var sending = clock.Elapsed;

        // Every request gets an answer (200 within budget, 503 over it: refusals are all answered here).
        var deadline = Stopwatch.StartNew();
        while ((fromTrunk.Answers < Requests || fromPeer.Answers < Requests || fromUnknown.Answers < Requests) && deadline.Elapsed < TimeSpan.FromSeconds(15))
        {
            await Task.Delay(20);
        }
        output.WriteLine($"sent {Requests} OPTIONS from each source in {sending.TotalMilliseconds:F0} ms; trunk {fromTrunk}, peer {fromPeer}, unknown {fromUnknown}");
        Assert.Equal(Requests, fromTrunk.Ok);
        Assert.Equal(0, fromTrunk.Refusals);
        Assert.Equal(Requests, fromPeer.Ok);
        Assert.Equal(0, fromPeer.Refusals);

        // The unknown source has its burst (5) and what its 2/s refilled while it sent; the rest is refused.
        Assert.InRange(fromUnknown.Ok, 5, 5 + 2 * ((int)sending.TotalSeconds + 1));
        Assert.Equal(Requests, fromUnknown.Ok + fromUnknown.Refusals);
        Assert.False(edge.HasExited, edge.Output);
    }

    private static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value > 0 ? value : fallback;

    private static string Tail(string text) => text.Length <= 400 ? text : text[^400..];

    /// <summary>Raw UDP requests with fresh Call-IDs from one address, paced at a rate, bounded in count and time; counts what comes back.</summary>
    private sealed class Flooder : IDisposable
    {
        private readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        private readonly IPEndPoint _edge;
        private readonly int _victimPort;
        private int _responses;
        private int _refusals;

        public Flooder(IPAddress address, int edgePort, int victimPort)
        {
            _socket.Bind(new IPEndPoint(address, 0));
            _socket.ReceiveBufferSize = 4 * 1024 * 1024;
            _edge = new IPEndPoint(IPAddress.Loopback, edgePort);
            _victimPort = victimPort;
            _ = Task.Factory.StartNew(Receive, TaskCreationOptions.LongRunning);
        }

        public int Responses => Volatile.Read(ref _responses);

        public int Refusals => Volatile.Read(ref _refusals);

        public Task<int> RunAsync(int rate, TimeSpan duration) => Task.Factory.StartNew(() =>
        {
            var local = (IPEndPoint)_socket.LocalEndPoint!;
            var total = (long)rate * (long)duration.TotalSeconds;
            var clock = Stopwatch.StartNew();
            var sent = 0;
            while (sent < total && clock.Elapsed < duration)
            {
                var due = Math.Min(total, (long)(clock.Elapsed.TotalSeconds * rate));
                for (; sent < due; sent++)
                {
                    _socket.SendTo(Encoding.ASCII.GetBytes(Request(sent, local)), _edge);
                }
                Thread.Sleep(1);
            }
            return sent;
        }, TaskCreationOptions.LongRunning);

        /// <summary>In turn: INVITEs to a local user, an OPTIONS to the edge itself, an INVITE and an OPTIONS naming an unconfigured address.</summary>
        private string Request(int n, IPEndPoint local)
        {
            var (method, uri) = (n % 10) switch
            {
                < 6 => ("INVITE", $"sip:bob@127.0.0.1:{_edge.Port}"),
                < 8 => ("OPTIONS", $"sip:127.0.0.1:{_edge.Port}"),
                8 => ("INVITE", $"sip:bob@127.0.0.9:{_victimPort}"),
                _ => ("OPTIONS", $"sip:bob@127.0.0.9:{_victimPort}"),
            };
            return $"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKflood{n}\r\nMax-Forwards: 70\r\n" +
                $"From: <sip:flood@127.0.0.3>;tag=f{n}\r\nTo: <{uri}>\r\nCall-ID: flood-{n}@127.0.0.3\r\nCSeq: 1 {method}\r\n" +
                $"Contact: <sip:flood@{local}>\r\nContent-Length: 0\r\n\r\n";
        }

        private void Receive()
        {
            var buffer = new byte[65536];
            try
            {
                while (true)
                {
                    var length = _socket.Receive(buffer);
                    Interlocked.Increment(ref _responses);
                    if (buffer.AsSpan(0, length).StartsWith("SIP/2.0 503"u8))
                    {
                        Interlocked.Increment(ref _refusals);
                    }
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }
        }

        public void Dispose() => _socket.Dispose();
    }

    /// <summary>OPTIONS to the edge itself from one address, each with its own branch; counts the 200s and 503s that come back.</summary>
    private sealed class Asker : IDisposable
    {
        private readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        private readonly IPEndPoint _edge;
        private int _ok;
        private int _refusals;

        public Asker(IPAddress address, int edgePort)
        {
            _socket.Bind(new IPEndPoint(address, 0));
            _edge = new IPEndPoint(IPAddress.Loopback, edgePort);
            _ = Task.Factory.StartNew(Receive, TaskCreationOptions.LongRunning);
        }

        public int Ok => Volatile.Read(ref _ok);

        public int Refusals => Volatile.Read(ref _refusals);

        public int Answers => Ok + Refusals;

        public void Send(int n)
        {
            var local = (IPEndPoint)_socket.LocalEndPoint!;
            _socket.SendTo(Encoding.ASCII.GetBytes(
                $"OPTIONS sip:127.0.0.1:{_edge.Port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKask{n}\r\nMax-Forwards: 70\r\n" +
                $"From: <sip:asker@{local.Address}>;tag=a{n}\r\nTo: <sip:127.0.0.1:{_edge.Port}>\r\nCall-ID: ask-{n}@{local.Address}\r\n" +
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"), _edge);
        }

        private void Receive()
        {
            var buffer = new byte[65536];
            try
            {
                while (true)
                {
                    var answer = buffer.AsSpan(0, _socket.Receive(buffer));
                    if (answer.StartsWith("SIP/2.0 200"u8))
                    {
                        Interlocked.Increment(ref _ok);
                    }
                    else if (answer.StartsWith("SIP/2.0 503"u8))
                    {
                        Interlocked.Increment(ref _refusals);
                    }
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }
        }

        public override string ToString() => $"{Ok} answered 200, {Refusals} refused 503";

        public void Dispose() => _socket.Dispose();
    }

    /// <summary>A load balancer's health check: OPTIONS to the edge itself at an interval, each resent (as Timer E would) until answered.</summary>
    private sealed class Prober(IPAddress address, int edgePort) : IDisposable
    {
        private readonly UdpClient _socket = new(new IPEndPoint(address, 0));
        private readonly IPEndPoint _edge = new(IPAddress.Loopback, edgePort);

        public async Task<(int Sent, int Answered)> RunAsync(TimeSpan duration, TimeSpan interval)
        {
            var local = (IPEndPoint)_socket.Client.LocalEndPoint!;
            var clock = Stopwatch.StartNew();
            var (sent, answered) = (0, 0);
            while (clock.Elapsed < duration)
            {
                var probe = Encoding.ASCII.GetBytes(
                    $"OPTIONS sip:127.0.0.1:{_edge.Port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKprobe{sent}\r\nMax-Forwards: 70\r\n" +
                    $"From: <sip:balancer@127.0.0.4>;tag=p{sent}\r\nTo: <sip:127.0.0.1:{_edge.Port}>\r\nCall-ID: probe-{sent}@127.0.0.4\r\n" +
                    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
                var marker = $"probe-{sent}@";
                sent++;
                if (await AskAsync(probe, marker))
                {
                    answered++;
                }
                await Task.Delay(interval);
            }
            return (sent, answered);
        }

        /// <summary>Sends and resends (0.5, 1, 2 s apart, as RFC 3261 Timer E) until a 200 for this probe comes; false after about 4 s.</summary>
        private async Task<bool> AskAsync(byte[] probe, string marker)
        {
            foreach (var wait in new[] { 500, 1000, 2000 })
            {
                await _socket.SendAsync(probe, _edge);
                using var timeout = new CancellationTokenSource(wait);
                try
                {
                    while (true)
                    {
                        var received = await _socket.ReceiveAsync(timeout.Token);
                        var text = Encoding.ASCII.GetString(received.Buffer);
                        if (text.StartsWith("SIP/2.0 200", StringComparison.Ordinal) && text.Contains(marker, StringComparison.Ordinal))
                        {
                            return true;
                        }
                    }
                }
                catch (OperationCanceledException)
                {
                }
            }
            return false;
        }

        public void Dispose() => _socket.Dispose();
    }

    /// <summary>A flooding or scanning tool run to its end or to a time bound (then killed by its own id); a missing tool fails the test.</summary>
    private static class Tool
    {
        public static async Task<(string Name, int Exit, string Output)> RunAsync(string name, string[] args, TimeSpan bound)
        {
            var path = Executables.Find(name) ?? throw new InvalidOperationException($"{name} is not installed; scripts/test.sh installs it");
            var info = new ProcessStartInfo(path)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
            };
            foreach (var arg in args)
            {
                info.ArgumentList.Add(arg);
            }
            using var process = new Process { StartInfo = info };
            var text = new StringBuilder();
            process.OutputDataReceived += (_, e) => Append(text, e.Data);
            process.ErrorDataReceived += (_, e) => Append(text, e.Data);
            process.Start();
            process.StandardInput.Close();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            using var timeout = new CancellationTokenSource(bound);
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                // Bounded in time: a scan still running at the end of the flood is stopped.
                process.Kill(entireProcessTree: true);
            }
            await process.WaitForExitAsync();
            lock (text)
            {
                return (name, process.ExitCode, text.ToString());
            }
        }

        private static void Append(StringBuilder text, string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (text)
            {
                text.AppendLine(line);
            }
        }
    }
}
