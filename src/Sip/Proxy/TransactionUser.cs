using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

/// <summary>A request the proxy core is about to forward, as its transaction user sees it.</summary>
internal readonly struct ProxyRequest
{
    public ProxyRequest(SipMessage message, in SipTarget source, in SipTarget route, bool routeConfigured, string? callerTag, bool spiral, bool stateless)
    {
        Message = message;
        Source = source;
        Route = route;
        RouteConfigured = routeConfigured;
        CallerTag = callerTag;
        Spiral = spiral;
        Stateless = stateless;
    }

    /// <summary>The request; valid only during <see cref="CallTracker.TryDecide"/>, or until the task of <see cref="CallTracker.DecideAsync"/> completes.</summary>
    public SipMessage Message { get; }

    public SipTarget Source { get; }

    /// <summary>Where routing (RFC 3261 16.4, 16.5) sends it.</summary>
    public SipTarget Route { get; }

    /// <summary><see cref="Route"/> is a configured destination (default upstream, a static next hop, a listed destination, a policy's).</summary>
    public bool RouteConfigured { get; }

    /// <summary>The caller's From tag our own Record-Route entry carried back in the Route set (decoded), or null.</summary>
    public string? CallerTag { get; }

    /// <summary>The request passed this edge before (one of its Via entries is ours): a spiral of a call, not a new one.</summary>
    public bool Spiral { get; }

    /// <summary>The ACK of a 2xx, forwarded without a transaction: a refusal drops it.</summary>
    public bool Stateless { get; }

    public ProxyRequest With(SipMessage message) => new(message, Source, Route, RouteConfigured, CallerTag, Spiral, Stateless);
}

/// <summary>Where a request goes, or how the proxy answers it instead.</summary>
internal sealed class ForwardDecision
{
    private ForwardDecision(SipTarget target, object? outcome, bool recordCallerTag, int status, string reason, string extraHeaders)
    {
        Target = target;
        Outcome = outcome;
        RecordCallerTag = recordCallerTag;
        Status = status;
        Reason = reason;
        ExtraHeaders = extraHeaders;
    }

    public bool Forwards => Status == 0;

    public SipTarget Target { get; }

    /// <summary>Handed back to <see cref="CallTracker.OnFinal"/> with the transaction's final status; null when nobody needs it.</summary>
    public object? Outcome { get; }

    /// <summary>Our Record-Route entry carries the caller's From tag (a call admitted here), so any edge can name the call later.</summary>
    public bool RecordCallerTag { get; }

    public int Status { get; }

    public string Reason { get; }

    /// <summary>Complete header lines (each ending CR LF) added to the answer.</summary>
    public string ExtraHeaders { get; }

    public static ForwardDecision Forward(in SipTarget target, object? outcome = null, bool recordCallerTag = false) =>
        new(target, outcome, recordCallerTag, 0, "", "");

    public static ForwardDecision Reject(int status, string reason, string extraHeaders = "") =>
        new(default, null, false, status, reason, extraHeaders);
}
