using System.Net;
using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

/// <summary>What the call policy decided for an initial INVITE.</summary>
public sealed class CallDecision
{
    private CallDecision(bool admitted, int status, string reasonPhrase, string extraHeaders, SipTarget? nextHop, TimeSpan? earlyLease = null)
    {
        Admitted = admitted;
        Status = status;
        ReasonPhrase = reasonPhrase;
        ExtraHeaders = extraHeaders;
        NextHop = nextHop;
        EarlyLease = earlyLease;
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

    /// <summary>
    /// The early lease a counted call holds until it is answered, or null for a call nothing counts (let through with
    /// fail-open, an emergency call over its limit). A counted call's provisionals renew it (<see cref="ICallPolicy.OnProvisional"/>),
    /// and its answer carries a <see cref="CallTeardown"/>.
    /// </summary>
    public TimeSpan? EarlyLease { get; }

    /// <summary>Forward the INVITE to <paramref name="nextHop"/>.</summary>
    public static CallDecision AdmitTo(SipTarget nextHop) => new(true, 0, "", "", nextHop);

    /// <summary>Forward the INVITE to <paramref name="nextHop"/> as a counted call holding <paramref name="earlyLease"/> until its answer.</summary>
    public static CallDecision AdmitCounted(SipTarget nextHop, TimeSpan earlyLease)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(earlyLease, TimeSpan.Zero);
        return new(true, 0, "", "", nextHop, earlyLease);
    }

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
/// Who asks for an admission: the INVITE transaction (<paramref name="Attempt"/>, its top Via's sent-by and branch, so
/// another INVITE reusing the call's Call-ID and From tag is told apart from a retry) and where in-dialog requests toward
/// the caller may be sent (<see cref="SipTarget.ToString"/> form: the INVITE's source, its Contact, the proxy above).
/// </summary>
public sealed record InviteOrigin(string Attempt, IReadOnlyList<string> CallerTargets);

/// <summary>What the 2xx of an admitted INVITE taught: the callee's tag and where requests toward the callee may go.</summary>
public sealed record DialogAnswer(string CalleeTag, IReadOnlyList<string> CalleeTargets)
{
    /// <summary>Ends the call with a BYE to each side, should its confirm find it no longer counted; null for a call nothing counts.</summary>
    public CallTeardown? Teardown { get; init; }
}

/// <summary>An admitted call's dialog, as any edge checks an in-dialog request against it.</summary>
public sealed record DialogRecord(string? CalleeTag, IReadOnlyList<string> CallerTargets, IReadOnlyList<string> CalleeTargets, bool Confirmed);

/// <summary>
/// The admission side of the call tracker: decides on each initial INVITE before it is forwarded, hears how each call
/// it admitted ends, and knows the admitted dialogs (whichever edge admitted them). Callbacks other than the async ones
/// run on the proxy's threads and must return quickly (queue the work).
/// </summary>
public interface ICallPolicy
{
    /// <summary>
    /// Decides on an initial INVITE (no To tag) that passed validation. <paramref name="invite"/> is a private copy
    /// the policy may keep until the task completes. <paramref name="route"/> is where the proxy would send it.
    /// </summary>
    ValueTask<CallDecision> AdmitAsync(SipMessage invite, SipTarget source, SipTarget route, InviteOrigin origin, CancellationToken cancellationToken);

    /// <summary>
    /// A counted INVITE got a provisional response that (re)started Timer C (RFC 3261 16.7 step 2), and its early lease
    /// would no longer outlast Timer C and a CANCEL's 64*T1 from now: renew it. The call tracker asks at most once per
    /// half of the lease's spare time (early lease minus Timer C and 64*T1), not on every 180 (docs/architecture.md, "Leases that fit SIP").
    /// </summary>
    void OnProvisional(SipCallId sipCall)
    {
    }

    /// <summary>
    /// An admitted INVITE got its first 2xx. When the confirm finds the call no longer counted (its lease lapsed and the
    /// slot was reclaimed), the policy ends it with <see cref="DialogAnswer.Teardown"/>.
    /// </summary>
    void OnAnswered(SipCallId sipCall, DialogAnswer answer);

    /// <summary>An admitted INVITE ended without a 2xx: a final non-2xx from the next hop, CANCEL/487, timeout or transport error.</summary>
    void OnFailed(SipCallId sipCall, int status);

    /// <summary>A BYE of the call was answered by the far end, or timed out: the call is over.</summary>
    void OnBye(SipCallId sipCall);

    /// <summary>An in-dialog refresh (re-INVITE, UPDATE) of the call was accepted (2xx).</summary>
    void OnRefresh(SipCallId sipCall);

    /// <summary>The admitted call's dialog, or null when no such call is admitted (a forged or ended dialog).</summary>
    ValueTask<DialogRecord?> FindDialogAsync(SipCallId sipCall, CancellationToken cancellationToken);

    /// <summary>A destination the policy routes calls to (a trunk's next hop, a route's upstream), so any request may go there.</summary>
    bool AllowsDestination(IPEndPoint endPoint) => false;
}
