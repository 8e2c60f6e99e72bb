using Microsoft.Extensions.Configuration.Json;
using Microsoft.Extensions.FileProviders;

namespace CallState.Silo.Hosting;

/// <summary>
/// More JSON settings from a mounted directory (a Kubernetes ConfigMap of limits, trunks and routes):
/// <c>CALLSTATE_SETTINGS_DIR</c> names the directory, and every <c>*.json</c> file in it (ordinal order) is read after
/// <c>appsettings.json</c> and before environment variables and the command line, so those still override it.
/// </summary>
/// <remarks>
/// The kubelet updates such a mount by writing a new timestamped directory and renaming the <c>..data</c> symlink over
/// the old one; <c>limits.json</c> itself is a symlink to <c>..data/limits.json</c> and never changes. A file system
/// watcher on the directory reports the rename of <c>..data</c>, not a change of <c>limits.json</c>, so the reload would
/// never come. These files are watched by polling instead, which compares the last write time of the file the symlink
/// leads to (docs/deploy.md, "Changing limits, trunks and routes").
/// </remarks>
public static class SettingsDirectory
{
    /// <summary>The environment variable naming the directory.</summary>
    public const string Variable = "CALLSTATE_SETTINGS_DIR";

    /// <summary>
    /// Adds the directory's JSON files to <paramref name="configuration"/>, after its last JSON source (the appsettings
    /// files), each reloaded when its content changes. Nothing when the variable is unset; a directory that does not
    /// exist stops start-up (a mount that failed must not leave the process on defaults).
    /// </summary>
    public static IConfigurationBuilder AddCallStateSettingsDirectory(this IConfigurationBuilder configuration, Func<string, string?>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var directory = (environment ?? Environment.GetEnvironmentVariable)(Variable);
        if (string.IsNullOrWhiteSpace(directory))
        {
            return configuration;
        }

        if (!Directory.Exists(directory))
        {
            throw new Microsoft.Extensions.Options.OptionsValidationException(Variable, typeof(SettingsDirectory),
                [$"{Variable}: the settings directory '{directory}' does not exist."]);
        }

        var provider = new PhysicalFileProvider(Path.GetFullPath(directory))
        {
            // Polling follows the symlink of each file to its target (see remarks).
            UsePollingFileWatcher = true,
            UseActivePolling = true,
        };
        var files = Directory.EnumerateFiles(directory, "*.json")
            .Select(Path.GetFileName)
            .OfType<string>()
            .Where(name => !name.StartsWith('.'))
            .Order(StringComparer.Ordinal)
            .ToList();
        var sources = configuration.Sources;
        var at = 0;
        for (var i = 0; i < sources.Count; i++)
        {
            if (sources[i] is JsonConfigurationSource)
            {
                at = i + 1;
            }
        }

        foreach (var file in files)
        {
            sources.Insert(at++, new JsonConfigurationSource { FileProvider = provider, Path = file, Optional = false, ReloadOnChange = true });
        }

        return configuration;
    }
}
