using System.Collections.Concurrent;
using System.Text;
using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

/// <summary>
/// The proxy's transaction user for calls, above the proxy core (RFC 3261 section 16 keeps the two apart: the core keeps
/// transactions and builds and routes messages; this decides whether and where each request goes and hears how each ends) (docs/security.md, "Dialogs bound to admissions"): turns transactions into
/// admit, confirm, renew and end, and lets nothing through that no admission accounts for.
/// <list type="bullet">
/// <item>An initial INVITE is admitted by the <see cref="ICallPolicy"/> before it is forwarded (a spiral through this
/// edge is forwarded without a second count); its 2xx confirms the call and teaches the dialog, a failure ends it.</item>
/// <item>An in-dialog request is forwarded only when its Call-ID and both tags name an admitted dialog, in either
/// direction (481 otherwise), and only to where that dialog may go or a configured destination (403 otherwise).</item>
/// <item>A BYE ends the call once the far end answered it or its transaction timed out, never on forwarding alone.</item>
/// <item>Any other request goes only to a configured destination (403 otherwise).</item>
/// </list>
/// </summary>
internal sealed class CallTracker
{
    private readonly ICallPolicy _policy;
    private readonly SipProxy _proxy;

    // Dialogs this edge learned on a 2xx (or from the grains), kept for 64*T1: the ACK and early in-dialog requests
    // need no round trip; later ones ask the policy, which knows every edge's dialogs.
    private readonly ConcurrentDictionary<SipCallId, DialogRecord> _recent = new();
    private readonly Action<object?> _forget;

    // Teardowns of counted calls whose 2xx passed and whose ACK has not yet: the ACK (or 64*T1 without it) lets them go.
    private readonly ConcurrentDictionary<SipCallId, CallTeardown> _unacknowledged = new();
    private readonly Action<object?> _acknowledge;

    public CallTracker(ICallPolicy policy, SipProxy proxy)
    {
        _policy = policy;
        _proxy = proxy;
        _forget = o => _recent.TryRemove((SipCallId)o!, out _);
        _acknowledge = o =>
        {
            if (_unacknowledged.TryRemove((SipCallId)o!, out var teardown))
            {
                teardown.OnAcknowledged();
            }
        };
    }

    /// <summary>
    /// An admitted INVITE in flight: its call, where it came from and went, and for a counted call its early lease, the
    /// caller's Contact (for a BYE toward the caller) and when a provisional next renews the lease. Changed only under
    /// its server transaction's lock.
    /// </summary>
    private sealed class Admitted(SipCallId call, SipTarget source, SipTarget target, IReadOnlyList<string> callerTargets, TimeSpan? earlyLease, byte[]? callerContact)
    {
        public SipCallId Call { get; } = call;

        public SipTarget Source { get; } = source;

        public SipTarget Target { get; } = target;

        public IReadOnlyList<string> CallerTargets { get; } = callerTargets;

        public TimeSpan? EarlyLease { get; } = earlyLease;

        public byte[]? CallerContact { get; } = callerContact;

        /// <summary>UTC ticks from which the next provisional renews the early lease.</summary>
        public long RenewAt { get; set; }
    }

    /// <summary>An in-dialog request whose final status matters to the call.</summary>
    private sealed record InDialog(SipCallId Call, bool Bye);

    /// <summary>Decides at once when it can (false: <see cref="DecideAsync"/> is called with a private copy of the request).</summary>
    public bool TryDecide(in ProxyRequest request, out ForwardDecision decision)
    {
        var m = request.Message;
        if (m.Method == SipMethod.Invite && m.ToTag.IsEmpty)
        {
            if (request.Spiral)
            {
                // RFC 3261 16.3 step 4: the same call back through this edge on another branch; it is counted once.
                decision = request.RouteConfigured ? ForwardDecision.Forward(request.Route) : Forbidden;
                return true;
            }
            decision = null!;
            return false;
        }
        if (m.ToTag.IsEmpty)
        {
            // Outside any dialog (OPTIONS, MESSAGE, REGISTER, SUBSCRIBE...): only to where this edge is configured to send.
            decision = request.RouteConfigured ? ForwardDecision.Forward(request.Route) : Forbidden;
            return true;
        }
        var (call, towardCallee) = Identify(request, preferTo: false);
        if (_recent.TryGetValue(call, out var dialog))
        {
            decision = Check(request, call, towardCallee, dialog);
            return true;
        }
        decision = null!;
        return false;
    }

    public async ValueTask<ForwardDecision> DecideAsync(ProxyRequest request, CancellationToken cancellationToken)
    {
        var m = request.Message;
        if (m.Method == SipMethod.Invite && m.ToTag.IsEmpty)
        {
            return await AdmitAsync(request, cancellationToken).ConfigureAwait(false);
        }

        var (call, towardCallee) = Identify(request, preferTo: false);
        var dialog = await _policy.FindDialogAsync(call, cancellationToken).ConfigureAwait(false);
        if (dialog is null && request.CallerTag is null)
        {
            // No Record-Route of ours named the caller: the request may come from the callee (its To tag is the caller's).
            (call, towardCallee) = Identify(request, preferTo: true);
            dialog = await _policy.FindDialogAsync(call, cancellationToken).ConfigureAwait(false);
        }
        return dialog is null ? NoDialog : Check(request, call, towardCallee, dialog);
    }

    /// <summary>
    /// A request forwarded with an outcome got its final status upstream; <paramref name="response"/> is the next hop's
    /// response, or null when the proxy answered itself (timeout, transport error, CANCEL).
    /// </summary>
    public void OnFinal(object outcome, int status, SipMessage? response)
    {
        switch (outcome)
        {
            case Admitted admitted when status is >= 200 and < 300 && response is not null:
                var answer = Answer(response, admitted.Target);
                if (admitted.CallerContact is { } callerContact && !_unacknowledged.ContainsKey(admitted.Call))
                {
                    var teardown = _proxy.TeardownOf(response, admitted.Target, admitted.Source, callerContact);
                    _unacknowledged[admitted.Call] = teardown;
                    _proxy.ScheduleOnce(_proxy.TransactionLifetime, _acknowledge, admitted.Call);
                    answer = answer with { Teardown = teardown };
                }

                var dialog = new DialogRecord(answer.CalleeTag, admitted.CallerTargets, answer.CalleeTargets, Confirmed: true);
                Remember(admitted.Call, dialog);
                _policy.OnAnswered(admitted.Call, answer);
                break;
            case Admitted admitted:
                _policy.OnFailed(admitted.Call, status);
                break;
            case InDialog { Bye: true } bye when response is null || status < 300 || status is 481 or 408:
                // Answered by the far end (or no such call there), or nobody answered in 64*T1: the call is over.
                _recent.TryRemove(bye.Call, out _);
                _policy.OnBye(bye.Call);
                break;
            case InDialog { Bye: false } refresh when status is >= 200 and < 300:
                _policy.OnRefresh(refresh.Call);
                break;
        }
    }

    /// <summary>
    /// A provisional (re)started Timer C of a forwarded INVITE: from now the call may be answered as late as
    /// <see cref="SipProxy.AnswerWindow"/> from now. A counted call's early lease is renewed when it would not outlast
    /// that window by half its spare time (early lease minus the window); so it is renewed at most once per half its
    /// spare time, however many 180s come, and a provisional that is let pass leaves the lease at least half its spare
    /// time beyond the latest answer, for the confirm to land. With no spare time every such provisional renews.
    /// </summary>
    public void OnProvisional(object outcome)
    {
        if (outcome is not Admitted { EarlyLease: { } lease } admitted)
        {
            return;
        }

        var now = _proxy.Time.GetUtcNow().UtcTicks;
        if (now < admitted.RenewAt)
        {
            return;
        }

        admitted.RenewAt = now + RenewEvery(lease).Ticks;
        _policy.OnProvisional(admitted.Call);
    }

    /// <summary>How long after an early lease starts (or is renewed) a provisional needs to renew it: half its spare time over the answer window.</summary>
    internal TimeSpan RenewEvery(TimeSpan earlyLease)
    {
        var spare = earlyLease - _proxy.AnswerWindow;
        return spare > TimeSpan.Zero ? spare / 2 : TimeSpan.Zero;
    }

    private static readonly ForwardDecision Forbidden = ForwardDecision.Reject(403, "Forbidden (destination not allowed)");

    private static readonly ForwardDecision NoDialog = ForwardDecision.Reject(481, "Call/Transaction Does Not Exist");

    private async ValueTask<ForwardDecision> AdmitAsync(ProxyRequest request, CancellationToken cancellationToken)
    {
        var m = request.Message;
        var call = new SipCallId(Encoding.UTF8.GetString(m[m.CallId]), Encoding.UTF8.GetString(m[m.FromTag]));
        var origin = new InviteOrigin(Attempt(m, request.Source), CallerTargets(m, request.Source));

        // The grains start the early lease after this; counting from here errs on the early side.
        var asked = _proxy.Time.GetUtcNow().UtcTicks;
        var decision = await _policy.AdmitAsync(m, request.Source, request.Route, origin, cancellationToken).ConfigureAwait(false);
        if (!decision.Admitted)
        {
            return ForwardDecision.Reject(decision.Status, decision.ReasonPhrase, decision.ExtraHeaders);
        }
        var target = decision.NextHop ?? request.Route;
        if (decision.NextHop is null && !request.RouteConfigured)
        {
            // Admitted to a destination nobody configured: nothing is forwarded, and the slots go back.
            _policy.OnFailed(call, 403);
            return Forbidden;
        }
        var admitted = new Admitted(call, request.Source, target, origin.CallerTargets, decision.EarlyLease,
            decision.EarlyLease is null ? null : SipProxy.ContactUriOf(m, m.From));
        if (decision.EarlyLease is { } lease)
        {
            admitted.RenewAt = asked + RenewEvery(lease).Ticks;
        }
        return ForwardDecision.Forward(target, admitted, recordCallerTag: true);
    }

    /// <summary>The call an in-dialog request names, and whether it goes toward the callee.</summary>
    private static (SipCallId Call, bool TowardCallee) Identify(in ProxyRequest request, bool preferTo)
    {
        var m = request.Message;
        var callId = Encoding.UTF8.GetString(m[m.CallId]);
        var from = Encoding.UTF8.GetString(m[m.FromTag]);
        if (request.CallerTag is { } callerTag)
        {
            return (new SipCallId(callId, callerTag), callerTag == from);
        }
        return preferTo ? (new SipCallId(callId, Encoding.UTF8.GetString(m[m.ToTag])), false) : (new SipCallId(callId, from), true);
    }

    private ForwardDecision Check(in ProxyRequest request, SipCallId call, bool towardCallee, DialogRecord dialog)
    {
        var m = request.Message;
        var from = m[m.FromTag];
        var to = m[m.ToTag];
        var caller = Encoding.UTF8.GetBytes(call.CallerTag);
        var other = towardCallee ? to : from;
        if (!(towardCallee ? from : to).SequenceEqual(caller))
        {
            return NoDialog;
        }
        if (dialog.CalleeTag is { } callee)
        {
            if (!other.SequenceEqual(Encoding.UTF8.GetBytes(callee)))
            {
                return NoDialog;
            }
        }
        else if (m.Method == SipMethod.Bye || (m.Method == SipMethod.Ack && !(towardCallee && request.RouteConfigured)))
        {
            // Not answered yet: a BYE cannot belong to it (the caller CANCELs an unanswered call). An ACK toward the
            // callee's configured hop may overtake the confirm of its 2xx on its way to the grains: it changes nothing.
            return NoDialog;
        }
        if (!request.RouteConfigured && !(towardCallee ? dialog.CalleeTargets : dialog.CallerTargets).Contains(SipProxy.Describe(request.Route)))
        {
            return Forbidden;
        }
        if (m.Method == SipMethod.Ack && towardCallee && !_unacknowledged.IsEmpty && _unacknowledged.ContainsKey(call))
        {
            // On the next tick, once this ACK has been forwarded: a teardown's BYE never overtakes it.
            _proxy.ScheduleOnce(TimeSpan.Zero, _acknowledge, call);
        }
        object? outcome = m.Method switch
        {
            SipMethod.Bye => new InDialog(call, Bye: true),
            SipMethod.Invite or SipMethod.Update => new InDialog(call, Bye: false),
            _ => null,
        };
        return ForwardDecision.Forward(request.Route, request.Stateless ? null : outcome);
    }

    private void Remember(SipCallId call, DialogRecord dialog)
    {
        _recent[call] = dialog;
        _proxy.ScheduleOnce(_proxy.TransactionLifetime, _forget, call);
    }

    /// <summary>The transaction the INVITE came in: its top Via's sent-by and branch (RFC 3261 17.2.3), with the source.</summary>
    private static string Attempt(SipMessage m, in SipTarget source)
    {
        var s = m.Span;
        var via = m.TopVia;
        return string.Concat(Encoding.UTF8.GetString(via.Host.Of(s)), ":", via.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ";", Encoding.UTF8.GetString(via.Branch.Of(s)), "@", SipProxy.Describe(source));
    }

    /// <summary>Where requests toward the caller may go: where the INVITE came from, its Contact, and the proxy above (its top Record-Route).</summary>
    private List<string> CallerTargets(SipMessage m, in SipTarget source)
    {
        var targets = new List<string>(3) { SipProxy.Describe(source) };
        Add(targets, _proxy.TargetOfFirst(m, SipHeaderKind.Contact, source.Transport));
        Add(targets, _proxy.TargetOfFirst(m, SipHeaderKind.RecordRoute, source.Transport));
        return targets;
    }

    /// <summary>The callee's tag and where requests toward the callee may go: where the INVITE went, the 2xx's Contact, the proxy below.</summary>
    private DialogAnswer Answer(SipMessage response, in SipTarget inviteTarget)
    {
        var targets = new List<string>(3) { SipProxy.Describe(inviteTarget) };
        Add(targets, _proxy.TargetOfFirst(response, SipHeaderKind.Contact, inviteTarget.Transport));
        Add(targets, _proxy.TargetBelowSelf(response, inviteTarget.Transport));
        return new DialogAnswer(Encoding.UTF8.GetString(response[response.ToTag]), targets);
    }

    private static void Add(List<string> targets, string? target)
    {
        if (target is not null && !targets.Contains(target))
        {
            targets.Add(target);
        }
    }
}
