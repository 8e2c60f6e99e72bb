using System.Diagnostics;
using System.Text;
using CallState.Testing.Fuzz;
using Xunit.Abstractions;

namespace CallState.Sip.Tests.Fuzz;

/// <summary>
/// The in-process part of the fuzz run (docs/testing.md, "Fuzzing"): mutants of the RFC 4475 corpus and of captured sipp
/// traffic through the parser and the stream framer, bounded in cases and time per run seed. Every broken invariant is
/// shrunk to a minimal input and reported with its run seed and case, from which it is replayed.
/// </summary>
public sealed class ParserFuzzTests(ITestOutputHelper output)
{
    /// <summary>Cases per run seed in the CI variant (the time budget usually ends the run first on a busy machine).</summary>
    private const long CiCasesPerSeed = 40_000;

    [Fact]
    public async Task Mutants_parse_and_frame_within_their_invariants_and_never_hang()
    {
        var mutator = new SipMutator(FuzzPlan.Seeds());
        var seeds = FuzzPlan.RunSeeds();
        var budget = FuzzPlan.Budget(TimeSpan.FromSeconds(15), share: 0.35);
        var findings = new Dictionary<string, (FuzzCase Case, FuzzFindingException Finding)>();
        FuzzCase? current = null;
        var report = new StringBuilder();

        var worker = Task.Factory.StartNew(() =>
        {
            using var target = new ParserFuzzTarget();
            foreach (var seed in seeds)
            {
                var clock = Stopwatch.StartNew();
                var slice = budget / seeds.Count;
                long cases = 0;
                foreach (var index in FuzzPlan.Cases(FuzzPlan.LongRun ? long.MaxValue : CiCasesPerSeed))
                {
                    if (clock.Elapsed > slice && FuzzPlan.SingleCase is null)
                    {
                        break;
                    }
                    var c = mutator.Make(seed, index);
                    Volatile.Write(ref current, c);
                    try
                    {
                        target.Check(c.Bytes, TargetRandom(c));
                    }
                    catch (FuzzFindingException finding)
                    {
                        findings.TryAdd(finding.Key, (c, finding));
                    }
                    cases++;
                }
                report.AppendLine($"run seed {seed}: {cases} cases in {clock.Elapsed.TotalSeconds:F1} s");
            }
            report.AppendLine($"accepted by the parser {target.Accepted}, messages framed on the stream {target.Framed}, findings {findings.Count}");
        }, TaskCreationOptions.LongRunning);

        // A hang is an input the parser or framer never returns from: the case being run is the finding.
        try
        {
            await worker.WaitAsync(budget + TimeSpan.FromSeconds(120));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"the parser or framer did not return: {Volatile.Read(ref current)}");
        }
        output.WriteLine($"run seeds {string.Join(", ", seeds)} (replay one with CALLSTATE_FUZZ_SEED=n)");
        output.WriteLine(report.ToString());

        var failures = new StringBuilder();
        foreach (var (key, (c, finding)) in findings)
        {
            var minimal = Minimize(c, key);
            failures.AppendLine($"{key}\n  {c}\n  minimal ({minimal.Length} bytes): {FuzzText.Escape(minimal)}\n  {finding.InnerException}");
        }
        output.WriteLine(failures.ToString());
        Assert.True(findings.Count == 0, $"{findings.Count} invariant(s) broken:\n{failures}");
    }

    /// <summary>The cut points and chunk sizes of a case come from its own seed, so a replay of the case cuts alike.</summary>
    private static Random TargetRandom(FuzzCase c) => new(SipMutator.CaseSeed(c.RunSeed, c.Index) ^ 0x5bd1e995);

    private static byte[] Minimize(FuzzCase c, string key)
    {
        using var target = new ParserFuzzTarget();
        return FuzzMinimizer.Minimize(c.Bytes, candidate =>
        {
            try
            {
                target.Check(candidate, TargetRandom(c));
                return false;
            }
            catch (FuzzFindingException again)
            {
                return again.Key == key;
            }
        });
    }
}
