using System.Net;
using System.Text;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.Sip.Timers;
using CallState.Testing;

namespace CallState.Sip.Tests.Proxy;

/// <summary>
/// The proxy core's routing for TLS (RFC 3261 26.2), message by message with sends captured: which URIs mean TLS and
/// on which port, the Via and Record-Route it writes for TLS, and its TLS listener recognized as itself.
/// </summary>
public sealed class TlsRoutingTests : IDisposable
{
    private const int TlsPort = 5071;
    private static readonly IPEndPoint Caller = new(IPAddress.Parse("127.0.0.2"), 40000);
    private static readonly IPEndPoint Upstream = new(IPAddress.Parse("127.0.0.1"), 5090);

    private readonly TestPki _pki = new();
    private readonly FakeTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private readonly TimerWheel _wheel;
    private readonly Sender _sent = new();
    private readonly SipProxy _proxy;

    public TlsRoutingTests()
    {
        _wheel = new TimerWheel(_clock);
        var (certificate, key) = _pki.WritePem(_pki.Server(), "edge");
        _proxy = new SipProxy(new SipProxyOptions
        {
            Port = 5060,
            DefaultUpstream = Upstream.ToString(),
            AdvertisedHost = "192.0.2.80",
            NextHops = { ["carrier.example.test"] = "127.0.0.3:5081" },
            AllowedDestinations = ["127.0.0.1:5061", "127.0.0.1:5070"],
            Tls = new SipTlsOptions { Enabled = true, Port = TlsPort, CertificateFile = certificate, KeyFile = key },
        }, _sent, _wheel);
    }

    public void Dispose()
    {
        _proxy.Dispose();
        _wheel.Dispose();
        _pki.Dispose();
    }

    [Theory]
    [InlineData("sips:bob@127.0.0.1", 5061)]
    [InlineData("sips:bob@127.0.0.1;transport=tcp", 5061)]
    [InlineData("sip:bob@127.0.0.1;transport=tls", 5061)]
    [InlineData("sip:bob@127.0.0.1:5070;transport=TLS", 5070)]
    public void Sips_and_transport_tls_uris_go_over_tls_to_5061_unless_a_port_is_given(string uri, int port)
    {
        Receive(Request("OPTIONS", uri, "r1"), SipTransportKind.Udp);

        var (target, bytes) = _sent.Single();
        Assert.Equal(SipTransportKind.Tls, target.Transport);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, port), target.EndPoint);
        Assert.Null(target.ServerName);
        Assert.StartsWith($"Via: SIP/2.0/TLS 127.0.0.1:{TlsPort};branch=", Line(bytes, "Via:"), StringComparison.Ordinal);
    }

    [Fact]
    public void A_host_reached_through_next_hops_over_tls_is_the_name_its_certificate_must_carry()
    {
        Receive(Request("OPTIONS", "sip:bob@carrier.example.test;transport=tls", "r2"), SipTransportKind.Udp);

        var (target, _) = _sent.Single();
        Assert.Equal(SipTransportKind.Tls, target.Transport);
        Assert.Equal(IPEndPoint.Parse("127.0.0.3:5081"), target.EndPoint);
        Assert.Equal("carrier.example.test", target.ServerName);
    }

    [Fact]
    public void A_call_from_tls_goes_on_over_tcp_to_a_plain_next_hop_and_is_record_routed_for_both_sides()
    {
        Receive(Request("INVITE", "sip:bob@127.0.0.1:5060", "r3", body: "v=0\r\n"), SipTransportKind.Tls);

        var forwarded = _sent.All.Single(s => s.Target.EndPoint.Equals(Upstream));
        Assert.Equal(SipTransportKind.Tcp, forwarded.Target.Transport);
        Assert.StartsWith("Via: SIP/2.0/TCP 127.0.0.1:5060;branch=", Line(forwarded.Bytes, "Via:"), StringComparison.Ordinal);
        var text = Encoding.ASCII.GetString(forwarded.Bytes);
        Assert.Contains($"Record-Route: <sip:192.0.2.80:5060;lr;transport=tcp>\r\nRecord-Route: <sip:192.0.2.80:{TlsPort};lr;transport=tls>\r\n", text, StringComparison.Ordinal);
        // The 100 Trying goes back to the caller on its TLS source.
        Assert.Contains(_sent.All, s => s.Target.Transport == SipTransportKind.Tls && s.Target.EndPoint.Equals(Caller));
    }

    [Fact]
    public void A_route_naming_the_tls_listener_is_this_edge_and_is_popped()
    {
        Receive(Request("BYE", "sip:bob@127.0.0.1:5090", "r4", route: $"<sip:192.0.2.80:{TlsPort};lr;transport=tls>, <sip:192.0.2.80:5060;lr>"), SipTransportKind.Tls);

        var (target, bytes) = _sent.Single();
        Assert.Equal(Upstream, target.EndPoint);
        Assert.DoesNotContain("Route:", Encoding.ASCII.GetString(bytes), StringComparison.Ordinal);
    }

    [Fact]
    public void Options_for_the_tls_listener_is_answered_here()
    {
        Receive(Request("OPTIONS", $"sip:192.0.2.80:{TlsPort}", "r5"), SipTransportKind.Tls);

        var (target, bytes) = _sent.Single();
        Assert.Equal(SipTransportKind.Tls, target.Transport);
        Assert.StartsWith("SIP/2.0 200 ", Encoding.ASCII.GetString(bytes), StringComparison.Ordinal);
    }

    [Fact]
    public void A_sips_uri_naming_this_edge_goes_to_the_default_upstream_over_tls()
    {
        // The Request-URI names the edge's TLS listener, so the next hop is the (plain, configured) default upstream.
        Receive(Request("OPTIONS", $"sips:bob@192.0.2.80:{TlsPort}", "r6"), SipTransportKind.Tls);

        var (target, bytes) = _sent.Single();
        Assert.Equal(Upstream, target.EndPoint);
        Assert.Equal(SipTransportKind.Tls, target.Transport);
        Assert.StartsWith($"Via: SIP/2.0/TLS 127.0.0.1:{TlsPort};branch=", Line(bytes, "Via:"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("<sip:127.0.0.1:5070;lr>")]
    [InlineData("<sip:127.0.0.1:5070;lr;transport=tcp>")]
    [InlineData("<sip:127.0.0.1:5070;lr;transport=udp>")]
    public void A_sips_request_whose_route_is_a_plain_hop_is_refused_with_480_and_not_forwarded(string route)
    {
        Receive(Request("OPTIONS", "sips:bob@127.0.0.1:5061", "r7", route: route), SipTransportKind.Tls);

        var (target, bytes) = _sent.Single();
        Assert.Equal(Caller, target.EndPoint);
        Assert.StartsWith("SIP/2.0 480 Temporarily Unavailable (no TLS next hop for a sips URI)\r\n", Encoding.ASCII.GetString(bytes), StringComparison.Ordinal);
    }

    [Fact]
    public void A_sips_request_whose_route_asks_for_tls_is_forwarded_over_tls()
    {
        Receive(Request("OPTIONS", "sips:bob@127.0.0.1:5061", "r8", route: "<sip:127.0.0.1:5070;lr;transport=tls>"), SipTransportKind.Tls);

        var (target, bytes) = _sent.Single();
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 5070), target.EndPoint);
        Assert.Equal(SipTransportKind.Tls, target.Transport);
        Assert.StartsWith("OPTIONS sips:bob@127.0.0.1:5061 SIP/2.0\r\n", Encoding.ASCII.GetString(bytes), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("<sip:127.0.0.1:5070;lr>", false)]
    [InlineData("<sip:127.0.0.1:5070;lr;transport=tls>", true)]
    public void An_ack_with_a_sips_uri_goes_on_only_over_tls(string route, bool forwarded)
    {
        // The ACK of a 2xx is forwarded without a transaction, so nothing answers it: a plain hop drops it.
        Receive(Request("ACK", "sips:bob@127.0.0.1:5061", "r9", route: route), SipTransportKind.Tls);

        if (forwarded)
        {
            var (target, _) = _sent.Single();
            Assert.Equal(SipTransportKind.Tls, target.Transport);
        }
        else
        {
            Assert.Empty(_sent.All);
        }
    }

    private void Receive(string request, SipTransportKind transport)
    {
        using var message = new SipMessage();
        Assert.Equal(SipParseError.None, message.Parse(Encoding.ASCII.GetBytes(request)));
        _proxy.OnMessage(message, new SipTarget(transport, Caller));
    }

    private static string Request(string method, string uri, string callId, string? route = null, string body = "") =>
        $"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.2:40000;branch=z9hG4bK{callId}\r\n" +
        (route is null ? "" : $"Route: {route}\r\n") +
        $"Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a{callId}\r\nTo: <sip:bob@example.test>{(method is "BYE" or "ACK" ? ";tag=b" : "")}\r\n" +
        $"Call-ID: {callId}\r\nCSeq: 1 {method}\r\nContact: <sip:alice@127.0.0.2:40000;transport=tls>\r\n" +
        $"Content-Length: {body.Length}\r\n\r\n{body}";

    private static string Line(byte[] message, string name) =>
        Encoding.ASCII.GetString(message).Split("\r\n").First(l => l.StartsWith(name, StringComparison.Ordinal));

    private sealed class Sender : ISipSender
    {
        public List<(SipTarget Target, byte[] Bytes)> All { get; } = [];

        public (SipTarget Target, byte[] Bytes) Single()
        {
            lock (All)
            {
                return Assert.Single(All);
            }
        }

        public void Send(in SipTarget target, byte[] message, Action? onFailure = null)
        {
            lock (All)
            {
                All.Add((target, message));
            }
        }
    }
}
