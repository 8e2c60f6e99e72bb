using System.Diagnostics.Metrics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using CallState.Grains;
using CallState.Silo.Hosting;
using CallState.Silo;
using CallState.Silo.Admin;
using CallState.Sip.Proxy;
using CallState.Sip.Transport;
using CallState.SipEdge.Admission;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace CallState.SipEdge;

/// <summary>
/// The SIP edge process: the SIP listeners and proxy core (configuration section <c>CallState:Sip</c>) plus health
/// endpoints. A configuration error stops it before it listens, naming every failing field.
/// </summary>
public static partial class EdgeHost
{
    /// <summary>Exit code for a configuration that failed validation.</summary>
    public const int ConfigurationErrorExitCode = 2;

    public static async Task<int> RunAsync(string[] args)
    {
        WebApplication app;
        try
        {
            app = Build(args);
            await app.StartAsync().ConfigureAwait(false);
        }
        catch (OptionsValidationException ex)
        {
            await Console.Error.WriteLineAsync("CallState edge: invalid configuration:").ConfigureAwait(false);
            foreach (var failure in ex.Failures)
            {
                await Console.Error.WriteLineAsync("  " + failure).ConfigureAwait(false);
            }
            return ConfigurationErrorExitCode;
        }
        LogStarted(app.Logger, app.Urls);
        await app.WaitForShutdownAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
        return 0;
    }

    /// <summary>The sections under <c>CallState</c> an edge reads (a standalone edge hosts a silo too, and a shared file may hold them).</summary>
    public static readonly IReadOnlyDictionary<string, Type> Sections = new Dictionary<string, Type>(SiloHost.Sections, StringComparer.OrdinalIgnoreCase)
    {
        ["Sip"] = typeof(SipProxyOptions),
        ["Admission"] = typeof(AdmissionOptions),
        ["Trust"] = typeof(TrustOptions),
    };

    /// <summary>The command-line switch that runs an edge and a silo in one process.</summary>
    public const string StandaloneSwitch = "--standalone";

    public static WebApplication Build(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var standalone = args.Contains(StandaloneSwitch, StringComparer.Ordinal);
        var rest = args.Where(a => a != StandaloneSwitch).ToArray();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = rest, ContentRootPath = AppContext.BaseDirectory });
        if (standalone)
        {
            // The sample configuration ships beside the binary; the command line still overrides it.
            builder.Configuration.AddJsonFile(Path.Combine(AppContext.BaseDirectory, "samples", "standalone", "appsettings.json"), optional: false, reloadOnChange: true);
            builder.Configuration.AddEnvironmentVariables();
            builder.Configuration.AddCommandLine(rest);
        }

        // After the standalone sample, so the mounted settings (a ConfigMap) win over it and the command line over both.
        builder.Configuration.AddCallStateSettingsDirectory();
        if (standalone)
        {
            builder.Services.AddCallStateSilo(builder.Configuration);
        }

        SiloHost.ThrowOnUnknownKeys(builder.Configuration, Sections);
        builder.AddCallStateAdmin();
        builder.AddCallStateTelemetry(standalone ? Telemetry.StandaloneService : Telemetry.EdgeService);
        builder.Services.AddCallStateSipEdge(builder.Configuration, standalone);
        var app = builder.Build();
        if (standalone)
        {
            // The silo's admin API with its probes; readiness covers storage, the SIP listeners and the admission warm-up ("ready" checks).
            app.MapCallStateAdminApi();
        }
        else
        {
            // Probes on their own port; GET /metrics behind a token like every admin endpoint.
            app.UseCallStateAdmin();
        }
        return app;
    }

    /// <summary>
    /// Registers the SIP listeners, proxy core and health checks; with <paramref name="standalone"/> (grains in this
    /// process) or <c>CallState:Orleans:Gateways</c> (an Orleans client of the silos), also the admission of every initial INVITE.
    /// </summary>
    public static IServiceCollection AddCallStateSipEdge(this IServiceCollection services, IConfiguration configuration, bool standalone = false)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<SipProxyOptions>()
            .Bind(configuration.GetSection(SipProxyOptions.SectionName))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<SipProxyOptions>, SipProxyOptionsValidator>();
        services.TryAddSingleton(TimeProvider.System);
        var cluster = !standalone && configuration.GetSection(GatewaysKey).GetChildren().Any();
        if (standalone || cluster)
        {
            services.AddCallStateAdmission(configuration);
            // Decisions that queue past half the admission deadline shed new calls (docs/architecture.md, "Overload
            // control"): an admitted call is then decided in time, instead of the grains doing work whose answer comes
            // after the edge has given up on it.
            services.AddOptions<SipProxyOptions>().PostConfigure<IOptions<AdmissionOptions>>((sip, admission) =>
                sip.Overload.MaxDecisionDelay ??= admission.Value.Deadline / 2);
            if (standalone)
            {
                // The silo's grain factory: admission stays in this process.
                services.AddSingleton<IAdmissionClient>(sp => new GrainAdmissionClient(sp.GetRequiredService<IGrainFactory>()));

                // Both sides of the lease are in this process: a lease shorter than Timer C stops start-up.
                services.AddSingleton<IValidateOptions<SipProxyOptions>, EarlyLeaseValidator>();
            }
            else
            {
                services.AddCallStateClusterClient(configuration);
            }

            services.AddSingleton<AdmissionPolicy>();
            services.AddSingleton<ICallPolicy>(sp => sp.GetRequiredService<AdmissionPolicy>());

            // Ends calls for the admin API (docs/architecture.md, "Ending a call from the admin API"): a standalone
            // edge's silo calls it directly, an edge of a cluster registers it with the silos' edge registry.
            services.AddSingleton(sp => new EdgeCallEnder(sp.GetRequiredService<SipListenerService>(), sp.GetRequiredService<ILogger<EdgeCallEnder>>()));
            if (standalone)
            {
                services.AddSingleton<IEdgeObserver>(sp => sp.GetRequiredService<EdgeCallEnder>());
            }
            else
            {
                services.AddHostedService<EdgeRegistration>();
            }

            // Ready only after one admission round trip succeeded, and ready from then on (a later outage is answered with 503).
            services.AddSingleton<AdmissionWarmup>();
            services.AddHostedService(sp => sp.GetRequiredService<AdmissionWarmup>());
            services.AddHealthChecks().AddCheck<AdmissionWarmup>("admission-warmup", tags: ["ready"]);
        }
        services.AddSingleton<SipListenerService>();

        // The drain runs before the host stops anything (docs/operations.md, "Draining an edge"): the host's shutdown
        // timeout must leave it the whole drain, plus time for the rest of the shutdown.
        services.AddOptions<HostOptions>().Configure<IOptions<SipProxyOptions>>((host, sip) =>
        {
            var needed = sip.Value.DrainTimeout + DrainShutdownMargin;
            if (host.ShutdownTimeout < needed)
            {
                host.ShutdownTimeout = needed;
            }
        });
        services.AddHostedService(sp => sp.GetRequiredService<SipListenerService>());
        services.AddHealthChecks().AddCheck<SipListenerService>("sip", tags: ["ready"]);
        return services;
    }

    /// <summary>What the host's shutdown keeps past <see cref="SipProxyOptions.DrainTimeout"/> for the rest of the shutdown.</summary>
    public static readonly TimeSpan DrainShutdownMargin = TimeSpan.FromSeconds(5);

    /// <summary>The silos' gateways an edge without grains of its own connects to (an Orleans client).</summary>
    public const string GatewaysKey = OrleansClusterOptions.SectionName + ":" + nameof(OrleansClusterOptions.Gateways);

    [LoggerMessage(EventId = 3000, Level = LogLevel.Information, Message = "SIP edge started (HTTP on {Urls})")]
    private static partial void LogStarted(ILogger logger, ICollection<string> urls);
}

/// <summary>Turns <see cref="SipProxyOptions.Validate"/> into options validation.</summary>
internal sealed class SipProxyOptionsValidator : IValidateOptions<SipProxyOptions>
{
    public ValidateOptionsResult Validate(string? name, SipProxyOptions options)
    {
        var errors = options.Validate();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>
/// A standalone edge's early lease (<c>CallState:Grains:Leases:Early</c>) must exceed its Timer C plus 64*T1: Timer C
/// restarts at every provisional and a 2xx may still cross the CANCEL it sends for 64*T1 (RFC 3261 16.6 step 11, 16.7
/// step 2), and a lease that lapses first leaves the answered call uncounted (docs/architecture.md, "Leases that fit SIP").
/// </summary>
internal sealed class EarlyLeaseValidator(IOptions<Grains.GrainOptions> grains) : IValidateOptions<SipProxyOptions>
{
    public ValidateOptionsResult Validate(string? name, SipProxyOptions options)
    {
        var early = grains.Value.Leases.Early;
        var window = options.TimerC + options.T1 * 64;
        return early > window
            ? ValidateOptionsResult.Success
            : ValidateOptionsResult.Fail(
                $"{Grains.GrainOptions.SectionName}:Leases:Early: must be longer than {SipProxyOptions.SectionName}:TimerC + 64*{SipProxyOptions.SectionName}:T1 ({window:c}); was {early:c}");
    }
}

/// <summary>
/// Owns the <see cref="SipEndpoint"/>: binds and starts it with the host, drains it when the host stops (SIGTERM) and then
/// closes it, reports readiness (not ready while draining).
/// </summary>
internal sealed partial class SipListenerService : IHostedLifecycleService, IHealthCheck, IAsyncDisposable
{
    // How often the drain looks whether it may end early; a drain lasts seconds, so this costs nothing.
    private static readonly TimeSpan DrainCheckInterval = TimeSpan.FromMilliseconds(100);

    private readonly SipProxyOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly IMeterFactory _meterFactory;
    private readonly ILogger<SipListenerService> _logger;
    private SipEndpoint? _endpoint;

    private readonly ICallPolicy? _policy;
    private readonly CallClassifierSource? _classifiers;
    private readonly CallerTrust? _trust;

    private readonly System.Net.IPNetwork[] _plainPeers = [];

    public SipListenerService(IOptions<SipProxyOptions> options, TimeProvider timeProvider, IMeterFactory meterFactory, ILogger<SipListenerService> logger,
        ICallPolicy? policy = null, CallClassifierSource? classifiers = null, CallerTrust? trust = null, IConfiguration? configuration = null)
    {
        _policy = policy;
        _classifiers = classifiers;
        _trust = trust;
        if (trust is null && configuration?.GetSection(TrustOptions.SectionName).Get<TrustOptions>() is { } plain)
        {
            // A plain proxy (no admission) does not check callers, but its trusted peers still get the peers' budget.
            _plainPeers = [.. plain.Peers.Values.SelectMany(p => p?.Sources ?? [])
                .Select(source => AddressText.TryParseNetwork(source, out var network, out _) ? network : (System.Net.IPNetwork?)null)
                .OfType<System.Net.IPNetwork>()];
        }
        _options = options.Value;
        _timeProvider = timeProvider;
        _meterFactory = meterFactory;
        _logger = logger;
    }

    public SipEndpoint? Endpoint => _endpoint;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _endpoint = new SipEndpoint(_options, _timeProvider, _meterFactory, OnTransportError, _policy, OnHandlerError, ClassifySource, OnShed);
        if (_endpoint.TlsCertificate is { } source)
        {
            source.Reloaded += OnCertificateReloaded;
            source.ReloadFailed += OnCertificateReloadFailed;
        }
        _endpoint.Start();
        var advertised = $"{_options.AdvertisedHost ?? _options.ViaHost ?? _options.ListenAddress}:{_options.AdvertisedPort ?? _options.Port}";
        LogListening(_logger, _options.ListenAddress, _options.Port, _options.Udp, _options.Tcp, _options.DefaultUpstream ?? "(none)", advertised);
        if (_endpoint.TlsCertificate is { } presented)
        {
            var tls = _options.Tls;
            var certificate = presented.Certificate;
            var thumbprint = Sha256(certificate);
            var notAfter = certificate.NotAfter.ToUniversalTime();
            var clientCertificates = tls.ClientCertificates.ToString();
            var serverCas = string.IsNullOrWhiteSpace(tls.ServerCaFile) ? "the machine's trust store" : tls.ServerCaFile;
            LogTlsListening(_logger, _options.ListenAddress, tls.Port, certificate.Subject, thumbprint, notAfter, clientCertificates, serverCas);
        }
        return Task.CompletedTask;
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// The host stops (SIGTERM): drain before any hosted service stops, so admission (the Orleans client or the silo in
    /// this process) and the probes' HTTP listener still serve while calls end (docs/operations.md, "Draining an edge").
    /// </summary>
    public Task StoppingAsync(CancellationToken cancellationToken) => DrainAsync(cancellationToken);

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Refuses anything new (503 + Retry-After, OPTIONS included) and lets admitted calls go on until
    /// <see cref="SipProxyOptions.DrainTimeout"/> or <paramref name="cancellationToken"/> (the host's shutdown timeout).
    /// When Record-Route names another address (a load balancer's), in-dialog requests reach the other edges, so the drain
    /// ends as soon as no transaction of this edge is in progress; when it names this edge, the calls' BYEs come here
    /// and the drain takes the whole timeout.
    /// </summary>
    internal async Task DrainAsync(CancellationToken cancellationToken)
    {
        if (_endpoint is not { } endpoint || _options.DrainTimeout <= TimeSpan.Zero || endpoint.Proxy.IsDraining)
        {
            return;
        }
        var proxy = endpoint.Proxy;
        proxy.BeginDrain();
        var started = _timeProvider.GetTimestamp();
        var via = string.IsNullOrEmpty(_options.ViaHost) ? _options.ListenAddress : _options.ViaHost;
        var recordRoute = string.IsNullOrEmpty(_options.AdvertisedHost) ? via : _options.AdvertisedHost;
        var elsewhere = !string.Equals(recordRoute, via, StringComparison.OrdinalIgnoreCase)
            || (_options.AdvertisedPort ?? _options.Port) != (_options.ViaPort ?? _options.Port);
        LogDrainStarted(_logger, _options.DrainTimeout.TotalSeconds, elsewhere ? "when no transaction is in progress" : "at the timeout (Record-Route names this edge)");
        var settled = false;
        try
        {
            while (_timeProvider.GetElapsedTime(started) < _options.DrainTimeout)
            {
                if (elsewhere && proxy.InProgressCount == 0 && proxy.ClientTransactionCount == 0)
                {
                    settled = true;
                    break;
                }
                var left = _options.DrainTimeout - _timeProvider.GetElapsedTime(started);
                await Task.Delay(left < DrainCheckInterval ? left : DrainCheckInterval, _timeProvider, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The host's shutdown timeout came first: close now.
        }
        var seconds = _timeProvider.GetElapsedTime(started).TotalSeconds;
        LogDrainEnded(_logger, seconds, settled ? "settled" : "timeout", proxy.InProgressCount, proxy.ClientTransactionCount);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_endpoint is { } endpoint)
        {
            _endpoint = null;
            await endpoint.DisposeAsync().ConfigureAwait(false);
        }
    }

    private void OnTransportError(Exception ex)
    {
        if (ex is SipTlsHandshakeException { RefusedSubject: { } subject } refused)
        {
            // A certificate this edge refused is worth an operator's attention (a trunk whose certificate changed);
            // other failed handshakes (scanners, timeouts) stay at debug level like other transport errors.
            LogPeerCertificateRefused(_logger, refused.RemoteEndPoint.ToString(), subject, refused.RefusedSha256 ?? "", refused.Reason);
            return;
        }
        LogTransportError(_logger, ex);
    }

    /// <summary>
    /// The overload budget a source address gets (docs/architecture.md, "Overload control"): a trunk's source (as the call
    /// classifier tells, certificate or not), else a trusted peer's, else the default. Asked once per budget entry; an edge
    /// that admits nothing knows no trunks, and its peers from <c>CallState:Trust:Peers</c> alone.
    /// </summary>
    private SipSourceKind ClassifySource(System.Net.IPAddress address)
    {
        if (_classifiers?.Current.SourceTrunkOf(address, null, null) is { Match: TrunkMatch.Address or TrunkMatch.CertificateRequired })
        {
            return SipSourceKind.Trunk;
        }
        if (_trust is not null)
        {
            return _trust.IsTrustedPeer(address) ? SipSourceKind.Peer : SipSourceKind.Default;
        }
        var canonical = AddressText.Canonical(address);
        return Array.Exists(_plainPeers, network => network.Contains(canonical)) ? SipSourceKind.Peer : SipSourceKind.Default;
    }

    private void OnShed(SipShedReport report) =>
        LogShed(_logger, report.Count, report.Reason, report.Source?.ToString() ?? "(unknown)", _options.Overload.ReportInterval.TotalSeconds);

    private void OnHandlerError(SipHandlerError error)
    {
        // A bug, not a bad packet (those are answered 400 or dropped and counted): always worth an operator's attention.
        // The message's first line is the context; the whole message and the exception's text never go to the peer.
        if (error.Kind == SipHandlerErrorKind.Timer)
        {
            LogTimerError(_logger, error.Detail ?? "(wheel)", error.Peer?.ToString() ?? "(none)", error.Exception);
            return;
        }
        LogMessageHandlerError(_logger, error.Peer?.ToString() ?? "(unknown)", error.Detail ?? "", error.Exception);
    }

    private void OnCertificateReloaded(X509Certificate2 certificate)
    {
        var thumbprint = Sha256(certificate);
        var notAfter = certificate.NotAfter.ToUniversalTime();
        LogCertificateReloaded(_logger, certificate.Subject, thumbprint, notAfter);
    }

    private void OnCertificateReloadFailed(Exception ex) => LogCertificateReloadFailed(_logger, ex);

    private static string Sha256(X509Certificate2 certificate) => certificate.GetCertHashString(HashAlgorithmName.SHA256);

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_endpoint switch
        {
            null => HealthCheckResult.Unhealthy("SIP listeners not started"),
            { Proxy.IsDraining: true } => HealthCheckResult.Unhealthy("SIP edge draining: new calls are refused"),
            _ => HealthCheckResult.Healthy(),
        });

    public async ValueTask DisposeAsync() => await StopAsync(CancellationToken.None).ConfigureAwait(false);

    [LoggerMessage(EventId = 3001, Level = LogLevel.Information, Message = "SIP listening on {Address}:{Port} (udp {Udp}, tcp {Tcp}); default upstream {Upstream}; Record-Route {Advertised}")]
    private static partial void LogListening(ILogger logger, string address, int port, bool udp, bool tcp, string upstream, string advertised);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Debug, Message = "SIP transport error")]
    private static partial void LogTransportError(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Information,
        Message = "SIP over TLS listening on {Address}:{Port}: presenting {Subject} (SHA-256 {Thumbprint}, valid until {NotAfter:u}); client certificates {ClientCertificates}; next hops checked against {ServerCas}")]
    private static partial void LogTlsListening(ILogger logger, string address, int port, string subject, string thumbprint, DateTime notAfter, string clientCertificates, string serverCas);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Information, Message = "SIP TLS certificate files changed: now presenting {Subject} (SHA-256 {Thumbprint}, valid until {NotAfter:u})")]
    private static partial void LogCertificateReloaded(ILogger logger, string subject, string thumbprint, DateTime notAfter);

    [LoggerMessage(EventId = 3005, Level = LogLevel.Error, Message = "SIP TLS certificate files changed but could not be loaded; the previous certificate stays in use")]
    private static partial void LogCertificateReloadFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 3007, Level = LogLevel.Error, Message = "SIP message from {Source} could not be handled: {FirstLine}")]
    private static partial void LogMessageHandlerError(ILogger logger, string source, string firstLine, Exception exception);

    [LoggerMessage(EventId = 3008, Level = LogLevel.Error, Message = "SIP {Timer} callback failed (peer {Peer}); its transaction is made to end rather than left open")]
    private static partial void LogTimerError(ILogger logger, string timer, string peer, Exception exception);

    [LoggerMessage(EventId = 3009, Level = LogLevel.Warning,
        Message = "Overload control refused {Count} request(s) ({Reason}), the last from {Source}; reported at most once every {Seconds} s per reason")]
    private static partial void LogShed(ILogger logger, long count, SipShedReason reason, string source, double seconds);

    [LoggerMessage(EventId = 3010, Level = LogLevel.Information,
        Message = "SIP edge draining: new calls and probes answered 503, admitted calls go on for up to {Seconds} s; ends {Until}")]
    private static partial void LogDrainStarted(ILogger logger, double seconds, string until);

    [LoggerMessage(EventId = 3011, Level = LogLevel.Information,
        Message = "SIP edge drained after {Seconds:F1} s ({Outcome}); closing with {InProgress} server transaction(s) in progress and {Clients} client transaction(s) open")]
    private static partial void LogDrainEnded(ILogger logger, double seconds, string outcome, int inProgress, int clients);

    [LoggerMessage(EventId = 3006, Level = LogLevel.Warning, Message = "Refused the TLS certificate of {Remote}: {Subject} (SHA-256 {Thumbprint}): {Reason}")]
    private static partial void LogPeerCertificateRefused(ILogger logger, string remote, string subject, string thumbprint, string reason);
}
