using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Ways a caller could step around a limit by how it writes a name, against a running standalone edge (the sample
/// configuration: alice may have one outbound call, +123 calls are limited to 3 per caller, 112 and 911 are emergency
/// numbers) with real sipp at both ends: every spelling of a user is that user, a number's visual separators do not
/// escape a rule, an emergency number is exact, and a From tag that needs escaping in our Record-Route still releases
/// its call on the BYE.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class IdentityTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new("callstate-identity-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("%61lice")]
    [InlineData("Alice")]
    public async Task Another_spelling_of_alice_is_counted_as_alice(string spelling)
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        await using var held = Caller(edge, "alice", "bob", holdMs: 10_000, refusalsFail: true);
        await WaitForCountAsync(edge, "user/alice", 1);

        // alice may have one outbound call: the other spelling's call is hers, so it is refused.
        await using var other = Caller(edge, spelling, "carol", holdMs: 1_000, refusalsFail: false);
        var stats = await other.WaitAsync(TimeSpan.FromSeconds(30));
        output.WriteLine($"{spelling}: {stats}");
        Assert.True(stats.Successful == 1, other.Describe());
        Assert.Equal(1, Count(other.Messages(), "SIP/2.0 486 Busy Here"));
        Assert.DoesNotContain(await LimitsAsync(edge, "user"), l => l.GetProperty("key").GetString() is "user/Alice" or "user/%61lice");

        await held.WaitAsync(TimeSpan.FromSeconds(30));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "alice's calls ended");
    }

    [Fact]
    public async Task A_called_number_written_with_visual_separators_meets_the_rule_of_its_digits()
    {
        // +1-23-45 is +12345: the +123 rule allows 3 calls per caller, so the 4th is refused as for the plain number.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, "bob"), "-s", "+1-23-45",
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "4", "-r", "20", "-l", "4", "-d", "3000",
            "-timeout", "60s", "-timeout_error", "-trace_msg"]);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(stats.Successful == 4 && stats.Failed == 0, uac.Describe());
        Assert.Equal(1, Count(uac.Messages(), "SIP/2.0 480 Temporarily Unavailable"));
        Assert.True(await edge.OutputContainsAsync("IN_PER_KEY_CAC_LIMIT_REACHED"), edge.Output);
        Assert.Equal(3, uas.Stop().Created);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the +123 calls ended");
    }

    [Fact]
    public async Task A_number_that_starts_with_an_emergency_number_is_not_an_emergency_call()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        await using var held = Caller(edge, "alice", "bob", holdMs: 10_000, refusalsFail: true);
        await WaitForCountAsync(edge, "user/alice", 1);

        await using var notEmergency = Caller(edge, "alice", "1123", holdMs: 1_000, refusalsFail: false);
        var stats = await notEmergency.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(stats.Successful == 1, notEmergency.Describe());

        // An emergency call would have been connected over alice's limit; 1123 is refused like any other number.
        Assert.Equal(1, Count(notEmergency.Messages(), "SIP/2.0 486 Busy Here"));

        await held.WaitAsync(TimeSpan.FromSeconds(30));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "alice's calls ended");
    }

    [Fact]
    public async Task A_from_tag_that_needs_escaping_in_our_record_route_is_released_by_its_BYE()
    {
        // The caller's tag a+b travels in Record-Route as cs-tag=a%2Bb; the BYE must name the call a+b again.
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        var scenario = Path.Combine(Data, "uac_tag_from_field1.xml");
        await File.WriteAllTextAsync(scenario, (await File.ReadAllTextAsync(RepoPaths.Scenario("uac_rr.xml")))
            .Replace("tag=[pid]SIPpTag00[call_number]", "tag=[field1]", StringComparison.Ordinal));
        var users = Path.Combine(Data, "tagged.csv");
        await File.WriteAllTextAsync(users, "SEQUENTIAL\ncarol;a+b\n");
        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", scenario, "-inf", users, "-s", "dave", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", "1000", "-timeout", "30s", "-timeout_error"], refusalsFail: true);
        await WaitForCountAsync(edge, "user/carol", 1);

        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(stats.Successful == 1, uac.Describe());
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the BYE of the call tagged a+b");
    }

    private Sipp Caller(SipEdgeProcess edge, string caller, string called, int holdMs, bool refusalsFail) =>
        Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", UsersFile(Data, caller), "-s", called,
            "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", "1", "-d", Port(holdMs),
            "-timeout", "40s", "-timeout_error", "-trace_msg"], refusalsFail);
}
