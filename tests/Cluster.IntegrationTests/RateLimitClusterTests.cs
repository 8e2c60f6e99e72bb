using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// A call rate with burst (docs/policies.md, "Call rates") held across two edge processes in front of one silo cluster:
/// the bucket is the limit grain's, so the edges together let through what one would. The callee's own log of the calls
/// it got (<see cref="CallOracle"/>) is the oracle.
/// </summary>
[Collection(LoadTests.Name)]
public sealed partial class RateLimitClusterTests(ITestOutputHelper output)
{
    private const int Rate = 10;
    private const int Burst = 5;

    /// <summary>Calls offered through each edge: 25 a second each for 10 s, 50 a second in all.</summary>
    private const int OfferedPerEdge = 250;

    /// <remarks>
    /// One silo: the edges reach the limit's one activation through their own connections either way, and a second silo
    /// joining on a loaded machine (the suite shares two cores) failed its connectivity check once, which tests nothing here.
    /// </remarks>
    [Fact]
    public async Task Rita_limited_to_10_calls_a_second_with_burst_5_offered_50_a_second_through_two_edges_gets_burst_plus_rate_times_the_span_through()
    {
        await using var db = TestDatabase.Create("postgres");
        await using var rig = await ClusterRig.StartAsync(db.Settings, [
            $"--CallState:Limits:Users:rita:OutboundRate={Rate}",
            $"--CallState:Limits:Users:rita:OutboundBurst={Burst}",

            // Only rita's rate refuses here.
            "--CallState:Limits:Users:svc:Total=1000",
        ], silos: 1, edges: 2, edgeSettings: [

            // The configured response of a rate's refusal: the default 480 with Retry-After, another Q.850 cause.
            "--CallState:Admission:RejectCodes:RateLimit:Q850Cause=63",
        ]);

        // A few calls of an unlimited user through each edge first, so that rita's first calls are not slowed on their way
        // to the callee (code paths run for the first time), which would shorten the span the callee sees.
        var warmUps = rig.Edges.Select(e => rig.StartCallers(e, ["wendy"], 5, 10, 100)).ToList();
        try
        {
            await rig.WaitForCallsAsync(o => o.Starts.Count(s => s.User == "wendy") >= 10, TimeSpan.FromSeconds(60), "the warm-up calls");
            foreach (var warmUp in warmUps)
            {
                var warmed = await warmUp.WaitAsync(TimeSpan.FromSeconds(30));
                Assert.True(warmed.Successful == 5, $"{warmed}\n{warmUp.Describe()}");
            }
        }
        finally
        {
            foreach (var warmUp in warmUps)
            {
                await warmUp.DisposeAsync();
            }
        }

        // 25 calls a second through each edge for 10 s (500 calls, bounded in count and time), each held 100 ms.
        var callers = rig.Edges.Select(e => rig.StartCallers(e, ["rita"], OfferedPerEdge, 25, 100)).ToList();
        try
        {
            var stats = new List<SippStats>();
            foreach (var caller in callers)
            {
                stats.Add(await caller.WaitAsync(TimeSpan.FromSeconds(120)));
            }

            var messages = callers.Select(c => c.Messages()).ToList();
            var refused = messages.Sum(m => Count(m, "SIP/2.0 480 Temporarily Unavailable"));
            var offered = 2 * OfferedPerEdge;
            var oracle = await rig.WaitForCallsAsync(o => o.Starts.Count(s => s.User == "rita") >= offered - refused, TimeSpan.FromSeconds(10),
                "the callee saw every call the edges did not refuse");
            var starts = oracle.Starts.Where(s => s.User == "rita").Select(s => s.Tick).Order().ToList();

            for (var i = 0; i < callers.Count; i++)
            {
                Assert.True(stats[i].Failed == 0 && stats[i].Successful == OfferedPerEdge, $"{stats[i]}\n{callers[i].Describe()}");
            }

            Assert.True(starts.Count >= 2, $"the callee got {starts.Count} of rita's calls");
            var span = (starts[^1] - starts[0]) / 1000.0;
            var allowed = Burst + (Rate * span);
            var admitted = starts.Count;
            var perEdge = string.Join(", ", messages.Select(m => OfferedPerEdge - Count(m, "SIP/2.0 480 Temporarily Unavailable")));
            output.WriteLine($"offered {offered}, admitted {admitted} (by edge {perEdge}) over {span:F3} s (allowed {allowed:F1}), refused {refused}; {oracle}");

            // As in RateLimitTests: the callee sees each call a forwarding delay after the bucket decided it, and that
            // delay varies from call to call (here also from edge to edge); while the variation stays under one token's
            // interval (100 ms), at most one call more than burst + rate x span can show. The bucket itself is held to the
            // exact bound by the property test (RateBucketPropertyTests).
            Assert.True(admitted <= allowed + 1, $"{admitted} admitted, at most {allowed:F2} (+1 for the forwarding delay's variation) allowed over {span:F3} s");
            Assert.True(admitted >= 0.9 * allowed, $"{admitted} admitted, at least 90% of {allowed:F2} expected over {span:F3} s");
            Assert.Equal(offered, admitted + refused);
            Assert.Equal(refused, messages.Sum(m => Count(m, "Reason: Q.850;cause=63")));
            Assert.Equal(refused, messages.Sum(m => RetryAfter().Count(m)));
            Assert.All(messages, m => Assert.Equal(0, Count(m, "SIP/2.0 503")));

            // Both edges carried calls and refused some: the rate held across them, not per edge.
            Assert.All(messages, m => Assert.InRange(Count(m, "SIP/2.0 480 Temporarily Unavailable"), 1, OfferedPerEdge - 1));
            foreach (var edge in rig.Edges)
            {
                Assert.True(await edge.OutputContainsAsync("USER_OUT_RATE_LIMIT_REACHED"), rig.Describe());
            }

            await rig.WaitAllZeroAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            foreach (var caller in callers)
            {
                await caller.DisposeAsync();
            }
        }
    }

    private static int Count(string text, string what) => Regex.Count(text, Regex.Escape(what));

    [GeneratedRegex(@"^Retry-After: [1-9][0-9]*\r?$", RegexOptions.Multiline)]
    private static partial Regex RetryAfter();
}
