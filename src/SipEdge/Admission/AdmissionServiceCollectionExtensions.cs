using CallState.Silo.Limits;
using CallState.Sip.Proxy;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;

namespace CallState.SipEdge.Admission;

public static class AdmissionServiceCollectionExtensions
{
    /// <summary>
    /// Binds and validates <c>CallState:Admission</c> and <c>CallState:Limits</c> (with its users file) at start
    /// (in standalone mode call it after the silo's registration, which validates the limits already),
    /// and registers <see cref="CallClassifierSource"/>, which rebuilds the classifier when either reloads.
    /// Expects <see cref="SipProxyOptions"/> to be registered (the edge's own addresses are local).
    /// </summary>
    public static IServiceCollection AddCallStateAdmission(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        if (services.Any(d => d.ServiceType == typeof(CallClassifierSource)))
        {
            // Binding twice would append every list (routes, rules) to itself.
            return services;
        }

        services.AddOptions<AdmissionOptions>().Bind(configuration.GetSection(AdmissionOptions.SectionName)).ValidateOnStart();
        services.AddOptions<LimitsOptions>().Bind(configuration.GetSection(LimitsOptions.SectionName)).ValidateOnStart();
        services.AddLimitsUsersFile();
        if (!services.Any(d => d.ServiceType == typeof(IValidateOptions<LimitsOptions>)))
        {
            // The silo validates the limits when it shares the process (standalone, registered first); do not
            // report each error twice.
            services.AddSingleton<IValidateOptions<LimitsOptions>, LimitsOptionsValidator>();
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<AdmissionOptions>>(new AdmissionOptionsValidator(configuration)));
        services.AddOptions<TrustOptions>().Bind(configuration.GetSection(TrustOptions.SectionName)).ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TrustOptions>, TrustOptionsValidator>());
        services.TryAddSingleton(sp => new CallerTrust(
            sp.GetRequiredService<IOptions<TrustOptions>>().Value,
            sp.GetRequiredService<IOptions<LimitsOptions>>().Value,
            sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(sp => new CallClassifierSource(
            configuration,
            sp.GetRequiredService<IOptions<AdmissionOptions>>(),
            sp.GetRequiredService<IOptions<LimitsOptions>>(),
            sp.GetRequiredService<IOptions<SipProxyOptions>>(),
            sp.GetRequiredService<ILogger<CallClassifierSource>>()));
        return services;
    }
}

/// <summary>Turns <see cref="TrustOptions.Validate"/> into options validation.</summary>
internal sealed class TrustOptionsValidator : IValidateOptions<TrustOptions>
{
    public ValidateOptionsResult Validate(string? name, TrustOptions options)
    {
        var errors = options.Validate();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>
/// Turns <see cref="AdmissionOptions.Validate(IEnumerable{string})"/> into options validation, including the check
/// that every <c>CallState:Limits:Trunks</c> entry names a configured trunk.
/// </summary>
internal sealed class AdmissionOptionsValidator(IConfiguration configuration) : IValidateOptions<AdmissionOptions>
{
    public ValidateOptionsResult Validate(string? name, AdmissionOptions options)
    {
        var limitTrunks = configuration.GetSection(LimitsOptions.SectionName + ":Trunks").GetChildren().Select(c => c.Key);
        var errors = options.Validate(limitTrunks);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>
/// The current <see cref="CallClassifier"/>, rebuilt when the configuration reloads. It binds and validates the
/// reloaded <c>CallState:Admission</c> and <c>CallState:Limits</c> itself rather than through
/// <see cref="IOptionsMonitor{TOptions}"/>, whose reload throws on the change-token thread and keeps throwing
/// when the new values fail validation (dotnet/runtime#44381): an invalid edit is logged and the previous
/// classifier stays in use. Options configured in code (not from configuration) apply at start only.
/// </summary>
public sealed partial class CallClassifierSource : IDisposable
{
    private readonly IConfiguration _configuration;
    private readonly string[] _ownHosts;
    private readonly ILogger<CallClassifierSource> _logger;
    private readonly IDisposable _reload;
    private volatile CallClassifier _current;

    public CallClassifierSource(
        IConfiguration configuration,
        IOptions<AdmissionOptions> admission,
        IOptions<LimitsOptions> limits,
        IOptions<SipProxyOptions> sip,
        ILogger<CallClassifierSource> logger)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        ArgumentNullException.ThrowIfNull(admission);
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentNullException.ThrowIfNull(sip);
        _configuration = configuration;
        _logger = logger;
        _ownHosts = [.. CallClassifier.OwnHostsOf(sip.Value)];
        _current = new CallClassifier(admission.Value, limits.Value, _ownHosts);
        _reload = ChangeToken.OnChange(configuration.GetReloadToken, Rebuild);
    }

    public CallClassifier Current => _current;

    public void Dispose() => _reload.Dispose();

    private void Rebuild()
    {
        var admission = new AdmissionOptions();
        var limits = new LimitsOptions();
        List<string> errors;
        try
        {
            _configuration.GetSection(AdmissionOptions.SectionName).Bind(admission);
            _configuration.GetSection(LimitsOptions.SectionName).Bind(limits);
            errors = [.. limits.Validate(), .. admission.Validate(limits)];
        }
        catch (InvalidOperationException ex)
        {
            // The binder could not convert a value (a TimeSpan or number field holding text).
            errors = [ex.Message];
        }

        if (errors.Count > 0)
        {
            LogReloadFailed(_logger, string.Join("; ", errors));
            return;
        }

        _current = new CallClassifier(admission, limits, _ownHosts);
        LogReloaded(_logger);
    }

    [LoggerMessage(EventId = 3100, Level = LogLevel.Information, Message = "Admission configuration reloaded")]
    private static partial void LogReloaded(ILogger logger);

    [LoggerMessage(EventId = 3101, Level = LogLevel.Error, Message = "Reloaded admission configuration is invalid, keeping the previous one: {Errors}")]
    private static partial void LogReloadFailed(ILogger logger, string errors);
}
