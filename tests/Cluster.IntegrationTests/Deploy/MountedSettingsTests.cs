using System.Diagnostics;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Grains;

namespace CallState.Cluster.IntegrationTests.Deploy;

/// <summary>
/// Limits from a mounted ConfigMap (<c>CALLSTATE_SETTINGS_DIR</c>, deploy/k8s; docs/deploy.md, "Changing limits, trunks and
/// routes"): the kubelet never rewrites a mounted file. It writes the new content into a new timestamped directory, points
/// a temporary symlink at it and renames that over <c>..data</c>; the file itself is a symlink through <c>..data</c>. This
/// test lays the directory out the same way, swaps it the same way under a running silo, and sees the new limit apply.
/// </summary>
public sealed class MountedSettingsTests : IDisposable
{
    private readonly TempDirectory _mount = new("callstate-configmap-");

    [Fact]
    public async Task A_kubelet_style_symlink_swap_of_the_mounted_settings_applies_the_new_limit_without_a_restart()
    {
        Publish("..2026_12_06_20_00_00.000000001", """{ "CallState": { "Limits": { "Users": { "alice": { "Total": 1 } } } } }""");
        File.CreateSymbolicLink(Path.Combine(_mount.Path, "limits.json"), Path.Combine("..data", "limits.json"));

        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings, environment: new Dictionary<string, string> { ["CALLSTATE_SETTINGS_DIR"] = _mount.Path });
        await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));

        // alice may hold one call: the second is refused.
        Assert.Equal(AdmitStatus.Admitted, (await AdmitAsync(silo, "call-1")).Status);
        var refused = await AdmitAsync(silo, "call-2");
        Assert.Equal(RejectReason.UserTotalLimitReached, refused.Reason);

        // The ConfigMap now says two: a new directory, then ..data renamed onto it in one step; the old one goes.
        Publish("..2026_12_06_20_01_00.000000002", """{ "CallState": { "Limits": { "Users": { "alice": { "Total": 2 } } } } }""");
        Directory.Delete(Path.Combine(_mount.Path, "..2026_12_06_20_00_00.000000001"), recursive: true);

        // The reload comes within the polling interval (4 s); until then a call is still refused and holds nothing.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        var attempt = 0;
        AdmitResult result;
        do
        {
            result = await AdmitAsync(silo, $"call-3-{attempt++}");
            if (result.Status == AdmitStatus.Admitted)
            {
                break;
            }

            Assert.Equal(RejectReason.UserTotalLimitReached, result.Reason);
            await Task.Delay(250);
        }
        while (DateTime.UtcNow < deadline);

        Assert.True(result.Status == AdmitStatus.Admitted, "the new limit (2) did not apply within 30 s of the swap:\n" + silo.Output);

        // Two now, not more: the third concurrent call is refused.
        Assert.Equal(RejectReason.UserTotalLimitReached, (await AdmitAsync(silo, "call-4")).Reason);
        Assert.False(silo.HasExited, silo.Output);
    }

    private static async Task<AdmitResult> AdmitAsync(SiloProcess silo, string callKey)
    {
        var (_, result) = await silo.PostAsync<AdmitResult>("/api/calls/admit", new { callKey, limits = new[] { new { key = "user/alice", direction = "Outbound" } } });
        return result!;
    }

    /// <summary>What the kubelet does on a ConfigMap update: write a new directory, then rename a new ..data symlink over the old.</summary>
    private void Publish(string timestamped, string limits)
    {
        var directory = Path.Combine(_mount.Path, timestamped);
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "limits.json"), limits);
        var temporary = Path.Combine(_mount.Path, "..data_tmp");
        Directory.CreateSymbolicLink(temporary, timestamped);

        // rename(2), as the kubelet does: mv -T renames the symlink itself over the old one.
        using var mv = Process.Start(new ProcessStartInfo("mv", ["-T", temporary, Path.Combine(_mount.Path, "..data")]) { UseShellExecute = false })!;
        Assert.True(mv.WaitForExit(TimeSpan.FromSeconds(10)) && mv.ExitCode == 0, "mv -T failed");
    }

    public void Dispose() => _mount.Dispose();
}
