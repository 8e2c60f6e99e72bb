using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using CallState.Grains;
using CallState.Sip.Messages;
using CallState.Storage;
using CallState.Sip.Proxy;
using CallState.SipEdge.Trust;

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
    private readonly Histogram<double> _latency;

    /// <summary>Every admission's duration (the same as the OTLP histogram), for <c>GET /api/admission/latency</c>.</summary>
    public LatencyHistogram Latency { get; } = new();
    private readonly TimeProvider _time;

    public AdmissionPolicy(CallClassifierSource classifiers, IAdmissionClient client, CallerTrust trust, ILogger<AdmissionPolicy> logger,
        TimeProvider timeProvider, IMeterFactory? meterFactory = null)
    {
        _classifiers = classifiers;
        _trust = trust;
        _client = client;
        _logger = logger;
        _time = timeProvider;
        _meter = meterFactory?.Create("CallState.SipEdge") ?? new Meter("CallState.SipEdge");
        _decisions = _meter.CreateCounter<long>("callstate.sipedge.admissions", "{call}", "Admission decisions on initial INVITEs, by result and reason");
        _lifecycleErrors = _meter.CreateCounter<long>("callstate.sipedge.lifecycle.errors", "{operation}", "Confirm, renew or end calls that failed, by operation");
        _latency = _meter.CreateHistogram<double>("callstate.sipedge.admission.duration", "ms", "Time the grains took to decide an admission");
    }

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

                // The admission may still commit after the deadline (a slow or paused silo): release it, so a call
                // this edge did not count as admitted never holds a slot; only if this attempt admitted it (another
                // INVITE with the same Call-ID and From tag never ends the call it copies).
                _ = RunAsync("end", call.CallKey, (c, key) => c.AbandonAsync(key, leg.Attempt, CancellationToken.None));
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

        switch (result.Status)
        {
            case AdmitStatus.Admitted:
                Count(call.Limits.Count == 0 ? "unlimited" : "admitted", "NONE");
                return CallDecision.AdmitTo(target);
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
                return Reject(rejection, options.RetryAfterSeconds);
            default:
                Count("invalid", "INVALID");
                LogInvalid(_logger, result.Error ?? "admission refused the request");
                return CallDecision.Reject(500, "Server Internal Error");
        }
    }

    /// <summary>An admission's duration, into the OTLP histogram and the one behind <c>GET /api/admission/latency</c>.</summary>
    private void RecordDuration(long started)
    {
        var duration = _time.GetElapsedTime(started);
        _latency.Record(duration.TotalMilliseconds);
        Latency.Record(duration);
    }

    public void OnAnswered(SipCallId sipCall, DialogAnswer answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        var learned = new CallAnswer(answer.CalleeTag, answer.CalleeTargets);
        Fire("confirm", sipCall, (c, key) => c.ConfirmAsync(key, learned, CancellationToken.None));
    }

    public void OnFailed(SipCallId sipCall, int status) => Fire("end", sipCall, static (c, key) => c.EndAsync(key, CancellationToken.None));

    public void OnBye(SipCallId sipCall) => Fire("end", sipCall, static (c, key) => c.EndAsync(key, CancellationToken.None));

    public void OnRefresh(SipCallId sipCall) => Fire("renew", sipCall, static (c, key) => c.RenewAsync(key, CancellationToken.None));

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

    private void Fire(string operation, SipCallId sipCall, Func<IAdmissionClient, string, Task> action)
    {
        if (string.IsNullOrEmpty(sipCall.CallId))
        {
            return;
        }
        _ = RunAsync(operation, CallKeys.Create(sipCall.CallId, sipCall.CallerTag), action);
    }

    /// <summary>
    /// How long the end of a call is retried while the grains cannot be reached (a silo failing over, the database
    /// restarting): the slot comes back as soon as they answer again instead of when the lease runs out.
    /// </summary>
    internal static readonly TimeSpan[] EndRetryDelays =
        [TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(4), TimeSpan.FromSeconds(8), TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(60)];

    private async Task RunAsync(string operation, string callKey, Func<IAdmissionClient, string, Task> action)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await action(_client, callKey).ConfigureAwait(false);
                return;
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                _lifecycleErrors.Add(1, new KeyValuePair<string, object?>("operation", operation));
                if (operation != "end" || attempt >= EndRetryDelays.Length)
                {
                    // The lease reclaims the slot if the call's end never reaches the grains.
                    LogLifecycleFailed(_logger, operation, callKey, ex);
                    return;
                }

                LogEndRetry(_logger, callKey, EndRetryDelays[attempt].TotalSeconds, ex.Message);
                await Task.Delay(EndRetryDelays[attempt], _time).ConfigureAwait(false);
            }
        }
    }

    private void Count(string result, string reason) =>
        _decisions.Add(1, new KeyValuePair<string, object?>("result", result), new KeyValuePair<string, object?>("reason", reason));

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

    [LoggerMessage(EventId = 3206, Level = LogLevel.Information, Message = "Could not end call {CallKey} ({Error}); retrying in {Seconds} s")]
    private static partial void LogEndRetry(ILogger logger, string callKey, double seconds, string error);

    [LoggerMessage(EventId = 3205, Level = LogLevel.Warning, Message = "Could not {Operation} call {CallKey}; its lease will reclaim the slot")]
    private static partial void LogLifecycleFailed(ILogger logger, string operation, string callKey, Exception exception);
}
