using System.Globalization;
using System.Text.Json;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>
/// The standalone edge (edge and grains in one process, SQLite, the sample configuration) as the tests start it, and
/// the waits on its admin API that decide their outcomes.
/// </summary>
public static class StandaloneEdge
{
    /// <summary>
    /// Starts a standalone edge whose routes send calls to <paramref name="upstreamPort"/> on loopback, with its SQLite
    /// file in <paramref name="dataDirectory"/>, and waits until it is ready. <paramref name="extra"/> arguments override
    /// these (the 5 s admission deadline among them).
    /// </summary>
    public static async Task<SipEdgeProcess> StartAsync(string dataDirectory, int upstreamPort, string? trunkNextHop = null, string[]? extra = null)
    {
        var upstream = $"127.0.0.1:{upstreamPort}";
        var edge = SipEdgeProcess.Start([
            "--standalone",

            // The 200 ms default deadline fails calls closed while the whole suite competes for two cores.
            "--CallState:Admission:Deadline=00:00:05",
            $"--CallState:Storage:ConnectionString=Data Source={Path.Combine(dataDirectory, "callstate.db")}",
            $"--CallState:Admission:Routes:1:Upstream={upstream}",
            $"--CallState:Admission:Routes:2:Upstream={upstream}",
            $"--CallState:Admission:Trunks:carrier:NextHop={trunkNextHop ?? "127.0.0.2:5090"}",

            // Last, so a test's own settings win over the ones above (the last value of a key counts).
            .. extra ?? [],
        ]);
        await edge.WaitReadyAsync(TimeSpan.FromSeconds(30));
        return edge;
    }

    /// <summary>Writes a sipp <c>-inf</c> file naming <paramref name="users"/> in turn, in <paramref name="directory"/>.</summary>
    public static string UsersFile(string directory, params string[] users)
    {
        var path = Path.Combine(directory, $"users-{Guid.NewGuid():N}.csv");
        File.WriteAllText(path, "SEQUENTIAL\n" + string.Concat(users.Select(u => u + "\n")));
        return path;
    }

    /// <summary>The limits the admin API lists (<c>GET /api/limits</c>, optionally of one kind).</summary>
    public static async Task<JsonElement[]> LimitsAsync(SipEdgeProcess edge, string? kind = null, bool calls = false)
    {
        ArgumentNullException.ThrowIfNull(edge);
        var query = (kind is null ? "" : $"&kind={kind}") + (calls ? "&calls=true" : "");
        using var limits = JsonDocument.Parse(await edge.Http.GetStringAsync(query.Length == 0 ? "/api/limits" : "/api/limits?" + query[1..]));
        return [.. limits.RootElement.EnumerateArray().Select(e => e.Clone())];
    }

    /// <summary>
    /// Asserts that no limit holds a call. The listing names every configured key as well as every stored one, so an
    /// empty listing is not the test: every count is 0 and no call is held.
    /// </summary>
    public static async Task AssertNothingHeldAsync(SipEdgeProcess edge)
    {
        foreach (var limit in await LimitsAsync(edge, calls: true))
        {
            Assert.True(limit.GetProperty("total").GetInt32() == 0 && limit.GetProperty("calls").GetArrayLength() == 0,
                $"a limit holds calls: {limit}");
        }
    }

    /// <summary>Waits (at most 10 s) until limit <paramref name="key"/> counts <paramref name="total"/> calls.</summary>
    public static async Task WaitForCountAsync(SipEdgeProcess edge, string key, int total)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            if ((await LimitsAsync(edge)).Any(e => e.GetProperty("key").GetString() == key && e.GetProperty("total").GetInt32() == total))
            {
                return;
            }
            await Task.Delay(100);
        }
        Assert.Fail($"{key} never reached {total}");
    }

    /// <summary>Waits until every limit's count is 0 (BYE, CANCEL and failures release in the background).</summary>
    public static async Task WaitForZeroAsync(SipEdgeProcess edge, TimeSpan timeout, string what)
    {
        ArgumentNullException.ThrowIfNull(edge);
        var deadline = DateTime.UtcNow + timeout;
        string last;
        do
        {
            last = await edge.Http.GetStringAsync("/api/limits");
            using var limits = JsonDocument.Parse(last);
            if (limits.RootElement.EnumerateArray().All(e => e.GetProperty("total").GetInt32() == 0))
            {
                return;
            }
            await Task.Delay(200);
        }
        while (DateTime.UtcNow < deadline);
        Assert.Fail($"after {what}, counts are not back to 0: {last}");
    }

    /// <summary>How often <paramref name="what"/> occurs in <paramref name="text"/> (a sipp message trace).</summary>
    public static int Count(string text, string what)
    {
        ArgumentNullException.ThrowIfNull(text);
        var count = 0;
        for (var at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
        {
            count++;
        }
        return count;
    }

    public static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}
