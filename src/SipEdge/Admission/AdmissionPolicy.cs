using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using CallState.Grains;
using CallState.Sip.Messages;
using CallState.Sip.Proxy;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Options;
using Polly;

namespace CallState.SipEdge.Admission;

/// <summary>
/// The edge's call policy: classifies each initial INVITE, admits it with one call to the grains before it is
/// forwarded, answers a refusal per the rejection table (docs/architecture.md, "Admission at the edge") (with a Reason header and a log line naming the limit), and
/// confirms, renews or ends the call as the proxy reports 2xx, refreshes, failures and BYEs. When the grains do not
/// answer within the deadline the call is refused with 503 (fail closed) or let through (fail open).
/// </summary>
public sealed partial class AdmissionPolicy : ICallPolicy, IDisposable
{
    private readonly CallClassifierSource _classifiers;
    private readonly IAdmissionClient _client;
    private readonly CallerTrust _trust;
    private readonly ILogger<AdmissionPolicy> _logger;
    private readonly Meter _meter;
    private readonly Counter<long> _decisions;
    private readonly Counter<long> _lifecycleErrors;
    private readonly Counter<long> _tornDown;
    private readonly Histogram<double> _latency;
    private readonly ResiliencePipeline _retry;

    /// <summary>Timer C plus 64*T1 of this edge: how late a call may be answered after its last provisional.</summary>
    private readonly TimeSpan _answerWindow;

    /// <summary>The early lease the grains last reported (ticks; 0 before the first admission).</summary>
    private long _earlyLeaseTicks;

    /// <summary>The shortest early lease already reported as too short (ticks), so each is logged once.</summary>
    private long _shortLeaseReported = long.MaxValue;

    /// <summary>Calls whose confirm is in flight or being retried; their end cancels it (and so any teardown).</summary>
    private readonly ConcurrentDictionary<string, CancellationTokenSource> _confirming = new(StringComparer.Ordinal);

    private readonly TimeProvider _time;

    public AdmissionPolicy(CallClassifierSource classifiers, IAdmissionClient client, CallerTrust trust, ILogger<AdmissionPolicy> logger,
        TimeProvider timeProvider, IMeterFactory? meterFactory = null, IOptions<SipProxyOptions>? sipOptions = null)
    {
        _classifiers = classifiers;
        _trust = trust;
        _client = client;
        _logger = logger;
        _time = timeProvider;
        _meter = meterFactory?.Create(TelemetryName) ?? new Meter(TelemetryName);
        _decisions = _meter.CreateCounter<long>("callstate.sipedge.admissions", "{call}", "Admission decisions on initial INVITEs, by result and reason");
        _lifecycleErrors = _meter.CreateCounter<long>("callstate.sipedge.lifecycle.errors", "{operation}", "Confirm, renew or end calls that failed, by operation");
        _tornDown = _meter.CreateCounter<long>("callstate.sipedge.calls.torn_down", "{call}", "Answered calls ended with BYEs because their confirm found them no longer counted");
        var sip = sipOptions?.Value ?? new SipProxyOptions();
        _answerWindow = sip.TimerC + sip.T1 * 64;
        _retry = LifecycleRetry.Build(timeProvider, OnRetry);
        _latency = _meter.CreateHistogram<double>("callstate.sipedge.admission.duration", "s", "Time the grains took to decide an admission, seen from the edge",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DurationBuckets });
    }

    /// <summary>The meter and activity source of the edge's admission (docs/operations.md, "Metrics").</summary>
    public const string TelemetryName = "CallState.SipEdge";

    /// <summary>One span per admission asked of the grains; Orleans carries its trace into the silo.</summary>
    private static readonly ActivitySource Source = new(TelemetryName);

    /// <summary>
    /// Buckets of the admission histogram, in seconds, from 0.1 ms to 2.5 s in steps of at most 25% below 1 s: the benchmarks read
    /// their p50 and p99 from it (bench/metrics.py), so a bound is never far from the figure.
    /// </summary>
    internal static readonly IReadOnlyList<double> DurationBuckets =
        [
            0.0001, 0.000125, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004, 0.0005, 0.0006, 0.0008, 0.001, 0.00125,
            0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04,
            0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1, 1.5, 2, 2.5,
        ];

    public async ValueTask<CallDecision> AdmitAsync(SipMessage invite, SipTarget source, SipTarget route, InviteOrigin origin, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(invite);
        ArgumentNullException.ThrowIfNull(origin);
        var classifier = _classifiers.Current;
        var address = source.EndPoint.Address;
        var certificate = source.Connection;
        var trunk = classifier.SourceTrunkOf(address, certificate?.RemoteCertificateSha256, certificate?.RemoteCertificateDnsNames);
        if (trunk.Match == TrunkMatch.CertificateRequired)
        {
            // A trunk that requires a certificate is never recognised by its address alone, nor does its address fall
            // through to a trusted peer or digest (docs/security.md, "SIP over TLS"); nothing is reserved.
            Count("untrusted", "CERTIFICATE_REQUIRED");
            var presented = certificate?.RemoteCertificateSha256 is { } sha256 ? $"its certificate (SHA-256 {sha256}) names no trunk" : "it presented no client certificate";
            LogUntrusted(_logger, 403, AddressText.Canonical(address).ToString(), $"the address is trunk '{trunk.Trunk}''s, which requires a client certificate, and {presented}");
            return CallDecision.Reject(403, "Forbidden (trunk certificate required)");
        }
        var trust = _trust.Check(invite, address, trunk.IsTrunk);
        if (trust.Kind == TrustKind.Refused)
        {
            // Nothing is reserved for a caller the edge does not believe (docs/security.md, "Who may call as whom").
            Count(trust.Status == 407 ? "challenged" : "untrusted", trust.Status == 407 ? "AUTH_REQUIRED" : "FORBIDDEN");
            if (trust.Log is { } why)
            {
                LogUntrusted(_logger, trust.Status, AddressText.Canonical(address).ToString(), why);
            }
            return CallDecision.Reject(trust.Status, trust.Reason!, trust.Headers ?? "");
        }
        var call = classifier.Classify(Input(invite, source, trust.User));
        if (!call.Succeeded)
        {
            Count("invalid", "BAD_REQUEST");
            LogInvalid(_logger, call.Error!);
            return CallDecision.Reject(400, "Bad Request (" + call.Error + ")");
        }
        var target = call.NextHop is { } hop ? route with { EndPoint = hop, Connection = null } : route;

        // A call no limit applies to is recorded all the same: its dialog is what lets its in-dialog requests through.
        var leg = new CallLeg(origin.Attempt, origin.CallerTargets);
        if (CallDialogs.Validate(leg) is { } tooLong)
        {
            // A Via branch or sent-by or a Contact longer than a call's record keeps (RFC 3261 bounds none of them) is
            // the request's fault: 400 before any admission work, not the grains' refusal answered 500 (found by the
            // fuzz run, docs/testing.md "Fuzzing").
            Count("invalid", "BAD_REQUEST");
            LogInvalid(_logger, tooLong);
            return CallDecision.Reject(400, "Bad Request (value too long)");
        }

        var options = classifier.Options;
        var started = _time.GetTimestamp();
        AdmitResult result;
        using var span = Source.StartActivity("callstate.admission", ActivityKind.Client);
        span?.SetTag("callstate.call.key", call.CallKey);
        // The deadline runs on the injected clock; the proxy's token (the call cancelled while deciding) cancels too.
        using (var deadline = new CancellationTokenSource(options.Deadline, _time))
        using (var linked = cancellationToken.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token) : null)
        {
            try
            {
                result = await _client.AdmitAsync(call.CallKey, call.Limits, leg, linked?.Token ?? deadline.Token).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // no answer of any kind (deadline, no gateway, a silo or the storage failing) is the tier unavailable
            catch (Exception ex)
#pragma warning restore CA1031
            {
                RecordDuration(started);
                span?.SetStatus(ActivityStatusCode.Error, ex.GetType().Name);

                // The admission may still commit after the deadline (a slow or paused silo): release it, so a call
                // this edge did not count as admitted never holds a slot; only if this attempt admitted it (another
                // INVITE with the same Call-ID and From tag never ends the call it copies).
                _ = RunAsync("end", call.CallKey, LifecycleRetry.LongestRetry, async (policy, key, ct) =>
                {
                    await policy._client.AbandonAsync(key, leg.Attempt, ct).ConfigureAwait(false);
                    return true;
                }, CancellationToken.None);
                if (options.FailOpen || call.IsEmergency)
                {
                    Count("fail_open", "SILO_UNAVAILABLE");
                    LogFailOpen(_logger, call.CallKey, call.Description, ex.GetType().Name);
                    return CallDecision.AdmitTo(target);
                }
                Count("unavailable", "SILO_UNAVAILABLE");
                LogUnavailable(_logger, call.CallKey, call.Description, ex.GetType().Name);
                return Reject(classifier.UnavailableRejection(call), options.RetryAfterSeconds);
            }
        }
        RecordDuration(started);
        span?.SetTag("callstate.result", result.Status.ToString());
        span?.SetTag("callstate.reason", result.ReasonCode);

        switch (result.Status)
        {
            case AdmitStatus.Admitted:
                Count(call.Limits.Count == 0 ? "unlimited" : "admitted", "NONE");
                if (result.EarlyLease is not { } lease || lease <= TimeSpan.Zero)
                {
                    // A silo of a version before leases were reported: nothing to renew by or check against.
                    return CallDecision.AdmitTo(target);
                }
                Learn(lease);
                return CallDecision.AdmitCounted(target, lease);
            case AdmitStatus.Duplicate:
                // Another INVITE with an admitted call's Call-ID and From tag (RFC 3261 8.2.2.2, a merged request): it is
                // neither admitted for free nor allowed to end the call it copies.
                Count("duplicate", "CALL_IN_USE");
                LogDuplicate(_logger, call.CallKey, call.Description);
                return CallDecision.Reject(482, "Loop Detected (call already admitted)");
            case AdmitStatus.Rejected when call.IsEmergency:
                // Emergency numbers are always connected; the refusal is logged and counted, the call goes on.
                Count("emergency_over_limit", result.ReasonCode);
                LogEmergency(_logger, call.CallKey, result.LimitKey ?? "", result.Current, result.Limit, result.ReasonCode);
                return CallDecision.AdmitTo(target);
            case AdmitStatus.Rejected:
                var rejection = classifier.RejectionFor(call, result.Reason, result.LimitKey);
                Count("rejected", result.ReasonCode);
                LogRejected(_logger, call.CallKey, result.LimitKey ?? "", result.Current, result.Limit, result.ReasonCode, rejection.Status, call.Description);
                // A rate's refusal says when its bucket holds a token again; any other refusal the configured time.
                return Reject(rejection, result.RetryAfter is { } wait ? (int)Math.Clamp(Math.Ceiling(wait.TotalSeconds), 1, 86_400) : options.RetryAfterSeconds);
            default:
                Count("invalid", "INVALID");
                LogInvalid(_logger, result.Error ?? "admission refused the request");
                return CallDecision.Reject(500, "Server Internal Error");
        }
    }

    /// <summary>An admission's duration, in seconds on the injected clock (<c>callstate.sipedge.admission.duration</c>).</summary>
    private void RecordDuration(long started) => _latency.Record(_time.GetElapsedTime(started).TotalSeconds);

    public void OnAnswered(SipCallId sipCall, DialogAnswer answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        if (string.IsNullOrEmpty(sipCall.CallId))
        {
            return;
        }

        var key = CallKeys.Create(sipCall.CallId, sipCall.CallerTag);
        var ended = new CancellationTokenSource();
        if (_confirming.TryRemove(key, out var earlier))
        {
            // Another 2xx of the call (a fork's): one confirm is enough; the first stops where it is.
            earlier.Cancel();
        }
        _confirming[key] = ended;
        _ = ConfirmAsync(key, new CallAnswer(answer.CalleeTag, answer.CalleeTargets, EdgeCallEnder.Store(answer.Teardown)), answer.Teardown, ended);
    }

    public void OnProvisional(SipCallId sipCall) =>
        Fire("renew", sipCall, EarlyWindow, async (policy, key, ct) =>
        {
            if (!await policy._client.RenewAsync(key, ct).ConfigureAwait(false))
            {
                // Reclaimed while ringing (its lease lapsed before this renewal got through): if it is answered, the
                // confirm finds it so and ends it.
                LogRenewLost(policy._logger, key);
            }
        });

    public void OnFailed(SipCallId sipCall, int status) => End(sipCall);

    public void OnBye(SipCallId sipCall) => End(sipCall);

    public void OnRefresh(SipCallId sipCall) =>
        Fire("renew", sipCall, LifecycleRetry.LongestRetry, static (policy, key, ct) => policy._client.RenewAsync(key, ct));

    private void End(SipCallId sipCall)
    {
        if (string.IsNullOrEmpty(sipCall.CallId))
        {
            return;
        }

        var key = CallKeys.Create(sipCall.CallId, sipCall.CallerTag);
        if (_confirming.TryRemove(key, out var confirming))
        {
            // The call is over: a confirm still being retried stops, and never tears down a call that already ended.
            confirming.Cancel();
        }
        _ = RunAsync("end", key, LifecycleRetry.LongestRetry, static async (policy, key, ct) =>
        {
            await policy._client.EndAsync(key, ct).ConfigureAwait(false);
            return true;
        }, CancellationToken.None);
    }

    /// <summary>
    /// Confirms an answered call, retried until its early lease would have lapsed anyway. When the grains answer that the
    /// call is no longer counted (its lease lapsed and its slot was reclaimed), a counted call is ended with a BYE to each
    /// side rather than left up uncounted.
    /// </summary>
    private async Task ConfirmAsync(string key, CallAnswer learned, CallTeardown? teardown, CancellationTokenSource ended)
    {
        bool? confirmed;
        try
        {
            confirmed = await RunAsync("confirm", key, EarlyWindow, (policy, k, ct) => policy._client.ConfirmAsync(k, learned, ct), ended.Token).ConfigureAwait(false);
        }
        finally
        {
            _confirming.TryRemove(new KeyValuePair<string, CancellationTokenSource>(key, ended));
        }

        if (confirmed == false && teardown is not null && !ended.IsCancellationRequested && teardown.Send())
        {
            _tornDown.Add(1);
            LogTornDown(_logger, key, teardown.CallerTarget.ToString(), teardown.CalleeTarget.ToString());
        }

        ended.Dispose();
    }

    /// <summary>How long a confirm or an early renewal is retried: the early lease, past which it has lapsed anyway.</summary>
    private TimeSpan EarlyWindow
    {
        get
        {
            var ticks = Interlocked.Read(ref _earlyLeaseTicks);
            var lease = ticks > 0 ? TimeSpan.FromTicks(ticks) : new LeaseOptions().Early;
            return lease < LifecycleRetry.LongestRetry ? lease : LifecycleRetry.LongestRetry;
        }
    }

    /// <summary>Keeps the grains' early lease and reports, once per value, one too short for this edge's Timer C.</summary>
    private void Learn(TimeSpan lease)
    {
        Interlocked.Exchange(ref _earlyLeaseTicks, lease.Ticks);
        if (lease > _answerWindow)
        {
            return;
        }

        var reported = Interlocked.Read(ref _shortLeaseReported);
        if (lease.Ticks < reported && Interlocked.CompareExchange(ref _shortLeaseReported, lease.Ticks, reported) == reported)
        {
            LogLeaseTooShort(_logger, lease, _answerWindow);
        }
    }

    public async ValueTask<DialogRecord?> FindDialogAsync(SipCallId sipCall, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(sipCall.CallId))
        {
            return null;
        }
        var key = CallKeys.Create(sipCall.CallId, sipCall.CallerTag);
        if (GrainTypes.ValidateCallKey(key) is not null)
        {
            return null;
        }
        using var deadline = new CancellationTokenSource(_classifiers.Current.Options.Deadline, _time);
        using var linked = cancellationToken.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token) : null;
        var dialog = await _client.GetDialogAsync(key, linked?.Token ?? deadline.Token).ConfigureAwait(false);
        return dialog is null ? null : new DialogRecord(dialog.CalleeTag, dialog.CallerTargets, dialog.CalleeTargets, dialog.Confirmed);
    }

    public bool AllowsDestination(System.Net.IPEndPoint endPoint) => _classifiers.Current.IsDestination(endPoint);

    public void Dispose() => _meter.Dispose();

    private static CallDecision Reject(SipRejection rejection, int retryAfterSeconds)
    {
        var headers = new StringBuilder();
        if (rejection.ReasonHeader is { } reason)
        {
            headers.Append("Reason: ").Append(reason).Append("\r\n");
        }
        if (rejection.RetryAfter)
        {
            headers.Append("Retry-After: ").Append(retryAfterSeconds.ToString(CultureInfo.InvariantCulture)).Append("\r\n");
        }
        return CallDecision.Reject(rejection.Status, rejection.ReasonPhrase, headers.ToString());
    }

    private void Fire(string operation, SipCallId sipCall, TimeSpan window, Func<AdmissionPolicy, string, CancellationToken, Task> action)
    {
        if (string.IsNullOrEmpty(sipCall.CallId))
        {
            return;
        }
        _ = RunAsync(operation, CallKeys.Create(sipCall.CallId, sipCall.CallerTag), window, async (policy, key, ct) =>
        {
            await action(policy, key, ct).ConfigureAwait(false);
            return true;
        }, CancellationToken.None);
    }

    /// <summary>
    /// Runs a confirm, renew or end through the retry pipeline (<see cref="LifecycleRetry"/>) for at most
    /// <paramref name="window"/>: while the grains cannot be reached (a silo failing over, the database restarting) the
    /// operation is tried again with backoff, and given up once the lease would have lapsed anyway. Every operation is
    /// idempotent at the grain, so an attempt that did reach it and whose answer was lost is harmless to repeat. Null
    /// when it never got through or <paramref name="stop"/> fired.
    /// </summary>
    private async Task<bool?> RunAsync(string operation, string callKey, TimeSpan window,
        Func<AdmissionPolicy, string, CancellationToken, Task<bool>> action, CancellationToken stop)
    {
        using var deadline = new CancellationTokenSource(window, _time);
        using var linked = stop.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(stop, deadline.Token) : null;
        var context = ResilienceContextPool.Shared.Get(linked?.Token ?? deadline.Token);
        context.Properties.Set(LifecycleRetry.Operation, operation);
        context.Properties.Set(LifecycleRetry.CallKey, callKey);
        try
        {
            return await _retry.ExecuteAsync(
                static async (ctx, state) => await state.action(state.policy, state.callKey, ctx.CancellationToken).ConfigureAwait(false),
                context,
                (policy: this, action, callKey)).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // The call ended meanwhile (a confirm overtaken by the call's end): nothing more to do for it.
            return null;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Past the window (or a request that can never succeed): the lease reclaims the slot if the grains never heard.
            // A failed attempt that was retried is counted already; the window ending (cancellation) is not a failure of its own.
            if (ex is not OperationCanceledException)
            {
                _lifecycleErrors.Add(1, new KeyValuePair<string, object?>("callstate.operation", operation));
            }

            LogLifecycleFailed(_logger, operation, callKey, ex);
            return null;
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    /// <summary>One failed attempt that will be retried: counted, and logged with its delay.</summary>
    private void OnRetry(ResilienceContext context, Exception? error, TimeSpan delay)
    {
        var operation = context.Properties.GetValue(LifecycleRetry.Operation, "");
        _lifecycleErrors.Add(1, new KeyValuePair<string, object?>("callstate.operation", operation));
        var callKey = context.Properties.GetValue(LifecycleRetry.CallKey, "");
        var why = error?.Message ?? "";
        LogRetry(_logger, operation, callKey, delay, why);
    }

    private void Count(string result, string reason) =>
        _decisions.Add(1, new KeyValuePair<string, object?>("callstate.result", result), new KeyValuePair<string, object?>("callstate.reason", reason));

    private static ClassificationInput Input(SipMessage m, SipTarget source, string? verifiedCaller)
    {
        string? Text(TextRange range) => range.IsEmpty ? null : Encoding.UTF8.GetString(m[range]);
        return new ClassificationInput
        {
            CallId = Text(m.CallId),
            FromTag = Text(m.FromTag),
            FromUser = Text(m.From.Uri.User),
            FromHost = Text(m.From.Uri.Host),
            ToUser = Text(m.To.Uri.User),
            ToHost = Text(m.To.Uri.Host),
            RequestUser = Text(m.RequestUri.User),
            RequestHost = Text(m.RequestUri.Host),
            Source = source.EndPoint.Address.IsIPv4MappedToIPv6 ? source.EndPoint.Address.MapToIPv4() : source.EndPoint.Address,
            CertificateSha256 = source.Connection?.RemoteCertificateSha256,
            CertificateNames = source.Connection?.RemoteCertificateDnsNames,
            VerifiedCaller = verifiedCaller,
        };
    }

    [LoggerMessage(EventId = 3200, Level = LogLevel.Warning,
        Message = "Call {CallKey} rejected by {LimitKey}: {Current} of {Maximum} in use, reason {Reason}, answered {Status} ({Call})")]
    private static partial void LogRejected(ILogger logger, string callKey, string limitKey, int current, int? maximum, string reason, int status, string call);

    [LoggerMessage(EventId = 3201, Level = LogLevel.Error, Message = "Call {CallKey} refused with 503: the grains did not answer ({Error}); {Call}")]
    private static partial void LogUnavailable(ILogger logger, string callKey, string call, string error);

    [LoggerMessage(EventId = 3202, Level = LogLevel.Warning, Message = "Call {CallKey} let through unchecked (fail open or emergency): the grains did not answer ({Error}); {Call}")]
    private static partial void LogFailOpen(ILogger logger, string callKey, string call, string error);

    [LoggerMessage(EventId = 3203, Level = LogLevel.Warning,
        Message = "Emergency call {CallKey} connected over {LimitKey}: {Current} of {Maximum} in use, reason {Reason}")]
    private static partial void LogEmergency(ILogger logger, string callKey, string limitKey, int current, int? maximum, string reason);

    [LoggerMessage(EventId = 3207, Level = LogLevel.Warning, Message = "Call {CallKey} refused with 482: an INVITE reused an admitted call's Call-ID and From tag ({Call})")]
    private static partial void LogDuplicate(ILogger logger, string callKey, string call);

    [LoggerMessage(EventId = 3208, Level = LogLevel.Warning, Message = "INVITE from {Source} refused with {Status}: {Why}")]
    private static partial void LogUntrusted(ILogger logger, int status, string source, string why);

    [LoggerMessage(EventId = 3204, Level = LogLevel.Warning, Message = "INVITE refused: {Error}")]
    private static partial void LogInvalid(ILogger logger, string error);

    [LoggerMessage(EventId = 3206, Level = LogLevel.Information, Message = "Could not {Operation} call {CallKey} ({Error}); retrying in {Delay}")]
    private static partial void LogRetry(ILogger logger, string operation, string callKey, TimeSpan delay, string error);

    [LoggerMessage(EventId = 3209, Level = LogLevel.Warning,
        Message = "Call {CallKey} was answered after its slot was reclaimed (its early lease lapsed): ended with a BYE to the caller ({Caller}) and to the callee ({Callee})")]
    private static partial void LogTornDown(ILogger logger, string callKey, string caller, string callee);

    [LoggerMessage(EventId = 3210, Level = LogLevel.Warning, Message = "Call {CallKey} was no longer counted when a provisional renewed its early lease; its answer will end it")]
    private static partial void LogRenewLost(ILogger logger, string callKey);

    [LoggerMessage(EventId = 3211, Level = LogLevel.Error,
        Message = "The grains' early lease ({Lease}) does not exceed this edge's Timer C + 64*T1 ({Window}): a call answered late may find its slot reclaimed. Set CallState:Grains:Leases:Early on the silos above it (docs/architecture.md, \"Leases that fit SIP\")")]
    private static partial void LogLeaseTooShort(ILogger logger, TimeSpan lease, TimeSpan window);

    [LoggerMessage(EventId = 3205, Level = LogLevel.Warning, Message = "Could not {Operation} call {CallKey}; its lease will reclaim the slot")]
    private static partial void LogLifecycleFailed(ILogger logger, string operation, string callKey, Exception exception);
}
