using System.Diagnostics.Metrics;

namespace CallState.Sip.Transport;

/// <summary>
/// The TCP and TLS transports' connection counters on meter <c>CallState.Sip</c>, read from their totals when collected:
/// connections open by direction, refused by cap, closed by reason, and the bytes waiting to be written. Attributes are
/// the transport (<c>tcp</c>, <c>tls</c>) and a reason or direction, never a peer.
/// </summary>
public sealed class SipTcpTransportMetrics : IDisposable
{
    private readonly Meter _meter;
    private readonly (string Name, SipTcpTransport Transport)[] _transports;

    public SipTcpTransportMetrics(IMeterFactory? meterFactory, SipTcpTransport? tcp, SipTcpTransport? tls)
    {
        var transports = new List<(string, SipTcpTransport)>(2);
        if (tcp is not null)
        {
            transports.Add(("tcp", tcp));
        }
        if (tls is not null)
        {
            transports.Add(("tls", tls));
        }
        _transports = [.. transports];
        _meter = meterFactory?.Create("CallState.Sip") ?? new Meter("CallState.Sip");
        _meter.CreateObservableGauge("callstate.sip.connections.open", Open, "{connection}",
            "Open TCP and TLS connections, by transport and direction (inbound, outbound)");
        _meter.CreateObservableCounter("callstate.sip.connections.refused", Refused, "{connection}",
            "Connections refused by a cap, by transport and reason (inbound_limit, source_limit, outbound_limit)");
        _meter.CreateObservableCounter("callstate.sip.connections.closed", Closed, "{connection}",
            "Connections this side closed, by transport and reason (idle, message_timeout, send_timeout, send_queue_full, invalid_frame, oversized)");
        _meter.CreateObservableGauge("callstate.sip.send.queued", Queued, "By",
            "Bytes accepted for sending on TCP and TLS connections and not yet written, by transport");
    }

    private IEnumerable<Measurement<long>> Open()
    {
        foreach (var (name, transport) in _transports)
        {
            yield return Measure(transport.InboundConnectionCount, name, "callstate.direction", "inbound");
            yield return Measure(transport.OutboundConnectionCount, name, "callstate.direction", "outbound");
        }
    }

    private IEnumerable<Measurement<long>> Refused()
    {
        foreach (var (name, transport) in _transports)
        {
            yield return Measure(transport.ConnectionsRejected, name, "callstate.reason", "inbound_limit");
            yield return Measure(transport.ConnectionsRejectedPerSource, name, "callstate.reason", "source_limit");
            yield return Measure(transport.OutboundConnectionsRefused, name, "callstate.reason", "outbound_limit");
        }
    }

    private IEnumerable<Measurement<long>> Closed()
    {
        foreach (var (name, transport) in _transports)
        {
            yield return Measure(transport.IdleTimeouts, name, "callstate.reason", "idle");
            yield return Measure(transport.MessageTimeouts, name, "callstate.reason", "message_timeout");
            yield return Measure(transport.SendTimeouts, name, "callstate.reason", "send_timeout");
            yield return Measure(transport.SendQueueOverflows, name, "callstate.reason", "send_queue_full");
            yield return Measure(transport.InvalidFrames, name, "callstate.reason", "invalid_frame");
            yield return Measure(transport.OversizedMessages, name, "callstate.reason", "oversized");
        }
    }

    private IEnumerable<Measurement<long>> Queued()
    {
        foreach (var (name, transport) in _transports)
        {
            yield return new Measurement<long>(transport.QueuedSendBytes, new KeyValuePair<string, object?>("network.transport", "tcp"),
                new KeyValuePair<string, object?>("callstate.sip.transport", name));
        }
    }

    private static Measurement<long> Measure(long value, string transport, string key, string label) =>
        new(value, new KeyValuePair<string, object?>("network.transport", "tcp"), new KeyValuePair<string, object?>("callstate.sip.transport", transport),
            new KeyValuePair<string, object?>(key, label));

    public void Dispose() => _meter.Dispose();
}
