using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace CallState.Runtime.Rpc;

/// <summary>
/// Metrics of the cluster RPC (meter <c>CallState.Runtime</c>). Attributes are small closed sets (status, reason,
/// side); never an endpoint or a method id.
/// </summary>
public sealed class RpcMetrics : IDisposable
{
    public const string MeterName = RuntimeMetrics.MeterName;

    /// <summary>The ActivitySource of client and server spans.</summary>
    public const string ActivitySourceName = "CallState.Runtime.Rpc";

    internal static readonly ActivitySource ActivitySource = new(ActivitySourceName);

    private const string StatusKey = "callstate.rpc.status";
    private const string ReasonKey = "callstate.rpc.reason";
    private const string SideKey = "callstate.rpc.side";

    private static readonly KeyValuePair<string, object?>[] StatusTags =
    [
        .. new[] { "ok", "error", "deadline_exceeded", "unknown_method", "unavailable", "redirect" }.Select(s => new KeyValuePair<string, object?>(StatusKey, s)),
    ];

    private static readonly KeyValuePair<string, object?> OtherStatusTag = new(StatusKey, "other");

    private readonly bool _ownsMeter;
    private readonly Histogram<double> _clientDuration;
    private readonly Counter<long> _serverRequests;
    private readonly Counter<long> _framesRejected;
    private readonly UpDownCounter<long> _connections;

    /// <summary>Creates the instruments from <paramref name="meterFactory"/>, or on a private meter when null.</summary>
    public RpcMetrics(IMeterFactory? meterFactory)
    {
        _ownsMeter = meterFactory is null;
        Meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _clientDuration = Meter.CreateHistogram<double>(
            "callstate.rpc.client.duration",
            "s",
            "Time from sending a call to its reply or failure, by status (or timeout, cancelled, connection_failed).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] });
        _serverRequests = Meter.CreateCounter<long>("callstate.rpc.server.requests", "{request}", "Requests answered by the server, by status (cancelled: the caller gave up).");
        _framesRejected = Meter.CreateCounter<long>("callstate.rpc.frames.rejected", "{frame}", "Frames that closed their connection, by reason (oversized, malformed).");
        _connections = Meter.CreateUpDownCounter<long>("callstate.rpc.connections", "{connection}", "Open RPC connections, by side (client, server).");
    }

    internal Meter Meter { get; }

    internal static readonly KeyValuePair<string, object?> Timeout = new(StatusKey, "timeout");
    internal static readonly KeyValuePair<string, object?> Cancelled = new(StatusKey, "cancelled");
    internal static readonly KeyValuePair<string, object?> ConnectionFailed = new(StatusKey, "connection_failed");
    internal static readonly KeyValuePair<string, object?> ClientSide = new(SideKey, "client");
    internal static readonly KeyValuePair<string, object?> ServerSide = new(SideKey, "server");
    private static readonly KeyValuePair<string, object?> Oversized = new(ReasonKey, "oversized");
    private static readonly KeyValuePair<string, object?> Malformed = new(ReasonKey, "malformed");

    internal static KeyValuePair<string, object?> StatusTag(RpcStatus status) =>
        (int)status < StatusTags.Length ? StatusTags[(int)status] : OtherStatusTag;

    internal void ClientCall(KeyValuePair<string, object?> outcome, TimeSpan duration) => _clientDuration.Record(duration.TotalSeconds, outcome);

    internal void ServerRequest(KeyValuePair<string, object?> outcome) => _serverRequests.Add(1, outcome);

    internal void FrameRejected(RpcFrameError error) => _framesRejected.Add(1, error == RpcFrameError.Oversized ? Oversized : Malformed);

    internal void ConnectionOpened(KeyValuePair<string, object?> side) => _connections.Add(1, side);

    internal void ConnectionClosed(KeyValuePair<string, object?> side) => _connections.Add(-1, side);

    public void Dispose()
    {
        if (_ownsMeter)
        {
            Meter.Dispose();
        }
    }
}
