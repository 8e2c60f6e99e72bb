namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>Where the repository and the built executables are, seen from the test assembly.</summary>
public static class RepoPaths
{
    private static readonly Lazy<string> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Cluster.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("Cluster.sln not found above " + AppContext.BaseDirectory);
    });

    public static string Repository => Root.Value;

    /// <summary>A sipp scenario of this test project.</summary>
    public static string Scenario(string file) => Path.Combine(Repository, "tests", "Cluster.IntegrationTests", "sipp", file);

    /// <summary>The dotnet host running the tests, so child processes use the same runtime.</summary>
    public static string DotnetHost() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    /// <summary>An executable built with the same configuration (Debug/Release) as this test assembly.</summary>
    public static string BuiltAssembly(string project, string assembly)
    {
        var testDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = testDir.Name;
        var configuration = testDir.Parent!.Name;
        var path = Path.Combine(Repository, "src", project, "bin", configuration, framework, assembly);
        return File.Exists(path) ? path : throw new FileNotFoundException("build the solution first", path);
    }
}
