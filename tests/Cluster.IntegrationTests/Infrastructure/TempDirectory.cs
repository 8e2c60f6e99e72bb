namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>A directory of a test's own (SQLite files, sipp inputs, certificates), deleted when the test ends.</summary>
public sealed class TempDirectory(string prefix) : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    /// <summary>Deletes it; a file a process still holds open leaves it for the system's own clean-up.</summary>
    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
