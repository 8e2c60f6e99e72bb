using FsCheck;
using FsCheck.Fluent;

namespace CallState.Grains.Tests;

/// <summary>
/// Random call arrivals on a limit with a call rate, checked against a reference token bucket in exact decimal arithmetic:
/// every decision is the model's (but where the model sits on a token's edge, which floating point may round either way),
/// no window of time ever admits more than burst + rate x its length, and concurrent limits still hold.
/// </summary>
public sealed class RateBucketPropertyTests
{
    /// <summary>One arrival: after <paramref name="GapMs"/>, a new call in <paramref name="Direction"/>; some end again.</summary>
    public sealed record Arrival(int GapMs, Direction Direction, bool EndsAtOnce)
    {
        public override string ToString() => $"+{GapMs}ms {Direction}{(EndsAtOnce ? " ends" : "")}";
    }

    public sealed record Scenario(decimal Rate, int Burst, int? Concurrent, IReadOnlyList<Arrival> Arrivals)
    {
        public override string ToString() => $"rate {Rate}/s burst {Burst} concurrent {Concurrent?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} :: {string.Join(", ", Arrivals)}";
    }

    private static Gen<Scenario> Scenarios() =>
        from rate in Gen.Elements(0.5m, 1m, 2m, 3m, 10m, 25m, 100m)
        from burst in Gen.Choose(1, 10)
        from concurrent in Gen.Elements<int?>(null, null, 2, 5)
        from arrivals in Gen.ListOf(
            from gap in Gen.Frequency((3, Gen.Constant(0)), (5, Gen.Choose(1, 150)), (1, Gen.Choose(150, 5000)))
            from direction in Gen.Elements(Direction.Inbound, Direction.Outbound)
            from ends in Gen.Elements(true, true, false)
            select new Arrival(gap, direction, ends))
        select new Scenario(rate, burst, concurrent, arrivals.ToList());

    [Fact]
    public void The_bucket_decides_as_the_reference_model_and_admits_at_most_burst_plus_rate_times_elapsed()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(1000), Prop.ForAll(Arb.From(Scenarios()), Run));
    }

    private static bool Run(Scenario scenario)
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var limits = new LimitSettings(Total: scenario.Concurrent, TotalRate: (double)scenario.Rate, TotalBurst: scenario.Burst);
        var ledger = new LimitLedger(LimitKey.Trunk("carrier"), new LimitGrainState(), limits);

        // The reference: tokens in exact decimals, refilled by rate x elapsed, capped at the burst, starting full.
        decimal tokens = scenario.Burst;
        var held = new HashSet<string>(StringComparer.Ordinal);
        var admittedAtMs = new List<long>();
        long nowMs = 0;

        for (var i = 0; i < scenario.Arrivals.Count; i++)
        {
            var arrival = scenario.Arrivals[i];
            time.Advance(TimeSpan.FromMilliseconds(arrival.GapMs));
            nowMs += arrival.GapMs;
            tokens = Math.Min(scenario.Burst, tokens + (scenario.Rate * arrival.GapMs / 1000m));
            var callKey = $"c{i}";
            var where = $"arrival {i} ({arrival}) with {tokens} tokens";

            var outcome = ledger.TryReserve(callKey, arrival.Direction, TimeSpan.FromMinutes(5), null, time.GetUtcNow(), out var changed);
            var countAdmits = scenario.Concurrent is not { } max || held.Count < max;
            var onEdge = Math.Abs(tokens - 1) < 0.000001m;
            if (!countAdmits)
            {
                Expect(outcome.Reason == RejectReason.TrunkTotalLimitReached, where, $"a full count refuses first, got {outcome}");
            }
            else if (!onEdge)
            {
                var expected = tokens >= 1 ? RejectReason.None : RejectReason.TrunkTotalRateLimitReached;
                Expect(outcome.Reason == expected, where, $"expected {expected}, got {outcome}");
            }

            if (outcome.Admitted)
            {
                tokens = Math.Max(0, tokens - 1);
                held.Add(callKey);
                admittedAtMs.Add(nowMs);
            }
            else
            {
                Expect(!changed || !outcome.Reason.IsRate(), where, "a rate's refusal changes nothing");
                if (outcome.Reason.IsRate())
                {
                    // The wait is until the model's bucket holds a whole token (to the millisecond, rounded up).
                    var wait = (decimal)outcome.RetryAfter!.Value.TotalMilliseconds;
                    var needed = (1 - tokens) * 1000m / scenario.Rate;
                    Expect(wait >= needed - 1 && wait <= needed + 1, where, $"retry after {wait} ms, the model needs {needed} ms");
                }
            }

            if (arrival.EndsAtOnce)
            {
                ledger.Release(callKey);
                held.Remove(callKey);
            }

            Expect(scenario.Concurrent is not { } limit || ledger.Snapshot(includeCalls: false).Total <= limit, where, "concurrent limit exceeded");
        }

        // Over every window from one admission to another, at most burst + rate x its length were admitted.
        for (var first = 0; first < admittedAtMs.Count; first++)
        {
            for (var last = first; last < admittedAtMs.Count; last++)
            {
                var admitted = last - first + 1;
                var allowed = scenario.Burst + (scenario.Rate * (admittedAtMs[last] - admittedAtMs[first]) / 1000m);
                Expect(admitted <= allowed + 0.000001m, $"window {admittedAtMs[first]}..{admittedAtMs[last]} ms", $"{admitted} admitted, at most {allowed} allowed");
            }
        }

        return true;
    }

    private static void Expect(bool condition, string where, string what)
    {
        if (!condition)
        {
            throw new InvalidOperationException($"{where}: {what}");
        }
    }
}
