using System.Text.RegularExpressions;

namespace CallState.Grains.Tests.Suite;

/// <summary>
/// Every property test of the repository throws on a counterexample: FsCheck's printing runners (the quick, verbose and
/// default configurations without "ThrowOnFailure", and the quick check) only print a failure, so a property run with
/// them cannot fail. The cases below spell those runners in pieces so that this file is not itself one of them.
/// </summary>
public sealed partial class PropertyConfigurationTests
{
    [Fact]
    public void No_test_runs_a_property_with_a_configuration_that_does_not_throw()
    {
        var tests = Path.Combine(RepositoryRoot(), "tests");
        var sources = Directory.EnumerateFiles(tests, "*.cs", SearchOption.AllDirectories)
            .Where(static f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.EndsWith(nameof(PropertyConfigurationTests) + ".cs", StringComparison.Ordinal))
            .ToList();
        var properties = sources.Where(static f => File.ReadAllText(f).Contains("FsCheck", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(properties);

        var offences = new List<string>();
        foreach (var file in properties)
        {
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                if (NonThrowing().IsMatch(lines[i]))
                {
                    offences.Add($"{Path.GetRelativePath(tests, file)}:{i + 1}: {lines[i].Trim()}");
                }
            }
        }

        Assert.True(offences.Count == 0, "properties that cannot fail:\n" + string.Join('\n', offences));
    }

    [Theory]
    [InlineData("Check.One(Config" + ".Quick, prop);", true)]
    [InlineData("Check" + ".Quick(prop);", true)]
    [InlineData("Check.One(Config" + ".Verbose.WithMaxTest(10), prop);", true)]
    [InlineData("Check.One(Config" + ".Default, prop);", true)]
    [InlineData("Check.One(Config.QuickThrowOnFailure.WithMaxTest(10), prop);", false)]
    [InlineData("Check.One(Config.VerboseThrowOnFailure, prop);", false)]
    [InlineData("Check.QuickThrowOnFailure(prop);", false)]
    public void The_check_tells_throwing_from_non_throwing_runners(string line, bool nonThrowing) =>
        Assert.Equal(nonThrowing, NonThrowing().IsMatch(line));

    [GeneratedRegex(@"\bCheck\.(Quick|Verbose)\s*\(|\bConfig\.(Quick|Verbose|Default)\b(?!ThrowOnFailure)")]
    private static partial Regex NonThrowing();

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Cluster.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Cluster.sln not found above " + AppContext.BaseDirectory);
    }
}
