namespace CallState.Sip.Tests.Messages;

/// <summary>
/// The RFC 4475 messages in <c>shared/conformance/rfc4475</c>, read where they are (beside the repository), never
/// copied into it. A missing corpus fails the test that needs it.
/// </summary>
public static class TortureCorpus
{
    private static readonly Lazy<string> Folder = new(Locate);

    public static string Directory => Folder.Value;

    public static byte[] Read(string name) => File.ReadAllBytes(Path.Combine(Directory, name + ".dat"));

    /// <summary>Every file named in MANIFEST.md's table, in table order.</summary>
    public static IReadOnlyList<string> ManifestNames()
    {
        var names = new List<string>();
        foreach (var line in File.ReadLines(Path.Combine(Directory, "MANIFEST.md")))
        {
            var cells = line.Split('|', StringSplitOptions.TrimEntries);
            if (cells.Length > 4 && cells[1].Length > 0 && cells[1] != "file" && !cells[1].StartsWith("---", StringComparison.Ordinal))
            {
                names.Add(cells[1]);
            }
        }
        return names;
    }

    private static string Locate()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "conformance", "rfc4475");
            if (File.Exists(Path.Combine(candidate, "MANIFEST.md")))
            {
                return candidate;
            }
        }
        throw new InvalidOperationException(
            $"shared/conformance/rfc4475/MANIFEST.md was not found in any folder above {AppContext.BaseDirectory}; the tests read the RFC 4475 corpus from the shared folder beside the repository");
    }
}
