using System.Text;

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

    /// <summary>Something unique to a file found in what an edge sends about it: its Call-ID, or its top Via branch.</summary>
    public static string Marker(byte[] bytes)
    {
        var text = Encoding.UTF8.GetString(bytes);
        var first = new[] { "\r\nCall-ID:", "\r\ni:", "\r\nI:" }
            .Select(prefix => (Prefix: prefix, At: text.IndexOf(prefix, StringComparison.Ordinal)))
            .Where(p => p.At >= 0)
            .OrderBy(p => p.At)
            .FirstOrDefault();
        if (first.Prefix is not null)
        {
            var start = first.At + first.Prefix.Length;
            var end = text.IndexOf("\r\n", start, StringComparison.Ordinal);
            return text[start..end].Trim();
        }
        var branch = text.IndexOf("branch=", StringComparison.Ordinal);
        var stop = text.IndexOfAny(['\r', ';', ','], branch + 7);
        return text[(branch + 7)..stop];
    }
}
