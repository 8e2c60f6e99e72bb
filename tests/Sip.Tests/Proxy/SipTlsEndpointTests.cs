using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.Sip.Tests.Transport;
using CallState.Sip.Transport;
using CallState.Testing;

namespace CallState.Sip.Tests.Proxy;

/// <summary>
/// A running SIP endpoint with its TLS listener (RFC 3261 26.2) on loopback: requests over TLS reach the proxy as TLS
/// with the peer's certificate, answers go back on the connection, and TLS next hops are reached and checked.
/// </summary>
public sealed class SipTlsEndpointTests : IAsyncDisposable
{
    private readonly TestPki _pki = new();
    private readonly UdpPeer _caller = new();
    private readonly UdpPeer _upstream = new();
    private SipEndpoint? _endpoint;

    public async ValueTask DisposeAsync()
    {
        if (_endpoint is not null)
        {
            await _endpoint.DisposeAsync();
        }
        _caller.Dispose();
        _upstream.Dispose();
        _pki.Dispose();
    }

    private SipProxyOptions Options(SipClientCertificateMode clientCertificates = SipClientCertificateMode.None)
    {
        var (certificate, key) = _pki.WritePem(_pki.Server(), "edge");
        var ca = _pki.WriteCa(_pki.Ca, "ca");
        return new SipProxyOptions
        {
            ListenAddress = "127.0.0.1",
            Port = CallState.Testing.TestPorts.FreeUdpAndTcp(),
            DefaultUpstream = _upstream.EndPoint.ToString(),
            SymmetricResponses = true,
            Tls = new SipTlsOptions
            {
                Enabled = true,
                Port = CallState.Testing.TestPorts.FreeUdpAndTcp(),
                CertificateFile = certificate,
                KeyFile = key,
                ClientCertificates = clientCertificates,
                TrustedClientCas = ca,
                ServerCaFile = ca,
            },
        };
    }

    private SipEndpoint Start(SipProxyOptions options, ICallPolicy? policy = null)
    {
        _endpoint = new SipEndpoint(options, policy: policy);
        _endpoint.Start();
        return _endpoint;
    }

    [Fact]
    public async Task Invite_over_tls_reaches_the_policy_as_tls_with_the_client_certificate_and_the_answers_return_on_the_connection()
    {
        var policy = new RefusingPolicy();
        var options = Options(SipClientCertificateMode.Required);
        var endpoint = Start(options, policy);
        var trunk = _pki.Client("carrier.example.test");
        await using var client = await TlsTestClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, options.Tls.Port), _pki.Ca, trunk);

        await client.SendAsync(Request("INVITE", $"sip:bob@127.0.0.1:{options.Port}", "tls-invite", "v=0\r\n"));

        Assert.StartsWith("SIP/2.0 100 ", await client.ReadMessageAsync(), StringComparison.Ordinal);
        var refusal = await client.ReadMessageAsync();
        Assert.StartsWith("SIP/2.0 403 Trunk not allowed", refusal, StringComparison.Ordinal);
        Assert.Contains("Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls-invite", refusal, StringComparison.Ordinal);
        var source = await policy.Source.Task.WaitAsync(Loopback.Timeout);
        Assert.Equal(SipTransportKind.Tls, source.Transport);
        Assert.True(source.IsReliable);
        Assert.Equal(trunk.GetCertHashString(HashAlgorithmName.SHA256), source.Connection!.RemoteCertificateSha256);
        Assert.Equal(["carrier.example.test"], source.Connection.RemoteCertificateDnsNames);

        // OPTIONS naming the TLS listener is the edge's to answer, on the same connection.
        await client.SendAsync(Request("OPTIONS", $"sip:127.0.0.1:{options.Tls.Port}", "tls-options"));
        Assert.StartsWith("SIP/2.0 200 ", await client.ReadMessageAsync(), StringComparison.Ordinal);
        Assert.Equal(1, endpoint.Tls!.ConnectionsAccepted);
        Assert.Null(_upstream.Receive("tls-invite", TimeSpan.FromMilliseconds(200)));
    }

    [Fact]
    public async Task A_request_for_a_transport_tls_uri_goes_to_the_next_hop_over_tls_with_a_tls_via_and_a_record_route_per_side()
    {
        var options = Options();
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var nextHopPort = ((IPEndPoint)listener.LocalEndpoint).Port;
        options.AllowedDestinations.Add($"127.0.0.1:{nextHopPort}");
        Start(options);
        var accepting = TlsTestClient.AcceptAsync(listener, _pki.Server("carrier.example.test"));

        _caller.Send(Request("INVITE", $"sip:bob@127.0.0.1:{nextHopPort};transport=tls", "to-tls", "v=0\r\n", udpCaller: _caller.EndPoint), new IPEndPoint(IPAddress.Loopback, options.Port));
        await using var nextHop = await accepting;
        var forwarded = await nextHop.ReadMessageAsync();

        Assert.StartsWith($"INVITE sip:bob@127.0.0.1:{nextHopPort};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{options.Tls.Port};branch=z9hG4bK", forwarded, StringComparison.Ordinal);
        Assert.Contains($"Record-Route: <sip:127.0.0.1:{options.Tls.Port};lr;transport=tls>\r\nRecord-Route: <sip:127.0.0.1:{options.Port};lr>\r\n", forwarded, StringComparison.Ordinal);

        await nextHop.SendAsync(Response(forwarded, "486 Busy Here"));
        var busy = _caller.Expect("486 Busy Here", what: "the next hop's answer over TLS, forwarded to the UDP caller");
        Assert.Equal(486, busy.StatusCode);
    }

    [Fact]
    public async Task A_tls_next_hop_with_an_untrusted_certificate_fails_its_branch_with_503()
    {
        var options = Options();
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var nextHopPort = ((IPEndPoint)listener.LocalEndpoint).Port;
        options.AllowedDestinations.Add($"127.0.0.1:{nextHopPort}");
        var endpoint = Start(options);
        var accepting = TlsTestClient.AcceptAsync(listener, _pki.Server("impostor.example.test", issuer: _pki.OtherCa));

        _caller.Send(Request("INVITE", $"sip:bob@127.0.0.1:{nextHopPort};transport=tls", "untrusted-hop", "v=0\r\n", udpCaller: _caller.EndPoint), new IPEndPoint(IPAddress.Loopback, options.Port));

        var answer = _caller.Expect("SIP/2.0 503", what: "the refused TLS next hop fails the branch");
        Assert.Equal(503, answer.StatusCode);
        Assert.Equal(1, endpoint.Tls!.TlsHandshakeFailures);
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using var refused = await accepting;
            await refused.ReadMessageAsync();
        });
    }

    private static string Request(string method, string uri, string callId, string body = "", IPEndPoint? udpCaller = null)
    {
        var via = udpCaller is null ? "SIP/2.0/TLS 127.0.0.1:5999" : $"SIP/2.0/UDP {udpCaller}";
        return $"{method} {uri} SIP/2.0\r\nVia: {via};branch=z9hG4bK{callId}\r\nMax-Forwards: 70\r\n" +
            $"From: <sip:alice@example.test>;tag=a-{callId}\r\nTo: <sip:bob@example.test>\r\nCall-ID: {callId}\r\nCSeq: 1 {method}\r\n" +
            $"Contact: <sip:alice@127.0.0.1:5999;transport=tls>\r\nContent-Length: {Encoding.ASCII.GetByteCount(body)}\r\n\r\n{body}";
    }

    /// <summary>A final response to <paramref name="request"/>: its Via, From, Call-ID and CSeq, To with a tag.</summary>
    private static string Response(string request, string status)
    {
        var response = new StringBuilder($"SIP/2.0 {status}\r\n");
        foreach (var line in request.Split("\r\n"))
        {
            if (line.StartsWith("Via:", StringComparison.Ordinal) || line.StartsWith("From:", StringComparison.Ordinal)
                || line.StartsWith("Call-ID:", StringComparison.Ordinal) || line.StartsWith("CSeq:", StringComparison.Ordinal))
            {
                response.Append(line).Append("\r\n");
            }
            else if (line.StartsWith("To:", StringComparison.Ordinal))
            {
                response.Append(line).Append(";tag=callee\r\n");
            }
        }
        return response.Append("Content-Length: 0\r\n\r\n").ToString();
    }

    /// <summary>Refuses every call with 403 and keeps the source of the first.</summary>
    private sealed class RefusingPolicy : ICallPolicy
    {
        public TaskCompletionSource<SipTarget> Source { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ValueTask<CallDecision> AdmitAsync(SipMessage invite, SipTarget source, SipTarget route, InviteOrigin origin, CancellationToken cancellationToken)
        {
            Source.TrySetResult(source);
            return ValueTask.FromResult(CallDecision.Reject(403, "Trunk not allowed"));
        }

        public void OnAnswered(SipCallId sipCall, DialogAnswer answer)
        {
        }

        public void OnFailed(SipCallId sipCall, int status)
        {
        }

        public void OnBye(SipCallId sipCall)
        {
        }

        public void OnRefresh(SipCallId sipCall)
        {
        }

        public ValueTask<DialogRecord?> FindDialogAsync(SipCallId sipCall, CancellationToken cancellationToken) => ValueTask.FromResult<DialogRecord?>(null);
    }
}
