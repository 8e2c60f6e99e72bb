using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

/// <summary>What the call policy decided for an initial INVITE.</summary>
public sealed class CallDecision
{
    private CallDecision(bool admitted, int status, string reasonPhrase, string extraHeaders, SipTarget? nextHop)
    {
        Admitted = admitted;
        Status = status;
        ReasonPhrase = reasonPhrase;
        ExtraHeaders = extraHeaders;
        NextHop = nextHop;
    }

    /// <summary>Forward the INVITE (to the proxy's own route).</summary>
    public static CallDecision Admit { get; } = new(true, 0, "", "", null);

    public bool Admitted { get; }

    /// <summary>The final status a rejected INVITE is answered with.</summary>
    public int Status { get; }

    public string ReasonPhrase { get; }

    /// <summary>Complete header lines (each ending in CR LF) added to the rejection, such as <c>Reason</c> and <c>Retry-After</c>.</summary>
    public string ExtraHeaders { get; }

    /// <summary>Where an admitted call goes instead of the proxy's own route (a trunk's next hop), or null.</summary>
    public SipTarget? NextHop { get; }

    /// <summary>Forward the INVITE to <paramref name="nextHop"/>.</summary>
    public static CallDecision AdmitTo(SipTarget nextHop) => new(true, 0, "", "", nextHop);

    /// <summary>Answer the INVITE with a final response; it never reaches a next hop.</summary>
    public static CallDecision Reject(int status, string reasonPhrase, string extraHeaders = "")
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(status, 300);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(status, 699);
        return new(false, status, reasonPhrase, extraHeaders, null);
    }
}

/// <summary>The identity of a call as any edge sees it: Call-ID and the caller's From tag.</summary>
public readonly record struct SipCallId(string CallId, string CallerTag);

/// <summary>
/// The proxy's transaction user for calls: decides on each initial INVITE before it is forwarded, and hears how
/// each call it admitted ends. Callbacks other than <see cref="AdmitAsync"/> run on the proxy's threads and must
/// return quickly (queue the work).
/// </summary>
public interface ICallPolicy
{
    /// <summary>
    /// Decides on an initial INVITE (no To tag) that passed validation. <paramref name="invite"/> is a private copy
    /// the policy may keep until the task completes. <paramref name="route"/> is where the proxy would send it.
    /// </summary>
    ValueTask<CallDecision> AdmitAsync(SipMessage invite, SipTarget source, SipTarget route, CancellationToken cancellationToken);

    /// <summary>An admitted INVITE got its first 2xx.</summary>
    void OnAnswered(SipCallId sipCall);

    /// <summary>An admitted INVITE ended without a 2xx: a final non-2xx from the next hop, CANCEL/487, timeout or transport error.</summary>
    void OnFailed(SipCallId sipCall, int status);

    /// <summary>A BYE of the call passed through this edge (from either side).</summary>
    void OnBye(SipCallId sipCall);

    /// <summary>An in-dialog refresh (re-INVITE, UPDATE) of the call passed through this edge.</summary>
    void OnRefresh(SipCallId sipCall);
}
