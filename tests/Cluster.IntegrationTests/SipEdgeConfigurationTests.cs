using CallState.Cluster.IntegrationTests.Infrastructure;

namespace CallState.Cluster.IntegrationTests;

public sealed class SipEdgeConfigurationTests
{
    [Fact]
    public async Task A_bad_sip_setting_stops_the_edge_with_exit_code_2_naming_the_field()
    {
        await using var edge = SipEdgeProcess.Start(["--CallState:Sip:DefaultUpstream=not-an-address", "--CallState:Sip:T2=00:00:00.1"]);
        var exit = await edge.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, exit);
        Assert.Contains("CallState:Sip:DefaultUpstream", edge.Output, StringComparison.Ordinal);
        Assert.Contains("CallState:Sip:T2", edge.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Listening_on_all_addresses_without_a_Via_host_stops_the_edge_naming_the_field()
    {
        await using var edge = SipEdgeProcess.Start(["--CallState:Sip:ListenAddress=0.0.0.0"]);
        var exit = await edge.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, exit);
        Assert.Contains("CallState:Sip:ViaHost: required when ListenAddress is '0.0.0.0' (all addresses)", edge.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_missing_tls_certificate_stops_the_edge_with_exit_code_2_naming_the_field()
    {
        await using var edge = SipEdgeProcess.Start(["--CallState:Sip:Tls:Enabled=true", "--CallState:Sip:Tls:Port=" + SipEdgeProcess.FreeUdpAndTcpPort(),
            "--CallState:Sip:Tls:CertificateFile=/nonexistent/edge.crt", "--CallState:Sip:Tls:KeyFile=/nonexistent/edge.key"]);
        var exit = await edge.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, exit);
        Assert.Contains("CallState:Sip:Tls:CertificateFile: file '/nonexistent/edge.crt' not found", edge.Output, StringComparison.Ordinal);
    }
}
