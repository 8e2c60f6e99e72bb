using System.Diagnostics;
using System.Text;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Testing;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// SIP over TLS (RFC 3261 26.2) between a real third-party client, sipsak (Debian's build, GnuTLS), and a running
/// standalone edge whose certificate the test makes.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class SipOverTlsTests : IDisposable
{
    private readonly TestPki _pki = new();
    private readonly string _data = Directory.CreateTempSubdirectory("callstate-tls-").FullName;

    public void Dispose()
    {
        _pki.Dispose();
        Directory.Delete(_data, recursive: true);
    }

    [Fact]
    public async Task Sipsak_checks_the_edge_certificate_and_gets_200_for_options_over_tls()
    {
        var (certificate, key) = _pki.WritePem(_pki.Server(), "edge");
        var ca = _pki.WriteCa(_pki.Ca, "ca");
        var otherCa = _pki.WriteCa(_pki.OtherCa, "other-ca");
        var tlsPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var edge = await StandaloneEdge.StartAsync(_data, SipEdgeProcess.FreeUdpAndTcpPort(), extra:
        [
            // sipsak 0.9.8.1 cuts the last character off a port in its URI (sip:127.0.0.1:45161 becomes 127.0.0.1:4516 in
            // the request and in the name it checks the certificate against), so it names the edge without a port:
            // the default 5060, the port a load balancer in front of the edge would advertise.
            "--CallState:Sip:AdvertisedPort=5060",
            "--CallState:Sip:Tls:Enabled=true",
            $"--CallState:Sip:Tls:Port={tlsPort}",
            $"--CallState:Sip:Tls:CertificateFile={certificate}",
            $"--CallState:Sip:Tls:KeyFile={key}",
        ]);

        var (exit, output) = await SipsakAsync(tlsPort, ca);
        Assert.True(exit == 0, $"sipsak exited with {exit}:\n{output}\nedge:\n{edge.Output}");
        Assert.Contains("Protocol: TLS1.2", output, StringComparison.Ordinal);
        Assert.Contains("SIP/2.0 200 OK", output, StringComparison.Ordinal);

        // The same request from a client that trusts another CA stops at the certificate: sipsak does check it.
        var (refusedExit, refusedOutput) = await SipsakAsync(tlsPort, otherCa);
        Assert.True(refusedExit == 3, $"sipsak exited with {refusedExit}:\n{refusedOutput}");
        Assert.Contains("not trustworthy", refusedOutput, StringComparison.Ordinal);
        Assert.DoesNotContain("SIP/2.0 200", refusedOutput, StringComparison.Ordinal);
    }

    /// <summary>
    /// One OPTIONS from sipsak over TLS to 127.0.0.1, trusting <paramref name="caFile"/>. Three v's make it verify the
    /// server's certificate (chain and name) and print the handshake. GnuTLS is held to TLS 1.2 for it: after a TLS 1.3
    /// handshake the server's session tickets arrive first, and sipsak takes the empty read they give for an error.
    /// </summary>
    private async Task<(int Exit, string Output)> SipsakAsync(int port, string caFile)
    {
        var priorities = Path.Combine(_data, "gnutls.config");
        await File.WriteAllTextAsync(priorities, "[overrides]\ndisabled-version = tls1.3\n");
        var info = new ProcessStartInfo("sipsak")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment["GNUTLS_SYSTEM_PRIORITY_FILE"] = priorities;
        foreach (var arg in new[] { "-vvv", "--transport=tls", $"--tls-ca-cert={caFile}", "-s", "sip:127.0.0.1", "-r", port.ToString(System.Globalization.CultureInfo.InvariantCulture) })
        {
            info.ArgumentList.Add(arg);
        }
        using var process = new Process { StartInfo = info };
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => Append(output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(output, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            Assert.Fail($"sipsak did not finish in 30 s:\n{output}");
        }
        process.WaitForExit();
        lock (output)
        {
            return (process.ExitCode, output.ToString());
        }
    }

    private static void Append(StringBuilder output, string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (output)
        {
            output.AppendLine(line);
        }
    }
}
