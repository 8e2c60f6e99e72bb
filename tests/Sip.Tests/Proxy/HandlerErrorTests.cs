using System.Diagnostics.Metrics;
using System.Net;
using System.Text;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.Sip.Tests.Timers;
using CallState.Sip.Timers;

namespace CallState.Sip.Tests.Proxy;

/// <summary>
/// Exceptions in the proxy's timer callbacks and in the handling of a received message: counted and reported, never sent
/// to a peer, and no transaction is left in the proxy's tables for ever.
/// </summary>
public sealed class HandlerErrorTests : IDisposable
{
    private const string Secret = "internal detail that must stay in the log";

    private static readonly IPEndPoint Caller = new(IPAddress.Parse("127.0.0.1"), 5061);
    private static readonly IPEndPoint Upstream = new(IPAddress.Parse("127.0.0.1"), 5090);

    private readonly FakeTimeProvider _clock = new();
    private readonly TimerWheel _wheel;
    private readonly ThrowingSender _sent = new();
    private readonly List<SipHandlerError> _reported = [];
    private readonly SipProxy _proxy;

    public HandlerErrorTests()
    {
        _wheel = new TimerWheel(_clock);
        _proxy = new SipProxy(new SipProxyOptions { DefaultUpstream = Upstream.ToString(), AdvertisedHost = "192.0.2.80" }, _sent, _wheel,
            onHandlerError: e =>
            {
                lock (_reported)
                {
                    _reported.Add(e);
                }
            });
    }

    public void Dispose()
    {
        _proxy.Dispose();
        _wheel.Dispose();
    }

    [Fact]
    public void A_retransmission_that_throws_is_counted_and_Timer_B_still_ends_the_call()
    {
        using var meter = new HandlerErrorListener();
        Receive(Invite("r1"));
        // Sends so far: 100 Trying, the INVITE upstream. The first retransmission (Timer A) throws.
        _sent.ThrowOn = (to, text) => to.Equals(Upstream) && text.StartsWith("INVITE ", StringComparison.Ordinal);
        _clock.AdvanceInSteps(TimeSpan.FromMilliseconds(600));

        Assert.Equal(1, _proxy.Metrics.TimerHandlerErrors);
        Assert.Equal(1, meter.Timer);
        var error = Assert.Single(_reported);
        Assert.Equal(SipHandlerErrorKind.Timer, error.Kind);
        Assert.Equal("Timer A/E", error.Detail);
        Assert.Equal(Upstream, error.Peer?.EndPoint);
        Assert.Equal(0, _wheel.CallbackErrors);

        _sent.ThrowOn = null;
        _clock.AdvanceInSteps(TimeSpan.FromMinutes(2));
        Assert.Contains(_sent.To(Caller), m => m.StartsWith("SIP/2.0 408 ", StringComparison.Ordinal));
        Assert.Equal(0, _proxy.ServerTransactionCount + _proxy.ClientTransactionCount);
        Assert.DoesNotContain(_sent.All, m => m.Contains(Secret, StringComparison.Ordinal));
    }

    [Fact]
    public void Timer_B_that_throws_answering_408_still_answers_500_without_detail_and_ends_both_transactions()
    {
        Receive(Invite("r2"));
        _sent.ThrowOn = (to, text) => text.StartsWith("SIP/2.0 408 ", StringComparison.Ordinal);
        _clock.AdvanceInSteps(TimeSpan.FromSeconds(33));

        Assert.Equal(1, _proxy.Metrics.TimerHandlerErrors);
        Assert.Equal("Timer B/F", Assert.Single(_reported).Detail);
        // The 100 Trying, then the 500 (and perhaps already its Timer G retransmission); never the 408 that threw.
        var answers = _sent.To(Caller).Skip(1).ToList();
        Assert.NotEmpty(answers);
        Assert.All(answers, m => Assert.StartsWith("SIP/2.0 500 Server Internal Error\r\n", m, StringComparison.Ordinal));
        Assert.DoesNotContain(_sent.All, m => m.Contains(Secret, StringComparison.Ordinal));

        // The 500 is retransmitted by Timer G and the transaction ends with Timer H, as for any non-2xx final.
        _clock.AdvanceInSteps(TimeSpan.FromMinutes(2));
        Assert.Equal(0, _proxy.ServerTransactionCount + _proxy.ClientTransactionCount);
    }

    [Fact]
    public void A_transaction_whose_every_answer_throws_is_removed()
    {
        Receive(Invite("r3"));
        _sent.ThrowOn = (to, _) => to.Equals(Caller);
        _clock.AdvanceInSteps(TimeSpan.FromSeconds(33));

        // Timer B's 408 threw, and so did the 500 sent instead: nothing would ever end the server transaction.
        Assert.Equal(1, _proxy.Metrics.TimerHandlerErrors);
        Assert.Equal(0, _proxy.ServerTransactionCount + _proxy.ClientTransactionCount);
        _clock.AdvanceInSteps(TimeSpan.FromMinutes(2));
        Assert.Equal(1, _proxy.Metrics.TimerHandlerErrors);
    }

    [Fact]
    public void A_request_whose_handling_throws_is_answered_500_and_the_exception_reaches_the_caller_of_OnMessage()
    {
        _sent.ThrowOn = (to, text) => to.Equals(Upstream) && text.StartsWith("INVITE ", StringComparison.Ordinal);
        var ex = Assert.Throws<InvalidOperationException>(() => Receive(Invite("r4")));
        Assert.Equal(Secret, ex.Message);

        var answers = _sent.To(Caller);
        Assert.StartsWith("SIP/2.0 100 ", answers[0], StringComparison.Ordinal);
        Assert.StartsWith("SIP/2.0 500 Server Internal Error\r\n", answers[1], StringComparison.Ordinal);
        Assert.Equal(0, _proxy.ClientTransactionCount);
        _sent.ThrowOn = null;
        _clock.AdvanceInSteps(TimeSpan.FromMinutes(2));
        Assert.Equal(0, _proxy.ServerTransactionCount + _proxy.ClientTransactionCount);
    }

    [Fact]
    public async Task Endpoint_counts_a_handler_exception_reports_its_first_line_and_handles_the_next_message()
    {
        var port = CallState.Testing.TestPorts.FreeUdpAndTcp();
        var reported = new List<SipHandlerError>();
        using var client = new UdpPeer();
        using var callee = new UdpPeer();
        await using var endpoint = new SipEndpoint(new SipProxyOptions { ListenAddress = "127.0.0.1", Port = port, UdpReceiveLoops = 1 },
            policy: new ThrowingPolicy(), onHandlerError: e =>
            {
                lock (reported)
                {
                    reported.Add(e);
                }
            });
        endpoint.Start();
        var edge = new IPEndPoint(IPAddress.Loopback, port);

        // Routed to a destination nobody configured: the policy is asked whether it allows it, and throws.
        var uri = $"sip:bob@{callee.EndPoint}";
        client.Send(Request("INVITE", uri, "e1", client.EndPoint, "1 INVITE"), edge);
        var answer = client.Expect("SIP/2.0 500");
        Assert.DoesNotContain(Secret, Encoding.UTF8.GetString(answer.Span), StringComparison.Ordinal);

        // The same receive loop handles the next message.
        client.Send(Request("OPTIONS", "sip:127.0.0.1:" + port, "e2", client.EndPoint, "1 OPTIONS"), edge);
        client.Expect("SIP/2.0 200");

        Assert.Equal(1, endpoint.Proxy.Metrics.MessageHandlerErrors);
        SipHandlerError error;
        lock (reported)
        {
            error = Assert.Single(reported);
        }
        Assert.Equal(SipHandlerErrorKind.Message, error.Kind);
        Assert.Equal($"INVITE {uri} SIP/2.0", error.Detail);
        Assert.Equal(client.EndPoint, error.Peer?.EndPoint);
        Assert.Equal(Secret, error.Exception.Message);
    }

    [Fact]
    public void First_line_is_cut_at_the_line_end_and_the_length_limit_and_shows_control_bytes_as_question_marks()
    {
        Assert.Equal("OPTIONS sip:a SIP/2.0", SipHandlerError.FirstLineOf("OPTIONS sip:a SIP/2.0\r\nVia: x\r\n"u8));
        Assert.Equal("A?B", SipHandlerError.FirstLineOf("A\u0007B"u8));
        var longLine = Encoding.ASCII.GetBytes(new string('x', 1000));
        Assert.Equal(SipHandlerError.MaxDetailLength, SipHandlerError.FirstLineOf(longLine).Length);
    }

    private void Receive(byte[] bytes)
    {
        using var message = new SipMessage();
        message.Parse(bytes);
        _proxy.OnMessage(message, new SipTarget(SipTransportKind.Udp, Caller));
    }

    private static byte[] Invite(string callId) => Request("INVITE", "sip:service@127.0.0.1:5060", callId, Caller, "1 INVITE");

    private static byte[] Request(string method, string uri, string callId, IPEndPoint from, string cseq) =>
        Encoding.ASCII.GetBytes(
            $"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{callId}\r\n" +
            $"From: <sip:alice@{from}>;tag=a{callId}\r\nTo: <sip:service@127.0.0.1:5060>\r\n" +
            $"Call-ID: {callId}\r\nCSeq: {cseq}\r\nContact: <sip:alice@{from}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");

    /// <summary>Captures what the proxy sends; a send <see cref="ThrowOn"/> matches throws, as a buggy transport would.</summary>
    private sealed class ThrowingSender : ISipSender
    {
        private readonly List<(IPEndPoint To, string Text)> _sent = [];

        public Func<IPEndPoint, string, bool>? ThrowOn { get; set; }

        public List<string> All
        {
            get
            {
                lock (_sent)
                {
                    return _sent.Select(s => s.Text).ToList();
                }
            }
        }

        public List<string> To(IPEndPoint to)
        {
            lock (_sent)
            {
                return _sent.Where(s => s.To.Equals(to)).Select(s => s.Text).ToList();
            }
        }

        public void Send(in SipTarget target, byte[] message, Action? onFailure = null)
        {
            var text = Encoding.ASCII.GetString(message);
            if (ThrowOn?.Invoke(target.EndPoint, text) == true)
            {
                throw new InvalidOperationException(Secret);
            }
            lock (_sent)
            {
                _sent.Add((target.EndPoint, text));
            }
        }
    }

    /// <summary>A policy with a bug: asked whether a destination is allowed, it throws.</summary>
    private sealed class ThrowingPolicy : ICallPolicy
    {
        public ValueTask<CallDecision> AdmitAsync(SipMessage invite, SipTarget source, SipTarget route, InviteOrigin origin, CancellationToken cancellationToken) =>
            ValueTask.FromResult(CallDecision.Admit);

        public void OnAnswered(SipCallId sipCall, DialogAnswer answer)
        {
        }

        public void OnFailed(SipCallId sipCall, int status)
        {
        }

        public void OnBye(SipCallId sipCall)
        {
        }

        public void OnRefresh(SipCallId sipCall)
        {
        }

        public ValueTask<DialogRecord?> FindDialogAsync(SipCallId sipCall, CancellationToken cancellationToken) => ValueTask.FromResult<DialogRecord?>(null);

        public bool AllowsDestination(IPEndPoint endPoint) => throw new InvalidOperationException(Secret);
    }

    /// <summary>Reads <c>callstate.sip.handler.errors</c> as an exporter would.</summary>
    private sealed class HandlerErrorListener : IDisposable
    {
        private readonly MeterListener _listener = new();
        private long _timer;

        public HandlerErrorListener()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == SipProxyMetrics.MeterName && instrument.Name == "callstate.sip.handler.errors")
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
            {
                foreach (var tag in tags)
                {
                    if (tag.Key == "callstate.error.kind" && (string?)tag.Value == "timer")
                    {
                        Interlocked.Add(ref _timer, value);
                    }
                }
            });
            _listener.Start();
        }

        public long Timer => Interlocked.Read(ref _timer);

        public void Dispose() => _listener.Dispose();
    }
}
