using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Testing;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// A trunk identified by its TLS client certificate (docs/security.md, "SIP over TLS"), at a running standalone edge,
/// with a real TLS client and a real callee.
/// <para>
/// The client is <c>openssl s_client</c>, which presents the trunk's certificate and sends an INVITE written to its
/// input; what it prints is what the edge answered. sipsak cannot be this peer: Debian's sipsak 0.9.8.1 (GnuTLS) accepts
/// <c>--tls-client-cert</c> but never loads the file (the binary links no GnuTLS call that sets a client key), so a
/// server asking for a certificate gets none (checked against <c>openssl s_server -Verify 1</c>: "peer did not return a
/// certificate").
/// </para>
/// <para>
/// Trunk <c>carrier</c> lists the client certificate's SHA-256 thumbprint, requires a certificate, and has the client's
/// address, 127.0.0.1, as its source (the sample's trusted PBX address too: a trunk is checked first). The same INVITE
/// without the certificate is refused with 403 and counts nothing. With it, the call is counted on
/// <c>trunk/carrier</c>: the callee (sipp over TCP, where a call that came over TLS to a plain next hop goes) rings for
/// 4 s, the count is read meanwhile, then it answers 486 (which, unlike a 200, needs no ACK or BYE that s_client cannot
/// send), the client gets the 486 and the count goes back to zero.
/// </para>
/// </summary>
[Collection(LoadTests.Name)]
public sealed class TrunkCertificateTests : IDisposable
{
    private readonly TestPki _pki = new();
    private readonly string _data = Directory.CreateTempSubdirectory("callstate-mtls-").FullName;

    public void Dispose()
    {
        _pki.Dispose();
        Directory.Delete(_data, recursive: true);
    }

    [Fact]
    public async Task A_trunk_that_requires_its_certificate_is_refused_without_it_and_counted_with_it()
    {
        var (edgeCertificate, edgeKey) = _pki.WritePem(_pki.Server(), "edge");
        var ca = _pki.WriteCa(_pki.Ca, "ca");
        var client = _pki.Client("sbc.carrier.example.test");
        var (clientCertificate, clientKey) = _pki.WritePem(client, "carrier");

        // Configured as openssl prints it (hex pairs with colons), in lower case: compared without colons or case.
        var thumbprint = string.Join(':', Convert.ToHexStringLower(client.GetCertHash(HashAlgorithmName.SHA256)).Chunk(2).Select(p => new string(p)));

        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_ring_then_busy.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "t1"]);
        var tlsPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var edge = await StandaloneEdge.StartAsync(_data, uasPort, extra:
        [
            "--CallState:Sip:Tls:Enabled=true",
            $"--CallState:Sip:Tls:Port={tlsPort}",
            $"--CallState:Sip:Tls:CertificateFile={edgeCertificate}",
            $"--CallState:Sip:Tls:KeyFile={edgeKey}",
            "--CallState:Sip:Tls:ClientCertificates=Optional",
            $"--CallState:Sip:Tls:TrustedClientCas={ca}",
            "--CallState:Admission:Trunks:carrier:Sources:0=127.0.0.1",
            $"--CallState:Admission:Trunks:carrier:CertificateThumbprints:0={thumbprint}",
            "--CallState:Admission:Trunks:carrier:RequireCertificate=true",
        ]);

        // Without a certificate: the address is carrier's, carrier requires its certificate.
        await using (var anonymous = TlsClient.Start(tlsPort, ca, certificate: null))
        {
            var final = await anonymous.SendAsync(Invite("no-certificate@test"));

            Assert.True(final == "SIP/2.0 403 Forbidden (trunk certificate required)", $"{final}\n{anonymous.Output}\nedge:\n{edge.Output}");
        }
        Assert.All(await LimitsAsync(edge), l => Assert.Equal(0, l.GetProperty("total").GetInt32()));
        Assert.True(await edge.OutputContainsAsync("the address is trunk 'carrier''s, which requires a client certificate, and it presented no client certificate"), edge.Output);

        // With it: counted on the trunk while the callee rings.
        await using (var carrier = TlsClient.Start(tlsPort, ca, (clientCertificate, clientKey)))
        {
            var answered = carrier.SendAsync(Invite("with-certificate@test"));

            await WaitForCountAsync(edge, "trunk/carrier", 1);
            var final = await answered;

            Assert.True(final == "SIP/2.0 486 Busy Here", $"{final}\n{carrier.Output}\nedge:\n{edge.Output}");
        }
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the callee refused the trunk's call");

        // Only the call with the certificate reached the callee.
        Assert.Equal(1, uas.Stop().Created);
    }

    /// <summary>An INVITE from the carrier's number to bob (routed to the callee); the response goes back on the connection.</summary>
    private static string Invite(string callId) =>
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n" +
        $"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-{callId.Replace('@', '-')};rport\r\n" +
        "Max-Forwards: 70\r\n" +
        $"From: <sip:+4420123@carrier.example.test>;tag={callId.Replace('@', '-')}\r\n" +
        "To: <sip:bob@127.0.0.1>\r\n" +
        $"Call-ID: {callId}\r\n" +
        "CSeq: 1 INVITE\r\n" +
        "Contact: <sip:+4420123@127.0.0.1:5061;transport=tls>\r\n" +
        "Content-Length: 0\r\n\r\n";

    /// <summary>
    /// <c>openssl s_client</c> connected to the edge's TLS port, checking the edge's certificate against the test CA and
    /// its address, and presenting <c>certificate</c> (PEM certificate and key) when given. It stays connected after its
    /// input is written (<c>-quiet</c> implies <c>-ign_eof</c>) until it is stopped, by its own process id.
    /// </summary>
    private sealed class TlsClient : IAsyncDisposable
    {
        private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

        private readonly Process _process;
        private readonly StringBuilder _output = new();
        private readonly TaskCompletionSource<string> _final = new(TaskCreationOptions.RunContinuationsAsynchronously);

        private TlsClient(Process process) => _process = process;

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public static TlsClient Start(int port, string caFile, (string Certificate, string Key)? certificate)
        {
            var info = new ProcessStartInfo("openssl")
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var arg in new[]
            {
                "s_client", "-connect", $"127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}", "-CAfile", caFile,
                "-verify_ip", "127.0.0.1", "-verify_return_error", "-quiet",
            })
            {
                info.ArgumentList.Add(arg);
            }
            if (certificate is { } pem)
            {
                foreach (var arg in new[] { "-cert", pem.Certificate, "-key", pem.Key })
                {
                    info.ArgumentList.Add(arg);
                }
            }
            var process = new Process { StartInfo = info };
            var client = new TlsClient(process);
            process.OutputDataReceived += (_, e) => client.OnLine(e.Data, response: true);
            process.ErrorDataReceived += (_, e) => client.OnLine(e.Data, response: false);
            process.Start();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return client;
        }

        /// <summary>Sends <paramref name="request"/> and returns the status line of the first final response to it.</summary>
        public async Task<string> SendAsync(string request)
        {
            await _process.StandardInput.WriteAsync(request);
            await _process.StandardInput.FlushAsync();
            var exited = _process.WaitForExitAsync();
            var first = await Task.WhenAny(_final.Task, exited, Task.Delay(Bound));
            if (first != _final.Task)
            {
                Assert.Fail($"no final response {(first == exited ? "before openssl exited" : $"within {Bound.TotalSeconds} s")}:\n{Output}");
            }
            return await _final.Task;
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
            }
            await _process.WaitForExitAsync();
            _process.Dispose();
        }

        private void OnLine(string? line, bool response)
        {
            if (line is null)
            {
                return;
            }
            lock (_output)
            {
                _output.AppendLine(line);
            }
            // RFC 3261 7.2: a status line; 1xx are provisional.
            if (response && line.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && line.Length > 9 && line[8] is >= '2' and <= '6')
            {
                _final.TrySetResult(line);
            }
        }
    }
}
