using System.Globalization;
using System.Security.Cryptography;
using CallState.Silo.Dashboard;
using CallState.Silo.Hosting;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;

namespace CallState.Silo.Admin;

/// <summary>
/// Who may use the admin API. The health probes' port serves only the probes, without a token; every other request
/// needs a bearer token (<c>Authorization: Bearer …</c>) or an API key (<c>X-Api-Key: …</c>) matching a configured one,
/// and a write role for anything but GET and HEAD. Tokens are compared in constant time and never logged. The dashboard's
/// browser signs in once and then presents a session cookie instead (<see cref="DashboardSessions"/>); a change made with
/// the cookie also needs the <see cref="DashboardHeader"/> header, which no cross-site form or link can send.
/// </summary>
public sealed partial class AdminAccess
{
    private const string ActorItem = "callstate.admin.actor";
    private const string RoleItem = "callstate.admin.role";

    /// <summary>The header the dashboard's scripts send with each change they make with the session cookie.</summary>
    public const string DashboardHeader = "X-CallState-Dashboard";

    private readonly IReadOnlyList<AdminCredential> _credentials;
    private readonly int _healthPort;
    private readonly DashboardSessions _sessions;
    private readonly ILogger<AdminAccess> _logger;

    public AdminAccess(IReadOnlyList<AdminCredential> credentials, int healthPort, DashboardSessions sessions, ILogger<AdminAccess> logger)
    {
        _credentials = credentials;
        _healthPort = healthPort;
        _sessions = sessions;
        _logger = logger;
    }

    /// <summary>Whether any token is configured (the login form says so when none is).</summary>
    public bool HasTokens => _credentials.Count > 0;

    /// <summary>The name of the token that made this request (the audit's "who").</summary>
    public static string Actor(HttpContext context) =>
        context?.Items[ActorItem] as string ?? "unknown";

    /// <summary>The role of the token that made this request.</summary>
    public static AdminRole Role(HttpContext context) =>
        context?.Items[RoleItem] as AdminRole? ?? AdminRole.Read;

    public async Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        var isProbe = context.Request.Path.StartsWithSegments("/health", StringComparison.Ordinal);
        if (context.Connection.LocalPort == _healthPort)
        {
            if (isProbe)
            {
                await next(context).ConfigureAwait(false);
            }
            else
            {
                await ProblemAsync(context, StatusCodes.Status404NotFound, "Not found", "this port serves only the health probes").ConfigureAwait(false);
            }

            return;
        }

        if (isProbe)
        {
            await ProblemAsync(context, StatusCodes.Status404NotFound, "Not found", string.Create(CultureInfo.InvariantCulture, $"the health probes are served on port {_healthPort}")).ConfigureAwait(false);
            return;
        }

        // The login form and the files it needs (no secret in them) are served to anyone.
        if (DashboardEndpoints.IsPublic(context.Request.Path))
        {
            await next(context).ConfigureAwait(false);
            return;
        }

        var presented = Presented(context.Request);
        var credential = presented is null ? null : Find(presented);
        var bySession = false;
        if (presented is null && context.Request.Cookies[DashboardSessions.CookieName] is { } session)
        {
            credential = _sessions.Find(session);
            bySession = true;
        }

        if (credential is null)
        {
            LogRefused(_logger, context.Request.Method, context.Request.Path.Value ?? "", context.Connection.RemoteIpAddress?.ToString() ?? "",
                presented is not null ? "unknown token" : bySession ? "unknown or expired dashboard session" : "no token");
            context.Response.Headers.WWWAuthenticate = "Bearer";
            if (DashboardEndpoints.IsPage(context.Request.Path))
            {
                // The dashboard's page answers 401 with the login form, so a browser shows where to sign in.
                await DashboardEndpoints.WriteLoginAsync(context, StatusCodes.Status401Unauthorized).ConfigureAwait(false);
                return;
            }

            await ProblemAsync(context, StatusCodes.Status401Unauthorized, "Unauthorized",
                _credentials.Count == 0 ? "no admin tokens are configured (CallState:Admin:Tokens or CallState:Admin:TokensFile)" : "a valid bearer token or X-Api-Key is required").ConfigureAwait(false);
            return;
        }

        if (credential.Role != AdminRole.Write && !HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
        {
            LogRefused(_logger, context.Request.Method, context.Request.Path.Value ?? "", context.Connection.RemoteIpAddress?.ToString() ?? "", $"token '{credential.Name}' may only read");
            await ProblemAsync(context, StatusCodes.Status403Forbidden, "Forbidden", $"token '{credential.Name}' has the read role; this request needs write").ConfigureAwait(false);
            return;
        }

        if (bySession && !HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method)
            && context.Request.Headers[DashboardHeader].Count == 0)
        {
            LogRefused(_logger, context.Request.Method, context.Request.Path.Value ?? "", context.Connection.RemoteIpAddress?.ToString() ?? "", "a change by session cookie without the dashboard's header");
            await ProblemAsync(context, StatusCodes.Status403Forbidden, "Forbidden", $"a change made with the dashboard's session needs the {DashboardHeader} header").ConfigureAwait(false);
            return;
        }

        context.Items[ActorItem] = credential.Name;
        context.Items[RoleItem] = credential.Role;
        await next(context).ConfigureAwait(false);
    }

    /// <summary>The token of the request: a bearer token, else an API key; null when neither is sent.</summary>
    private static string? Presented(HttpRequest request)
    {
        var authorization = request.Headers.Authorization.ToString();
        if (authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return authorization["Bearer ".Length..].Trim();
        }

        var key = request.Headers["X-Api-Key"].ToString();
        return key.Length == 0 ? null : key.Trim();
    }

    /// <summary>
    /// The credential whose token is <paramref name="presented"/>. Hashes of equal length compared with
    /// <see cref="CryptographicOperations.FixedTimeEquals"/>, every credential checked: the time taken says nothing of
    /// which token, or how much of one, matched.
    /// </summary>
    internal AdminCredential? Find(string presented)
    {
        var hash = AdminCredential.Hash(presented);
        AdminCredential? found = null;
        foreach (var credential in _credentials)
        {
            if (CryptographicOperations.FixedTimeEquals(hash, credential.TokenHash))
            {
                found = credential;
            }
        }

        return found;
    }

    private static Task ProblemAsync(HttpContext context, int status, string title, string detail)
    {
        var problems = context.RequestServices.GetRequiredService<IProblemDetailsService>();
        context.Response.StatusCode = status;
        return problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails = new ProblemDetails { Status = status, Title = title, Detail = detail },
        }).AsTask();
    }

    [LoggerMessage(EventId = 2100, Level = LogLevel.Warning, Message = "Admin API refused {Method} {Path} from {Remote}: {Reason}")]
    private static partial void LogRefused(ILogger logger, string method, string path, string remote, string reason);
}

/// <summary>Setting up the admin API's listeners, access control, errors and probes in a silo or a standalone edge.</summary>
public static class AdminHosting
{
    /// <summary>
    /// Validates <c>CallState:Admin</c> (throws <see cref="OptionsValidationException"/> naming each field) and adds
    /// the health probes' listener to the admin API's (<c>Urls</c>), plus ProblemDetails errors and the OpenAPI document.
    /// </summary>
    public static void AddCallStateAdmin(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = AdminOptions.From(builder.Configuration);
        var urls = (builder.Configuration["urls"] ?? "http://localhost:5000").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var ports = urls.Select(u => Uri.TryCreate(u.Replace("*", "localhost", StringComparison.Ordinal).Replace("+", "localhost", StringComparison.Ordinal), UriKind.Absolute, out var uri) ? uri.Port : -1).ToList();
        var errors = options.Validate(ports).ToList();
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(AdminOptions.SectionName, typeof(AdminOptions), errors);
        }

        var health = string.Create(CultureInfo.InvariantCulture, $"http://{(options.HealthAddress.Contains(':', StringComparison.Ordinal) ? $"[{options.HealthAddress}]" : options.HealthAddress)}:{options.HealthPort}");
        builder.WebHost.UseUrls([.. urls, health]);
        var credentials = options.LoadCredentials(out _);
        builder.Services.AddSingleton(sp => new DashboardSessions(sp.GetService<TimeProvider>() ?? TimeProvider.System));
        builder.Services.AddSingleton(sp => new AdminAccess(credentials, options.HealthPort, sp.GetRequiredService<DashboardSessions>(), sp.GetRequiredService<ILogger<AdminAccess>>()));
        builder.Services.AddProblemDetails();
        builder.Services.AddOpenApi();
    }

    /// <summary>Access control first, then errors as ProblemDetails; the probes on their own port; the OpenAPI document.</summary>
    public static WebApplication UseCallStateAdmin(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var access = app.Services.GetRequiredService<AdminAccess>();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.Use((context, next) => access.InvokeAsync(context, next));
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains("ready") });
        app.MapOpenApi();
        app.MapCallStateMetrics();
        return app;
    }
}
