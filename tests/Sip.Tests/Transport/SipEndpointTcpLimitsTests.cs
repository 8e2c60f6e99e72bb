using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using CallState.Sip.Proxy;
using CallState.Testing;

namespace CallState.Sip.Tests.Transport;

/// <summary>The TCP limits as the edge configures them (<c>CallState:Sip:Tcp*</c>) and exports them on meter <c>CallState.Sip</c>.</summary>
public sealed class SipEndpointTcpLimitsTests
{
    /// <summary>Collects the endpoint's observable connection counters the way an exporter does, keyed "transport/reason".</summary>
    private static Dictionary<string, long> Collect(TestMeterFactory factory, string instrumentName)
    {
        var values = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (factory.Owns(instrument.Meter) && instrument.Name == instrumentName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string? transport = null, label = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "callstate.sip.transport")
                {
                    transport = (string?)tag.Value;
                }
                else if (tag.Key != "network.transport")
                {
                    label = (string?)tag.Value;
                }
            }
            values[$"{transport}/{label}"] = value;
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return values;
    }

    [Fact]
    public void Each_invalid_TCP_limit_is_named_in_the_validation_errors()
    {
        var options = new SipProxyOptions
        {
            TcpMaxOutboundConnections = 0,
            TcpMaxConnectionsPerSource = 0,
            TcpMessageTimeout = TimeSpan.Zero,
            TcpSendTimeout = TimeSpan.FromSeconds(-1),
            TcpMaxSendQueueBytes = 0,
            TcpIdleTimeout = TimeSpan.Zero,
        };

        var errors = options.Validate();

        Assert.Equal(6, errors.Count);
        foreach (var field in new[]
        {
            nameof(SipProxyOptions.TcpMaxOutboundConnections), nameof(SipProxyOptions.TcpMaxConnectionsPerSource), nameof(SipProxyOptions.TcpMessageTimeout),
            nameof(SipProxyOptions.TcpSendTimeout), nameof(SipProxyOptions.TcpMaxSendQueueBytes), nameof(SipProxyOptions.TcpIdleTimeout),
        })
        {
            Assert.Single(errors, e => e.StartsWith($"CallState:Sip:{field}: ", StringComparison.Ordinal));
        }
        Assert.Empty(new SipProxyOptions { TcpIdleTimeout = Timeout.InfiniteTimeSpan }.Validate());
    }

    [Fact]
    public async Task The_endpoint_applies_the_per_source_cap_and_message_timeout_and_exports_each_closure_by_reason()
    {
        using var factory = new TestMeterFactory();
        var port = TestPorts.FreeUdpAndTcp();
        await using var endpoint = new SipEndpoint(
            new SipProxyOptions
            {
                ListenAddress = "127.0.0.1",
                Port = port,
                Udp = false,
                TcpMaxConnectionsPerSource = 1,
                TcpMessageTimeout = TimeSpan.FromMilliseconds(500),
            },
            meterFactory: factory);
        endpoint.Start();
        var tcp = endpoint.Tcp!;
        var edge = new IPEndPoint(IPAddress.Loopback, port);

        using var first = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await first.ConnectAsync(edge).WaitAsync(Loopback.Timeout);
        await Loopback.WaitUntilAsync(() => tcp.InboundConnectionCount == 1, "the first connection is open");
        using var second = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await second.ConnectAsync(edge).WaitAsync(Loopback.Timeout);
        await Loopback.WaitUntilAsync(() => tcp.ConnectionsRejectedPerSource == 1, "the second connection from the same source is refused");

        // The start of a request that never completes: closed at the message timeout, not at the two-minute idle one.
        await first.SendAsync("OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP"u8.ToArray());
        await Loopback.WaitUntilAsync(() => tcp.MessageTimeouts == 1 && tcp.ConnectionCount == 0, "the unfinished message's connection is closed");

        var refused = Collect(factory, "callstate.sip.connections.refused");
        Assert.Equal(1, refused["tcp/source_limit"]);
        Assert.Equal(0, refused["tcp/inbound_limit"]);
        Assert.Equal(0, refused["tcp/outbound_limit"]);
        var closed = Collect(factory, "callstate.sip.connections.closed");
        Assert.Equal(1, closed["tcp/message_timeout"]);
        Assert.Equal(0, closed["tcp/idle"]);
        Assert.Equal(0, closed["tcp/send_queue_full"]);
        Assert.Equal(0, Collect(factory, "callstate.sip.connections.open")["tcp/inbound"]);
        Assert.False(refused.Keys.Any(k => k.StartsWith("tls/", StringComparison.Ordinal)), "no TLS listener, no TLS series");
    }
}
