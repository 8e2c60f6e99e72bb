using System.Collections.Frozen;
using System.Security.Cryptography;
using CallState.Grains;
using CallState.Silo.Admin;
using Microsoft.AspNetCore.Http.Features;

namespace CallState.Silo.Dashboard;

/// <summary>
/// The operators' dashboard on the admin listener (docs/dashboard.md): the page and its files (embedded in this assembly),
/// the login form that turns a token into a session cookie, and the stream of figures (server-sent events). Changes go
/// through the admin API itself, with its roles and audit.
/// </summary>
public static partial class DashboardEndpoints
{
    public const string Root = "/dashboard";

    /// <summary>
    /// Only this origin's files and connections, no inline script or style, no framing, forms post here only.
    /// </summary>
    public const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

    /// <summary>Largest login form read (a token is at most a few hundred characters).</summary>
    private const int MaxLoginBytes = 4096;

    private static readonly FrozenDictionary<string, Asset> Assets = LoadAssets();

    /// <summary>The login form and the files it needs: served without a token.</summary>
    public static bool IsPublic(PathString path) =>
        path.Equals(Root + "/login", StringComparison.Ordinal) || path.StartsWithSegments(Root + "/assets", StringComparison.Ordinal);

    /// <summary>The dashboard's page itself (answered 401 with the login form when not signed in).</summary>
    public static bool IsPage(PathString path) =>
        path.Equals(Root, StringComparison.Ordinal) || path.Equals(Root + "/", StringComparison.Ordinal);

    /// <summary>The figures' producer and the meter listener it reads, started with the process.</summary>
    public static IServiceCollection AddCallStateDashboard(this IServiceCollection services)
    {
        services.AddSingleton(sp => new DashboardFigures(sp.GetService<TimeProvider>() ?? TimeProvider.System));
        services.AddSingleton<DashboardFeed>();
        services.AddHostedService(sp => sp.GetRequiredService<DashboardFeed>());
        return services;
    }

    public static WebApplication MapCallStateDashboard(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);

        // The meter listener starts with the process, so the totals count from start-up, not from the first browser.
        _ = app.Services.GetRequiredService<DashboardFigures>();

        // The page's routes are not part of the API's OpenAPI document.
        var dashboard = app.MapGroup(Root).ExcludeFromDescription();

        // Routing matches /dashboard and /dashboard/ alike.
        dashboard.MapGet("/", (HttpContext http) => WriteAssetAsync(http, "index.html", StatusCodes.Status200OK));
        dashboard.MapGet("/login", (HttpContext http) => WriteLoginAsync(http, StatusCodes.Status200OK));
        dashboard.MapGet("/assets/{name}", (HttpContext http, string name) =>
            Assets.ContainsKey(name) && name != "index.html" && name != "login.html"
                ? WriteAssetAsync(http, name, StatusCodes.Status200OK)
                : WriteProblemAsync(http, StatusCodes.Status404NotFound, "no such file"));

        dashboard.MapPost("/login", LoginAsync);
        dashboard.MapPost("/logout", (HttpContext http, DashboardSessions sessions) =>
        {
            sessions.Remove(http.Request.Cookies[DashboardSessions.CookieName]);
            http.Response.Cookies.Delete(DashboardSessions.CookieName, CookieOptions(http, null));
            return Results.NoContent();
        });
        dashboard.MapGet("/session", (HttpContext http) =>
            Results.Json(new SessionDto(AdminAccess.Actor(http), AdminAccess.Role(http) == AdminRole.Write ? "write" : "read"), DashboardJsonContext.Default.SessionDto));
        dashboard.MapGet("/stream", StreamAsync);
        return app;
    }

    /// <summary>Writes the login form with <paramref name="status"/> (401 when the page was asked for without a session).</summary>
    public static Task WriteLoginAsync(HttpContext context, int status) => WriteAssetAsync(context, "login.html", status);

    private static async Task LoginAsync(HttpContext http, AdminAccess access, DashboardSessions sessions, ILoggerFactory loggers)
    {
        var logger = loggers.CreateLogger(typeof(DashboardEndpoints).FullName!);
        string? token = null;
        if (http.Request.HasFormContentType && http.Request.ContentLength is null or <= MaxLoginBytes)
        {
            var form = await http.Request.ReadFormAsync(http.RequestAborted).ConfigureAwait(false);
            token = form["token"].ToString().Trim();
        }

        var credential = string.IsNullOrEmpty(token) ? null : access.Find(token);
        var remote = http.Connection.RemoteIpAddress?.ToString() ?? "";
        if (credential is null)
        {
            LogLogin(logger, "refused", "", remote);
            http.Response.Redirect(Root + "/login?failed=1");
            return;
        }

        var (id, expires) = sessions.Create(credential);
        http.Response.Cookies.Append(DashboardSessions.CookieName, id, CookieOptions(http, expires));
        LogLogin(logger, "signed in", credential.Name, remote);
        http.Response.StatusCode = StatusCodes.Status303SeeOther;
        http.Response.Headers.Location = Root + "/";
    }

    private static CookieOptions CookieOptions(HttpContext http, DateTimeOffset? expires) => new()
    {
        HttpOnly = true,
        SameSite = SameSiteMode.Strict,
        Secure = http.Request.IsHttps,
        Path = "/",
        Expires = expires,
        IsEssential = true,
    };

    /// <summary>
    /// The live figures as server-sent events: <c>snapshot</c> each second, and <c>key</c> with the calls of the limit
    /// named by <c>?key=</c>. A stream opened with the session cookie ends when the session does.
    /// </summary>
    private static async Task StreamAsync(HttpContext http, string? key, DashboardFeed feed, DashboardSessions sessions)
    {
        LimitKey? watched = null;
        if (!string.IsNullOrWhiteSpace(key))
        {
            if (!LimitKey.TryParse(key.Trim(), out var parsed, out var error))
            {
                await WriteProblemAsync(http, StatusCodes.Status400BadRequest, error).ConfigureAwait(false);
                return;
            }

            watched = parsed;
        }

        var stream = feed.Subscribe(watched);
        if (stream is null)
        {
            await WriteProblemAsync(http, StatusCodes.Status503ServiceUnavailable, $"at most {DashboardFeed.MaxStreams} dashboard streams are served at once").ConfigureAwait(false);
            return;
        }

        var session = http.Request.Headers.Authorization.Count == 0 && http.Request.Headers["X-Api-Key"].Count == 0
            ? http.Request.Cookies[DashboardSessions.CookieName]
            : null;
        try
        {
            http.Response.ContentType = "text/event-stream";
            http.Response.Headers.CacheControl = "no-store";
            http.Response.Headers["X-Accel-Buffering"] = "no";
            http.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
            await http.Response.WriteAsync("retry: 3000\n\n", http.RequestAborted).ConfigureAwait(false);
            await http.Response.Body.FlushAsync(http.RequestAborted).ConfigureAwait(false);
            await foreach (var frame in stream.Frames.Reader.ReadAllAsync(http.RequestAborted).ConfigureAwait(false))
            {
                if (session is not null && sessions.Find(session) is null)
                {
                    break;
                }

                await http.Response.WriteAsync(frame, http.RequestAborted).ConfigureAwait(false);
                await http.Response.Body.FlushAsync(http.RequestAborted).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
        }
        finally
        {
            feed.Unsubscribe(stream);
        }
    }

    private static async Task WriteAssetAsync(HttpContext http, string name, int status)
    {
        if (!Assets.TryGetValue(name, out var asset))
        {
            await WriteProblemAsync(http, StatusCodes.Status404NotFound, "no such file").ConfigureAwait(false);
            return;
        }

        var headers = http.Response.Headers;
        headers.ContentSecurityPolicy = ContentSecurityPolicy;
        headers.XContentTypeOptions = "nosniff";
        headers.XFrameOptions = "DENY";
        headers["Referrer-Policy"] = "no-referrer";
        headers.CacheControl = "no-cache";
        headers.ETag = asset.ETag;
        if (status == StatusCodes.Status200OK && http.Request.Headers.IfNoneMatch == asset.ETag)
        {
            http.Response.StatusCode = StatusCodes.Status304NotModified;
            return;
        }

        http.Response.StatusCode = status;
        http.Response.ContentType = asset.ContentType;
        http.Response.ContentLength = asset.Content.Length;
        await http.Response.Body.WriteAsync(asset.Content, http.RequestAborted).ConfigureAwait(false);
    }

    private static Task WriteProblemAsync(HttpContext http, int status, string detail)
    {
        http.Response.StatusCode = status;
        return http.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
        {
            HttpContext = http,
            ProblemDetails = new Microsoft.AspNetCore.Mvc.ProblemDetails { Status = status, Detail = detail },
        }).AsTask();
    }

    /// <summary>The files under Dashboard/wwwroot, embedded as <c>dashboard/NAME</c> (see the project file).</summary>
    private static FrozenDictionary<string, Asset> LoadAssets()
    {
        var assembly = typeof(DashboardEndpoints).Assembly;
        var assets = new Dictionary<string, Asset>(StringComparer.Ordinal);
        foreach (var resource in assembly.GetManifestResourceNames())
        {
            if (!resource.StartsWith("dashboard/", StringComparison.Ordinal))
            {
                continue;
            }

            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            var content = memory.ToArray();
            var name = resource["dashboard/".Length..];
            var type = Path.GetExtension(name) switch
            {
                ".html" => "text/html; charset=utf-8",
                ".css" => "text/css; charset=utf-8",
                ".js" => "text/javascript; charset=utf-8",
                ".svg" => "image/svg+xml",
                _ => "application/octet-stream",
            };
            assets[name] = new Asset(content, type, "\"" + Convert.ToHexString(SHA256.HashData(content).AsSpan(0, 8)) + "\"");
        }

        return assets.ToFrozenDictionary(StringComparer.Ordinal);
    }

    private sealed record Asset(byte[] Content, string ContentType, string ETag);

    [LoggerMessage(EventId = 2131, Level = LogLevel.Information, Message = "Dashboard login {Outcome} {Name} from {Remote}")]
    private static partial void LogLogin(ILogger logger, string outcome, string name, string remote);
}
