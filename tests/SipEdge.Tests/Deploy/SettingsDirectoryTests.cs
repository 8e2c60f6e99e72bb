using System.Diagnostics;
using CallState.Silo.Hosting;
using Microsoft.Extensions.Configuration;

namespace CallState.SipEdge.Tests.Deploy;

/// <summary>
/// <see cref="SettingsDirectory"/>: the JSON files of a mounted ConfigMap, laid out and swapped as the kubelet does (a
/// timestamped directory, <c>..data</c> pointing at it, each file a symlink through <c>..data</c>).
/// </summary>
public sealed class SettingsDirectoryTests : IDisposable
{
    private readonly string _mount = Directory.CreateTempSubdirectory("callstate-settings-").FullName;

    [Fact]
    public async Task A_symlink_swap_of_the_directory_reloads_the_settings()
    {
        Publish("..2026_12_06_20_00_00.1", """{ "CallState": { "Limits": { "Users": { "alice": { "Total": 1 } } } } }""");
        File.CreateSymbolicLink(Path.Combine(_mount, "limits.json"), Path.Combine("..data", "limits.json"));
        var configuration = new ConfigurationBuilder().AddCallStateSettingsDirectory(Environment).Build();
        Assert.Equal("1", configuration["CallState:Limits:Users:alice:Total"]);

        var reloaded = new TaskCompletionSource();
        using var registration = configuration.GetReloadToken().RegisterChangeCallback(_ => reloaded.TrySetResult(), null);
        Publish("..2026_12_06_20_01_00.2", """{ "CallState": { "Limits": { "Users": { "alice": { "Total": 2 } } } } }""");
        Directory.Delete(Path.Combine(_mount, "..2026_12_06_20_00_00.1"), recursive: true);

        await reloaded.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("2", configuration["CallState:Limits:Users:alice:Total"]);
    }

    [Fact]
    public void The_files_come_after_the_appsettings_files_and_before_what_overrides_them()
    {
        File.WriteAllText(Path.Combine(_mount, "b.json"), """{ "K": { "A": "b", "B": "b" } }""");
        File.WriteAllText(Path.Combine(_mount, "a.json"), """{ "K": { "A": "a", "B": "a", "C": "a" } }""");
        var appsettings = Path.Combine(_mount, "..appsettings");
        Directory.CreateDirectory(appsettings);
        File.WriteAllText(Path.Combine(appsettings, "appsettings.json"), """{ "K": { "A": "app", "B": "app", "C": "app", "D": "app" } }""");
        var builder = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(appsettings, "appsettings.json"))
            .AddInMemoryCollection(new Dictionary<string, string?> { ["K:A"] = "environment" });
        var configuration = builder.AddCallStateSettingsDirectory(Environment).Build();

        Assert.Equal("environment", configuration["K:A"]);
        Assert.Equal("b", configuration["K:B"]);
        Assert.Equal("a", configuration["K:C"]);
        Assert.Equal("app", configuration["K:D"]);
    }

    [Fact]
    public void A_settings_directory_that_does_not_exist_stops_start_up_naming_the_variable()
    {
        var error = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() =>
            new ConfigurationBuilder().AddCallStateSettingsDirectory(_ => Path.Combine(_mount, "missing")));
        Assert.Contains(SettingsDirectory.Variable, error.Failures.Single(), StringComparison.Ordinal);
    }

    private string? Environment(string name) => name == SettingsDirectory.Variable ? _mount : null;

    /// <summary>The kubelet's update: a new directory, then a new ..data symlink renamed over the old one.</summary>
    private void Publish(string timestamped, string limits)
    {
        var directory = Path.Combine(_mount, timestamped);
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "limits.json"), limits);
        var temporary = Path.Combine(_mount, "..data_tmp");
        Directory.CreateSymbolicLink(temporary, timestamped);
        using var mv = Process.Start(new ProcessStartInfo("mv", ["-T", temporary, Path.Combine(_mount, "..data")]) { UseShellExecute = false })!;
        Assert.True(mv.WaitForExit(TimeSpan.FromSeconds(10)) && mv.ExitCode == 0, "mv -T failed");
    }

    public void Dispose() => Directory.Delete(_mount, recursive: true);
}
