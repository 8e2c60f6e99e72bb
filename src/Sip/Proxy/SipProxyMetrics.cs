using System.Diagnostics;
using System.Diagnostics.Metrics;
using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

/// <summary>
/// The proxy core's counters (meter <c>CallState.Sip</c>), created from an <see cref="IMeterFactory"/> when the host
/// has one. Totals are also kept as plain fields so tests and the admin view can read them.
/// </summary>
public sealed class SipProxyMetrics : IDisposable
{
    public const string MeterName = "CallState.Sip";

    private readonly Meter _meter;
    private readonly Counter<long> _received;
    private readonly Counter<long> _dropped;
    private readonly Counter<long> _localResponses;
    private readonly Counter<long> _forwarded;
    private readonly Counter<long> _retransmissions;
    private readonly Counter<long> _timeouts;
    private readonly Counter<long> _handlerErrors;
    private readonly Counter<long> _shed;
    private readonly Counter<long> _drainRefused;
    private long _requestsForwarded;
    private long _responsesForwarded;
    private long _droppedTotal;
    private long _badRequests;
    private long _absorbed;
    private long _messageHandlerErrors;
    private long _timerHandlerErrors;

    public SipProxyMetrics(IMeterFactory? meterFactory = null)
    {
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _received = _meter.CreateCounter<long>("callstate.sip.messages.received", "{message}", "SIP messages received, by kind");
        _dropped = _meter.CreateCounter<long>("callstate.sip.messages.dropped", "{message}", "Messages dropped unanswered, by reason");
        _localResponses = _meter.CreateCounter<long>("callstate.sip.responses.generated", "{response}", "Responses the edge generated itself, by status code");
        _forwarded = _meter.CreateCounter<long>("callstate.sip.messages.forwarded", "{message}", "Requests and responses forwarded, by kind");
        _retransmissions = _meter.CreateCounter<long>("callstate.sip.retransmissions", "{message}", "Retransmissions absorbed (received) and sent, by direction");
        _timeouts = _meter.CreateCounter<long>("callstate.sip.transaction.timeouts", "{transaction}", "Client transactions that timed out, by timer");
        _handlerErrors = _meter.CreateCounter<long>("callstate.sip.handler.errors", "{error}",
            "Exceptions caught while handling a received message or running a transaction timer, by kind (message, timer)");
        _shed = _meter.CreateCounter<long>("callstate.sip.overload.shed", "{request}",
            "Requests refused by overload control or a source's budget, by reason and outcome (answered 503, or dropped)");
        _drainRefused = _meter.CreateCounter<long>("callstate.sip.drain.refused", "{request}",
            "Requests outside a dialog (new calls, probes) answered 503 while the edge drains before it stops");
    }

    public long RequestsForwarded => Interlocked.Read(ref _requestsForwarded);

    public long ResponsesForwarded => Interlocked.Read(ref _responsesForwarded);

    public long Dropped => Interlocked.Read(ref _droppedTotal);

    /// <summary>Requests answered 400 or 505 because they did not parse.</summary>
    public long BadRequests => Interlocked.Read(ref _badRequests);

    public long RetransmissionsAbsorbed => Interlocked.Read(ref _absorbed);

    /// <summary>Exceptions caught while handling a received message (see <see cref="SipHandlerError"/>).</summary>
    public long MessageHandlerErrors => Interlocked.Read(ref _messageHandlerErrors);

    /// <summary>Exceptions caught in a transaction timer's callback (see <see cref="SipHandlerError"/>).</summary>
    public long TimerHandlerErrors => Interlocked.Read(ref _timerHandlerErrors);

    /// <summary>Registers the counter of failed TLS handshakes (refused certificates, old protocol versions, timeouts).</summary>
    public void ObserveTlsHandshakeFailures(Func<long> count) =>
        _meter.CreateObservableCounter("callstate.sip.tls.handshake.failures", count, "{handshake}", "TLS handshakes that failed, inbound and outbound");

    /// <summary>Registers the gauge of open transactions.</summary>
    public void ObserveTransactions(Func<int> count) =>
        _meter.CreateObservableGauge("callstate.sip.transactions.active", count, "{transaction}", "Open server and client transactions");

    /// <summary>Registers the gauge of the server transactions waiting for their final response (the load new calls are shed by).</summary>
    public void ObserveInProgress(Func<int> count) =>
        _meter.CreateObservableGauge("callstate.sip.transactions.in_progress", count, "{transaction}",
            "Server transactions waiting for their final response");

    /// <summary>Registers the gauges of the overload state: decisions pending, thread-pool lag, sources tracked.</summary>
    public void ObserveOverload(SipOverloadControl overload)
    {
        ArgumentNullException.ThrowIfNull(overload);
        _meter.CreateObservableGauge("callstate.sip.overload.pending_decisions", () => overload.PendingDecisions, "{decision}",
            "Admissions and dialog look-ups waiting for the transaction user");
        _meter.CreateObservableGauge("callstate.sip.overload.decision_limit", () => overload.DecisionLimit, "{decision}",
            "How many decisions on requests outside a dialog may be pending now: the adaptive limit past which new calls are shed (reason decision_delay)");
        _meter.CreateObservableGauge("callstate.sip.overload.lag", () => overload.Lag.TotalSeconds, "s", "Thread-pool lag the probe measured last");
        _meter.CreateObservableGauge("callstate.sip.overload.sources", () => overload.Budgets.Count, "{source}", "Sources with a budget entry");
    }

    internal void DrainRefused() => _drainRefused.Add(1);

    internal void Shed(SipShedReason reason, bool answered) =>
        _shed.Add(1, new KeyValuePair<string, object?>("callstate.reason", SipOverloadControl.NameOf(reason)),
            new KeyValuePair<string, object?>("callstate.outcome", answered ? "answered" : "dropped"));

    /// <summary>A message received: its kind, method (a response's from its CSeq), a response's status class, and the transport.</summary>
    internal void Received(SipMessage message, SipTransportKind transport)
    {
        var tags = new TagList
        {
            { KindTag, message.IsRequest ? "request" : "response" },
            { MethodTag, MethodName(message.IsRequest ? message.Method : message.CSeqMethod) },
            { NetworkTransportTag, NetworkTransport(transport) },
            { TransportTag, TransportName(transport) },
        };
        if (!message.IsRequest)
        {
            tags.Add(StatusClassTag, StatusClass(message.StatusCode));
        }
        _received.Add(1, tags);
    }

    internal void Drop(string reason)
    {
        Interlocked.Increment(ref _droppedTotal);
        _dropped.Add(1, new KeyValuePair<string, object?>("callstate.reason", reason));
    }

    /// <summary>A response the edge generated itself, sent over <paramref name="transport"/>.</summary>
    internal void Generated(int status, SipTransportKind transport, bool badRequest = false)
    {
        if (badRequest)
        {
            Interlocked.Increment(ref _badRequests);
        }
        _localResponses.Add(1, new TagList
        {
            { StatusCodeTag, status },
            { StatusClassTag, StatusClass(status) },
            { NetworkTransportTag, NetworkTransport(transport) },
            { TransportTag, TransportName(transport) },
        });
    }

    /// <summary>A request forwarded to a next hop over <paramref name="transport"/>.</summary>
    internal void ForwardedRequest(SipMethod method, SipTransportKind transport)
    {
        Interlocked.Increment(ref _requestsForwarded);
        _forwarded.Add(1, new TagList
        {
            { KindTag, "request" },
            { MethodTag, MethodName(method) },
            { NetworkTransportTag, NetworkTransport(transport) },
            { TransportTag, TransportName(transport) },
        });
    }

    /// <summary>A response forwarded upstream over <paramref name="transport"/>.</summary>
    internal void ForwardedResponse(SipMethod method, int status, SipTransportKind transport)
    {
        Interlocked.Increment(ref _responsesForwarded);
        _forwarded.Add(1, new TagList
        {
            { KindTag, "response" },
            { MethodTag, MethodName(method) },
            { StatusClassTag, StatusClass(status) },
            { NetworkTransportTag, NetworkTransport(transport) },
            { TransportTag, TransportName(transport) },
        });
    }

    internal void Absorbed()
    {
        Interlocked.Increment(ref _absorbed);
        _retransmissions.Add(1, new KeyValuePair<string, object?>("callstate.direction", "received"));
    }

    internal void Retransmitted() => _retransmissions.Add(1, new KeyValuePair<string, object?>("callstate.direction", "sent"));

    internal void TimedOut(string timer) => _timeouts.Add(1, new KeyValuePair<string, object?>("callstate.sip.timer", timer));

    internal void HandlerError(SipHandlerErrorKind kind)
    {
        if (kind == SipHandlerErrorKind.Timer)
        {
            Interlocked.Increment(ref _timerHandlerErrors);
            _handlerErrors.Add(1, new KeyValuePair<string, object?>("callstate.error.kind", "timer"));
            return;
        }
        Interlocked.Increment(ref _messageHandlerErrors);
        _handlerErrors.Add(1, new KeyValuePair<string, object?>("callstate.error.kind", "message"));
    }

    /// <summary>Attribute names of the SIP instruments (docs/operations.md, "Metrics").</summary>
    public const string KindTag = "callstate.sip.message.kind";

    public const string MethodTag = "callstate.sip.method";

    public const string StatusClassTag = "callstate.sip.status_class";

    public const string StatusCodeTag = "callstate.sip.status_code";

    /// <summary>The SIP transport as a Via names it: udp, tcp or tls.</summary>
    public const string TransportTag = "callstate.sip.transport";

    /// <summary>The OpenTelemetry semantic conventions' <c>network.transport</c>: udp or tcp (TLS runs over TCP).</summary>
    public const string NetworkTransportTag = "network.transport";

    private static readonly string[] MethodNames =
        ["_OTHER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"];

    private static readonly string[] StatusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

    /// <summary>The method's token; an extension method is <c>_OTHER</c> (a token per unknown method would be unbounded).</summary>
    public static string MethodName(SipMethod method) => (int)method < MethodNames.Length ? MethodNames[(int)method] : MethodNames[0];

    public static string StatusClass(int status) => status is >= 100 and < 700 ? StatusClasses[(status / 100) - 1] : "_OTHER";

    public static string TransportName(SipTransportKind transport) => transport switch
    {
        SipTransportKind.Udp => "udp",
        SipTransportKind.Tcp => "tcp",
        _ => "tls",
    };

    public static string NetworkTransport(SipTransportKind transport) => transport == SipTransportKind.Udp ? "udp" : "tcp";

    public void Dispose() => _meter.Dispose();
}
