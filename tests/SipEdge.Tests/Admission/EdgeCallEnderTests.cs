using System.Net;
using System.Net.Sockets;
using System.Text;
using CallState.Grains;
using CallState.Sip.Proxy;
using CallState.SipEdge.Admission;
using CallState.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.SipEdge.Tests.Admission;

/// <summary>
/// The edge's side of an operator's end (docs/architecture.md, "Ending a call from the admin API"): the BYEs stored with a
/// call go out of a real SIP endpoint to each party at once, each with this edge's Via; an edge without listeners or a
/// stored target it cannot read refuses, so the silo tries another edge.
/// </summary>
public sealed class EdgeCallEnderTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Stored_BYEs_are_sent_from_the_endpoint_to_each_party_with_this_edges_Via()
    {
        using var caller = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        using var callee = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var port = TestPorts.FreeUdpAndTcp();
        await using var endpoint = new SipEndpoint(new SipProxyOptions { ListenAddress = "127.0.0.1", Port = port, UdpReceiveLoops = 1 });
        endpoint.Start();
        var ender = new EdgeCallEnder(() => endpoint.Proxy, NullLogger<EdgeCallEnder>.Instance);

        var teardown = new DialogTeardown(
            Bye($"udp:{callee.Client.LocalEndPoint}", "sip:bob@127.0.0.1", "<sip:alice@127.0.0.1>;tag=a1", "<sip:bob@127.0.0.1>;tag=b1", 100_001),
            Bye($"udp:{caller.Client.LocalEndPoint}", "sip:alice@127.0.0.1", "<sip:bob@127.0.0.1>;tag=b1", "<sip:alice@127.0.0.1>;tag=a1", int.MaxValue));
        await ender.SendTeardownAsync("ce1;a1", teardown);

        var toCallee = await ReceiveAsync(callee);
        var toCaller = await ReceiveAsync(caller);
        Assert.StartsWith("BYE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP ", toCallee, StringComparison.Ordinal);
        Assert.Contains($":{port};branch=z9hG4bK", toCallee, StringComparison.Ordinal);
        Assert.Contains("CSeq: 100001 BYE\r\n", toCallee, StringComparison.Ordinal);
        Assert.StartsWith("BYE sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP ", toCaller, StringComparison.Ordinal);
        Assert.Contains("From: <sip:bob@127.0.0.1>;tag=b1\r\n", toCaller, StringComparison.Ordinal);
        Assert.Contains("CSeq: 2147483647 BYE\r\n", toCaller, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_edge_without_listeners_or_with_an_unreadable_target_refuses()
    {
        var good = Bye("udp:127.0.0.1:5060", "sip:bob@127.0.0.1", "<sip:a@h>;tag=a", "<sip:b@h>;tag=b", 1);
        var stopped = new EdgeCallEnder(() => null, NullLogger<EdgeCallEnder>.Instance);
        await Assert.ThrowsAsync<InvalidOperationException>(() => stopped.SendTeardownAsync("k;a", new DialogTeardown(good, good)));

        var port = TestPorts.FreeUdpAndTcp();
        await using var endpoint = new SipEndpoint(new SipProxyOptions { ListenAddress = "127.0.0.1", Port = port, UdpReceiveLoops = 1 });
        endpoint.Start();
        var ender = new EdgeCallEnder(() => endpoint.Proxy, NullLogger<EdgeCallEnder>.Instance);
        await Assert.ThrowsAsync<ArgumentException>(() => ender.SendTeardownAsync("k;a", new DialogTeardown(good, good with { Target = "udp:nowhere" })));
    }

    private static StoredBye Bye(string target, string uri, string from, string to, long cseq) => new(
        target,
        Encoding.ASCII.GetBytes($"BYE {uri} SIP/2.0\r\n"),
        Encoding.ASCII.GetBytes($"Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: ce1\r\nCSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n"));

    private static async Task<string> ReceiveAsync(UdpClient socket)
    {
        using var cts = new CancellationTokenSource(Wait);
        var received = await socket.ReceiveAsync(cts.Token);
        return Encoding.ASCII.GetString(received.Buffer);
    }
}
