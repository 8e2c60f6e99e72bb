using System.Net;
using System.Text;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.Sip.Tests.Messages;
using CallState.Sip.Tests.Timers;
using CallState.Sip.Timers;

namespace CallState.Sip.Tests.Proxy;

/// <summary>
/// The proxy core driven message by message on a fake clock: transactions, timers A-K, CANCEL, ACK, routing.
/// Sends are captured instead of going to sockets.
/// </summary>
public sealed class ProxyTransactionTests : IDisposable
{
    private static readonly IPEndPoint Caller = new(IPAddress.Parse("127.0.0.1"), 5061);
    private static readonly IPEndPoint Upstream = new(IPAddress.Parse("127.0.0.1"), 5090);
    private static readonly IPEndPoint Self = new(IPAddress.Parse("127.0.0.1"), 5060);

    private readonly FakeTimeProvider _clock = new();
    private readonly TimerWheel _wheel;
    private readonly CapturingSender _sent = new();
    private readonly SipProxy _proxy;

    public ProxyTransactionTests()
    {
        _wheel = new TimerWheel(_clock);
        _proxy = new SipProxy(new SipProxyOptions
        {
            Port = 5060,
            DefaultUpstream = Upstream.ToString(),
            AdvertisedHost = "192.0.2.80",
            AllowedDestinations = ["127.0.0.1:5092", "127.0.0.9:5099", "127.0.0.1:5071"],
        }, _sent, _wheel);
    }

    public void Dispose()
    {
        _proxy.Dispose();
        _wheel.Dispose();
    }

    [Fact]
    public void Invite_gets_100_Trying_and_is_forwarded_with_Via_Record_Route_and_Max_Forwards()
    {
        Receive(Invite("c1"), Caller);
        var trying = _sent.Take(Caller);
        Assert.Equal(100, trying.StatusCode);
        var forwarded = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Invite, forwarded.Method);
        Assert.Equal(2, forwarded.ViaCount);
        Assert.Equal("127.0.0.1", Text(forwarded, forwarded.TopVia.Host));
        Assert.Equal(5060, forwarded.TopVia.Port);
        Assert.StartsWith("z9hG4bK", Text(forwarded, forwarded.TopVia.Branch), StringComparison.Ordinal);
        Assert.Equal(69, forwarded.MaxForwards);
        Assert.Equal("<sip:192.0.2.80:5060;lr>", Header(forwarded, SipHeaderKind.RecordRoute));
        Assert.Equal("v=0\r\n", Encoding.ASCII.GetString(forwarded[forwarded.Body]));
        Assert.Empty(_sent.All);
    }

    [Fact]
    public void Retransmitted_invite_gets_the_last_provisional_again_and_is_not_forwarded_twice()
    {
        Receive(Invite("c2"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        Receive(Response(forwarded, 180, "Ringing", "uas1"), Upstream);
        Assert.Equal(180, _sent.Take(Caller).StatusCode);

        Receive(Invite("c2"), Caller);
        Assert.Equal(180, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
        Assert.Equal(1, _proxy.Metrics.RequestsForwarded);
    }

    [Fact]
    public void Timer_A_doubles_retransmissions_and_Timer_B_answers_408_after_64_T1()
    {
        Receive(Invite("c3"), Caller);
        _sent.Take(Caller);
        _sent.Take(Upstream);
        var at = new List<double>();
        for (var i = 0; i < 320; i++)
        {
            _clock.Advance(TimeSpan.FromMilliseconds(100));
            while (_sent.TryTake(Upstream, out var m))
            {
                Assert.Equal(SipMethod.Invite, m.Method);
                at.Add(_clock.Elapsed().TotalSeconds);
            }
        }
        // T1 = 0.5 s: retransmissions 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s after the first send (RFC 3261 17.1.1.2).
        Assert.Equal([0.5, 1.5, 3.5, 7.5, 15.5, 31.5], at.Select(t => Math.Round(t * 10) / 10));
        var timeout = _sent.Take(Caller);
        Assert.Equal(408, timeout.StatusCode);
        Assert.False(timeout.ToTag.IsEmpty);

        // The caller's ACK for the 408 is absorbed, not forwarded.
        Receive(Ack("c3", Text(timeout, timeout.ToTag)), Caller);
        Assert.Empty(_sent.All);
    }

    [Fact]
    public void Non_2xx_is_acked_hop_by_hop_and_retransmitted_upstream_by_Timer_G_until_the_ACK()
    {
        Receive(Invite("c4"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        var busy = Response(forwarded, 486, "Busy Here", "uas4");
        Receive(busy, Upstream);

        var ack = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Ack, ack.Method);
        Assert.Equal(Text(forwarded, forwarded.TopVia.Branch), Text(ack, ack.TopVia.Branch));
        Assert.Equal("uas4", Text(ack, ack.ToTag));
        var upstreamBusy = _sent.Take(Caller);
        Assert.Equal(486, upstreamBusy.StatusCode);
        Assert.Equal(1, upstreamBusy.ViaCount);

        // A retransmitted 486 from downstream is ACKed again and not forwarded again.
        Receive(busy, Upstream);
        Assert.Equal(SipMethod.Ack, _sent.Take(Upstream).Method);
        Assert.Empty(_sent.All);

        _clock.Advance(TimeSpan.FromMilliseconds(510));
        Assert.Equal(486, _sent.Take(Caller).StatusCode);
        Receive(Ack("c4", "uas4"), Caller);
        _clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Empty(_sent.All);
    }

    [Fact]
    public void A_request_matching_an_ended_transaction_whose_client_lingers_is_forwarded_on_a_branch_of_its_own()
    {
        // Found by the fuzz run (docs/testing.md, "Fuzzing"): the same INVITE (same branch and sent-by) after its first
        // transaction ended with a 486 and its ACK, while the forwarded branch still absorbs retransmissions (Timer D),
        // was answered 500 (branch in use).
        Receive(Invite("c4b"), Caller);
        _sent.Take(Caller);
        var first = _sent.Take(Upstream);
        Receive(Response(first, 486, "Busy Here", "uas4b"), Upstream);
        Assert.Equal(SipMethod.Ack, _sent.Take(Upstream).Method);
        Assert.Equal(486, _sent.Take(Caller).StatusCode);
        Receive(Ack("c4b", "uas4b"), Caller);
        _clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Empty(_sent.All);

        Receive(Invite("c4b"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        var second = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Invite, second.Method);
        Assert.NotEqual(Text(first, first.TopVia.Branch), Text(second, second.TopVia.Branch));

        // Each branch keeps its own transaction: the lingering one still absorbs its 486, the new one forwards its own.
        Receive(Response(first, 486, "Busy Here", "uas4b"), Upstream);
        Assert.Equal(SipMethod.Ack, _sent.Take(Upstream).Method);
        Assert.Empty(_sent.All);
        Receive(Response(second, 486, "Busy Here", "uas4c"), Upstream);
        Assert.Equal(SipMethod.Ack, _sent.Take(Upstream).Method);
        Assert.Equal(486, _sent.Take(Caller).StatusCode);
    }

    [Fact]
    public void Two_hundred_is_forwarded_and_its_ACK_follows_the_route_statelessly()
    {
        Receive(Invite("c5"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        Receive(Response(forwarded, 200, "OK", "uas5"), Upstream);
        var ok = _sent.Take(Caller);
        Assert.Equal(200, ok.StatusCode);

        // The caller's ACK carries the route set the 200 taught it: our Record-Route, then the callee's contact.
        Receive(Request("ACK", "sip:callee@127.0.0.1:5090", "c5", "z9hG4bKack5", cseq: "1 ACK", toTag: "uas5",
            extra: "Route: <sip:192.0.2.80:5060;lr>\r\n"), Caller);
        var ack = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Ack, ack.Method);
        Assert.False(ack.Has(SipHeaderKind.Route));
        Assert.Equal(2, ack.ViaCount);
    }

    [Fact]
    public void Lingering_transactions_keep_only_what_absorbs_retransmissions_and_still_absorb_them()
    {
        Receive(Invite("c7"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        Receive(Response(forwarded, 200, "OK", "uas7"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Receive(Request("BYE", "sip:callee@127.0.0.1:5090", "c7", "z9hG4bKbye7", cseq: "2 BYE", toTag: "uas7",
            extra: "Route: <sip:192.0.2.80:5060;lr>\r\n"), Caller);
        var bye = _sent.Take(Upstream);
        Receive(Response(bye, 200, "OK", "uas7"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);

        // Every transaction has its final response and lingers on its timers: no response template, no request copy,
        // no CANCEL material; only the BYE's 200 stays, to answer a retransmitted BYE.
        var servers = _proxy.ServerTransactions.ToArray();
        Assert.Equal(2, servers.Length);
        Assert.All(servers, tx => Assert.Null(tx.Template));
        Assert.Null(servers.Single(tx => tx.IsInvite).LastResponse);
        Assert.NotNull(servers.Single(tx => !tx.IsInvite).LastResponse);
        var clients = _proxy.ClientTransactions.ToArray();
        Assert.Equal(2, clients.Length);
        Assert.All(clients, c => Assert.Null(c.Request));
        Assert.All(clients, c => Assert.Null(c.CancelInfo));

        // Retransmissions still meet their transactions: the INVITE is absorbed, the BYE answered again from the
        // kept 200, a retransmitted 2xx from the callee still goes upstream (RFC 6026), a late CANCEL is not forwarded.
        Receive(Invite("c7"), Caller);
        Assert.Empty(_sent.All);
        Receive(Request("BYE", "sip:callee@127.0.0.1:5090", "c7", "z9hG4bKbye7", cseq: "2 BYE", toTag: "uas7",
            extra: "Route: <sip:192.0.2.80:5060;lr>\r\n"), Caller);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
        Receive(Response(forwarded, 200, "OK", "uas7"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Receive(Request("CANCEL", "sip:service@127.0.0.1:5060", "c7", "z9hG4bKc7", cseq: "1 CANCEL"), Caller);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
    }

    [Fact]
    public void Cancel_waits_for_a_provisional_then_goes_downstream_and_the_487_comes_back()
    {
        Receive(Invite("c6"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);

        Receive(Request("CANCEL", "sip:service@127.0.0.1:5060", "c6", "z9hG4bKc6", cseq: "1 CANCEL"), Caller);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);

        Receive(Response(forwarded, 180, "Ringing", "uas6"), Upstream);
        Assert.Equal(180, _sent.Take(Caller).StatusCode);
        var cancel = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Cancel, cancel.Method);
        Assert.Equal(Text(forwarded, forwarded.TopVia.Branch), Text(cancel, cancel.TopVia.Branch));
        Assert.Equal(forwarded.CSeq, cancel.CSeq);

        Receive(Response(cancel, 200, "OK", "uas6"), Upstream);
        Receive(Response(forwarded, 487, "Request Terminated", "uas6"), Upstream);
        Assert.Equal(SipMethod.Ack, _sent.Take(Upstream).Method);
        Assert.Equal(487, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
    }

    [Fact]
    public void Cancel_for_no_transaction_gets_481()
    {
        Receive(Request("CANCEL", "sip:service@127.0.0.1:5060", "c7", "z9hG4bKnone", cseq: "1 CANCEL"), Caller);
        Assert.Equal(481, _sent.Take(Caller).StatusCode);
    }

    [Fact]
    public void Non_invite_retransmits_with_Timer_E_capped_at_T2_and_times_out_with_Timer_F()
    {
        Receive(Request("OPTIONS", "sip:bob@example.com", "c8", "z9hG4bKc8", cseq: "1 OPTIONS"), Caller);
        _sent.Take(Upstream);
        var at = new List<double>();
        for (var i = 0; i < 330; i++)
        {
            _clock.Advance(TimeSpan.FromMilliseconds(100));
            while (_sent.TryTake(Upstream, out _))
            {
                at.Add(Math.Round(_clock.Elapsed().TotalSeconds * 10) / 10);
            }
        }
        Assert.Equal([0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5], at);
        Assert.Equal(408, _sent.Take(Caller).StatusCode);
    }

    [Fact]
    public void A_request_that_comes_back_unchanged_is_a_loop()
    {
        Receive(Request("OPTIONS", "sip:bob@example.com", "c9", "z9hG4bKc9", cseq: "1 OPTIONS"), Caller);
        var forwarded = _sent.Take(Upstream);
        Receive(forwarded.Span.ToArray(), Upstream);

        // The answer goes where the looped request's top Via says: back to this proxy's own address.
        Assert.Equal(482, _sent.Take(Self).StatusCode);
    }

    [Fact]
    public void Our_route_entry_is_popped_and_the_next_one_is_the_next_hop()
    {
        Receive(Request("BYE", "sip:alice@192.0.2.7:5070", "c10", "z9hG4bKc10", cseq: "2 BYE", toTag: "t",
            extra: "Route: <sip:192.0.2.80:5060;lr>, <sip:127.0.0.9:5099;lr>\r\n"), Caller);
        var target = new IPEndPoint(IPAddress.Parse("127.0.0.9"), 5099);
        var forwarded = _sent.Take(target);
        Assert.Equal("<sip:127.0.0.9:5099;lr>", Header(forwarded, SipHeaderKind.Route));
        Assert.False(forwarded.Has(SipHeaderKind.RecordRoute));
    }

    [Fact]
    public void Without_a_route_an_in_dialog_request_goes_to_the_request_uri()
    {
        Receive(Request("BYE", "sip:alice@127.0.0.1:5071", "c11", "z9hG4bKc11", cseq: "2 BYE", toTag: "t",
            extra: "Route: <sip:192.0.2.80;lr>\r\n"), Caller);
        var forwarded = _sent.Take(new IPEndPoint(IPAddress.Loopback, 5071));
        Assert.False(forwarded.Has(SipHeaderKind.Route));
    }

    [Fact]
    public void A_stray_response_is_dropped()
    {
        Receive(Encoding.ASCII.GetBytes("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnotours\r\nVia: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKx\r\n" +
            "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"), Upstream);
        Assert.Empty(_sent.All);
        Assert.Equal(1, _proxy.Metrics.Dropped);
    }

    [Fact]
    public void Over_the_transaction_limit_a_request_gets_503_with_Retry_After()
    {
        using var wheel = new TimerWheel(_clock);
        var sent = new CapturingSender();
        using var proxy = new SipProxy(new SipProxyOptions { DefaultUpstream = Upstream.ToString(), MaxTransactions = 2 }, sent, wheel);
        Deliver(proxy, Invite("o1"), Caller);
        Deliver(proxy, Invite("o2"), Caller);
        var answer = sent.All.Select(x => Parse(x.Bytes)).Single(m => m.StatusCode == 503);
        Assert.Equal("5", Header(answer, SipHeaderKind.RetryAfter));
    }

    [Fact]
    public void Tcp_next_hop_gets_no_retransmissions()
    {
        Receive(Request("OPTIONS", "sip:bob@127.0.0.1:5090;transport=tcp", "c12", "z9hG4bKc12", cseq: "1 OPTIONS"), Caller);
        var (target, _) = _sent.All.Single();
        Assert.Equal(SipTransportKind.Tcp, target.Transport);
        _sent.All.Clear();
        _clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Empty(_sent.All);
    }

    [Fact]
    public void A_rejected_invite_is_answered_with_the_policy_status_and_never_forwarded()
    {
        var policy = new RecordingPolicy { Decide = _ => CallDecision.Reject(486, "Busy Here", "Reason: Q.850;cause=17\r\n") };
        using var proxy = new SipProxy(new SipProxyOptions { DefaultUpstream = Upstream.ToString() }, _sent, _wheel, policy: policy);
        Deliver(proxy, Invite("p1"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        var busy = _sent.Take(Caller);
        Assert.Equal(486, busy.StatusCode);
        Assert.Equal("Q.850;cause=17", Header(busy, SipHeaderKind.Reason));
        Assert.Empty(_sent.All);
        Assert.Empty(policy.Events);

        // A retransmission neither asks the policy again nor forwards.
        Deliver(proxy, Invite("p1"), Caller);
        Assert.Equal(486, _sent.Take(Caller).StatusCode);
        Assert.Equal(1, policy.Asked);
    }

    [Fact]
    public void An_admitted_call_is_reported_answered_and_its_bye_from_the_callee_names_the_caller()
    {
        var policy = new RecordingPolicy();
        using var proxy = new SipProxy(new SipProxyOptions { DefaultUpstream = Upstream.ToString(), AdvertisedHost = "192.0.2.80" }, _sent, _wheel, policy: policy);
        Deliver(proxy, Invite("p2"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        var recordRoute = Header(forwarded, SipHeaderKind.RecordRoute);
        Assert.Equal("<sip:192.0.2.80:5060;lr;cs-tag=ap2>", recordRoute);
        Deliver(proxy, Response(forwarded, 200, "OK", "callee"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Deliver(proxy, Response(forwarded, 200, "OK", "callee"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Equal(["answered p2/ap2"], policy.Events);

        // The callee's BYE: From is the callee, To the caller; the Route entry names the caller's tag.
        Deliver(proxy, Encoding.ASCII.GetBytes(
            $"BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKbye2\r\nRoute: {recordRoute}\r\n" +
            "From: <sip:service@127.0.0.1:5060>;tag=callee\r\nTo: <sip:alice@127.0.0.1:5061>;tag=ap2\r\nCall-ID: p2\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"), Upstream);
        var bye = _sent.Take(Caller);
        Assert.Equal(SipMethod.Bye, bye.Method);

        // The call ends when the far end answers the BYE, not when it is forwarded.
        Assert.Equal(["answered p2/ap2"], policy.Events);
        Deliver(proxy, Response(bye, 200, "OK", "ap2"), Caller);
        Assert.Equal(200, _sent.Take(Upstream).StatusCode);
        Assert.Equal(["answered p2/ap2", "bye p2/ap2"], policy.Events);
    }

    [Fact]
    public void A_caller_tag_escaped_in_our_record_route_names_the_same_call_on_the_bye()
    {
        // A From tag of a+b travels as cs-tag=a%2Bb; the BYE must name the call a+b, or its slot is never released.
        var policy = new RecordingPolicy();
        using var proxy = new SipProxy(new SipProxyOptions { DefaultUpstream = Upstream.ToString(), AdvertisedHost = "192.0.2.80" }, _sent, _wheel, policy: policy);
        Deliver(proxy, Invite("q+1"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        var recordRoute = Header(forwarded, SipHeaderKind.RecordRoute);
        Assert.Equal("<sip:192.0.2.80:5060;lr;cs-tag=aq%2B1>", recordRoute);
        Deliver(proxy, Response(forwarded, 200, "OK", "callee"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);

        Deliver(proxy, Encoding.ASCII.GetBytes(
            $"BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKbyeq1\r\nRoute: {recordRoute}\r\n" +
            "From: <sip:service@127.0.0.1:5060>;tag=callee\r\nTo: <sip:alice@127.0.0.1:5061>;tag=aq+1\r\nCall-ID: q+1\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"), Upstream);
        var bye = _sent.Take(Caller);
        Assert.Equal(SipMethod.Bye, bye.Method);
        Deliver(proxy, Response(bye, 200, "OK", "aq+1"), Caller);
        Assert.Equal(["answered q+1/aq+1", "bye q+1/aq+1"], policy.Events);
    }

    [Fact]
    public void A_call_cancelled_while_the_policy_decides_is_answered_487_and_reported_failed()
    {
        var decision = new TaskCompletionSource<CallDecision>(TaskCreationOptions.RunContinuationsAsynchronously);
        var policy = new RecordingPolicy { Pending = decision.Task };
        using var proxy = new SipProxy(new SipProxyOptions { DefaultUpstream = Upstream.ToString() }, _sent, _wheel, policy: policy);
        Deliver(proxy, Invite("p3"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        Deliver(proxy, Request("CANCEL", "sip:service@127.0.0.1:5060", "p3", "z9hG4bKp3", cseq: "1 CANCEL"), Caller);
        var answers = new[] { _sent.Take(Caller).StatusCode, _sent.Take(Caller).StatusCode }.Order();
        Assert.Equal([200, 487], answers);

        decision.SetResult(CallDecision.Admit);
        SpinWait.SpinUntil(() => policy.Events.Count > 0, TimeSpan.FromSeconds(5));
        Assert.Equal(["failed p3/ap3 487"], policy.Events);
        Assert.False(_sent.TryTake(Upstream, out _));
    }

    [Fact]
    public void An_admitted_call_rejected_downstream_is_reported_failed_once()
    {
        var policy = new RecordingPolicy();
        using var proxy = new SipProxy(new SipProxyOptions { DefaultUpstream = Upstream.ToString() }, _sent, _wheel, policy: policy);
        Deliver(proxy, Invite("p4"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        Deliver(proxy, Response(forwarded, 486, "Busy Here", "callee"), Upstream);
        Deliver(proxy, Response(forwarded, 486, "Busy Here", "callee"), Upstream);
        Assert.Equal(["failed p4/ap4 486"], policy.Events);
    }

    [Theory]
    [InlineData(300, new[] { 50, 100, 150, 200 })]
    [InlineData(200, new[] { 0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200 })]
    public void Provisionals_renew_a_counted_calls_early_lease_at_most_once_per_half_its_spare_time(int leaseSeconds, int[] renewedAt)
    {
        // Timer C (3 min) + 64*T1 (32 s) is 212 s. A 300 s lease has 88 s spare: a 180 renews it once 44 s have passed
        // since the admission or the last renewal. A 200 s lease has none: every provisional renews it.
        var policy = new RecordingPolicy
        {
            Clock = _clock,
            Decide = _ => CallDecision.AdmitCounted(new SipTarget(SipTransportKind.Udp, Upstream), TimeSpan.FromSeconds(leaseSeconds)),
        };
        using var proxy = PolicyProxy(policy);
        var admitted = _clock.GetUtcNow();
        Deliver(proxy, Invite("r1"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);

        // The callee rings for 200 s, a 180 every 10 s (each one resets Timer C); the call stays up all along.
        for (var t = 0; t <= 200; t += 10)
        {
            Deliver(proxy, Response(forwarded, 180, "Ringing", "callee"), Upstream);
            Assert.Equal(180, _sent.Take(Caller).StatusCode);
            _clock.Advance(TimeSpan.FromSeconds(t == 200 ? 0 : 10));
        }

        Assert.Equal(renewedAt.Select(t => TimeSpan.FromSeconds(t)), policy.Provisionals.Select(p => p - admitted));
        Deliver(proxy, Response(forwarded, 200, "OK", "callee"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Equal(["answered r1/ar1"], policy.Events);
        Assert.NotNull(Assert.Single(policy.Answers).Teardown);
    }

    [Fact]
    public void Provisionals_of_a_call_nothing_counts_renew_nothing_and_its_answer_has_no_teardown()
    {
        var policy = new RecordingPolicy { Clock = _clock };
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("r2"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        for (var i = 0; i < 10; i++)
        {
            Deliver(proxy, Response(forwarded, 180, "Ringing", "callee"), Upstream);
            _clock.Advance(TimeSpan.FromSeconds(60));
        }

        Deliver(proxy, Response(forwarded, 200, "OK", "callee"), Upstream);
        Assert.Empty(policy.Provisionals);
        Assert.Null(Assert.Single(policy.Answers).Teardown);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_teardown_sends_each_side_an_in_dialog_BYE_along_its_half_of_the_route_set_once_the_ACK_passed(bool acked)
    {
        var policy = new RecordingPolicy
        {
            Clock = _clock,
            Decide = _ => CallDecision.AdmitCounted(new SipTarget(SipTransportKind.Udp, Upstream), TimeSpan.FromMinutes(5)),
        };
        using var proxy = PolicyProxy(policy);

        // A proxy above us (toward the caller) and one below (toward the callee) record-route too.
        Deliver(proxy, Request("INVITE", "sip:service@127.0.0.1:5060", "td1", "z9hG4bKtd1", cseq: "7 INVITE",
            extra: "Record-Route: <sip:127.0.0.7:5070;lr>\r\n"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        var ok = Encoding.ASCII.GetString(Response(forwarded, 200, "OK", "callee"));
        ok = ok.Insert(ok.IndexOf("Record-Route: ", StringComparison.Ordinal), "Record-Route: <sip:127.0.0.9:5090;lr>\r\n");
        Deliver(proxy, Encoding.ASCII.GetBytes(ok), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        var teardown = Assert.Single(policy.Answers).Teardown!;

        // Asked for before the caller's ACK: nothing goes until it has passed (or 64*T1 without it), so a BYE never
        // overtakes the ACK to the callee, nor reaches the caller before its 2xx could be acknowledged (RFC 3261 15).
        Assert.True(teardown.Send());
        Assert.False(teardown.Send());
        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Empty(_sent.All);
        if (acked)
        {
            var route = Header(forwarded, SipHeaderKind.RecordRoute).Split(',')[0];
            Deliver(proxy, Request("ACK", "sip:callee@127.0.0.1:5090", "td1", "z9hG4bKtd1ack", cseq: "7 ACK", toTag: "callee",
                extra: $"Route: {route}\r\n"), Caller);
            Assert.Equal(SipMethod.Ack, _sent.Take(Upstream).Method);
            _clock.Advance(TimeSpan.FromMilliseconds(20));
        }
        else
        {
            _clock.Advance(TimeSpan.FromSeconds(32));
        }

        var toCallee = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Bye, toCallee.Method);
        Assert.Equal("sip:callee@127.0.0.1:5090", Text(toCallee, toCallee.RequestUriText));
        Assert.Equal("<sip:127.0.0.9:5090;lr>", Header(toCallee, SipHeaderKind.Route));
        Assert.Equal("<sip:alice@127.0.0.1:5061>;tag=atd1", Header(toCallee, SipHeaderKind.From));
        Assert.Equal("<sip:service@127.0.0.1:5060>;tag=callee", Header(toCallee, SipHeaderKind.To));
        Assert.Equal("td1", Header(toCallee, SipHeaderKind.CallId));
        Assert.Equal("100007 BYE", Header(toCallee, SipHeaderKind.CSeq));
        Assert.Equal(1, toCallee.ViaCount);

        var toCaller = _sent.Take(Caller);
        Assert.Equal(SipMethod.Bye, toCaller.Method);
        Assert.Equal("sip:alice@127.0.0.1:5061", Text(toCaller, toCaller.RequestUriText));
        Assert.Equal("<sip:127.0.0.7:5070;lr>", Header(toCaller, SipHeaderKind.Route));
        Assert.Equal("<sip:service@127.0.0.1:5060>;tag=callee", Header(toCaller, SipHeaderKind.From));
        Assert.Equal("<sip:alice@127.0.0.1:5061>;tag=atd1", Header(toCaller, SipHeaderKind.To));
        Assert.Equal("2147483647 BYE", Header(toCaller, SipHeaderKind.CSeq));
        Assert.Empty(_sent.All);

        // Each BYE is a client transaction: retransmitted over UDP until answered, and its 200 goes nowhere.
        Deliver(proxy, Response(toCallee, 200, "OK", "callee"), Upstream);
        _clock.Advance(TimeSpan.FromMilliseconds(500));
        Assert.Equal(SipMethod.Bye, _sent.Take(Caller).Method);
        Assert.Empty(_sent.All);
        Deliver(proxy, Response(toCaller, 200, "OK", "atd1"), Caller);
        _clock.Advance(TimeSpan.FromSeconds(40));
        Assert.Empty(_sent.All);
        Assert.Equal(["answered td1/atd1"], policy.Events);
    }

    [Fact]
    public void A_teardown_stored_with_the_call_is_sent_at_once_by_any_proxy_with_the_BYEs_it_was_built_with()
    {
        // An operator's end (docs/architecture.md, "Ending a call from the admin API"): the BYEs built when the 2xx
        // passed are kept as stored bytes and a target string, and a proxy that never saw the call sends them.
        var policy = new RecordingPolicy
        {
            Clock = _clock,
            Decide = _ => CallDecision.AdmitCounted(new SipTarget(SipTransportKind.Udp, Upstream), TimeSpan.FromMinutes(5)),
        };
        using (var first = PolicyProxy(policy))
        {
            Deliver(first, Request("INVITE", "sip:service@127.0.0.1:5060", "st1", "z9hG4bKst1", cseq: "9 INVITE"), Caller);
            _sent.Take(Caller);
            var forwarded = _sent.Take(Upstream);
            Deliver(first, Response(forwarded, 200, "OK", "callee"), Upstream);
            Assert.Equal(200, _sent.Take(Caller).StatusCode);
        }

        var built = Assert.Single(policy.Answers).Teardown!;
        OwnRequest Stored(OwnRequest r)
        {
            Assert.True(SipTarget.TryParse(r.Target.ToString(), out var target));
            return new OwnRequest(target, [.. r.RequestLine], [.. r.Rest]);
        }

        using var other = PolicyProxy(new RecordingPolicy { Clock = _clock });
        var teardown = other.TeardownOf(Stored(built.TowardCallee), Stored(built.TowardCaller));
        Assert.True(teardown.Send());
        Assert.False(teardown.Send());

        // No ACK to wait for: the call was answered long ago.
        var toCallee = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Bye, toCallee.Method);
        Assert.Equal("st1", Header(toCallee, SipHeaderKind.CallId));
        Assert.Equal("<sip:service@127.0.0.1:5060>;tag=callee", Header(toCallee, SipHeaderKind.To));
        Assert.Equal("100009 BYE", Header(toCallee, SipHeaderKind.CSeq));
        Assert.Equal(1, toCallee.ViaCount);
        var toCaller = _sent.Take(Caller);
        Assert.Equal(SipMethod.Bye, toCaller.Method);
        Assert.Equal("<sip:service@127.0.0.1:5060>;tag=callee", Header(toCaller, SipHeaderKind.From));
        Assert.Equal("2147483647 BYE", Header(toCaller, SipHeaderKind.CSeq));
        Assert.Empty(_sent.All);
    }

    [Theory]
    [InlineData("udp:192.0.2.1:5060", SipTransportKind.Udp)]
    [InlineData("tcp:[2001:db8::1]:5070", SipTransportKind.Tcp)]
    [InlineData("tls:203.0.113.5:5061", SipTransportKind.Tls)]
    public void A_target_reads_back_from_its_text(string text, SipTransportKind transport)
    {
        Assert.True(SipTarget.TryParse(text, out var target));
        Assert.Equal(transport, target.Transport);
        Assert.Null(target.Connection);
        Assert.Equal(text, target.ToString());
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("192.0.2.1:5060")]
    [InlineData("sctp:192.0.2.1:5060")]
    [InlineData("udp:192.0.2.1")]
    [InlineData("udp:example.com:5060")]
    [InlineData("UDP:192.0.2.1:5060")]
    public void A_text_that_is_not_a_target_is_refused(string? text) => Assert.False(SipTarget.TryParse(text, out _));

    [Fact]
    public void Timer_C_cancels_an_admitted_call_ringing_too_long_answers_408_and_reports_it_failed_once()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("tc1"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        var forwarded = _sent.Take(Upstream);
        Deliver(proxy, Response(forwarded, 180, "Ringing", "callee"), Upstream);
        Assert.Equal(180, _sent.Take(Caller).StatusCode);

        // The 180 replaced Timer B with Timer C (3 minutes by default): nothing happens at 64*T1 nor until then.
        _clock.Advance(new SipProxyOptions().TimerC - TimeSpan.FromMilliseconds(100));
        Assert.Empty(_sent.All);
        Assert.Empty(policy.Events);

        // RFC 3261 16.6 step 11 / 16.8: Timer C cancels the branch and the proxy answers the caller 408 itself.
        _clock.Advance(TimeSpan.FromMilliseconds(100));
        var cancel = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Cancel, cancel.Method);
        Assert.Equal(Text(forwarded, forwarded.TopVia.Branch), Text(cancel, cancel.TopVia.Branch));
        Assert.Equal(forwarded.CSeq, cancel.CSeq);
        var timeout = _sent.Take(Caller);
        Assert.Equal(408, timeout.StatusCode);
        Assert.False(timeout.ToTag.IsEmpty);
        Assert.Empty(_sent.All);
        Assert.Equal(["failed tc1/atc1 408"], policy.Events);

        // The callee's 487 that follows is ACKed hop by hop but never reaches the caller, who already has its 408,
        // and the call is not reported a second time.
        Deliver(proxy, Response(cancel, 200, "OK", "callee"), Upstream);
        Deliver(proxy, Response(forwarded, 487, "Request Terminated", "callee"), Upstream);
        var ack = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Ack, ack.Method);
        Assert.Equal(Text(forwarded, forwarded.TopVia.Branch), Text(ack, ack.TopVia.Branch));
        Deliver(proxy, Ack("tc1", Text(timeout, timeout.ToTag)), Caller);
        Assert.Empty(_sent.All);
        _clock.Advance(TimeSpan.FromSeconds(40));
        Assert.Empty(_sent.All);
        Assert.Equal(["failed tc1/atc1 408"], policy.Events);
        Assert.Equal(0, proxy.ServerTransactionCount + proxy.ClientTransactionCount);
        Assert.Equal(0, _wheel.CallbackErrors);
    }

    [Fact]
    public void A_later_provisional_restarts_Timer_C()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("tc2"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        Deliver(proxy, Response(forwarded, 180, "Ringing", "callee"), Upstream);
        Assert.Equal(180, _sent.Take(Caller).StatusCode);
        _clock.Advance(TimeSpan.FromMinutes(2));
        Deliver(proxy, Response(forwarded, 183, "Session Progress", "callee"), Upstream);
        Assert.Equal(183, _sent.Take(Caller).StatusCode);

        // RFC 3261 16.7 step 2: a provisional other than 100 MUST reset Timer C, so the call rings on for Timer C
        // after the 183, not after the 180.
        _clock.Advance(new SipProxyOptions().TimerC - TimeSpan.FromMilliseconds(100));
        Assert.True(_sent.All.Count == 0, "sent before Timer C ran out after the 183: " + _sent.Describe());
        Assert.Empty(policy.Events);
        _clock.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(SipMethod.Cancel, _sent.Take(Upstream).Method);
        Assert.Equal(408, _sent.Take(Caller).StatusCode);
        Assert.Equal(["failed tc2/atc2 408"], policy.Events);
    }

    [Fact]
    public void A_forwarded_cancel_the_next_hop_never_answers_gets_the_caller_487_after_64_T1_and_the_call_reported_failed_once()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("cn1"), Caller);
        _sent.Take(Caller);
        var forwarded = _sent.Take(Upstream);
        Deliver(proxy, Response(forwarded, 180, "Ringing", "callee"), Upstream);
        Assert.Equal(180, _sent.Take(Caller).StatusCode);
        Deliver(proxy, Request("CANCEL", "sip:service@127.0.0.1:5060", "cn1", "z9hG4bKcn1", cseq: "1 CANCEL"), Caller);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Equal(SipMethod.Cancel, _sent.Take(Upstream).Method);

        // Silence downstream: the CANCEL is retransmitted by Timer E (the INVITE, proceeding, is not), the caller hears
        // nothing until 64*T1 after the CANCEL went.
        var cancelsAt = new List<double>();
        for (var i = 0; i < 319; i++)
        {
            _clock.Advance(TimeSpan.FromMilliseconds(100));
            while (_sent.TryTake(Upstream, out var m))
            {
                Assert.Equal(SipMethod.Cancel, m.Method);
                cancelsAt.Add(Math.Round(_clock.Elapsed().TotalSeconds * 10) / 10);
            }
        }
        Assert.Equal([0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5], cancelsAt);
        Assert.Equal(0, _sent.Count(Caller));
        Assert.Empty(policy.Events);

        _clock.Advance(TimeSpan.FromMilliseconds(200));
        var terminated = _sent.Take(Caller);
        Assert.Equal(487, terminated.StatusCode);
        Assert.Empty(_sent.All);
        Assert.Equal(["failed cn1/acn1 487"], policy.Events);

        // A 487 arriving after that has no transaction left: dropped, not forwarded, not reported again.
        Deliver(proxy, Ack("cn1", Text(terminated, terminated.ToTag)), Caller);
        Deliver(proxy, Response(forwarded, 487, "Request Terminated", "callee"), Upstream);
        Assert.Empty(_sent.All);
        _clock.Advance(TimeSpan.FromSeconds(40));
        Assert.Empty(_sent.All);
        Assert.Equal(["failed cn1/acn1 487"], policy.Events);
        Assert.Equal(0, proxy.ServerTransactionCount + proxy.ClientTransactionCount);
    }

    [Fact]
    public void A_cancel_before_any_provisional_never_goes_downstream_and_Timer_B_answers_the_caller_487()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("cn2"), Caller);
        _sent.Take(Caller);
        _sent.Take(Upstream);
        Deliver(proxy, Request("CANCEL", "sip:service@127.0.0.1:5060", "cn2", "z9hG4bKcn2", cseq: "1 CANCEL"), Caller);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);

        // RFC 3261 9.1: no CANCEL before a provisional; the INVITE goes on being retransmitted (Timer A).
        var upstream = new List<SipMethod>();
        for (var i = 0; i < 319; i++)
        {
            _clock.Advance(TimeSpan.FromMilliseconds(100));
            while (_sent.TryTake(Upstream, out var m))
            {
                upstream.Add(m.Method);
            }
        }
        Assert.Equal(Enumerable.Repeat(SipMethod.Invite, 6), upstream);
        Assert.Equal(0, _sent.Count(Caller));

        // Timer B: the cancelled INVITE is answered 487, not 408.
        _clock.Advance(TimeSpan.FromMilliseconds(200));
        Assert.Equal(487, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
        Assert.Equal(["failed cn2/acn2 487"], policy.Events);
    }

    [Fact]
    public void An_invite_whose_next_hop_is_unreachable_gets_503_without_Retry_After_and_the_call_reported_failed()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        _sent.Unreachable(Upstream);
        Deliver(proxy, Invite("te1"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        _sent.WaitForFailureCallbacks();

        // RFC 3261 16.9: a transport error counts as a 503 from that branch.
        var unavailable = _sent.Take(Caller);
        Assert.Equal(503, unavailable.StatusCode);
        Assert.Equal("Service Unavailable (next hop unreachable)", Text(unavailable, unavailable.ReasonPhrase));
        Assert.False(unavailable.Has(SipHeaderKind.RetryAfter));
        Assert.Empty(_sent.All);
        Assert.Equal(["failed te1/ate1 503"], policy.Events);

        // The failed branch is given up: no Timer A retransmission to the dead hop, no Timer B 408 after the 503.
        Deliver(proxy, Ack("te1", Text(unavailable, unavailable.ToTag)), Caller);
        _clock.Advance(TimeSpan.FromSeconds(40));
        Assert.Empty(_sent.All);
        var attempt = Assert.Single(_sent.Failed);
        Assert.Equal(SipMethod.Invite, Parse(attempt.Bytes).Method);
        Assert.Equal(["failed te1/ate1 503"], policy.Events);
        Assert.Equal(0, proxy.ServerTransactionCount + proxy.ClientTransactionCount);
    }

    [Theory]
    [InlineData("OPTIONS")]
    [InlineData("MESSAGE")]
    public void A_non_invite_whose_next_hop_is_unreachable_gets_503_and_its_retransmission_the_same(string method)
    {
        var callee = new IPEndPoint(IPAddress.Loopback, 5092);
        _sent.Unreachable(callee);
        var request = Request(method, "sip:bob@127.0.0.1:5092;transport=tcp", "te2", "z9hG4bKte2", cseq: "1 " + method);
        Receive(request, Caller);
        _sent.WaitForFailureCallbacks();
        var unavailable = _sent.Take(Caller);
        Assert.Equal(503, unavailable.StatusCode);
        Assert.Equal("Service Unavailable (next hop unreachable)", Text(unavailable, unavailable.ReasonPhrase));
        Assert.Equal(method, Text(unavailable, unavailable.CSeqMethodToken));
        Assert.Empty(_sent.All);

        // The retransmitted request meets the completed transaction: the 503 again, no second try of the dead hop.
        Receive(request, Caller);
        Assert.Equal(503, _sent.Take(Caller).StatusCode);
        _clock.Advance(TimeSpan.FromSeconds(40));
        Assert.Empty(_sent.All);
        var attempt = Assert.Single(_sent.Failed);
        Assert.Equal(SipTransportKind.Tcp, attempt.Target.Transport);
        Assert.Equal(0, _proxy.ServerTransactionCount + _proxy.ClientTransactionCount);
    }

    /// <summary>How a policy fails to decide.</summary>
    public enum PolicyFault
    {
        ThrowsSynchronously,
        ReturnsFaultedTask,
        FaultsLater,
    }

    [Theory]
    [InlineData(PolicyFault.ThrowsSynchronously)]
    [InlineData(PolicyFault.ReturnsFaultedTask)]
    [InlineData(PolicyFault.FaultsLater)]
    public void A_failing_policy_gets_the_caller_503_with_Retry_After_forwards_nothing_and_the_next_invite_still_goes(PolicyFault fault)
    {
        var later = new TaskCompletionSource<CallDecision>(TaskCreationOptions.RunContinuationsAsynchronously);
        var policy = new RecordingPolicy();
        switch (fault)
        {
            case PolicyFault.ThrowsSynchronously:
                policy.Decide = _ => throw new InvalidOperationException("grains unreachable");
                break;
            case PolicyFault.ReturnsFaultedTask:
                policy.Pending = Task.FromException<CallDecision>(new TimeoutException("grains unreachable"));
                break;
            default:
                policy.Pending = later.Task;
                break;
        }
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("pf1"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        later.TrySetException(new TimeoutException("grains unreachable"));
        Assert.True(SpinWait.SpinUntil(() => _sent.Count(Caller) > 0, TimeSpan.FromSeconds(5)), "the caller got no final answer");

        var refused = _sent.Take(Caller);
        Assert.Equal(503, refused.StatusCode);
        Assert.Equal("Service Unavailable", Text(refused, refused.ReasonPhrase));
        Assert.Equal("5", Header(refused, SipHeaderKind.RetryAfter));
        Assert.Empty(_sent.All);
        Assert.Empty(policy.Events);

        // A retransmission gets the 503 again; the policy is not asked twice.
        Deliver(proxy, Invite("pf1"), Caller);
        Assert.Equal(503, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
        Assert.Equal(1, policy.Asked);

        // The proxy goes on: with the policy deciding again, the next INVITE is admitted and forwarded.
        policy.Decide = null;
        policy.Pending = null;
        Deliver(proxy, Invite("pf2"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        var forwarded = _sent.Take(Upstream);
        Assert.Equal("pf2", Text(forwarded, forwarded.CallId));
        Assert.Equal(2, policy.Asked);
        Deliver(proxy, Response(forwarded, 200, "OK", "callee"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Equal(["answered pf2/apf2"], policy.Events);
        Assert.Equal(0, _wheel.CallbackErrors);
    }

    [Theory]
    [InlineData("INVITE", false, 200)]
    [InlineData("INVITE", true, 200)]
    [InlineData("UPDATE", false, 200)]
    [InlineData("UPDATE", true, 200)]
    [InlineData("INVITE", false, 491)]
    [InlineData("UPDATE", true, 500)]
    public void An_in_dialog_refresh_is_forwarded_and_reported_on_the_request_naming_the_caller(string method, bool fromCallee, int status)
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("rf1"), Caller);
        _sent.Take(Caller);
        var invite = _sent.Take(Upstream);
        var recordRoute = Header(invite, SipHeaderKind.RecordRoute);
        Assert.Equal("<sip:192.0.2.80:5060;lr;cs-tag=arf1>", recordRoute);
        Deliver(proxy, Response(invite, 200, "OK", "callee"), Upstream);
        Assert.Equal(200, _sent.Take(Caller).StatusCode);
        Assert.Equal(["answered rf1/arf1"], policy.Events);

        var (sender, receiver) = fromCallee ? (Upstream, Caller) : (Caller, Upstream);
        Deliver(proxy, InDialog(method, "rf1", fromCallee, recordRoute), sender);
        if (method == "INVITE")
        {
            Assert.Equal(100, _sent.Take(sender).StatusCode);
        }
        var forwarded = _sent.Take(receiver);
        Assert.Equal(method, Text(forwarded, forwarded.MethodToken));
        Assert.Equal(2, forwarded.ViaCount);
        Assert.False(forwarded.Has(SipHeaderKind.Route));
        Assert.False(forwarded.Has(SipHeaderKind.RecordRoute));
        Assert.Empty(_sent.All);

        // Nothing is reported while the request is on its way.
        Assert.Equal(["answered rf1/arf1"], policy.Events);

        // A 2xx renews the call, named by the caller's tag whichever side sent it; a refused refresh neither renews
        // nor ends it.
        Deliver(proxy, Response(forwarded, status, status == 200 ? "OK" : "Refused", "unused"), receiver);
        var answer = _sent.Take(sender);
        Assert.Equal(status, answer.StatusCode);
        Assert.Equal(method, Text(answer, answer.CSeqMethodToken));
        Assert.Equal(status == 200 ? ["answered rf1/arf1", "refresh rf1/arf1"] : ["answered rf1/arf1"], policy.Events);
    }

    [Fact]
    public void Without_a_policy_a_request_to_an_unconfigured_address_gets_403_and_nothing_is_sent()
    {
        Receive(Request("MESSAGE", "sip:bob@203.0.113.9:5060;transport=tcp", "or1", "z9hG4bKor1", cseq: "1 MESSAGE"), Caller);
        var refused = _sent.Take(Caller);
        Assert.Equal(403, refused.StatusCode);
        Assert.Empty(_sent.All);
        Assert.Empty(_sent.Failed);
    }

    [Theory]
    [InlineData("MESSAGE", null)]
    [InlineData("OPTIONS", null)]
    [InlineData("SUBSCRIBE", null)]
    [InlineData("BYE", "t")]
    [InlineData("INFO", "t")]
    public void A_request_for_an_address_no_call_accounts_for_is_refused_and_never_sent(string method, string? toTag)
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Request(method, "sip:bob@203.0.113.9:5070", "or2", "z9hG4bKor2" + method, cseq: "1 " + method, toTag: toTag), Caller);
        var refused = _sent.Take(Caller);
        Assert.Equal(toTag is null ? 403 : 481, refused.StatusCode);
        Assert.Empty(_sent.All);
        Assert.Empty(policy.Events);
    }

    [Fact]
    public void An_invite_with_a_to_tag_of_no_admitted_dialog_gets_481_and_is_not_forwarded()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Request("INVITE", "sip:service@127.0.0.1:5060", "tt1", "z9hG4bKtt1", cseq: "1 INVITE", toTag: "forged"), Caller);
        Assert.Equal(100, _sent.Take(Caller).StatusCode);
        Assert.Equal(481, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
        Assert.Equal(0, policy.Asked);
    }

    [Fact]
    public void In_dialog_requests_need_both_tags_of_the_admitted_dialog_and_a_destination_it_recorded()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("bd1"), Caller);
        _sent.Take(Caller);
        var invite = _sent.Take(Upstream);
        var recordRoute = Header(invite, SipHeaderKind.RecordRoute);
        Deliver(proxy, Response(invite, 200, "OK", "callee"), Upstream);
        _sent.Take(Caller);

        // A wrong callee tag: no such dialog.
        Deliver(proxy, Request("BYE", "sip:callee@127.0.0.1:5090", "bd1", "z9hG4bKbd1a", cseq: "2 BYE", toTag: "other",
            extra: $"Route: {recordRoute}\r\n"), Caller);
        Assert.Equal(481, _sent.Take(Caller).StatusCode);

        // The right tags, but a Request-URI the dialog never recorded: nothing goes there.
        Deliver(proxy, Request("BYE", "sip:callee@203.0.113.9:5090", "bd1", "z9hG4bKbd1b", cseq: "2 BYE", toTag: "callee",
            extra: $"Route: {recordRoute}\r\n"), Caller);
        Assert.Equal(403, _sent.Take(Caller).StatusCode);
        Assert.Empty(_sent.All);
        Assert.Equal(["answered bd1/abd1"], policy.Events);

        // The callee's Contact from its 2xx is where the caller's requests may go.
        Deliver(proxy, Request("BYE", "sip:callee@127.0.0.1:5090", "bd1", "z9hG4bKbd1c", cseq: "2 BYE", toTag: "callee",
            extra: $"Route: {recordRoute}\r\n"), Caller);
        var bye = _sent.Take(Upstream);
        Assert.Equal(SipMethod.Bye, bye.Method);

        // A BYE the far end refuses (here: asking for credentials) does not end the call.
        Deliver(proxy, Response(bye, 407, "Proxy Authentication Required", "callee"), Upstream);
        Assert.Equal(407, _sent.Take(Caller).StatusCode);
        Assert.Equal(["answered bd1/abd1"], policy.Events);
    }

    [Fact]
    public void A_bye_nobody_answers_ends_the_call_when_its_transaction_times_out()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("bt1"), Caller);
        _sent.Take(Caller);
        var invite = _sent.Take(Upstream);
        var recordRoute = Header(invite, SipHeaderKind.RecordRoute);
        Deliver(proxy, Response(invite, 200, "OK", "callee"), Upstream);
        _sent.Take(Caller);
        Deliver(proxy, Request("BYE", "sip:callee@127.0.0.1:5090", "bt1", "z9hG4bKbt1", cseq: "2 BYE", toTag: "callee",
            extra: $"Route: {recordRoute}\r\n"), Caller);
        Assert.Equal(SipMethod.Bye, _sent.Take(Upstream).Method);
        Assert.Equal(["answered bt1/abt1"], policy.Events);

        _clock.Advance(TimeSpan.FromSeconds(33));
        Assert.Equal(["answered bt1/abt1", "bye bt1/abt1"], policy.Events);
    }

    [Fact]
    public void An_ack_of_no_admitted_dialog_is_dropped_and_the_admitted_one_goes_through()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Request("ACK", "sip:bob@127.0.0.1:5090", "ak1", "z9hG4bKak1", cseq: "1 ACK", toTag: "forged"), Caller);
        Assert.Empty(_sent.All);

        Deliver(proxy, Invite("ak2"), Caller);
        _sent.Take(Caller);
        var invite = _sent.Take(Upstream);
        Deliver(proxy, Response(invite, 200, "OK", "callee"), Upstream);
        _sent.Take(Caller);
        Deliver(proxy, Request("ACK", "sip:callee@127.0.0.1:5090", "ak2", "z9hG4bKak2ack", cseq: "1 ACK", toTag: "callee",
            extra: $"Route: {Header(invite, SipHeaderKind.RecordRoute)}\r\n"), Caller);
        Assert.Equal(SipMethod.Ack, _sent.Take(Upstream).Method);
    }

    [Fact]
    public void A_spiral_of_an_admitted_call_is_forwarded_without_a_second_admission_and_the_attempt_names_the_transaction()
    {
        var policy = new RecordingPolicy();
        using var proxy = PolicyProxy(policy);
        Deliver(proxy, Invite("sp1"), Caller);
        _sent.Take(Caller);
        var invite = _sent.Take(Upstream);
        Assert.Equal(1, policy.Asked);
        var origin = Assert.Single(policy.Origins);
        Assert.Equal("127.0.0.1:5061;z9hG4bKsp1@udp:127.0.0.1:5061", origin.Attempt);
        Assert.Contains("udp:127.0.0.1:5061", origin.CallerTargets);

        // The upstream sends it back to us with another Request-URI (RFC 3261 16.3 step 4: a spiral, not a loop).
        var text = Encoding.ASCII.GetString(invite.Span).Replace("INVITE sip:service@127.0.0.1:5060", "INVITE sip:other@127.0.0.1:5060", StringComparison.Ordinal);
        var back = "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKsp1back\r\n";
        text = text.Insert(text.IndexOf("Via:", StringComparison.Ordinal), back);
        Deliver(proxy, Encoding.ASCII.GetBytes(text), Upstream);
        Assert.Equal(100, _sent.Take(Upstream).StatusCode);
        Assert.Equal(SipMethod.Invite, _sent.Take(Upstream).Method);
        Assert.Equal(1, policy.Asked);
    }

    [Fact]
    public void Mutated_messages_never_throw_out_of_the_proxy()
    {
        var random = new Random(4475);
        var seeds = TortureCorpus.ManifestNames().Select(TortureCorpus.Read).Append(Invite("m")).ToArray();
        byte[] interesting = [(byte)'\r', (byte)'\n', (byte)':', (byte)';', (byte)',', (byte)'"', (byte)'<', (byte)'>', 0, 0xFF, (byte)' ', (byte)'%'];
        for (var i = 0; i < 3000; i++)
        {
            var bytes = (byte[])seeds[random.Next(seeds.Length)].Clone();
            for (var flips = random.Next(1, 4); flips > 0; flips--)
            {
                var at = random.Next(bytes.Length);
                bytes[at] = random.Next(2) == 0 ? interesting[random.Next(interesting.Length)] : (byte)(bytes[at] ^ (1 << random.Next(8)));
            }
            if (random.Next(4) == 0)
            {
                bytes = bytes[..random.Next(bytes.Length)];
            }
            Receive(bytes, random.Next(2) == 0 ? Caller : Upstream);
            _clock.AdvanceInSteps(TimeSpan.FromMilliseconds(random.Next(50)));
        }
        // In steps, so each timer a callback schedules (retransmission, then timeout, then termination) still fires in time.
        _clock.AdvanceInSteps(TimeSpan.FromMinutes(5));
        Assert.Equal(0, _wheel.CallbackErrors);
        Assert.Equal(0, _proxy.ServerTransactionCount + _proxy.ClientTransactionCount);
    }

    private void Receive(byte[] bytes, IPEndPoint from) => Deliver(_proxy, bytes, from);

    /// <summary>A proxy on this test's clock and sender that asks <paramref name="policy"/> about each initial INVITE.</summary>
    private SipProxy PolicyProxy(RecordingPolicy policy) =>
        new(new SipProxyOptions { DefaultUpstream = Upstream.ToString(), AdvertisedHost = "192.0.2.80" }, _sent, _wheel, policy: policy);

    /// <summary>
    /// A request inside the dialog of call <paramref name="callId"/> (caller tag <c>a{callId}</c>, callee tag <c>callee</c>),
    /// from the caller or the callee, with the Route the proxy's Record-Route taught both.
    /// </summary>
    private static byte[] InDialog(string method, string callId, bool fromCallee, string route)
    {
        var caller = $"<sip:alice@127.0.0.1:5061>;tag=a{callId}";
        const string Callee = "<sip:service@127.0.0.1:5060>;tag=callee";
        var (uri, via, from, to, contact) = fromCallee
            ? ("sip:alice@127.0.0.1:5061", "127.0.0.1:5090", Callee, caller, "sip:callee@127.0.0.1:5090")
            : ("sip:callee@127.0.0.1:5090", "127.0.0.1:5061", caller, Callee, "sip:alice@127.0.0.1:5061");
        var body = method == "INVITE" ? "v=0\r\n" : "";
        return Encoding.ASCII.GetBytes(
            $"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK{method}{fromCallee}\r\nRoute: {route}\r\n" +
            $"From: {from}\r\nTo: {to}\r\nCall-ID: {callId}\r\nCSeq: 2 {method}\r\nContact: <{contact}>\r\nMax-Forwards: 70\r\n" +
            $"Content-Length: {body.Length}\r\n\r\n{body}");
    }

    private static void Deliver(SipProxy proxy, byte[] bytes, IPEndPoint from)
    {
        using var message = new SipMessage();
        message.Parse(bytes);
        proxy.OnMessage(message, new SipTarget(SipTransportKind.Udp, from));
    }

    private static SipMessage Parse(byte[] bytes)
    {
        var m = new SipMessage();
        Assert.Equal(SipParseError.None, m.Parse(bytes));
        return m;
    }

    private static string Text(SipMessage m, TextRange r) => Encoding.UTF8.GetString(m[r]);

    private static string Header(SipMessage m, SipHeaderKind kind)
    {
        var index = m.IndexOf(kind);
        Assert.True(index >= 0, $"no {kind}");
        return Text(m, m.Fields[index].Value);
    }

    private static byte[] Invite(string callId) => Request("INVITE", "sip:service@127.0.0.1:5060", callId, "z9hG4bK" + callId,
        cseq: "1 INVITE", body: "v=0\r\n");

    private static byte[] Ack(string callId, string toTag) =>
        Request("ACK", "sip:service@127.0.0.1:5060", callId, "z9hG4bK" + callId, cseq: "1 ACK", toTag: toTag);

    private static byte[] Request(string method, string uri, string callId, string branch, string cseq, string? toTag = null,
        string extra = "", string body = "") =>
        Encoding.ASCII.GetBytes(
            $"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n{extra}" +
            $"From: <sip:alice@127.0.0.1:5061>;tag=a{callId}\r\nTo: <sip:service@127.0.0.1:5060>{(toTag is null ? "" : ";tag=" + toTag)}\r\n" +
            $"Call-ID: {callId}\r\nCSeq: {cseq}\r\nContact: <sip:alice@127.0.0.1:5061>\r\nMax-Forwards: 70\r\n" +
            $"Content-Length: {body.Length}\r\n\r\n{body}");

    /// <summary>A response from the next hop to a request the proxy sent: its Vias, From, To (with a tag), Call-ID, CSeq.</summary>
    internal static byte[] Response(SipMessage request, int status, string reason, string toTag)
    {
        var s = new StringBuilder($"SIP/2.0 {status} {reason}\r\n");
        foreach (var f in request.Fields)
        {
            if (f.Kind is SipHeaderKind.Via or SipHeaderKind.From or SipHeaderKind.CallId or SipHeaderKind.CSeq or SipHeaderKind.RecordRoute)
            {
                s.Append(Text(request, f.Name)).Append(": ").Append(Text(request, f.Value)).Append("\r\n");
            }
            else if (f.Kind == SipHeaderKind.To)
            {
                s.Append("To: ").Append(Text(request, f.Value)).Append(request.ToTag.IsEmpty ? ";tag=" + toTag : "").Append("\r\n");
            }
        }
        s.Append("Contact: <sip:callee@127.0.0.1:5090>\r\nContent-Length: 0\r\n\r\n");
        return Encoding.ASCII.GetBytes(s.ToString());
    }

    private sealed class RecordingPolicy : ICallPolicy
    {
        private int _asked;

        public Func<SipMessage, CallDecision>? Decide { get; set; }

        public Task<CallDecision>? Pending { get; set; }

        public List<string> Events { get; } = [];

        public int Asked => _asked;

        /// <summary>The dialogs as the grains would keep them: recorded on admission, taught by the 2xx, gone at the end.</summary>
        public Dictionary<SipCallId, DialogRecord> Dialogs { get; } = [];

        public List<InviteOrigin> Origins { get; } = [];

        public async ValueTask<CallDecision> AdmitAsync(SipMessage invite, SipTarget source, SipTarget route, InviteOrigin origin, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _asked);
            var call = new SipCallId(Encoding.UTF8.GetString(invite[invite.CallId]), Encoding.UTF8.GetString(invite[invite.FromTag]));
            var decision = Pending is { } pending ? await pending : Decide?.Invoke(invite) ?? CallDecision.Admit;
            lock (Events)
            {
                Origins.Add(origin);
                if (decision.Admitted)
                {
                    Dialogs[call] = new DialogRecord(null, origin.CallerTargets, [], Confirmed: false);
                }
            }
            return decision;
        }

        public void OnAnswered(SipCallId sipCall, DialogAnswer answer)
        {
            lock (Events)
            {
                if (Dialogs.TryGetValue(sipCall, out var dialog))
                {
                    Dialogs[sipCall] = dialog with { CalleeTag = answer.CalleeTag, CalleeTargets = answer.CalleeTargets, Confirmed = true };
                }
            }
            lock (Events)
            {
                Answers.Add(answer);
            }
            Add($"answered {sipCall.CallId}/{sipCall.CallerTag}");
        }

        public void OnFailed(SipCallId sipCall, int status)
        {
            Forget(sipCall);
            Add($"failed {sipCall.CallId}/{sipCall.CallerTag} {status}");
        }

        public void OnBye(SipCallId sipCall)
        {
            Forget(sipCall);
            Add($"bye {sipCall.CallId}/{sipCall.CallerTag}");
        }

        public void OnRefresh(SipCallId sipCall) => Add($"refresh {sipCall.CallId}/{sipCall.CallerTag}");

        /// <summary>When (on <see cref="Clock"/>) each renewal by a provisional was asked for.</summary>
        public List<DateTimeOffset> Provisionals { get; } = [];

        public TimeProvider Clock { get; init; } = TimeProvider.System;

        public List<DialogAnswer> Answers { get; } = [];

        public void OnProvisional(SipCallId sipCall)
        {
            lock (Events)
            {
                Provisionals.Add(Clock.GetUtcNow());
            }
        }

        public ValueTask<DialogRecord?> FindDialogAsync(SipCallId sipCall, CancellationToken cancellationToken)
        {
            lock (Events)
            {
                return ValueTask.FromResult(Dialogs.GetValueOrDefault(sipCall));
            }
        }

        private void Forget(SipCallId sipCall)
        {
            lock (Events)
            {
                Dialogs.Remove(sipCall);
            }
        }

        private void Add(string e)
        {
            lock (Events)
            {
                Events.Add(e);
            }
        }
    }

    private sealed class CapturingSender : ISipSender
    {
        private readonly HashSet<IPEndPoint> _unreachable = [];
        private readonly List<Task> _failures = [];

        public List<(SipTarget Target, byte[] Bytes)> All { get; } = [];

        /// <summary>Sends to an unreachable address: never in <see cref="All"/>.</summary>
        public List<(SipTarget Target, byte[] Bytes)> Failed { get; } = [];

        /// <summary>
        /// Every later send to <paramref name="to"/> fails: it goes to <see cref="Failed"/> and its onFailure runs once
        /// on another thread, as <see cref="ISipSender.Send"/> says a failed TCP connect does.
        /// </summary>
        public void Unreachable(IPEndPoint to)
        {
            lock (All)
            {
                _unreachable.Add(to);
            }
        }

        public void Send(in SipTarget target, byte[] message, Action? onFailure = null)
        {
            lock (All)
            {
                if (!_unreachable.Contains(target.EndPoint))
                {
                    All.Add((target, message));
                    return;
                }
                Failed.Add((target, message));
                if (onFailure is not null)
                {
                    _failures.Add(Task.Run(onFailure));
                }
            }
        }

        /// <summary>Waits (bounded) until every onFailure called so far has returned; one that threw fails the test.</summary>
        public void WaitForFailureCallbacks()
        {
            Task[] failures;
            lock (All)
            {
                failures = [.. _failures];
            }
            Assert.NotEmpty(failures);
            Assert.True(SpinWait.SpinUntil(() => failures.All(t => t.IsCompleted), TimeSpan.FromSeconds(5)), "a failure callback did not return");
            Assert.All(failures, t => Assert.Null(t.Exception));
        }

        /// <summary>Each message not taken yet: where to and its start line.</summary>
        public string Describe()
        {
            lock (All)
            {
                return string.Join("; ", All.Select(x => $"{x.Target} {Encoding.ASCII.GetString(x.Bytes.AsSpan(0, x.Bytes.AsSpan().IndexOf((byte)'\r')))}"));
            }
        }

        public int Count(IPEndPoint to)
        {
            lock (All)
            {
                return All.Count(x => x.Target.EndPoint.Equals(to));
            }
        }

        public bool TryTake(IPEndPoint to, out SipMessage message)
        {
            lock (All)
            {
                var index = All.FindIndex(x => x.Target.EndPoint.Equals(to));
                if (index < 0)
                {
                    message = null!;
                    return false;
                }
                message = Parse(All[index].Bytes);
                All.RemoveAt(index);
                return true;
            }
        }

        public SipMessage Take(IPEndPoint to)
        {
            Assert.True(TryTake(to, out var message), $"nothing was sent to {to}; sent: {string.Join(", ", All.Select(x => x.Target.ToString()))}");
            return message;
        }
    }
}
