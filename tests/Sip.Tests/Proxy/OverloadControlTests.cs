using System.Net;
using System.Text;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.Sip.Timers;

namespace CallState.Sip.Tests.Proxy;

/// <summary>
/// Overload control and per-source budgets in the proxy core, message by message on a fake clock (docs/architecture.md,
/// "Overload control"): what is shed gets 503 + Retry-After (or nothing) before any admission work, and what ends calls
/// keeps flowing.
/// </summary>
public sealed class OverloadControlTests : IDisposable
{
    private static readonly IPEndPoint Upstream = new(IPAddress.Parse("127.0.0.1"), 5090);
    private static readonly IPEndPoint Flooder = new(IPAddress.Parse("192.0.2.66"), 5060);
    private static readonly IPEndPoint Caller = new(IPAddress.Parse("192.0.2.10"), 5060);
    private static readonly IPEndPoint Prober = new(IPAddress.Parse("192.0.2.99"), 5060);

    private readonly FakeTimeProvider _clock = new();
    private readonly TimerWheel _wheel;
    private readonly Sender _sent = new();
    private readonly List<SipShedReport> _reports = [];
    private SipOverloadControl? _control;
    private SipProxy? _proxy;

    public OverloadControlTests() => _wheel = new TimerWheel(_clock);

    public void Dispose()
    {
        _proxy?.Dispose();
        _control?.Dispose();
        _wheel.Dispose();
    }

    [Fact]
    public void A_flooding_source_gets_its_first_refusals_answered_503_then_nothing_while_another_source_is_served()
    {
        var proxy = Proxy(new SipOverloadOptions
        {
            Default = new SipSourceBudgetOptions { RequestsPerSecond = 10, Burst = 10, MaxTransactions = 1000 },
            RefusalsPerSecond = 2,
        });
        for (var i = 0; i < 50; i++)
        {
            Receive(proxy, Invite($"flood{i}", Flooder), Flooder);
        }
        Assert.Equal(10, _sent.Count(Upstream, "INVITE"));
        Assert.Equal(10, _sent.Count(Flooder, "SIP/2.0 100"));
        var refusals = _sent.Take(Flooder, "SIP/2.0 503");
        Assert.Equal(2, refusals.Count);
        Assert.All(refusals, r => Assert.Contains("\r\nRetry-After: 5\r\n", r, StringComparison.Ordinal));
        Assert.Equal(40, _control!.Shed(SipShedReason.SourceRate));

        // A malformed request over budget is dropped too (never answered 400).
        Receive(proxy, Encoding.ASCII.GetBytes("INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bKbad\r\nCSeq: x\r\n\r\n"), Flooder);
        Assert.Equal(0, _sent.Count(Flooder, "SIP/2.0 400"));

        // Logged once for the flood, not per message.
        Assert.Single(_reports);
        Assert.Equal(SipShedReason.SourceRate, _reports[0].Reason);
        Assert.Equal(Flooder.Address, _reports[0].Source!.Address);

        // Another source is untouched by the flooder's budget.
        Receive(proxy, Invite("legit", Caller), Caller);
        Assert.Equal(11, _sent.Count(Upstream, "INVITE"));

        // A second later the flooder's bucket has refilled by its rate; the next report carries the count since the last.
        _clock.Advance(TimeSpan.FromSeconds(1));
        for (var i = 50; i < 70; i++)
        {
            Receive(proxy, Invite($"flood{i}", Flooder), Flooder);
        }
        Assert.Equal(21, proxy.Metrics.RequestsForwarded);
        _clock.Advance(TimeSpan.FromSeconds(10));
        Receive(proxy, Invite("flood-late", Flooder), Flooder);
        Receive(proxy, Invite("flood-later", Flooder), Flooder);
        for (var i = 0; i < 20; i++)
        {
            Receive(proxy, Invite($"flood-last{i}", Flooder), Flooder);
        }
        Assert.Equal(2, _reports.Count);
        Assert.True(_reports[1].Count >= 10, $"the second report counts what was shed since the first ({_reports[1].Count})");
    }

    [Fact]
    public void Past_the_pending_decisions_threshold_new_calls_are_shed_before_the_policy_is_asked_but_the_balancers_OPTIONS_are_answered()
    {
        var policy = new Policy { Hold = new TaskCompletionSource<CallDecision>(TaskCreationOptions.RunContinuationsAsynchronously) };
        var proxy = Proxy(new SipOverloadOptions { MaxPendingDecisions = 2 }, policy);
        Receive(proxy, Invite("a", Caller), Caller);
        Receive(proxy, Invite("b", Caller), Caller);
        Assert.Equal(2, _control!.PendingDecisions);

        Receive(proxy, Invite("c", Caller), Caller);
        Assert.Single(_sent.Take(Caller, "SIP/2.0 503"));
        Assert.Equal(2, policy.Asked);
        Assert.Equal(1, _control.Shed(SipShedReason.PendingDecisions));

        // The load balancer's probe addresses the edge itself: answered. An OPTIONS for someone else is a new request: shed.
        Receive(proxy, Options("sip:192.0.2.80:5060", "probe", Prober), Prober);
        Assert.Single(_sent.Take(Prober, "SIP/2.0 200"));
        Receive(proxy, Options("sip:bob@127.0.0.1:5090", "other", Prober), Prober);
        Assert.Single(_sent.Take(Prober, "SIP/2.0 503"));

        // Once the grains answer, the held calls go on and new calls are admitted again.
        policy.Hold.SetResult(CallDecision.Admit);
        Assert.True(SpinWait.SpinUntil(() => _sent.Count(Upstream, "INVITE") == 2, TimeSpan.FromSeconds(5)));
        Assert.Equal(0, _control.PendingDecisions);
        Receive(proxy, Invite("d", Caller), Caller);
        Assert.True(SpinWait.SpinUntil(() => _sent.Count(Upstream, "INVITE") == 3, TimeSpan.FromSeconds(5)));
        Assert.Equal(3, policy.Asked);
    }

    [Fact]
    public void The_ACK_of_a_shed_calls_503_ends_at_the_proxy_without_a_dialog_look_up_while_a_2xx_ACK_is_still_forwarded()
    {
        var policy = new Policy { Hold = new TaskCompletionSource<CallDecision>(TaskCreationOptions.RunContinuationsAsynchronously) };
        var proxy = Proxy(new SipOverloadOptions { MaxPendingDecisions = 1 }, policy);
        Receive(proxy, Invite("held", Caller), Caller);
        Receive(proxy, Invite("shed", Caller), Caller);
        var refusal = _sent.TakeMessage(Caller, "SIP/2.0 503");
        var tag = ToTag(refusal);
        Assert.StartsWith("cs", tag, StringComparison.Ordinal);

        // The caller's ACK of the 503 (same branch as its INVITE, RFC 3261 17.1.1.3): absorbed, nothing asked or sent on.
        Receive(proxy, Request("ACK", "sip:service@127.0.0.1:5090", "shed", Caller, "1 ACK", tag), Caller);
        Assert.Equal(0, policy.LookUps);
        Assert.Equal(0, _sent.Count(Upstream, "ACK"));

        // An ACK with a tag the proxy did not give (another branch, the callee's tag): still looked up as a 2xx's ACK.
        Receive(proxy, Request("ACK", "sip:service@127.0.0.1:5090", "other", Caller, "1 ACK", "callee"), Caller);
        Assert.True(SpinWait.SpinUntil(() => policy.LookUps > 0, TimeSpan.FromSeconds(5)));
        policy.Hold.SetResult(CallDecision.Admit);
    }

    [Fact]
    public void Under_lag_new_calls_are_shed_while_a_call_in_progress_still_ends_with_its_BYE_and_a_ringing_one_can_be_cancelled()
    {
        var policy = new Policy();
        var proxy = Proxy(new SipOverloadOptions(), policy);

        // One call up (INVITE, 200, ACK) and one ringing, before the edge is overloaded.
        var route = Establish(proxy, "up");
        var ringing = ForwardInvite(proxy, "ringing");
        Receive(proxy, Response(ringing, 180, "Ringing", "callee2"), Upstream);
        _sent.Clear();

        _control!.SetLag(TimeSpan.FromSeconds(2));
        Receive(proxy, Invite("new", Caller), Caller);
        Assert.Single(_sent.Take(Caller, "SIP/2.0 503"));
        Assert.Equal(1, _control.Shed(SipShedReason.Lag));

        EndUpAndCancelRinging(proxy, policy, route);
        Assert.Equal(1, _control.Shed(SipShedReason.Lag));
    }

    [Fact]
    public void A_draining_proxy_refuses_new_calls_and_the_balancers_probe_while_calls_in_progress_end_and_ringing_ones_are_answered_or_cancelled()
    {
        var policy = new Policy();
        var proxy = Proxy(new SipOverloadOptions(), policy);

        // One call up (INVITE, 200, ACK), one ringing and one more ringing, before the edge drains.
        var route = Establish(proxy, "up");
        var ringing = ForwardInvite(proxy, "ringing");
        Receive(proxy, Response(ringing, 180, "Ringing", "callee2"), Upstream);
        var answered = ForwardInvite(proxy, "answered");
        _sent.Clear();

        proxy.BeginDrain();
        Assert.True(proxy.IsDraining);

        // New calls and the load balancer's probe: 503 with Retry-After, before the policy is asked; not overload.
        var asked = policy.Asked;
        Receive(proxy, Invite("new", Caller), Caller);
        Assert.Contains("\r\nRetry-After: 5\r\n", Assert.Single(_sent.Take(Caller, "SIP/2.0 503")), StringComparison.Ordinal);
        Receive(proxy, Options("sip:192.0.2.80:5060", "probe", Prober), Prober);
        Assert.Single(_sent.Take(Prober, "SIP/2.0 503"));
        Assert.Equal(asked, policy.Asked);
        Assert.Equal(0, _sent.Count(Upstream, "INVITE"));
        Assert.All(Enum.GetValues<SipShedReason>(), reason => Assert.Equal(0, _control!.Shed(reason)));

        // A retransmission of an admitted INVITE is absorbed by its transaction, not refused.
        Receive(proxy, Invite("answered", Caller), Caller);
        Assert.Equal(0, _sent.Count(Caller, "SIP/2.0 503"));

        // The callee answers the INVITE sent before the drain: the 200 reaches the caller, whose ACK and BYE flow.
        Receive(proxy, Response(answered, 200, "OK", "callee3"), Upstream);
        var answeredOk = _sent.TakeMessage(Caller, "SIP/2.0 200");
        Receive(proxy, InDialog("ACK", "answered", Header(answeredOk, "Record-Route"), cseq: 1, toTag: "callee3"), Caller);
        Assert.Equal(1, _sent.Count(Upstream, "ACK"));

        EndUpAndCancelRinging(proxy, policy, route);
    }

    [Fact]
    public void The_limit_on_pending_decisions_drops_while_they_are_slow_and_grows_back_while_it_sheds_and_they_are_fast()
    {
        using var control = new SipOverloadControl(
            new SipOverloadOptions { MaxDecisionDelay = TimeSpan.FromMilliseconds(100), MinPendingDecisions = 4, MaxPendingDecisions = 100, LagProbeInterval = TimeSpan.FromMilliseconds(100) },
            _clock, probeLag: false);
        Assert.Equal(100, control.DecisionLimit);

        // A burst of 50 decisions answered in 10 ms each: many pending, none slow: nothing is shed and the limit stays.
        var burst = Enumerable.Range(0, 50).Select(_ => control.EnterDecision()).ToList();
        Assert.Null(control.Overloaded(0, 0));
        _clock.Advance(TimeSpan.FromMilliseconds(10));
        burst.ForEach(started => control.ExitDecision(started));
        _clock.Advance(TimeSpan.FromMilliseconds(100));
        control.ExitDecision(control.EnterDecision());
        Assert.Equal(100, control.DecisionLimit);

        // 60 decisions, and the grains answer slower than calls come: they finish 300 ms later. The first to finish closes
        // the interval, slow: the limit drops to four fifths of the 59 still pending, and new calls are shed.
        var queued = Enumerable.Range(0, 60).Select(_ => control.EnterDecision()).ToList();
        _clock.Advance(TimeSpan.FromMilliseconds(300));
        for (var i = 0; i < 10; i++)
        {
            control.ExitDecision(queued[i]);
        }
        Assert.Equal(47, control.DecisionLimit);
        Assert.Equal(50, control.PendingDecisions);
        Assert.Equal(SipShedReason.DecisionDelay, control.Overloaded(0, 0));

        // The queue drains below the limit: new calls are let in again.
        for (var i = 10; i < 50; i++)
        {
            control.ExitDecision(queued[i]);
        }
        Assert.Null(control.Overloaded(0, 0));

        // The decisions let in before the drop finish slow too, but do not count: the limit stays where it is.
        _clock.Advance(TimeSpan.FromMilliseconds(100));
        control.ExitDecision(queued[50]);
        Assert.Equal(47, control.DecisionLimit);

        // Decisions are fast now, and the limit sheds calls: it grows by a tenth an interval, up to the maximum.
        var pending = queued.Skip(51).ToList();
        for (var round = 0; round < 40; round++)
        {
            while (control.Overloaded(0, 0) is null)
            {
                pending.Add(control.EnterDecision());
            }
            _clock.Advance(TimeSpan.FromMilliseconds(10));
            pending.ForEach(started => control.ExitDecision(started));
            pending.Clear();
            _clock.Advance(TimeSpan.FromMilliseconds(91));
            control.ExitDecision(control.EnterDecision());
            if (round == 0)
            {
                Assert.Equal(51, control.DecisionLimit);
            }
        }
        Assert.Equal(100, control.DecisionLimit);
    }

    [Fact]
    public void Without_a_decision_delay_set_only_the_pending_decisions_cap_sheds()
    {
        using var control = new SipOverloadControl(new SipOverloadOptions { MaxPendingDecisions = 100 }, _clock, probeLag: false);
        var queued = Enumerable.Range(0, 99).Select(_ => control.EnterDecision()).ToList();
        _clock.Advance(TimeSpan.FromSeconds(1));
        control.ExitDecision(queued[0]);
        Assert.Null(control.Overloaded(0, 0));
        control.EnterDecision();
        control.EnterDecision();
        Assert.Equal(SipShedReason.PendingDecisions, control.Overloaded(0, 0));
    }

    [Fact]
    public void A_source_with_its_maximum_of_transactions_in_flight_is_refused_until_they_are_answered()
    {
        var policy = new Policy { Hold = new TaskCompletionSource<CallDecision>(TaskCreationOptions.RunContinuationsAsynchronously) };
        var proxy = Proxy(new SipOverloadOptions { Default = new SipSourceBudgetOptions { RequestsPerSecond = 100, Burst = 100, MaxTransactions = 2 } }, policy);
        Receive(proxy, Invite("x1", Flooder), Flooder);
        Receive(proxy, Invite("x2", Flooder), Flooder);
        Receive(proxy, Invite("x3", Flooder), Flooder);
        Assert.Single(_sent.Take(Flooder, "SIP/2.0 503"));
        Assert.Equal(1, _control!.Shed(SipShedReason.SourceTransactions));
        Assert.Equal(2, _control.Budgets.Find(Flooder.Address)!.Value.InFlight);

        // Another source has its own count.
        Receive(proxy, Invite("y1", Caller), Caller);
        Assert.Equal(3, policy.Asked);

        // Admitted, forwarded, refused by the callee: answered, so no longer in flight.
        policy.Hold.SetResult(CallDecision.Admit);
        Assert.True(SpinWait.SpinUntil(() => _sent.Count(Upstream, "INVITE") == 3, TimeSpan.FromSeconds(5)));
        while (_sent.TryTakeMessage(Upstream, "INVITE", out var invite))
        {
            Receive(proxy, Response(invite, 486, "Busy Here", "busy"), Upstream);
        }
        Assert.Equal(0, _control.Budgets.Find(Flooder.Address)!.Value.InFlight);
        Assert.Equal(0, _control.Budgets.Find(Caller.Address)!.Value.InFlight);
        Receive(proxy, Invite("x4", Flooder), Flooder);
        Assert.Equal(4, policy.Asked);
    }

    [Fact]
    public void Many_answered_transactions_lingering_for_their_timers_do_not_shed_a_new_call()
    {
        var proxy = Proxy(new SipOverloadOptions { MaxTransactions = 4 }, maxTransactions: 1_000);

        // 100 calls answered busy by the callee: their server and client INVITE transactions linger (Timers I and D,
        // RFC 3261 17.1.1.2 and 17.2.1) to absorb retransmissions, but wait for nothing.
        for (var i = 0; i < 100; i++)
        {
            Receive(proxy, Invite($"done{i}", Caller), Caller);
            Assert.True(_sent.TryTakeMessage(Upstream, "INVITE", out var invite));
            Receive(proxy, Response(invite, 486, "Busy Here", "busy"), Upstream);
        }
        Assert.Equal(100, _sent.Count(Caller, "SIP/2.0 486"));
        Assert.True(proxy.ServerTransactionCount + proxy.ClientTransactionCount >= 200, "the answered transactions still linger");
        Assert.Equal(0, proxy.InProgressCount);

        Receive(proxy, Invite("new", Caller), Caller);
        Assert.Equal(1, _sent.Count(Upstream, "INVITE"));
        Assert.Equal(0, _control!.Shed(SipShedReason.Transactions));
        Assert.Equal(0, _sent.Count(Caller, "SIP/2.0 503"));
    }

    [Fact]
    public void Past_the_threshold_of_transactions_in_progress_new_requests_are_shed_but_requests_inside_dialogs_still_get_transactions()
    {
        var proxy = Proxy(new SipOverloadOptions { MaxTransactions = 4 }, maxTransactions: 1_000);

        // Four calls forwarded and not answered yet: in progress.
        for (var i = 0; i < 4; i++)
        {
            Receive(proxy, Invite($"ringing{i}", Caller), Caller);
        }
        Assert.Equal(4, proxy.InProgressCount);
        Assert.Equal(4, _sent.Count(Upstream, "INVITE"));

        Receive(proxy, Invite("new", Caller), Caller);
        Receive(proxy, Options("sip:bob@127.0.0.1:5090", "o1", Caller), Caller);
        Assert.Equal(2, _sent.Take(Caller, "SIP/2.0 503").Count);
        Assert.Equal(2, _control!.Shed(SipShedReason.Transactions));
        Assert.Equal(4, _sent.Count(Upstream, "INVITE"));

        // A BYE of a call already up still gets its transaction.
        Receive(proxy, InDialog("BYE", "old", "<sip:192.0.2.80:5060;lr>", cseq: 2), Caller);
        Assert.Equal(1, _sent.Count(Upstream, "BYE"));
        Assert.Equal(2, _control.Shed(SipShedReason.Transactions));

        // One ringing call is answered busy: below the threshold again, the next call goes through.
        Assert.True(_sent.TryTakeMessage(Upstream, "INVITE", out var first));
        Receive(proxy, Response(first, 486, "Busy Here", "busy"), Upstream);
        Assert.Equal(4, proxy.InProgressCount); // three INVITEs and the BYE
        Receive(proxy, Response(BusyBye(), 200, "OK", "callee"), Upstream);
        Assert.Equal(3, proxy.InProgressCount);
        Receive(proxy, Invite("after", Caller), Caller);
        Assert.Equal(4, _sent.Count(Upstream, "INVITE"));
        Assert.Equal(2, _control.Shed(SipShedReason.Transactions));

        SipMessage BusyBye()
        {
            Assert.True(_sent.TryTakeMessage(Upstream, "BYE", out var bye));
            return bye;
        }
    }

    [Fact]
    public void Near_the_hard_cap_lingering_transactions_shed_new_calls_so_BYEs_keep_the_last_transactions()
    {
        // Hard cap 100: the last 2% (98 open and up) is kept for requests inside dialogs.
        var proxy = Proxy(new SipOverloadOptions { MaxTransactions = 50 }, maxTransactions: 100);
        for (var i = 0; i < 49; i++)
        {
            Receive(proxy, Invite($"done{i}", Caller), Caller);
            Assert.True(_sent.TryTakeMessage(Upstream, "INVITE", out var invite));
            Receive(proxy, Response(invite, 486, "Busy Here", "busy"), Upstream);
        }
        Assert.Equal(98, proxy.ServerTransactionCount + proxy.ClientTransactionCount);
        Assert.Equal(0, proxy.InProgressCount);

        Receive(proxy, Invite("new", Caller), Caller);
        Assert.Single(_sent.Take(Caller, "SIP/2.0 503"));
        Assert.Equal(1, _control!.Shed(SipShedReason.Transactions));

        Receive(proxy, InDialog("BYE", "old", "<sip:192.0.2.80:5060;lr>", cseq: 2), Caller);
        Assert.Equal(1, _sent.Count(Upstream, "BYE"));
    }

    [Fact]
    public void A_challenge_counts_in_flight_until_it_is_sent_then_is_resent_until_Timer_H_while_a_source_over_budget_gets_no_new_ones()
    {
        var policy = new Policy
        {
            Decision = CallDecision.Reject(407, "Proxy Authentication Required", "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"n\"\r\n"),
        };
        var proxy = Proxy(new SipOverloadOptions
        {
            Default = new SipSourceBudgetOptions { RequestsPerSecond = 10, Burst = 10, MaxTransactions = 1000 },
            RefusalsPerSecond = 0,
        }, policy);

        // A flooder that never acknowledges: its first 10 INVITEs are challenged, the other 40 dropped (no 407 for them).
        for (var i = 0; i < 50; i++)
        {
            Receive(proxy, Invite($"unauth{i}", Flooder), Flooder);
        }
        Assert.Equal(10, policy.Asked);
        Assert.Equal(10, _sent.Count(Flooder, "SIP/2.0 407"));
        Assert.Equal(40, _control!.Shed(SipShedReason.SourceRate));

        // Answered, so no longer in flight for the source nor in progress; the 407s linger to be resent.
        Assert.Equal(0, _control.Budgets.Find(Flooder.Address)!.Value.InFlight);
        Assert.Equal(0, proxy.InProgressCount);
        Assert.Equal(10, proxy.ServerTransactionCount);

        // RFC 3261 17.2.1: over UDP each 407 is resent (Timer G: T1 doubling up to T2) until an ACK or Timer H
        // (64*T1 = 32 s): 0.5, 1.5, 3.5, 7.5, 11.5, ..., 31.5 s, 10 copies more, then the transaction ends.
        for (var i = 0; i < 330; i++)
        {
            _clock.Advance(TimeSpan.FromMilliseconds(100));
        }
        Assert.Equal(10 * 11, _sent.Count(Flooder, "SIP/2.0 407"));
        Assert.Equal(10, _sent.Count(Flooder, "SIP/2.0 100"));
        Assert.Equal(0, proxy.ServerTransactionCount);
        Assert.Equal(10, policy.Asked);
    }

    [Fact]
    public void A_trusted_peer_gets_the_peers_budget()
    {
        var proxy = Proxy(new SipOverloadOptions
        {
            Default = new SipSourceBudgetOptions { RequestsPerSecond = 1, Burst = 1, MaxTransactions = 10 },
            Peers = new SipSourceBudgetOptions { RequestsPerSecond = 1000, Burst = 1000, MaxTransactions = 1000 },
        }, classify: a => a.Equals(Caller.Address) ? SipSourceKind.Peer : SipSourceKind.Default);
        for (var i = 0; i < 100; i++)
        {
            Receive(proxy, Invite($"peer{i}", Caller), Caller);
            Receive(proxy, Invite($"other{i}", Flooder), Flooder);
        }
        Assert.Equal(101, _sent.Count(Upstream, "INVITE"));
        Assert.Equal(99, _control!.Shed(SipShedReason.SourceRate));
    }

    private SipProxy Proxy(SipOverloadOptions overload, ICallPolicy? policy = null, Func<IPAddress, SipSourceKind>? classify = null, int maxTransactions = 200_000)
    {
        var options = new SipProxyOptions
        {
            Port = 5060,
            DefaultUpstream = Upstream.ToString(),
            AdvertisedHost = "192.0.2.80",
            MaxTransactions = maxTransactions,
            Overload = overload,
        };
        _control = new SipOverloadControl(overload, _clock, classify, r =>
        {
            lock (_reports)
            {
                _reports.Add(r);
            }
        }, probeLag: false, maxTransactions: maxTransactions);
        _proxy = new SipProxy(options, _sent, _wheel, policy: policy, overload: _control);
        return _proxy;
    }

    /// <summary>A new call from the caller, forwarded upstream: the INVITE the proxy sent.</summary>
    private SipMessage ForwardInvite(SipProxy proxy, string callId)
    {
        Receive(proxy, Invite(callId, Caller), Caller);
        Assert.True(SpinWait.SpinUntil(() => _sent.Count(Upstream, "INVITE") == 1, TimeSpan.FromSeconds(5)));
        return _sent.TakeMessage(Upstream, "INVITE");
    }

    /// <summary>A call set up through the proxy (INVITE, 200, ACK); returns the Record-Route its in-dialog requests follow.</summary>
    private string Establish(SipProxy proxy, string callId)
    {
        var forwarded = ForwardInvite(proxy, callId);
        Receive(proxy, Response(forwarded, 200, "OK", "callee"), Upstream);
        var route = Header(_sent.TakeMessage(Caller, "SIP/2.0 200"), "Record-Route");
        Receive(proxy, InDialog("ACK", callId, route, cseq: 1), Caller);
        return route;
    }

    /// <summary>
    /// The call "up" (set up along <paramref name="route"/>) ends: its BYE is forwarded and the callee's 200 comes back;
    /// then the call "ringing" is cancelled: 200 to the CANCEL and a CANCEL downstream.
    /// </summary>
    private void EndUpAndCancelRinging(SipProxy proxy, Policy policy, string route)
    {
        Receive(proxy, InDialog("BYE", "up", route, cseq: 2), Caller);
        Assert.True(SpinWait.SpinUntil(() => _sent.Count(Upstream, "BYE") == 1, TimeSpan.FromSeconds(5)), _sent.Describe());
        var bye = _sent.TakeMessage(Upstream, "BYE");
        Receive(proxy, Response(bye, 200, "OK", "callee"), Upstream);
        Assert.Single(_sent.Take(Caller, "SIP/2.0 200"));
        Assert.True(SpinWait.SpinUntil(() => policy.Events.Contains("bye up"), TimeSpan.FromSeconds(5)));

        Receive(proxy, Cancel("ringing", Caller), Caller);
        Assert.Single(_sent.Take(Caller, "SIP/2.0 200"));
        Assert.Equal(1, _sent.Count(Upstream, "CANCEL"));
    }

    private static void Receive(SipProxy proxy, byte[] bytes, IPEndPoint from)
    {
        using var message = new SipMessage();
        message.Parse(bytes);
        proxy.OnMessage(message, new SipTarget(SipTransportKind.Udp, from));
    }

    private static byte[] Invite(string callId, IPEndPoint from) =>
        Request("INVITE", "sip:service@127.0.0.1:5090", callId, from, "1 INVITE");

    private static byte[] Options(string uri, string callId, IPEndPoint from) => Request("OPTIONS", uri, callId, from, "1 OPTIONS");

    private static byte[] Cancel(string callId, IPEndPoint from) =>
        Request("CANCEL", "sip:service@127.0.0.1:5090", callId, from, "1 CANCEL");

    private static byte[] Request(string method, string uri, string callId, IPEndPoint from, string cseq, string? toTag = null) =>
        Encoding.ASCII.GetBytes(
            $"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{callId}\r\n" +
            $"From: <sip:alice@{from}>;tag=a{callId}\r\nTo: <sip:service@127.0.0.1:5090>{(toTag is null ? "" : ";tag=" + toTag)}\r\n" +
            $"Call-ID: {callId}\r\nCSeq: {cseq}\r\nContact: <sip:alice@{from}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");

    /// <summary>A request from the caller inside call <paramref name="callId"/>'s dialog (callee tag <c>callee</c>), along <paramref name="route"/>.</summary>
    private static byte[] InDialog(string method, string callId, string route, int cseq, string toTag = "callee") =>
        Encoding.ASCII.GetBytes(
            $"{method} sip:callee@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP {Caller};branch=z9hG4bK{callId}{method}{cseq}\r\n" +
            $"Route: {route}\r\nFrom: <sip:alice@{Caller}>;tag=a{callId}\r\nTo: <sip:service@127.0.0.1:5090>;tag={toTag}\r\n" +
            $"Call-ID: {callId}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");

    /// <summary>A response from the next hop to a request the proxy sent (the proxy tests' builder).</summary>
    private static byte[] Response(SipMessage request, int status, string reason, string toTag) =>
        ProxyTransactionTests.Response(request, status, reason, toTag);

    private static string Text(SipMessage m, TextRange r) => Encoding.UTF8.GetString(m[r]);

    private static string ToTag(SipMessage m) => Text(m, m.ToTag);

    private static string Header(SipMessage m, string name)
    {
        foreach (var f in m.Fields)
        {
            if (Text(m, f.Name).Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return Text(m, f.Value);
            }
        }
        Assert.Fail($"no {name}");
        return "";
    }

    /// <summary>Admits every INVITE (after <see cref="Hold"/> when set) and keeps the dialogs as the grains would.</summary>
    private sealed class Policy : ICallPolicy
    {
        private int _asked;
        private readonly Dictionary<SipCallId, DialogRecord> _dialogs = [];

        public TaskCompletionSource<CallDecision>? Hold { get; init; }

        /// <summary>The decision every INVITE gets (unset: admitted).</summary>
        public CallDecision? Decision { get; init; }

        public int Asked => Volatile.Read(ref _asked);

        public List<string> Events { get; } = [];

        public async ValueTask<CallDecision> AdmitAsync(SipMessage invite, SipTarget source, SipTarget route, InviteOrigin origin, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _asked);
            var call = new SipCallId(Encoding.UTF8.GetString(invite[invite.CallId]), Encoding.UTF8.GetString(invite[invite.FromTag]));
            var decision = Hold is { } hold ? await hold.Task : Decision ?? CallDecision.Admit;
            lock (Events)
            {
                _dialogs[call] = new DialogRecord(null, origin.CallerTargets, [], Confirmed: false);
            }
            return decision;
        }

        public void OnAnswered(SipCallId sipCall, DialogAnswer answer)
        {
            lock (Events)
            {
                if (_dialogs.TryGetValue(sipCall, out var dialog))
                {
                    _dialogs[sipCall] = dialog with { CalleeTag = answer.CalleeTag, CalleeTargets = answer.CalleeTargets, Confirmed = true };
                }
            }
        }

        public void OnFailed(SipCallId sipCall, int status)
        {
        }

        public void OnBye(SipCallId sipCall)
        {
            lock (Events)
            {
                _dialogs.Remove(sipCall);
                Events.Add($"bye {sipCall.CallId}");
            }
        }

        public void OnRefresh(SipCallId sipCall)
        {
        }

        /// <summary>Dialog look-ups asked so far (each would be a grain call at a real edge).</summary>
        public int LookUps => Volatile.Read(ref _lookUps);

        private int _lookUps;

        public ValueTask<DialogRecord?> FindDialogAsync(SipCallId sipCall, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _lookUps);
            lock (Events)
            {
                return ValueTask.FromResult(_dialogs.GetValueOrDefault(sipCall));
            }
        }
    }

    private sealed class Sender : ISipSender
    {
        private readonly List<(IPEndPoint To, byte[] Bytes)> _all = [];

        public void Send(in SipTarget target, byte[] message, Action? onFailure = null)
        {
            lock (_all)
            {
                _all.Add((target.EndPoint, message));
            }
        }

        public int Count(IPEndPoint to, string start)
        {
            lock (_all)
            {
                return _all.Count(x => Matches(x, to, start));
            }
        }

        /// <summary>Takes every message to <paramref name="to"/> starting with <paramref name="start"/>, as text.</summary>
        public List<string> Take(IPEndPoint to, string start)
        {
            lock (_all)
            {
                var taken = _all.Where(x => Matches(x, to, start)).ToList();
                _all.RemoveAll(x => Matches(x, to, start));
                return [.. taken.Select(x => Encoding.ASCII.GetString(x.Bytes))];
            }
        }

        public SipMessage TakeMessage(IPEndPoint to, string start)
        {
            Assert.True(TryTakeMessage(to, start, out var message), $"nothing starting with {start} to {to}: {Describe()}");
            return message;
        }

        public bool TryTakeMessage(IPEndPoint to, string start, out SipMessage message)
        {
            lock (_all)
            {
                var index = _all.FindIndex(x => Matches(x, to, start));
                if (index < 0)
                {
                    message = null!;
                    return false;
                }
                message = new SipMessage();
                Assert.Equal(SipParseError.None, message.Parse(_all[index].Bytes));
                _all.RemoveAt(index);
                return true;
            }
        }

        public void Clear()
        {
            lock (_all)
            {
                _all.Clear();
            }
        }

        public string Describe()
        {
            lock (_all)
            {
                return string.Join("; ", _all.Select(x => $"{x.To} {Encoding.ASCII.GetString(x.Bytes).Split('\r')[0]}"));
            }
        }

        private static bool Matches((IPEndPoint To, byte[] Bytes) x, IPEndPoint to, string start) =>
            x.To.Equals(to) && x.Bytes.AsSpan().StartsWith(Encoding.ASCII.GetBytes(start));
    }
}
