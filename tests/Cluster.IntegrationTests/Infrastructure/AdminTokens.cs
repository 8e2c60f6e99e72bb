using System.Net.Http.Headers;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>The admin API tokens every silo and edge the tests start is configured with: one that writes, one that reads.</summary>
public static class AdminTokens
{
    /// <summary>The write token (audit name <c>test-writer</c>).</summary>
    public const string Write = "test-write-token-0123456789abcdef";

    /// <summary>The read token (audit name <c>test-reader</c>).</summary>
    public const string Read = "test-read-token-0123456789abcdef";

    /// <summary>The settings that configure both (<c>--Section:Key=value</c>).</summary>
    public static readonly string[] Settings =
    [
        "--CallState:Admin:Tokens:test-writer:Token=" + Write, "--CallState:Admin:Tokens:test-writer:Role=Write",
        "--CallState:Admin:Tokens:test-reader:Token=" + Read, "--CallState:Admin:Tokens:test-reader:Role=Read",
    ];

    /// <summary>A client of the admin API on <paramref name="port"/> sending <paramref name="token"/> (none when null).</summary>
    public static HttpClient Client(int port, string? token, TimeSpan timeout)
    {
        var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = timeout };
        if (token is not null)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return client;
    }
}
