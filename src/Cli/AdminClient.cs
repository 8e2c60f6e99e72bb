using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace CallState.Cli;

/// <summary>One answer of the admin API: the status, the body as JSON (null when empty or not JSON) and its raw text.</summary>
public sealed record ApiAnswer(HttpStatusCode Status, JsonNode? Body, string Text, HttpResponseMessage Response)
{
    public bool Ok => (int)Status is >= 200 and < 300;

    /// <summary>The exit code a failed answer maps to (<see cref="ExitCodes"/>).</summary>
    public int ExitCode => Status switch
    {
        _ when Ok => ExitCodes.Ok,
        HttpStatusCode.NotFound => ExitCodes.NotFound,
        HttpStatusCode.BadRequest => ExitCodes.Usage,
        HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => ExitCodes.Denied,
        _ => ExitCodes.Unavailable,
    };

    /// <summary>The error as the API explains it (ProblemDetails' detail or title), else the status.</summary>
    public string Error => Body?["detail"]?.GetValue<string>() ?? Body?["title"]?.GetValue<string>() ?? $"HTTP {(int)Status} {Status}";
}

/// <summary>The admin API as the CLI uses it: the base address and token from options or the environment.</summary>
public sealed class AdminClient(HttpClient http) : IDisposable
{
    public static AdminClient Create(Uri baseAddress, string? token, TimeSpan timeout)
    {
        var http = new HttpClient { BaseAddress = baseAddress, Timeout = timeout };
        if (!string.IsNullOrEmpty(token))
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return new AdminClient(http);
    }

    /// <summary>The path of limit <paramref name="key"/> (<c>user/alice</c>), its value escaped.</summary>
    public static string LimitPath(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        var slash = key.IndexOf('/', StringComparison.Ordinal);
        return slash <= 0
            ? "/api/limits/" + Uri.EscapeDataString(key)
            : "/api/limits/" + Uri.EscapeDataString(key[..slash]) + "/" + Uri.EscapeDataString(key[(slash + 1)..]);
    }

    public Task<ApiAnswer> GetAsync(string path, CancellationToken cancellationToken) => SendAsync(HttpMethod.Get, path, null, cancellationToken);

    public async Task<ApiAnswer> SendAsync(HttpMethod method, string path, JsonNode? body, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        }

        var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        JsonNode? json = null;
        try
        {
            json = text.Length == 0 ? null : JsonNode.Parse(text);
        }
        catch (JsonException)
        {
            // Not JSON (a proxy's error page): the text is shown as it is.
        }

        return new ApiAnswer(response.StatusCode, json, text, response);
    }

    public void Dispose() => http.Dispose();
}
