namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>Finds the real peers' programs (sipp, kamailio) the way a shell would, /usr/sbin included.</summary>
public static class Executables
{
    /// <summary>The full path of <paramref name="command"/> on PATH (or in /usr/sbin), or null when it is not installed.</summary>
    public static string? Find(string command) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
        .Split(':', StringSplitOptions.RemoveEmptyEntries)
        .Append("/usr/sbin")
        .Select(d => Path.Combine(d, command))
        .FirstOrDefault(File.Exists);
}
