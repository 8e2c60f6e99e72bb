using System.Globalization;
using CallState.Sip.Tests.Messages;

namespace CallState.Testing.Fuzz;

/// <summary>
/// What a fuzz test runs: which run seeds, for how long at most, from which seeds. The CI variant runs fixed seeds plus
/// one derived from the date (printed, so a failure is replayed with it); <c>CALLSTATE_FUZZ_SEED</c> runs one seed,
/// <c>CALLSTATE_FUZZ_CASE</c> one case of it, <c>CALLSTATE_FUZZ_SECONDS</c> scales the time budget (bench/fuzz/run.sh).
/// </summary>
public static class FuzzPlan
{
    /// <summary>Seeds every run uses, besides the date's: the first finds what the corpus finds quickly, the second varies it.</summary>
    private static readonly int[] FixedSeeds = [1, 4475];

    /// <summary>The run seeds: <c>CALLSTATE_FUZZ_SEED</c> alone when set, else the fixed ones and today's (UTC, yyyyMMdd).</summary>
    public static IReadOnlyList<int> RunSeeds()
    {
        if (int.TryParse(Environment.GetEnvironmentVariable("CALLSTATE_FUZZ_SEED"), CultureInfo.InvariantCulture, out var only))
        {
            return [only];
        }
        var today = TimeProvider.System.GetUtcNow();
        return [.. FixedSeeds, (today.Year * 10_000) + (today.Month * 100) + today.Day];
    }

    /// <summary>The one case to replay (<c>CALLSTATE_FUZZ_CASE</c>), or null to run cases 0, 1, 2... until the budget ends.</summary>
    public static long? SingleCase =>
        long.TryParse(Environment.GetEnvironmentVariable("CALLSTATE_FUZZ_CASE"), CultureInfo.InvariantCulture, out var index) ? index : null;

    /// <summary>
    /// How long a target runs over all its seeds: <paramref name="ci"/> unless <c>CALLSTATE_FUZZ_SECONDS</c> gives the
    /// whole run's length; a target's share of it is <paramref name="share"/>.
    /// </summary>
    public static TimeSpan Budget(TimeSpan ci, double share)
    {
        return int.TryParse(Environment.GetEnvironmentVariable("CALLSTATE_FUZZ_SECONDS"), CultureInfo.InvariantCulture, out var seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds * share)
            : ci;
    }

    /// <summary>True in a bench run (<c>CALLSTATE_FUZZ_SECONDS</c> set): the case limits scale with the time.</summary>
    public static bool LongRun => Environment.GetEnvironmentVariable("CALLSTATE_FUZZ_SECONDS") is { Length: > 0 };

    /// <summary>The 49 RFC 4475 files (read from the shared folder, never copied) and the captured sipp messages.</summary>
    public static IReadOnlyList<FuzzSeed> Seeds()
    {
        var seeds = TortureCorpus.ManifestNames().Select(n => new FuzzSeed(n, TortureCorpus.Read(n))).ToList();
        var folder = Path.Combine(AppContext.BaseDirectory, "Fuzz", "seeds");
        var sipp = Directory.GetFiles(folder, "*.sip").Order(StringComparer.Ordinal).ToList();
        if (sipp.Count < 10)
        {
            throw new InvalidOperationException($"expected the captured sipp messages in {folder}, found {sipp.Count}");
        }
        seeds.AddRange(sipp.Select(p => new FuzzSeed(Path.GetFileNameWithoutExtension(p), File.ReadAllBytes(p))));
        return seeds;
    }

    /// <summary>The cases a run goes through: the single case when one is asked for, else 0 up to <paramref name="max"/>.</summary>
    public static IEnumerable<long> Cases(long max) => SingleCase is { } one ? [one] : Enumerable.Range(0, (int)Math.Min(max, int.MaxValue)).Select(i => (long)i);
}

/// <summary>Shrinks an input that fails while it still fails the same way (chunk deletion, halving the chunk size).</summary>
public static class FuzzMinimizer
{
    /// <summary>The smallest input found that <paramref name="stillFails"/>, in at most <paramref name="maxTries"/> tries.</summary>
    public static byte[] Minimize(byte[] input, Func<byte[], bool> stillFails, int maxTries = 4000)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(stillFails);
        var current = input;
        var tries = 0;
        for (var chunk = Math.Max(1, current.Length / 2); chunk >= 1 && tries < maxTries; chunk /= 2)
        {
            var removed = true;
            while (removed && tries < maxTries)
            {
                removed = false;
                for (var at = 0; at < current.Length && tries < maxTries; at += chunk)
                {
                    var n = Math.Min(chunk, current.Length - at);
                    byte[] candidate = [.. current.AsSpan(0, at), .. current.AsSpan(at + n)];
                    tries++;
                    if (stillFails(candidate))
                    {
                        current = candidate;
                        removed = true;
                        at -= chunk;
                    }
                }
            }
        }
        return current;
    }
}
