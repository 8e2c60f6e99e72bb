using System.Net;
using System.Net.Sockets;
using System.Text;
using CallState.Cluster.IntegrationTests.Infrastructure;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// An edge whose only gateway is a port nothing listens on: it keeps trying, is not ready, and answers INVITEs 503 with
/// Retry-After and cause 42 (fail closed), or lets the call go on (fail open).
/// </summary>
[Collection(LoadTests.Name)]
public sealed class SiloUnavailableTests
{
    [Fact]
    public async Task With_no_silo_the_edge_fails_closed_with_503_retry_after_and_cause_42()
    {
        using var upstream = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        await using var edge = await StartEdgeAsync(upstream, failOpen: false);
        using var caller = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var final = await CallAsync(caller, edge, "closed-1");
        Assert.StartsWith("SIP/2.0 503 Service Unavailable", final, StringComparison.Ordinal);
        Assert.Contains("Retry-After: 5", final, StringComparison.Ordinal);
        Assert.Contains("Reason: Q.850;cause=42", final, StringComparison.Ordinal);
        Assert.False(await ReceivesAsync(upstream, "closed-1", TimeSpan.FromMilliseconds(500)));
        Assert.True(await edge.OutputContainsAsync("refused with 503"), edge.Output);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, await edge.ReadinessAsync());
        Assert.False(edge.HasExited, edge.Output);
    }

    [Fact]
    public async Task With_fail_open_the_call_goes_on_and_the_edge_logs_it()
    {
        using var upstream = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        await using var edge = await StartEdgeAsync(upstream, failOpen: true);
        using var caller = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        await SendInviteAsync(caller, edge, "open-1");
        Assert.True(await ReceivesAsync(upstream, "open-1", TimeSpan.FromSeconds(10)), "the INVITE never reached the next hop");
        Assert.True(await edge.OutputContainsAsync("let through unchecked"), edge.Output);
    }

    private static async Task<SipEdgeProcess> StartEdgeAsync(UdpClient upstream, bool failOpen)
    {
        var noGateway = SipEdgeProcess.FreeUdpAndTcpPort();
        var edge = SipEdgeProcess.Start([
            $"--CallState:Orleans:Gateways:0=127.0.0.1:{noGateway}",
            $"--CallState:Admission:FailOpen={failOpen}",
            "--CallState:Admission:LocalDomains:0=127.0.0.1",
            "--CallState:Admission:Routes:0:Prefix=",
            $"--CallState:Admission:Routes:0:Upstream={upstream.Client.LocalEndPoint}",
            "--CallState:Limits:DefaultUser:Total=5",
            "--Logging:LogLevel:CallState=Information",
        ]);

        // Not ready (no gateway answers), but the SIP listeners are up.
        if (!await edge.OutputContainsAsync("SIP listening on", TimeSpan.FromSeconds(30)))
        {
            await edge.DisposeAsync();
            throw new TimeoutException("the edge never listened:\n" + edge.Output);
        }

        return edge;
    }

    private static async Task SendInviteAsync(UdpClient caller, SipEdgeProcess edge, string callId)
    {
        var local = (IPEndPoint)caller.Client.LocalEndPoint!;
        var invite = $"INVITE sip:bob@127.0.0.1:{edge.SipPort} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{callId}\r\n" +
            $"From: <sip:alice@127.0.0.1>;tag=a{callId}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {callId}\r\nCSeq: 1 INVITE\r\n" +
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        var bytes = Encoding.ASCII.GetBytes(invite);
        await caller.SendAsync(bytes, bytes.Length, new IPEndPoint(IPAddress.Loopback, edge.SipPort));
    }

    private static async Task<string> CallAsync(UdpClient caller, SipEdgeProcess edge, string callId)
    {
        await SendInviteAsync(caller, edge, callId);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (true)
        {
            var text = Encoding.ASCII.GetString((await caller.ReceiveAsync(timeout.Token)).Buffer);
            if (!text.StartsWith("SIP/2.0 100", StringComparison.Ordinal))
            {
                return text;
            }
        }
    }

    private static async Task<bool> ReceivesAsync(UdpClient peer, string marker, TimeSpan within)
    {
        using var timeout = new CancellationTokenSource(within);
        try
        {
            while (true)
            {
                var text = Encoding.ASCII.GetString((await peer.ReceiveAsync(timeout.Token)).Buffer);
                if (text.Contains(marker, StringComparison.Ordinal))
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
