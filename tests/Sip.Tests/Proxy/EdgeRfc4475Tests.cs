using System.Net;
using System.Text;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.Sip.Tests.Messages;

namespace CallState.Sip.Tests.Proxy;

/// <summary>A running SIP endpoint on loopback with a UDP next hop, shared by the RFC 4475 tests.</summary>
public sealed class RunningEdge : IAsyncLifetime, IAsyncDisposable
{
    internal UdpPeer Upstream { get; } = new();

    internal UdpPeer Client { get; } = new();

    public SipEndpoint Endpoint { get; private set; } = null!;

    public IPEndPoint Address { get; private set; } = null!;

    public Task InitializeAsync()
    {
        var port = CallState.Testing.TestPorts.FreeUdpAndTcp();
        Endpoint = new SipEndpoint(new SipProxyOptions
        {
            ListenAddress = "127.0.0.1",
            Port = port,
            DefaultUpstream = Upstream.EndPoint.ToString(),

            // mpart01's Route names 127.0.0.1:5080: a destination this edge must be configured to send to.
            AllowedDestinations = ["127.0.0.1:5080"],
            SymmetricResponses = true,

            // One receive loop handles datagrams in the order they arrive, so a later message's outcome shows that an
            // earlier one's is complete (see EdgeRfc4475Tests.AssertQuiet).
            UdpReceiveLoops = 1,
        });
        Endpoint.Start();
        Address = new IPEndPoint(IPAddress.Loopback, port);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await Endpoint.DisposeAsync();
        Upstream.Dispose();
        Client.Dispose();
    }

    async ValueTask IAsyncDisposable.DisposeAsync() => await DisposeAsync();
}

/// <summary>
/// Each RFC 4475 message sent over UDP to a running edge, asserting the outcome MANIFEST.md lists for a proxy:
/// forwarded to the next hop, answered with the listed status (and never forwarded), or dropped (responses).
/// Each file gets a fresh edge: several files share a branch and sent-by, which is one transaction to a proxy.
/// </summary>
public sealed class EdgeRfc4475Tests
{
    private static readonly Dictionary<string, int> Answers = new()
    {
        ["badinv01"] = 400, ["clerr"] = 400, ["ncl"] = 400, ["scalar02"] = 400, ["quotbal"] = 400, ["ltgtruri"] = 400,
        ["lwsruri"] = 400, ["lwsstart"] = 400, ["trws"] = 400, ["escruri"] = 400, ["badaspec"] = 400, ["baddn"] = 400,
        ["badvers"] = 505, ["mismatch01"] = 400, ["mismatch02"] = 400, ["insuf"] = 400, ["multi01"] = 400, ["mcl01"] = 400,
        ["unkscm"] = 416, ["novelsc"] = 416, ["bext01"] = 420,

        // RFC 3261 16.3 lets a proxy answer an OPTIONS whose Max-Forwards is 0 instead of sending 483.
        ["zeromf"] = 200,
    };

    private static readonly HashSet<string> Responses = ["unreason", "noreason", "scalarlg", "bigcode", "bcast"];

    public static TheoryData<string> Files() => Rfc4475ParserTests.Files();

    [Theory]
    [MemberData(nameof(Files))]
    public async Task Edge_gives_the_manifest_outcome_over_udp(string name)
    {
        await using var edge = new RunningEdge();
        await edge.InitializeAsync();
        var bytes = TortureCorpus.Read(name);
        var marker = TortureCorpus.Marker(bytes);
        edge.Client.Send(bytes, edge.Address);

        if (Responses.Contains(name))
        {
            AssertQuiet(edge, marker, toClient: true);
        }
        else if (Answers.TryGetValue(name, out var status))
        {
            // The answer copies the request's fields, so it may be as malformed as they are: only its status line is read.
            using var answer = ExpectFinal(edge.Client, marker, name);
            Assert.Equal(status, answer.StatusCode);
            AssertQuiet(edge, marker, toClient: false);
            if (name == "bext01")
            {
                var unsupported = answer.Fields.ToArray().Single(f => Encoding.ASCII.GetString(answer[f.Name]) == "Unsupported");
                Assert.Equal("noProxiesSupportThis, norDoAnyProxiesSupportThis", Encoding.ASCII.GetString(answer[unsupported.Value]));
            }
            if (status == 400)
            {
                Assert.StartsWith("Bad Request (", Encoding.ASCII.GetString(answer[answer.ReasonPhrase]), StringComparison.Ordinal);
            }
        }
        else
        {
            // mpart01 carries a Route to 127.0.0.1:5080, which a proxy follows instead of its default next hop.
            using var routeTarget = name == "mpart01" ? new UdpPeer(5080) : null;
            using var forwarded = (routeTarget ?? edge.Upstream).Expect(marker, what: name + " forwarded");
            Assert.True(forwarded.IsRequest);
            Assert.True(forwarded.TopVia.HasMagicCookie(forwarded.Span));
            Assert.Equal(edge.Address.Port, forwarded.TopVia.Port);
            using var original = new SipMessage();
            original.Parse(bytes);
            Assert.Equal(original.ViaCount + 1, forwarded.ViaCount);
            Assert.Equal(original.MaxForwards < 0 ? 70 : original.MaxForwards - 1, forwarded.MaxForwards);
            Assert.Equal(original[original.Body].ToArray(), forwarded[forwarded.Body].ToArray());
            if (original.Method == SipMethod.Invite)
            {
                using var trying = edge.Client.Expect(marker, what: name + " 100 Trying");
                Assert.Equal(100, trying.StatusCode);
            }
        }
    }

    [Fact]
    public async Task Options_to_the_edge_itself_is_answered_200_for_health_checks()
    {
        await using var edge = new RunningEdge();
        await edge.InitializeAsync();
        var callId = "health-" + Guid.NewGuid().ToString("N");
        edge.Client.Send(
            $"OPTIONS sip:{edge.Address} SIP/2.0\r\nVia: SIP/2.0/UDP {edge.Client.EndPoint};branch=z9hG4bK{callId}\r\n" +
            $"From: <sip:lb@127.0.0.1>;tag=1\r\nTo: <sip:{edge.Address}>\r\nCall-ID: {callId}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            edge.Address);
        using var answer = edge.Client.Expect(callId);
        Assert.Equal(200, answer.StatusCode);
        AssertQuiet(edge, callId, toClient: false);
    }

    /// <summary>
    /// Nothing containing <paramref name="marker"/> was forwarded to the next hop (nor, with <paramref name="toClient"/>,
    /// answered to the client): decided by barriers, not by a quiet time. The edge handles one datagram at a time in
    /// order, so once its answers to two later probes have arrived (an OPTIONS for a user, forwarded to the next hop,
    /// and an OPTIONS for the edge itself, answered to the client), whatever it did with the earlier message is in.
    /// </summary>
    private static void AssertQuiet(RunningEdge edge, string marker, bool toClient)
    {
        var probe = "probe-" + Guid.NewGuid().ToString("N");
        edge.Client.Send(Options(edge, $"sip:probe@{edge.Address}", probe + "-hop"), edge.Address);
        edge.Client.Send(Options(edge, $"sip:{edge.Address}", probe + "-self"), edge.Address);
        var upstream = edge.Upstream.ReceiveThrough(probe + "-hop", TimeSpan.FromSeconds(5));
        Assert.DoesNotContain(upstream, d => Contains(d, marker));
        var client = edge.Client.ReceiveThrough(probe + "-self", TimeSpan.FromSeconds(5));
        if (toClient)
        {
            Assert.DoesNotContain(client, d => Contains(d, marker));
        }
    }

    private static string Options(RunningEdge edge, string uri, string callId) =>
        $"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {edge.Client.EndPoint};branch=z9hG4bK{callId}\r\n" +
        $"From: <sip:lb@127.0.0.1>;tag=1\r\nTo: <{uri}>\r\nCall-ID: {callId}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    private static bool Contains(byte[] datagram, string marker) => datagram.AsSpan().IndexOf(Encoding.UTF8.GetBytes(marker)) >= 0;

    private static SipMessage ExpectFinal(UdpPeer peer, string marker, string what)
    {
        while (true)
        {
            var datagram = peer.Receive(marker, TimeSpan.FromSeconds(5));
            Assert.True(datagram is not null, $"no answer to {what}");
            var message = new SipMessage();
            message.Parse(datagram);
            Assert.False(message.IsRequest);
            if (message.StatusCode >= 200)
            {
                Assert.True(message.HeadersReadable);
                return message;
            }
            message.Dispose();
        }
    }
}
