using CallState.Testing.Fuzz;

namespace CallState.Sip.Tests.Fuzz;

/// <summary>The fuzz driver's mutator: a replayed case is the same input, and no seed or mutation makes it throw.</summary>
public sealed class SipMutatorTests
{
    private static readonly Lazy<SipMutator> Mutator = new(() => new SipMutator(
        FuzzPlan.Seeds(),
        extraFields: ["Route: <sip:127.0.0.1:9;lr>\r\n"],
        extraStartLines: ["INVITE sip:bob@127.0.0.1:9 SIP/2.0"]));

    [Fact]
    public void A_case_is_the_same_input_whenever_it_is_made()
    {
        for (var index = 0L; index < 300; index++)
        {
            var first = Mutator.Value.Make(20261206, index);
            var again = Mutator.Value.Make(20261206, index);
            Assert.Equal(first.Bytes, again.Bytes);
            Assert.Equal(first.Steps, again.Steps);
        }
        Assert.NotEqual(Mutator.Value.Make(1, 7).Bytes, Mutator.Value.Make(2, 7).Bytes);
    }

    [Fact]
    public void Every_mutation_kind_applies_to_every_seed_without_throwing()
    {
        var kinds = new HashSet<string>();
        var changed = 0;
        for (var index = 0L; index < 20_000; index++)
        {
            var c = Mutator.Value.Make(4475, index);
            if (!c.Bytes.AsSpan().SequenceEqual(Mutator.Value.Seeds.Single(s => s.Name == c.SeedName).Bytes))
            {
                changed++;
            }
            foreach (var step in c.Steps)
            {
                kinds.Add(string.Concat(step.TakeWhile(ch => !char.IsAsciiDigit(ch) && ch != '\'' && ch != '(')).Trim());
            }
        }

        // Seeds and mutations are both reached: more than half the cases change their seed, and every kind of step occurs.
        Assert.True(changed > 10_000, $"{changed} of 20000 cases changed their seed");
        Assert.True(kinds.Count >= 25, string.Join(", ", kinds.Order(StringComparer.Ordinal)));
        Assert.Equal(49 + 13, Mutator.Value.Seeds.Count);
    }
}
