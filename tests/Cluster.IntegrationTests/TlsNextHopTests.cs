using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Testing;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// A call through a running standalone edge to a next hop reached over TLS (RFC 3261 26.2): a real Kamailio with its TLS
/// module, listening on TLS only, whose certificate the test makes and the edge checks.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class TlsNextHopTests(ITestOutputHelper output) : IDisposable
{
    private readonly TestPki _pki = new();
    private readonly string _data = Directory.CreateTempSubdirectory("callstate-tls-hop-").FullName;

    public void Dispose()
    {
        _pki.Dispose();
        Directory.Delete(_data, recursive: true);
    }

    [Fact]
    public async Task Invite_for_a_tls_uri_reaches_kamailio_over_tls_and_its_486_comes_back_to_the_caller()
    {
        var ca = _pki.WriteCa(_pki.Ca, "ca");
        var (edgeCertificate, edgeKey) = _pki.WritePem(_pki.Server(), "edge");
        // 127.0.0.1 as an IP subject alternative name: the edge checks the next hop's certificate against the address it dialled.
        var (hopCertificate, hopKey) = _pki.WritePem(_pki.Server("kamailio.example.test"), "kamailio");
        var kamailioDir = Directory.CreateDirectory(Path.Combine(_data, "kamailio")).FullName;
        await using var kamailio = await Kamailio.StartTlsAsync(kamailioDir, SipEdgeProcess.FreeUdpAndTcpPort(), hopCertificate, hopKey, _pki.Ca);
        var hop = $"127.0.0.1:{Port(kamailio.Port)}";

        // The sample routes every called number to the upstream given here: Kamailio. The transport is the one the
        // Request-URI asks for.
        var tlsPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var edge = await StandaloneEdge.StartAsync(_data, kamailio.Port, extra:
        [
            "--CallState:Sip:Tls:Enabled=true",
            $"--CallState:Sip:Tls:Port={Port(tlsPort)}",
            $"--CallState:Sip:Tls:CertificateFile={edgeCertificate}",
            $"--CallState:Sip:Tls:KeyFile={edgeKey}",
            $"--CallState:Sip:Tls:ServerCaFile={ca}",
            $"--CallState:Sip:AllowedDestinations:0={hop}",
        ]);

        await using var uac = Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_tls_hop_busy.xml"), "-key", "tls_hop", hop,
            "-inf", UsersFile(_data, "carol"), "-s", "bob", "-i", "127.0.0.1", "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()),
            "-t", "u1", "-m", "1", "-timeout", "30s", "-timeout_error", "-trace_msg"]);
        var stats = await uac.WaitAsync(TimeSpan.FromSeconds(45));
        var messages = uac.Messages();
        output.WriteLine($"uac {stats}");

        // The caller got the 486 its scenario expects, and it is Kamailio's (the edge forwards responses verbatim).
        Assert.True(stats.Successful == 1 && stats.Failed == 0, $"{uac.Describe()}\n--- edge ---\n{edge.Output}\n--- kamailio ---\n{kamailio.Output}");
        Assert.Equal(1, Count(messages, "SIP/2.0 486 Busy Here"));
        Assert.Contains("Server: kamailio", messages, StringComparison.Ordinal);

        // Kamailio got the INVITE over TLS, from the edge: its Via on top names the edge's TLS port.
        await kamailio.WaitForLogAsync("INVITE over ", TimeSpan.FromSeconds(10));
        var invite = Assert.Single(kamailio.Requests());
        output.WriteLine(invite);
        Assert.StartsWith($"INVITE over tls from 127.0.0.1 via SIP/2.0/TLS 127.0.0.1:{Port(tlsPort)};branch=", invite, StringComparison.Ordinal);

        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "Kamailio's 486");

        Assert.Empty(await kamailio.StopAsync());
    }
}
