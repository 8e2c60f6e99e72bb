using System.Collections.Concurrent;
using System.Net;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Grains;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Durability across a crash: admissions run against a silo process, the process is SIGKILLed while
/// admissions are in flight, and a new silo on the same storage must hold every acknowledged
/// reservation, no slot of a call that was not admitted, and no half-admitted call. In the load collection: its 16
/// workers would otherwise take the cores from sipp runs whose retransmission timers the other tests count on.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class SiloCrashTests(ITestOutputHelper output)
{
    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    private const int Users = 8;

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Sigkill_mid_load_keeps_every_acknowledged_reservation_and_no_half_admitted_call(string kind)
    {
        await using var db = TestDatabase.Create(kind);
        var attempted = new ConcurrentDictionary<string, int>();
        var acknowledged = new ConcurrentDictionary<string, int>();
        Exception? firstFailure = null;
        var inFlight = 0;
        var cut = 0;
        int inFlightAtKill;
        string siloOutput;

        await using (var silo = SiloProcess.Start(db.Settings))
        {
            await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));
            using var stop = new CancellationTokenSource();
            var next = 0;
            var workers = Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
            {
                // Bounded: at most 2,000 calls in all, and each worker stops at the kill.
                while (!stop.IsCancellationRequested)
                {
                    var n = Interlocked.Increment(ref next);
                    if (n > 2000)
                    {
                        return;
                    }

                    var callKey = $"crash-{n}";
                    var user = n % Users;
                    attempted[callKey] = user;
                    Interlocked.Increment(ref inFlight);
                    try
                    {
                        var (status, result) = await silo.PostAsync<AdmitResult>("/api/calls/admit", Admit(callKey, user));
                        if (status == HttpStatusCode.OK && result!.Status == AdmitStatus.Admitted)
                        {
                            acknowledged[callKey] = user;
                        }
                    }
                    catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or IOException)
                    {
                        Interlocked.CompareExchange(ref firstFailure, ex, null);
                        Interlocked.Increment(ref cut);

                        // The silo died under this request: its outcome is unknown to us.
                        return;
                    }
                    finally
                    {
                        Interlocked.Decrement(ref inFlight);
                    }
                }
            })).ToArray();

            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (acknowledged.Count < 150 && DateTime.UtcNow < deadline && !workers.All(w => w.IsCompleted))
            {
                await Task.Delay(5);
            }

            inFlightAtKill = Volatile.Read(ref inFlight);
            silo.Kill();
            siloOutput = silo.Output;
            await stop.CancelAsync();
            await Task.WhenAll(workers);
        }

        // The kill cut admissions under way: their requests failed without an answer, so their outcome is what
        // recovery decides below (all of the call's limits, or none).
        output.WriteLine($"{kind}: {inFlightAtKill} admissions in flight at the kill, {cut} cut by it");
        Assert.True(cut > 0, $"no admission was in flight at the kill ({inFlightAtKill} counted just before it)");
        Assert.True(acknowledged.Count >= 150, $"only {acknowledged.Count} admissions acknowledged before the kill; first failure: {firstFailure}\nsilo output:\n{siloOutput}");

        await using var restarted = SiloProcess.Start(db.Settings);
        await restarted.WaitReadyAsync(TimeSpan.FromSeconds(60));

        // Wait (bounded) until recovery has settled: every call holds all of its limits or none.
        Dictionary<string, HashSet<string>> held;
        var settleDeadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            held = await HeldByLimitAsync(restarted);
            var trunk = held["trunk/crashtest"];
            var users = held.Where(kv => kv.Key.StartsWith("user/", StringComparison.Ordinal)).SelectMany(kv => kv.Value).ToHashSet();
            if (trunk.SetEquals(users) || DateTime.UtcNow > settleDeadline)
            {
                break;
            }

            await Task.Delay(200);
        }

        var trunkHeld = held["trunk/crashtest"];
        output.WriteLine($"{kind}: attempted {attempted.Count}, acknowledged {acknowledged.Count}, held after restart {trunkHeld.Count}");

        // Every acknowledged reservation is there, on every limit of the call.
        foreach (var (callKey, user) in acknowledged)
        {
            Assert.Contains(callKey, trunkHeld);
            Assert.Contains(callKey, held[$"user/u{user}"]);
        }

        // Nothing else: no slot of a call never attempted, and no call holding only part of its limits.
        foreach (var (limit, calls) in held)
        {
            foreach (var callKey in calls)
            {
                Assert.True(attempted.TryGetValue(callKey, out var user), $"{limit} holds {callKey}, which was never attempted");
                Assert.Contains(callKey, trunkHeld);
                Assert.Contains(callKey, held[$"user/u{user}"]);
            }
        }

        // A call whose admission committed but whose answer was lost in the kill is admitted, and
        // asking again says so without counting it twice.
        foreach (var callKey in trunkHeld.Except(acknowledged.Keys))
        {
            var (_, again) = await restarted.PostAsync<AdmitResult>("/api/calls/admit", Admit(callKey, attempted[callKey]));
            Assert.Equal(AdmitStatus.Admitted, again!.Status);
        }

        var after = await HeldByLimitAsync(restarted);
        Assert.Equal(trunkHeld.Count, after["trunk/crashtest"].Count);

        // Every held slot can be released through the new silo.
        foreach (var callKey in trunkHeld)
        {
            await restarted.PostAsync<object>("/api/calls/end", new { callKey });
        }

        var final = await HeldByLimitAsync(restarted);
        Assert.All(final, kv => Assert.Empty(kv.Value));
    }

    private static object Admit(string callKey, int user) => new
    {
        callKey,
        limits = new object[]
        {
            new { key = "trunk/crashtest", direction = "Inbound" },
            new { key = $"user/u{user}", direction = "Inbound" },
        },
    };

    private static async Task<Dictionary<string, HashSet<string>>> HeldByLimitAsync(SiloProcess silo)
    {
        var result = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var key in new[] { "trunk/crashtest" }.Concat(Enumerable.Range(0, Users).Select(u => $"user/u{u}")))
        {
            // Calls only on request; 404 when the limit holds nothing and is not stored.
            using var response = await silo.Http.GetAsync("/api/limits/" + key + "?calls=true");
            if (response.StatusCode == System.Net.HttpStatusCode.NotFound)
            {
                result[key] = new HashSet<string>(StringComparer.Ordinal);
                continue;
            }

            var snapshot = System.Text.Json.JsonSerializer.Deserialize<LimitSnapshot>(await response.EnsureSuccessStatusCode().Content.ReadAsStringAsync(), SiloProcess.Json)!;
            result[key] = snapshot.Calls.Select(c => c.CallKey).ToHashSet(StringComparer.Ordinal);
        }

        return result;
    }
}
