using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Attacks on what the edge forwards, against a running standalone edge (the sample configuration) over real UDP and
/// TCP, with hand-written requests from a raw socket and a real sipp callee: nothing reaches an address no
/// configuration names (a UDP and a TCP listener there count what arrives), no slot is taken or freed wrongly (the admin
/// API's counts), and each attack gets its answer (docs/security.md).
/// </summary>
[Collection(LoadTests.Name)]
public sealed partial class DialogAttackTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _data = Directory.CreateTempSubdirectory("callstate-attacks-").FullName;

    public void Dispose()
    {
        try
        {
            Directory.Delete(_data, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [Fact]
    public async Task Requests_naming_an_unconfigured_address_are_refused_and_nothing_reaches_it()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var edge = await StandaloneEdge.StartAsync(_data, uasPort);
        using var victim = new Listener(IPAddress.Parse("127.0.0.9"), SipEdgeProcess.FreeUdpAndTcpPort());
        using var caller = new RawCaller(IPAddress.Loopback, edge.SipPort);
        var at = $"127.0.0.9:{victim.Port}";

        var attempts = new (string Request, int Expected)[]
        {
            (caller.Request("MESSAGE", $"sip:bob@{at}", "relay1", toTag: null), 403),
            (caller.Request("OPTIONS", $"sip:bob@{at}", "relay2", toTag: null), 403),
            (caller.Request("REGISTER", $"sip:{at}", "relay3", toTag: null), 403),
            (caller.Request("SUBSCRIBE", $"sip:bob@{at};transport=tcp", "relay4", toTag: null), 403),
            (caller.Request("MESSAGE", "sip:bob@example.com", "relay5", toTag: null, route: $"<sip:{at};lr;transport=tcp>"), 403),
            (caller.Request("BYE", $"sip:bob@{at}", "relay6", toTag: "t1"), 481),
            (caller.Request("INFO", $"sip:bob@{at};transport=tcp", "relay7", toTag: "t1"), 481),
            (caller.Request("INVITE", $"sip:bob@{at}", "relay8", toTag: "t1"), 481),
        };
        foreach (var (request, expected) in attempts)
        {
            var answer = await caller.SendAsync(request, final: true);
            output.WriteLine($"{FirstLine(request)} -> {FirstLine(answer)}");
            Assert.Equal(expected, Status(answer));
        }

        // Long enough for every retransmission a forwarded request would have had over UDP (T1 doubling past 4 s).
        await Task.Delay(TimeSpan.FromSeconds(5));
        Assert.Equal(0, victim.Datagrams);
        Assert.Equal(0, victim.Connections);
        Assert.Empty(await LimitsAsync(edge));
    }

    [Fact]
    public async Task A_forged_or_copied_dialog_neither_takes_nor_frees_a_slot_and_a_bye_to_a_dead_address_keeps_the_call()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(_data, uasPort);
        using var dead = new Listener(IPAddress.Parse("127.0.0.9"), SipEdgeProcess.FreeUdpAndTcpPort());
        using var caller = new RawCaller(IPAddress.Loopback, edge.SipPort);

        // A real call: alice -> bob, answered by sipp through the edge.
        var invite = caller.Request("INVITE", $"sip:bob@127.0.0.1:{edge.SipPort}", "call1", toTag: null, sdp: true);
        var ok = await caller.SendAsync(invite, final: true);
        Assert.Equal(200, Status(ok));
        var calleeTag = ToTag(ok);
        var route = RecordRoute(ok);
        var contact = ContactUri(ok);
        await caller.SendOnlyAsync(caller.Request("ACK", contact, "call1", calleeTag, route: route, cseq: 1));
        await WaitForCountAsync(edge, "user/alice", 1);

        // The same Call-ID and From tag in a new transaction: refused, counted nowhere, and the call keeps its slot.
        var copy = caller.Request("INVITE", $"sip:carol@127.0.0.1:{edge.SipPort}", "call1", toTag: null, branch: "z9hG4bKcopy", sdp: true);
        Assert.Equal(482, Status(await caller.SendAsync(copy, final: true)));
        await caller.SendOnlyAsync(caller.Request("ACK", $"sip:carol@127.0.0.1:{edge.SipPort}", "call1", toTag: null, branch: "z9hG4bKcopy", cseq: 1));

        // The right tags, a wrong one, and an address the dialog never recorded.
        Assert.Equal(481, Status(await caller.SendAsync(caller.Request("BYE", contact, "call1", "forged", route: route, cseq: 2), final: true)));
        var deadBye = caller.Request("BYE", $"sip:bob@127.0.0.9:{dead.Port}", "call1", calleeTag, route: route, cseq: 3);
        Assert.Equal(403, Status(await caller.SendAsync(deadBye, final: true)));
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.Equal(0, dead.Datagrams);
        var alice = Assert.Single(await LimitsAsync(edge, "user"), l => l.GetProperty("key").GetString() == "user/alice");
        Assert.Equal(1, alice.GetProperty("total").GetInt32());

        // The real BYE, to the callee's Contact: the callee answers and the slot comes back.
        var bye = await caller.SendAsync(caller.Request("BYE", contact, "call1", calleeTag, route: route, cseq: 4), final: true);
        Assert.Equal(200, Status(bye));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the BYE");
        await uas.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, dead.Datagrams);
    }

    private static string FirstLine(string message) => message.Length == 0 ? "(nothing)" : message[..message.IndexOf('\r', StringComparison.Ordinal)];

    private static int Status(string response) =>
        response.StartsWith("SIP/2.0 ", StringComparison.Ordinal) ? int.Parse(response.AsSpan(8, 3), System.Globalization.CultureInfo.InvariantCulture) : 0;

    private static string ToTag(string response) => ToTagPattern().Match(response).Groups[1].Value;

    private static string RecordRoute(string response) => RecordRoutePattern().Match(response).Groups[1].Value.Trim();

    private static string ContactUri(string response) => ContactPattern().Match(response).Groups[1].Value;

    [GeneratedRegex(@"\r\nTo:[^\r]*;tag=([^;\r>]+)")]
    private static partial Regex ToTagPattern();

    [GeneratedRegex(@"\r\nRecord-Route:([^\r]*)")]
    private static partial Regex RecordRoutePattern();

    [GeneratedRegex(@"\r\nContact:\s*<([^>]*)>")]
    private static partial Regex ContactPattern();

    /// <summary>A UDP socket and a TCP listener on one address and port, counting what arrives.</summary>
    private sealed class Listener : IDisposable
    {
        private readonly UdpClient _udp;
        private readonly TcpListener _tcp;
        private readonly CancellationTokenSource _stop = new();
        private int _datagrams;
        private int _connections;

        public Listener(IPAddress address, int port)
        {
            Port = port;
            _udp = new UdpClient(new IPEndPoint(address, port));
            _tcp = new TcpListener(address, port);
            _tcp.Start();
            _ = CountDatagramsAsync();
            _ = CountConnectionsAsync();
        }

        public int Port { get; }

        public int Datagrams => Volatile.Read(ref _datagrams);

        public int Connections => Volatile.Read(ref _connections);

        private async Task CountDatagramsAsync()
        {
            try
            {
                while (true)
                {
                    await _udp.ReceiveAsync(_stop.Token);
                    Interlocked.Increment(ref _datagrams);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
            }
        }

        private async Task CountConnectionsAsync()
        {
            try
            {
                while (true)
                {
                    using var client = await _tcp.AcceptTcpClientAsync(_stop.Token);
                    Interlocked.Increment(ref _connections);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _udp.Dispose();
            _tcp.Stop();
            _stop.Dispose();
        }
    }

    /// <summary>A caller writing its own requests from a UDP socket on <paramref name="address"/> and reading the answers.</summary>
    private sealed class RawCaller(IPAddress address, int edgePort) : IDisposable
    {
        private readonly UdpClient _socket = new(new IPEndPoint(address, 0));
        private readonly IPEndPoint _edge = new(IPAddress.Loopback, edgePort);

        private IPEndPoint Local => (IPEndPoint)_socket.Client.LocalEndPoint!;

        public string Request(string method, string uri, string callId, string? toTag, string? route = null, int cseq = 1,
            string? branch = null, bool sdp = false, string user = "alice")
        {
            var body = sdp ? "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n" : "";
            var cseqMethod = method == "ACK" ? "ACK" : method;
            return $"{method} {uri} SIP/2.0\r\n" +
                $"Via: SIP/2.0/UDP {Local};rport;branch={branch ?? "z9hG4bK" + callId + method + cseq}\r\n" +
                (route is null ? "" : $"Route: {route}\r\n") +
                "Max-Forwards: 70\r\n" +
                $"From: <sip:{user}@127.0.0.1>;tag=from-{callId}\r\n" +
                $"To: <{uri}>{(toTag is null ? "" : ";tag=" + toTag)}\r\n" +
                $"Call-ID: {callId}\r\nCSeq: {cseq} {cseqMethod}\r\n" +
                $"Contact: <sip:{user}@{Local}>\r\n" +
                (sdp ? "Content-Type: application/sdp\r\n" : "") +
                $"Content-Length: {Encoding.ASCII.GetByteCount(body)}\r\n\r\n{body}";
        }

        public async Task SendOnlyAsync(string message) => await _socket.SendAsync(Encoding.ASCII.GetBytes(message), _edge);

        /// <summary>Sends and returns the first final response (or any response), or "" after 10 s.</summary>
        public async Task<string> SendAsync(string message, bool final)
        {
            await SendOnlyAsync(message);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                while (true)
                {
                    var received = await _socket.ReceiveAsync(timeout.Token);
                    var text = Encoding.ASCII.GetString(received.Buffer);
                    if (text.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && (!final || text[8] != '1'))
                    {
                        return text;
                    }
                    if (!text.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && text.StartsWith("BYE ", StringComparison.Ordinal))
                    {
                        // Not expected in these tests; shown in the failure.
                        return text;
                    }
                }
            }
            catch (OperationCanceledException)
            {
                return "";
            }
        }

        public void Dispose() => _socket.Dispose();
    }
}
