using CallState.Grains;
using CallState.Sip.Proxy;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace CallState.SipEdge.Admission;

/// <summary>
/// Readiness of an edge that admits calls: after start it runs admission round trips (admit a warm-up call with no
/// limits, read its dialog, end it) through the same <see cref="IAdmissionClient"/> the calls use, so the cold paths
/// (JIT, grain activation, the storage connection) are paid before the first real call and not out of its admission
/// deadline. Ready once a round trip succeeded and either its admission answered within
/// <see cref="AdmissionOptions.Deadline"/> or <see cref="Rounds"/> round trips succeeded; from then on ready for the
/// life of the process: a later silo outage is answered by the edge itself (503, or fail-open), not by leaving the
/// load balancer's rotation (docs/architecture.md, "Admission at the edge").
/// </summary>
public sealed partial class AdmissionWarmup : IHostedService, IHealthCheck, IDisposable
{
    /// <summary>Successful round trips after which the edge is ready even if none answered within the deadline.</summary>
    public const int Rounds = 3;

    /// <summary>Failed attempts logged at Warning; later ones at Debug, so an edge started long before its silos does not flood the log.</summary>
    public const int WarningsLogged = 3;

    /// <summary>Bounds one round trip: a cold storage connection or grain activation may take seconds, but not forever.</summary>
    public static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Wait after the first failed attempt; it doubles up to <see cref="MaxBackoff"/>.</summary>
    public static readonly TimeSpan FirstBackoff = TimeSpan.FromMilliseconds(100);

    /// <summary>Longest wait between attempts while the grains are not reachable (silos still starting).</summary>
    public static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(2);

    /// <summary>Prefix of the warm-up calls' keys; a SIP call key (Call-ID and From tag) never starts with it.</summary>
    public const string CallKeyPrefix = "callstate-warmup/";

    private readonly IAdmissionClient _client;

    /// <summary>This edge's Timer C plus 64*T1, which the grains' early lease must exceed.</summary>
    private readonly TimeSpan _answerWindow;
    private bool _leaseChecked;
    private readonly TimeSpan _deadline;
    private readonly TimeProvider _time;
    private readonly ILogger<AdmissionWarmup> _logger;
    private readonly CancellationTokenSource _stopping = new();
    private Task? _run;
    private volatile bool _ready;

    public AdmissionWarmup(IAdmissionClient client, IOptions<AdmissionOptions> options, TimeProvider time, ILogger<AdmissionWarmup> logger,
        IOptions<SipProxyOptions>? sipOptions = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var sip = sipOptions?.Value ?? new SipProxyOptions();
        _answerWindow = sip.TimerC + sip.T1 * 64;
        _client = client;
        _deadline = options.Value.Deadline;
        _time = time;
        _logger = logger;
    }

    /// <summary>Whether a warm-up round trip has succeeded (it stays true).</summary>
    public bool IsReady => _ready;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        // In the background: the silos may not be up yet, and the SIP listeners and probes must not wait for them.
        _run = Task.Run(() => RunAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_run is { } run)
        {
            await run.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public void Dispose() => _stopping.Dispose();

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_ready ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy("no admission warm-up round trip has succeeded yet"));

    /// <summary>Runs round trips until the edge is ready or <paramref name="stoppingToken"/> fires; never throws for a failed attempt.</summary>
    public async Task RunAsync(CancellationToken stoppingToken)
    {
        var started = _time.GetTimestamp();
        var backoff = FirstBackoff;
        var failures = 0;
        var succeeded = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            TimeSpan admitted;
            try
            {
                admitted = await RoundTripAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // any failure (no gateway yet, storage down, timeout) is retried; the edge stays unready meanwhile
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failures++;
                var error = $"{ex.GetType().Name}: {ex.Message}";
                if (failures <= WarningsLogged)
                {
                    LogAttemptFailed(_logger, failures, error, backoff);
                }
                else
                {
                    LogAttemptFailedQuietly(_logger, failures, error, backoff);
                }

                try
                {
                    await Task.Delay(backoff, _time, stoppingToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
                continue;
            }

            succeeded++;
            if (admitted <= _deadline || succeeded >= Rounds)
            {
                _ready = true;
                var elapsed = _time.GetElapsedTime(started);
                LogReady(_logger, elapsed.TotalMilliseconds, succeeded, failures, admitted.TotalMilliseconds, _deadline.TotalMilliseconds);
                return;
            }
        }
    }

    /// <summary>One warm-up call, admitted, looked up and ended; returns how long its admission took.</summary>
    private async Task<TimeSpan> RoundTripAsync(CancellationToken stoppingToken)
    {
        using var timeout = new CancellationTokenSource(AttemptTimeout, _time);
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, timeout.Token);
        var callKey = CallKeyPrefix + Guid.NewGuid().ToString("N");
        var started = _time.GetTimestamp();
        var result = await _client.AdmitAsync(callKey, [], leg: null, bound.Token).ConfigureAwait(false);
        var admitted = _time.GetElapsedTime(started);
        if (result.Status != AdmitStatus.Admitted)
        {
            throw new InvalidOperationException($"warm-up call answered {result.Status} {result.Error}".TrimEnd());
        }

        if (!_leaseChecked && result.EarlyLease is { } lease)
        {
            // An edge of a cluster cannot see the silos' configuration; the answer names their early lease. A short one
            // is reported, not refused: the silos' setting would otherwise take every edge out of rotation.
            _leaseChecked = true;
            if (lease <= _answerWindow)
            {
                LogLeaseTooShort(_logger, lease, _answerWindow);
            }
        }

        // A failure below leaves a call that holds no limit; its early lease ends it.
        await _client.GetDialogAsync(callKey, bound.Token).ConfigureAwait(false);
        await _client.EndAsync(callKey, bound.Token).ConfigureAwait(false);
        return admitted;
    }

    [LoggerMessage(EventId = 3403, Level = LogLevel.Error,
        Message = "The grains' early lease ({Lease}) does not exceed this edge's Timer C + 64*T1 ({Window}): set CallState:Grains:Leases:Early on the silos above it, or a call answered late may find its slot reclaimed (docs/architecture.md, \"Leases that fit SIP\")")]
    private static partial void LogLeaseTooShort(ILogger logger, TimeSpan lease, TimeSpan window);

    [LoggerMessage(EventId = 3400, Level = LogLevel.Information,
        Message = "Admission warm-up done in {ElapsedMs:F0} ms ({Succeeded} round trips, {Failed} failed attempts; last admission {AdmittedMs:F1} ms, deadline {DeadlineMs:F0} ms): ready")]
    private static partial void LogReady(ILogger logger, double elapsedMs, int succeeded, int failed, double admittedMs, double deadlineMs);

    [LoggerMessage(EventId = 3401, Level = LogLevel.Warning, Message = "Admission warm-up attempt {Attempt} failed ({Error}); not ready, trying again in {Backoff}")]
    private static partial void LogAttemptFailed(ILogger logger, int attempt, string error, TimeSpan backoff);

    [LoggerMessage(EventId = 3402, Level = LogLevel.Debug, Message = "Admission warm-up attempt {Attempt} failed ({Error}); not ready, trying again in {Backoff}")]
    private static partial void LogAttemptFailedQuietly(ILogger logger, int attempt, string error, TimeSpan backoff);
}
