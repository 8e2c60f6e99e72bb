using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Net;
using System.Text;
using CallState.Grains;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.SipEdge.Admission;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Admission;

/// <summary>
/// The edge's call policy as the proxy drives it: INVITEs parsed by the SIP parser, classified with the sample
/// configuration (<see cref="Fixtures"/>), admitted through a scripted client that records every call; the lifecycle
/// calls and the retries of a call's end run on a fake clock.
/// </summary>
public sealed class AdmissionPolicyTests : IDisposable
{
    /// <summary>How long a test waits for something that must happen; a bound against hanging, never what decides an outcome.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The admission deadline of the timeout tests: long enough that only the fake clock reaches it, so a deadline armed
    /// on the real clock fails them.
    /// </summary>
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(10);

    private static readonly SipTarget Caller = new(SipTransportKind.Udp, IPEndPoint.Parse("127.0.0.1:5061"));
    private static readonly SipTarget CarrierPeer = new(SipTransportKind.Udp, IPEndPoint.Parse("[::ffff:127.0.0.2]:5060"));
    private static readonly SipTarget ProxyRoute = new(SipTransportKind.Udp, IPEndPoint.Parse("192.0.2.99:5060"));
    private static readonly SipTarget Upstream = new(SipTransportKind.Udp, IPEndPoint.Parse("127.0.0.1:5090"));
    private static readonly InviteOrigin Origin = new("127.0.0.1:5061;z9hG4bK1@udp:127.0.0.1:5061", ["udp:127.0.0.1:5061"]);
    private static readonly SipTarget CarrierNextHop = new(SipTransportKind.Udp, IPEndPoint.Parse("127.0.0.2:5090"));

    private const string CallId = "a84b4c76e66710@pc33.example.com";
    private const string FromTag = "1928301774";
    private static readonly string Key = CallKeys.Create(CallId, FromTag);

    private static readonly AdmitResult AliceAtHerLimit = new(AdmitStatus.Rejected, "user/alice", RejectReason.UserOutLimitReached, 1, 1, null);

    private readonly TimerCountingTime _time = new();
    private readonly ScriptedClient _client;
    private readonly RecordingLogger _log = new();
    private readonly MetricsRecorder _metrics = new();
    private readonly List<IDisposable> _owned = [];

    public AdmissionPolicyTests() => _client = new ScriptedClient(_time);

    public void Dispose()
    {
        foreach (var owned in _owned)
        {
            owned.Dispose();
        }

        _metrics.Dispose();
    }

    [Theory]
    [InlineData("112")]
    [InlineData("911")]
    public async Task Emergency_call_from_alice_at_her_limit_is_connected_and_counted_as_emergency_over_limit(string number)
    {
        var policy = Policy();
        _client.Answer(AliceAtHerLimit);
        using var invite = Invite("alice@example.com", number + "@example.com");

        var decision = await AdmitAsync(policy, invite, Caller);

        Assert.True(decision.Admitted);
        Assert.Equal(Upstream, decision.NextHop);
        var admit = Assert.Single(_client.Calls);
        Assert.Equal(new[] { "admit", Key }, new[] { admit.Operation, admit.CallKey });
        Assert.Equal(["user/alice out", $"user/{number} in"], admit.Limits);
        Assert.Equal(["emergency_over_limit/USER_OUT_LIMIT_REACHED"], _metrics.Decisions());
        var line = Assert.Single(_log.Entries, e => e.EventId == 3203);
        Assert.Equal(LogLevel.Warning, line.Level);
        Assert.Equal($"Emergency call {Key} connected over user/alice: 1 of 1 in use, reason USER_OUT_LIMIT_REACHED", line.Message);
    }

    /// <summary>
    /// Regression (fuzz run, docs/testing.md "Fuzzing"): an INVITE whose Via branch, Via host or Contact made the attempt
    /// or a caller target longer than a call's record keeps was sent to the grains, refused as invalid there, and answered 500 Server Internal Error. It is the request's fault: 400, and the
    /// grains are never asked. The minimal inputs were a sipp INVITE with its branch repeated 93 times and an RFC 4475
    /// INVITE (sdp01) with its Via host repeated 159 times.
    /// </summary>
    [Theory]
    [InlineData("attempt")]
    [InlineData("target")]
    public async Task An_INVITE_with_a_value_too_long_for_the_call_record_gets_400_and_never_reaches_the_grains(string what)
    {
        var policy = Policy();
        var longText = new string('z', 1100);
        using var invite = Invite("alice@example.com", "bob@example.com");
        var origin = what == "attempt"
            ? Origin with { Attempt = "127.0.0.1:5061;z9hG4bK" + longText + "@udp:127.0.0.1:5061" }
            : Origin with { CallerTargets = ["udp:127.0.0.1:5061", "udp:" + longText + ":5061"] };

        var decision = await policy.AdmitAsync(invite, Caller, ProxyRoute, origin, CancellationToken.None).AsTask().WaitAsync(Bound, CancellationToken.None);

        Assert.False(decision.Admitted);
        Assert.Equal(400, decision.Status);
        Assert.Equal("Bad Request (value too long)", decision.ReasonPhrase);
        Assert.Empty(_client.Calls);
        Assert.Equal(["invalid/BAD_REQUEST"], _metrics.Decisions());
    }

    [Fact]
    public async Task The_same_call_to_a_non_emergency_number_gets_486_busy_with_cause_17()
    {
        var policy = Policy();
        _client.Answer(AliceAtHerLimit);
        using var invite = Invite("alice@example.com", "bob@example.com");

        var decision = await AdmitAsync(policy, invite, Caller);

        Assert.False(decision.Admitted);
        Assert.Equal(486, decision.Status);
        Assert.Equal("Busy Here", decision.ReasonPhrase);
        Assert.Equal("Reason: Q.850;cause=17\r\n", decision.ExtraHeaders);
        Assert.Null(decision.NextHop);
        Assert.Equal([$"admit {Key} user/alice out, user/bob in"], _client.Calls.Select(c => c.ToString()));
        Assert.Equal(["rejected/USER_OUT_LIMIT_REACHED"], _metrics.Decisions());
        var line = Assert.Single(_log.Entries, e => e.EventId == 3200);
        Assert.StartsWith($"Call {Key} rejected by user/alice: 1 of 1 in use, reason USER_OUT_LIMIT_REACHED, answered 486 (", line.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_full_trunk_gets_480_with_the_configured_retry_after_and_a_mapped_ipv4_source_names_the_trunk()
    {
        var policy = Policy(o => o.RetryAfterSeconds = 7);
        _client.Answer(new AdmitResult(AdmitStatus.Rejected, "trunk/carrier", RejectReason.TrunkInLimitReached, 3, 3, null));
        using var invite = Invite("+4420123@carrier.net", "bob@example.com");

        var decision = await AdmitAsync(policy, invite, CarrierPeer);

        Assert.False(decision.Admitted);
        Assert.Equal(480, decision.Status);
        Assert.Equal("Temporarily Unavailable", decision.ReasonPhrase);
        Assert.Equal("Reason: Q.850;cause=34\r\nRetry-After: 7\r\n", decision.ExtraHeaders);
        Assert.Equal([$"admit {Key} trunk/carrier in, user/bob in"], _client.Calls.Select(c => c.ToString()));
        Assert.Equal(["rejected/TRUNK_IN_LIMIT_REACHED"], _metrics.Decisions());
    }

    [Theory]
    [InlineData("bob@example.com", "user/alice out, user/bob in", "127.0.0.1:5090")]
    [InlineData("+4930123@example.com", "user/alice out, trunk/carrier out", "127.0.0.2:5090")]
    public async Task An_admitted_call_goes_to_its_routes_next_hop(string to, string limits, string nextHop)
    {
        var policy = Policy();
        _client.Answer(AdmitResult.Admitted());
        using var invite = Invite("alice@example.com", to);

        var decision = await AdmitAsync(policy, invite, Caller);

        Assert.True(decision.Admitted);
        Assert.Equal(new SipTarget(SipTransportKind.Udp, IPEndPoint.Parse(nextHop)), decision.NextHop);
        Assert.Equal([$"admit {Key} {limits}"], _client.Calls.Select(c => c.ToString()));
        Assert.Equal(["admitted/NONE"], _metrics.Decisions());
    }

    [Fact]
    public async Task Fail_closed_when_the_grains_do_not_answer_in_time_503_with_retry_after_and_the_admission_is_ended()
    {
        var policy = Policy(o =>
        {
            o.Deadline = Deadline;
            o.RetryAfterSeconds = 7;
        });
        _client.NeverAnswer();
        using var invite = Invite("alice@example.com", "bob@example.com");
        using var proxy = new CancellationTokenSource();

        var decision = await AdmitPastDeadlineAsync(policy, invite, proxy.Token);

        Assert.False(decision.Admitted);
        Assert.Equal(503, decision.Status);
        Assert.Equal("Service Unavailable", decision.ReasonPhrase);
        Assert.Equal("Reason: Q.850;cause=42\r\nRetry-After: 7\r\n", decision.ExtraHeaders);
        var calls = await _client.WaitForAsync(c => c.Any(x => x.Operation == "abandon"), "the end of the timed-out admission");
        Assert.Equal([$"admit {Key} user/alice out, user/bob in", $"abandon {Key} {Origin.Attempt}"], calls.Select(c => c.ToString()));
        Assert.True(calls[0].Token.IsCancellationRequested, "the grain call is cancelled at the deadline");
        Assert.False(proxy.IsCancellationRequested);
        Assert.False(calls[1].Token.IsCancellationRequested, "the end must not share the expired deadline");
        Assert.Equal(["unavailable/SILO_UNAVAILABLE"], _metrics.Decisions());
        var line = Assert.Single(_log.Entries, e => e.EventId == 3201);
        Assert.Equal(LogLevel.Error, line.Level);
    }

    [Fact]
    public async Task Fail_open_admits_when_the_grains_do_not_answer_in_time_and_still_ends_the_admission()
    {
        var policy = Policy(o =>
        {
            o.Deadline = Deadline;
            o.FailOpen = true;
        });
        _client.NeverAnswer();
        using var invite = Invite("alice@example.com", "bob@example.com");

        var decision = await AdmitPastDeadlineAsync(policy, invite);

        Assert.True(decision.Admitted);
        Assert.Equal(Upstream, decision.NextHop);
        var calls = await _client.WaitForAsync(c => c.Any(x => x.Operation == "abandon"), "the end of the timed-out admission");
        Assert.Equal([$"admit {Key} user/alice out, user/bob in", $"abandon {Key} {Origin.Attempt}"], calls.Select(c => c.ToString()));
        Assert.Equal(["fail_open/SILO_UNAVAILABLE"], _metrics.Decisions());
        Assert.Single(_log.Entries, e => e.EventId == 3202);
    }

    [Fact]
    public async Task Emergency_call_is_admitted_when_the_grains_do_not_answer_in_time_even_failing_closed()
    {
        var policy = Policy(o => o.Deadline = Deadline);
        _client.NeverAnswer();
        using var invite = Invite("alice@example.com", "112@example.com");

        var decision = await AdmitPastDeadlineAsync(policy, invite);

        Assert.True(decision.Admitted);
        Assert.Equal(Upstream, decision.NextHop);
        var calls = await _client.WaitForAsync(c => c.Any(x => x.Operation == "abandon"), "the end of the timed-out admission");
        Assert.Equal([$"admit {Key} user/alice out, user/112 in", $"abandon {Key} {Origin.Attempt}"], calls.Select(c => c.ToString()));
        Assert.Equal(["fail_open/SILO_UNAVAILABLE"], _metrics.Decisions());
    }

    [Theory]
    [InlineData("overloaded", true)]
    [InlineData("overloaded", false)]
    [InlineData("storage", false)]
    [InlineData("timeout", false)]
    public async Task A_failing_grain_call_is_503_with_retry_after_and_the_admission_is_ended(string failure, bool throwsSynchronously)
    {
        var policy = Policy(o => o.RetryAfterSeconds = 7);
        Exception error = failure switch
        {
            "overloaded" => new GrainOverloadedException(),
            "storage" => new GrainStorageException("NpgsqlException: connection refused"),
            _ => new TimeoutException("response did not arrive on time"),
        };
        if (throwsSynchronously)
        {
            _client.Throw(error);
        }
        else
        {
            _client.Fault(error);
        }

        using var invite = Invite("alice@example.com", "bob@example.com");

        var decision = await AdmitAsync(policy, invite, Caller);

        Assert.False(decision.Admitted);
        Assert.Equal(503, decision.Status);
        Assert.Equal("Service Unavailable", decision.ReasonPhrase);
        Assert.Equal("Reason: Q.850;cause=42\r\nRetry-After: 7\r\n", decision.ExtraHeaders);
        var calls = await _client.WaitForAsync(c => c.Any(x => x.Operation == "abandon"), "the end of the failed admission");
        Assert.Equal([$"admit {Key} user/alice out, user/bob in", $"abandon {Key} {Origin.Attempt}"], calls.Select(c => c.ToString()));
        Assert.Equal(["unavailable/SILO_UNAVAILABLE"], _metrics.Decisions());
        var line = Assert.Single(_log.Entries, e => e.EventId == 3201);
        Assert.Contains($"({error.GetType().Name})", line.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_invalid_admission_answer_is_500_without_reason_or_retry_after()
    {
        var policy = Policy();
        _client.Answer(AdmitResult.Invalid("duplicate limit key user/alice"));
        using var invite = Invite("alice@example.com", "bob@example.com");

        var decision = await AdmitAsync(policy, invite, Caller);

        Assert.False(decision.Admitted);
        Assert.Equal(500, decision.Status);
        Assert.Equal("Server Internal Error", decision.ReasonPhrase);
        Assert.Equal("", decision.ExtraHeaders);
        Assert.Equal([$"admit {Key} user/alice out, user/bob in"], _client.Calls.Select(c => c.ToString()));
        Assert.Equal(["invalid/INVALID"], _metrics.Decisions());
        Assert.Equal("INVITE refused: duplicate limit key user/alice", Assert.Single(_log.Entries, e => e.EventId == 3204).Message);
    }

    [Theory]
    [InlineData("[::ffff:127.0.0.2]:5060", "127.0.0.2")]
    [InlineData("127.0.0.1:5061", "127.0.0.1")]
    public async Task A_call_from_the_address_of_a_trunk_that_requires_a_certificate_is_403_without_one_and_nothing_is_reserved(string peer, string logged)
    {
        // The second source is also the trusted PBX's address: a trunk that requires a certificate is checked first and
        // its address does not fall through to the PBX's trust.
        var policy = Policy(o =>
        {
            o.Trunks["carrier"].Sources.Add("127.0.0.1");
            o.Trunks["carrier"].RequireCertificate = true;
            o.Trunks["carrier"].CertificateNames = ["sbc.carrier.example.net"];
        });
        using var invite = Invite("+4420123@carrier.net", "bob@example.com");

        var decision = await AdmitAsync(policy, invite, new SipTarget(SipTransportKind.Udp, IPEndPoint.Parse(peer)));

        Assert.False(decision.Admitted);
        Assert.Equal(403, decision.Status);
        Assert.Equal("Forbidden (trunk certificate required)", decision.ReasonPhrase);
        Assert.Empty(_client.Calls);
        Assert.Equal(["untrusted/CERTIFICATE_REQUIRED"], _metrics.Decisions());
        var line = Assert.Single(_log.Entries, e => e.EventId == 3208);
        Assert.Equal(LogLevel.Warning, line.Level);
        Assert.Equal($"INVITE from {logged} refused with 403: the address is trunk 'carrier''s, which requires a client certificate, and it presented no client certificate", line.Message);
    }

    [Fact]
    public async Task Without_require_certificate_a_trunk_with_certificate_entries_is_still_known_by_its_address()
    {
        var policy = Policy(o => o.Trunks["carrier"].CertificateNames = ["sbc.carrier.example.net"]);
        _client.Answer(AdmitResult.Admitted());
        using var invite = Invite("+4420123@carrier.net", "bob@example.com");

        var decision = await AdmitAsync(policy, invite, CarrierPeer);

        Assert.True(decision.Admitted);
        Assert.Equal([$"admit {Key} trunk/carrier in, user/bob in"], _client.Calls.Select(c => c.ToString()));
    }

    [Fact]
    public async Task An_invite_without_a_from_tag_is_admitted_under_its_call_id_alone()
    {
        // RFC 4475 3.4.1: an RFC 2543 caller sends no From tag; its call is named by the Call-ID.
        var policy = Policy();
        _client.Answer(AdmitResult.Admitted());
        using var invite = Invite("alice@example.com", "bob@example.com", fromTag: null);

        var decision = await AdmitAsync(policy, invite, Caller);

        Assert.True(decision.Admitted);
        Assert.Equal([$"admit {CallId}; user/alice out, user/bob in"], _client.Calls.Select(c => c.ToString()));
        policy.OnAnswered(new SipCallId(CallId, ""), new DialogAnswer("callee", ["udp:127.0.0.1:5090"]));
        await _client.WaitForAsync(c => c.Any(x => x.Operation == "confirm"), "the confirm of the call without a From tag");
    }

    [Fact]
    public async Task A_call_no_limit_applies_to_is_recorded_with_no_limits_so_its_dialog_is_bound()
    {
        var policy = Policy();
        using var invite = Invite("stranger@198.51.100.7", "service@198.51.100.8");
        _client.Answer(AdmitResult.Admitted());

        var decision = await AdmitAsync(policy, invite, Caller);

        Assert.True(decision.Admitted);
        Assert.Equal(Upstream, decision.NextHop);
        var admit = Assert.Single(_client.Calls);
        Assert.Empty(admit.Limits);
        Assert.Equal(Origin.Attempt, admit.Leg!.Attempt);
        Assert.Equal(Origin.CallerTargets, admit.Leg.CallerTargets);
        Assert.Equal(["unlimited/NONE"], _metrics.Decisions());
    }

    [Fact]
    public async Task The_admission_duration_is_measured_on_the_injected_clock()
    {
        // A long deadline: it runs on the real clock, and only the answer below may end this admission.
        var policy = Policy(o => o.Deadline = TimeSpan.FromHours(1));
        var answer = _client.Hold();
        using var invite = Invite("alice@example.com", "bob@example.com");

        var pending = policy.AdmitAsync(invite, Caller, ProxyRoute, Origin, CancellationToken.None).AsTask();
        await _client.WaitForAsync(c => c.Count == 1, "the admission");
        _time.Advance(TimeSpan.FromMilliseconds(30));
        answer.SetResult(AdmitResult.Admitted());
        Assert.True((await pending.WaitAsync(Bound)).Admitted);

        Assert.Equal([0.030], _metrics.AdmissionDurations());
    }

    [Theory]
    [InlineData("answered", "confirm")]
    [InlineData("refresh", "renew")]
    [InlineData("failed", "end")]
    [InlineData("bye", "end")]
    public async Task Each_call_event_reaches_the_grains_once_under_the_call_key(string callEvent, string operation)
    {
        var policy = Policy();

        Report(policy, callEvent, new SipCallId(CallId, FromTag));

        var call = Assert.Single(await _client.WaitForAsync(c => c.Count > 0, operation));
        Assert.Equal($"{operation} {Key}", call.ToString());
        Assert.False(call.Token.IsCancellationRequested);
        _time.Advance(TimeSpan.FromHours(1));
        Assert.Single(_client.Calls);
        Assert.Empty(_metrics.LifecycleErrors());
    }

    [Theory]
    [InlineData("", FromTag)]
    [InlineData(null, null)]
    public void A_call_event_without_call_id_does_nothing(string? callId, string? callerTag)
    {
        var policy = Policy();
        var sipCall = new SipCallId(callId!, callerTag!);

        foreach (var callEvent in new[] { "answered", "refresh", "failed", "bye" })
        {
            Report(policy, callEvent, sipCall);
        }

        _time.Advance(TimeSpan.FromHours(1));
        Assert.Empty(_client.Calls);
        Assert.Empty(_log.Entries);
    }

    [Theory]
    [InlineData("bye", "end", 1)]
    [InlineData("bye", "end", 3)]
    [InlineData("bye", "end", 7)]
    [InlineData("answered", "confirm", 3)]
    [InlineData("refresh", "renew", 3)]
    public async Task A_failed_lifecycle_call_is_retried_after_each_logged_backoff_until_it_succeeds(string callEvent, string operation, int failures)
    {
        var policy = Policy();
        _client.FailNext(operation, failures);
        var timers = _time.TimersCreated;

        Report(policy, callEvent, new SipCallId(CallId, FromTag));

        var delays = await DriveRetriesAsync(operation, failures, timers);
        _time.Advance(TimeSpan.FromDays(1));
        var attempts = _client.Calls.Where(c => c.Operation == operation).ToList();
        Assert.Equal(failures + 1, attempts.Count);
        Assert.All(attempts, c => Assert.Equal($"{operation} {Key}", c.ToString()));

        // Each attempt came exactly when its retry's logged delay ended; the delays back off but never past the cap.
        Assert.Equal(delays, Gaps(attempts));
        Assert.All(delays, d => Assert.InRange(d, TimeSpan.FromMilliseconds(1), TimeSpan.FromSeconds(30)));
        Assert.Equal(Enumerable.Repeat(operation, failures), _metrics.LifecycleErrors());
        Assert.DoesNotContain(_log.Entries, e => e.EventId == 3205);
    }

    [Theory]
    [InlineData("bye", "end", 10)]
    [InlineData("answered", "confirm", 5)]
    public async Task A_lifecycle_call_that_always_fails_is_retried_until_its_window_ends_then_left_to_the_lease(string callEvent, string operation, int windowMinutes)
    {
        // No admission was answered here, so the confirm's window is the default early lease (5 minutes); an end's is
        // the longest any operation is retried (10 minutes).
        var policy = Policy();
        _client.FailAlways(operation);
        var timers = _time.TimersCreated;

        Report(policy, callEvent, new SipCallId(CallId, FromTag));

        var started = _time.GetUtcNow();

        // The window's own timer, then one per retry's wait: each wait is armed before the clock moves past it.
        for (var i = 0; i < 1000 && !_log.Entries.Any(e => e.EventId == 3205); i++)
        {
            var armed = timers + 2 + i;
            await EventuallyAsync(() => _time.TimersCreated >= armed || _log.Entries.Any(e => e.EventId == 3205), "another retry or giving up");
            _time.Advance(TimeSpan.FromSeconds(31));
        }

        await EventuallyAsync(() => _log.Entries.Any(e => e.EventId == 3205), "the policy giving up");
        var attempts = _client.Calls.Where(c => c.Operation == operation).ToList();
        Assert.All(attempts, c => Assert.True(c.At - started <= TimeSpan.FromMinutes(windowMinutes), $"{operation} tried at {c.At - started}, past its window"));
        Assert.True(attempts.Count >= windowMinutes, $"only {attempts.Count} attempts in {windowMinutes} minutes");
        var count = attempts.Count;
        _time.Advance(TimeSpan.FromDays(1));
        Assert.Equal(count, _client.Count(operation));
        Assert.Equal(Enumerable.Repeat(operation, count), _metrics.LifecycleErrors());
        var gaveUp = Assert.Single(_log.Entries, e => e.EventId == 3205);
        Assert.Equal($"Could not {operation} call {Key}; its lease will reclaim the slot", gaveUp.Message);
    }

    [Fact]
    public async Task A_confirm_still_being_retried_stops_when_the_call_ends()
    {
        var policy = Policy();
        _client.FailAlways("confirm");
        var call = new SipCallId(CallId, FromTag);
        var timers = _time.TimersCreated;
        policy.OnAnswered(call, new DialogAnswer("callee", ["udp:127.0.0.1:5090"]));
        await DriveRetriesAsync("confirm", 2, timers);

        policy.OnBye(call);
        await _client.WaitForAsync(c => c.Any(x => x.Operation == "end"), "the end");
        _time.Advance(TimeSpan.FromDays(1));
        Assert.Equal(3, _client.Count("confirm"));
        Assert.DoesNotContain(_log.Entries, e => e.EventId == 3205);
    }

    [Fact]
    public async Task An_admitted_call_carries_the_grains_early_lease_and_a_short_one_is_reported_once()
    {
        var policy = Policy();
        _client.Answer(AdmitResult.Admitted(TimeSpan.FromMinutes(5)));
        _client.Answer(AdmitResult.Admitted(TimeSpan.FromMinutes(3)));
        _client.Answer(AdmitResult.Admitted(TimeSpan.FromMinutes(3)));
        using var invite = Invite("alice@example.com", "bob@example.com");

        Assert.Equal(TimeSpan.FromMinutes(5), (await AdmitAsync(policy, invite, Caller)).EarlyLease);
        Assert.DoesNotContain(_log.Entries, e => e.EventId == 3211);

        // 3 minutes does not exceed Timer C (3 minutes) + 64*T1 (32 s): logged at Error, once.
        Assert.Equal(TimeSpan.FromMinutes(3), (await AdmitAsync(policy, invite, Caller)).EarlyLease);
        Assert.Equal(TimeSpan.FromMinutes(3), (await AdmitAsync(policy, invite, Caller)).EarlyLease);
        var line = Assert.Single(_log.Entries, e => e.EventId == 3211);
        Assert.Equal(LogLevel.Error, line.Level);
        Assert.Contains("CallState:Grains:Leases:Early", line.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Moves the clock through <paramref name="retries"/> retries of <paramref name="operation"/>: once each retry's
    /// wait is armed, to 1 ms before the delay its log line names (no attempt yet), then onto it (one more attempt).
    /// Answers the delays.
    /// </summary>
    private async Task<List<TimeSpan>> DriveRetriesAsync(string operation, int retries, int timersBefore)
    {
        var delays = new List<TimeSpan>();
        for (var i = 0; i < retries; i++)
        {
            var logged = i + 1;
            await EventuallyAsync(() => _log.Entries.Count(e => e.EventId == 3206) >= logged, $"the retry {logged} of {operation}");

            // The window's own timer, then one per retry's wait, armed right after its log line (a continuation may arm
            // it on another thread).
            var armed = timersBefore + 2 + i;
            await EventuallyAsync(() => _time.TimersCreated >= armed, $"the wait before {operation} attempt {i + 2}");
            var line = _log.Entries.Where(e => e.EventId == 3206).ElementAt(i).Message;
            var delay = TimeSpan.Parse(line[(line.LastIndexOf("retrying in ", StringComparison.Ordinal) + 12)..], CultureInfo.InvariantCulture);
            delays.Add(delay);
            _time.Advance(delay - TimeSpan.FromMilliseconds(1));
            Assert.Equal(i + 1, _client.Count(operation));
            _time.Advance(TimeSpan.FromMilliseconds(1));
            var attempts = i + 2;
            await _client.WaitForAsync(c => c.Count(x => x.Operation == operation) == attempts, $"{operation} attempt {attempts}");
        }

        return delays;
    }

    private static async Task EventuallyAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"not within {Bound}: {what}");
            await Task.Delay(1);
        }
    }

    private static TimeSpan[] Gaps(IReadOnlyList<ClientCall> calls) => [.. calls.Skip(1).Select((c, i) => c.At - calls[i].At)];

    private static void Report(AdmissionPolicy policy, string callEvent, SipCallId sipCall)
    {
        switch (callEvent)
        {
            case "answered":
                policy.OnAnswered(sipCall, new DialogAnswer("callee", ["udp:127.0.0.1:5090"]));
                break;
            case "refresh":
                policy.OnRefresh(sipCall);
                break;
            case "failed":
                policy.OnFailed(sipCall, 486);
                break;
            default:
                policy.OnBye(sipCall);
                break;
        }
    }

    private AdmissionPolicy Policy(Action<AdmissionOptions>? configure = null)
    {
        var admission = Fixtures.SampleAdmission();
        configure?.Invoke(admission);
        var classifiers = new CallClassifierSource(
            new ConfigurationBuilder().Build(),
            Options.Create(admission),
            Options.Create(Fixtures.SampleLimits()),
            Options.Create(new SipProxyOptions()),
            NullLogger<CallClassifierSource>.Instance);
        _owned.Add(classifiers);
        // The caller's address is a trusted PBX, as in the sample; who may call as whom has tests of its own.
        var trust = new TrustOptions { Peers = { ["pbx"] = new TrustedPeerOptions { Sources = ["127.0.0.1"] } } };
        var policy = new AdmissionPolicy(classifiers, _client, new CallerTrust(trust, Fixtures.SampleLimits(), _time), _log, _time, _metrics);
        _owned.Add(policy);
        return policy;
    }

    /// <summary>
    /// Admits with grains that never answer: still pending 1 ms before <see cref="Deadline"/> on the fake clock, decided
    /// once it passes.
    /// </summary>
    private async Task<CallDecision> AdmitPastDeadlineAsync(AdmissionPolicy policy, SipMessage invite, CancellationToken cancellationToken = default)
    {
        var pending = policy.AdmitAsync(invite, Caller, ProxyRoute, Origin, cancellationToken).AsTask();
        await _client.WaitForAsync(c => c.Count == 1, "the admission to reach the grains");
        _time.Advance(Deadline - TimeSpan.FromMilliseconds(1));
        Assert.False(pending.IsCompleted, "decided before the deadline");
        _time.Advance(TimeSpan.FromMilliseconds(1));
        return await pending.WaitAsync(Bound, CancellationToken.None);
    }

    private static async Task<CallDecision> AdmitAsync(AdmissionPolicy policy, SipMessage invite, SipTarget source, CancellationToken cancellationToken = default) =>
        await policy.AdmitAsync(invite, source, ProxyRoute, Origin, cancellationToken).AsTask().WaitAsync(Bound, CancellationToken.None);

    /// <summary>An initial INVITE (no To tag) from <paramref name="from"/> to <paramref name="to"/> (user@host), parsed by the proxy's parser.</summary>
    private static SipMessage Invite(string from, string to, string? fromTag = FromTag)
    {
        var bytes = Encoding.ASCII.GetBytes(
            $"INVITE sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK776asdhds\r\n" +
            $"From: <sip:{from}>{(fromTag is null ? "" : ";tag=" + fromTag)}\r\nTo: <sip:{to}>\r\n" +
            $"Call-ID: {CallId}\r\nCSeq: 314159 INVITE\r\nContact: <sip:{from}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
        var message = new SipMessage();
        Assert.Equal(SipParseError.None, message.Parse(bytes));
        return message;
    }

    /// <summary>One call the policy made to the grains, with the fake clock's time it was made at (and the leg or answer it passed).</summary>
    private sealed record ClientCall(string Operation, string CallKey, string[] Limits, DateTimeOffset At, CancellationToken Token, CallLeg? Leg = null, CallAnswer? Answer = null)
    {
        public override string ToString() => Limits.Length == 0 ? $"{Operation} {CallKey}" : $"{Operation} {CallKey} {string.Join(", ", Limits)}";
    }

    /// <summary>
    /// The grains as the test scripts them: admissions answered from a queue (a result, a throw, a faulted task, or a
    /// hold until the test answers or the deadline cancels), confirm/renew/end succeeding unless told to fail.
    /// </summary>
    private sealed class ScriptedClient(TimeProvider time) : IAdmissionClient
    {
        private readonly Lock _gate = new();
        private readonly Queue<Func<CancellationToken, Task<AdmitResult>>> _admissions = new();
        private readonly Dictionary<string, int> _failures = new(StringComparer.Ordinal);
        private readonly List<ClientCall> _calls = [];
        private TaskCompletionSource _changed = NewSignal();

        public IReadOnlyList<ClientCall> Calls
        {
            get
            {
                lock (_gate)
                {
                    return [.. _calls];
                }
            }
        }

        public void Answer(AdmitResult result) => Script(_ => Task.FromResult(result));

        public void Throw(Exception error) => Script(_ => throw error);

        public void Fault(Exception error) => Script(_ => Task.FromException<AdmitResult>(error));

        /// <summary>An admission that waits for the returned source, or ends cancelled when its token is.</summary>
        public TaskCompletionSource<AdmitResult> Hold()
        {
            var answer = new TaskCompletionSource<AdmitResult>(TaskCreationOptions.RunContinuationsAsynchronously);
            Script(cancellationToken => answer.Task.WaitAsync(cancellationToken));
            return answer;
        }

        public void NeverAnswer() => Hold();

        public void FailNext(string operation, int times)
        {
            lock (_gate)
            {
                _failures[operation] = times;
            }
        }

        public void FailAlways(string operation) => FailNext(operation, int.MaxValue);

        public int Count(string operation) => Calls.Count(c => c.Operation == operation);

        public async Task<IReadOnlyList<ClientCall>> WaitForAsync(Func<IReadOnlyList<ClientCall>, bool> condition, string what)
        {
            using var bound = new CancellationTokenSource(Bound);
            while (true)
            {
                Task changed;
                lock (_gate)
                {
                    if (condition(_calls))
                    {
                        return [.. _calls];
                    }

                    changed = _changed.Task;
                }

                try
                {
                    await changed.WaitAsync(bound.Token);
                }
                catch (OperationCanceledException)
                {
                    Assert.Fail($"no {what} within {Bound}; calls: {string.Join(" | ", Calls)}");
                }
            }
        }

        public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CallLeg? leg, CancellationToken cancellationToken)
        {
            Func<CancellationToken, Task<AdmitResult>>? next;
            lock (_gate)
            {
                _admissions.TryDequeue(out next);
            }

            Record(new ClientCall("admit", callKey, [.. limits.Select(Describe)], time.GetUtcNow(), cancellationToken, Leg: leg));
            Assert.NotNull(next);
            return next(cancellationToken);
        }

        public Task<bool> ConfirmAsync(string callKey, CallAnswer? answer, CancellationToken cancellationToken) => Lifecycle("confirm", callKey, cancellationToken, answer);

        public Task<bool> RenewAsync(string callKey, CancellationToken cancellationToken) => Lifecycle("renew", callKey, cancellationToken);

        public Task EndAsync(string callKey, CancellationToken cancellationToken) => Lifecycle("end", callKey, cancellationToken);

        /// <summary>Recorded as <c>abandon {key} {attempt}</c>.</summary>
        public Task AbandonAsync(string callKey, string attempt, CancellationToken cancellationToken)
        {
            Record(new ClientCall("abandon", callKey, [attempt], time.GetUtcNow(), cancellationToken));
            return Task.CompletedTask;
        }

        /// <summary>Recorded; no call has a dialog here.</summary>
        public Task<CallDialog?> GetDialogAsync(string callKey, CancellationToken cancellationToken)
        {
            Record(new ClientCall("dialog", callKey, [], time.GetUtcNow(), cancellationToken));
            return Task.FromResult<CallDialog?>(null);
        }

        private Task<bool> Lifecycle(string operation, string callKey, CancellationToken cancellationToken, CallAnswer? answer = null)
        {
            bool fail;
            lock (_gate)
            {
                fail = _failures.TryGetValue(operation, out var left) && left > 0;
                if (fail && left != int.MaxValue)
                {
                    _failures[operation] = left - 1;
                }
            }

            Record(new ClientCall(operation, callKey, [], time.GetUtcNow(), cancellationToken, Answer: answer));
            return fail ? Task.FromException<bool>(new GrainStorageException($"{operation} failed (scripted)")) : Task.FromResult(true);
        }

        private void Script(Func<CancellationToken, Task<AdmitResult>> admission)
        {
            lock (_gate)
            {
                _admissions.Enqueue(admission);
            }
        }

        private void Record(ClientCall call)
        {
            TaskCompletionSource changed;
            lock (_gate)
            {
                _calls.Add(call);
                changed = _changed;
                _changed = NewSignal();
            }

            changed.SetResult();
        }

        private static string Describe(LimitRequest limit) =>
            $"{limit.Key} {(limit.Direction == Direction.Inbound ? "in" : "out")}{(limit.PerCallMax is { } max ? $" max {max}" : "")}";

        private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed record LogEntry(LogLevel Level, int EventId, string Message, Exception? Exception);

    private sealed class RecordingLogger : ILogger<AdmissionPolicy>
    {
        private readonly ConcurrentQueue<LogEntry> _entries = new();

        public IReadOnlyList<LogEntry> Entries => [.. _entries];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            _entries.Enqueue(new LogEntry(logLevel, eventId.Id, formatter(state, exception), exception));
    }

    /// <summary>The meters the policy creates through this factory, and every measurement on them (no other test's).</summary>
    private sealed class MetricsRecorder : IMeterFactory
    {
        private readonly Lock _gate = new();
        private readonly List<Meter> _meters = [];
        private readonly ConcurrentQueue<(string Instrument, double Value, Dictionary<string, object?> Tags)> _measurements = new();
        private readonly MeterListener _listener = new();

        public MetricsRecorder()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                lock (_gate)
                {
                    if (_meters.Contains(instrument.Meter))
                    {
                        listener.EnableMeasurementEvents(instrument);
                    }
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Add(instrument, value, tags));
            _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Add(instrument, value, tags));
            _listener.Start();
        }

        /// <summary>Every <c>callstate.sipedge.admissions</c> increment as <c>result/reason</c>.</summary>
        public IReadOnlyList<string> Decisions() =>
            [.. _measurements.Where(m => m.Instrument == "callstate.sipedge.admissions").Select(m => $"{m.Tags["callstate.result"]}/{m.Tags["callstate.reason"]}")];

        /// <summary>Every <c>callstate.sipedge.admission.duration</c> recorded, in seconds.</summary>
        public IReadOnlyList<double> AdmissionDurations() =>
            [.. _measurements.Where(m => m.Instrument == "callstate.sipedge.admission.duration").Select(m => m.Value)];

        /// <summary>Every <c>callstate.sipedge.lifecycle.errors</c> increment's operation.</summary>
        public IReadOnlyList<string> LifecycleErrors() =>
            [.. _measurements.Where(m => m.Instrument == "callstate.sipedge.lifecycle.errors").Select(m => (string)m.Tags["callstate.operation"]!)];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options);
            lock (_gate)
            {
                _meters.Add(meter);
            }

            return meter;
        }

        public void Dispose()
        {
            _listener.Dispose();
            lock (_gate)
            {
                foreach (var meter in _meters)
                {
                    meter.Dispose();
                }
            }
        }

        private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var byName = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var tag in tags)
            {
                byName[tag.Key] = tag.Value;
            }

            _measurements.Enqueue((instrument.Name, value, byName));
        }
    }

    /// <summary>The fake clock, counting the timers armed on it (each retry's wait is one).</summary>
    private sealed class TimerCountingTime : FakeTimeProvider
    {
        private int _timers;

        public int TimersCreated => Volatile.Read(ref _timers);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Interlocked.Increment(ref _timers);
            return base.CreateTimer(callback, state, dueTime, period);
        }
    }
}
