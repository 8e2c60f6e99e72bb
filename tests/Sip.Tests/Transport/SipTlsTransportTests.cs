using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading.Channels;
using CallState.Sip.Transport;
using CallState.Testing;

namespace CallState.Sip.Tests.Transport;

/// <summary>
/// SIP over TLS (RFC 3261 26.2) on real loopback sockets: handshakes against peers made from <see cref="System.Net.Security.SslStream"/>,
/// certificates made per test. TLS 1.1 is not tried: this platform's OpenSSL refuses it in .NET even when a server
/// enables it, so a test that our listener refuses it could not fail.
/// </summary>
public sealed class SipTlsTransportTests : IDisposable
{
    private readonly TestPki _pki = new();
    private readonly ConcurrentQueue<Exception> _errors = new();

    public void Dispose() => _pki.Dispose();

    private sealed record Received(string Text, SipTcpConnection Connection);

    private sealed class RecordingHandler : ISipStreamHandler
    {
        public Channel<Received> Messages { get; } = Channel.CreateUnbounded<Received>();

        public void OnMessage(in ReadOnlySequence<byte> message, SipTcpConnection connection) =>
            Messages.Writer.TryWrite(new Received(Encoding.ASCII.GetString(message), connection));

        public async Task<Received> NextAsync() => await Messages.Reader.ReadAsync().AsTask().WaitAsync(Loopback.Timeout);
    }

    private SipTlsTransportOptions TlsOptions(X509Certificate2 serverCertificate, SipClientCertificateMode clientCertificates = SipClientCertificateMode.None,
        X509Certificate2? trustedClientCa = null, X509Certificate2? serverCa = null, TimeProvider? certificateClock = null, string name = "server")
    {
        var (certificate, key) = _pki.WritePem(serverCertificate, name);
        return new SipTlsTransportOptions
        {
            Certificate = SipTlsCertificateSource.FromPem(certificate, key, certificateClock),
            ClientCertificates = clientCertificates,
            TrustedClientAuthorities = trustedClientCa is null ? null : [trustedClientCa],
            ServerAuthorities = serverCa is null ? null : [serverCa],
        };
    }

    private SipTcpTransport Start(ISipStreamHandler handler, SipTlsTransportOptions tls, TimeProvider? clock = null)
    {
        var transport = new SipTcpTransport(new IPEndPoint(IPAddress.Loopback, 0), TestFramer.Frame, handler, new SipTcpTransportOptions
        {
            Tls = tls,
            TimeProvider = clock ?? TimeProvider.System,
            OnError = _errors.Enqueue,
        });
        transport.Start();
        return transport;
    }

    private SipTlsHandshakeException HandshakeError() => Assert.Single(_errors.OfType<SipTlsHandshakeException>());

    private static string Sha256(X509Certificate2 certificate) => certificate.GetCertHashString(HashAlgorithmName.SHA256);

    [Fact]
    public async Task A_TLS_peer_trickling_a_message_is_closed_at_the_message_timeout_while_another_is_served()
    {
        var handler = new RecordingHandler();
        await using var server = new SipTcpTransport(new IPEndPoint(IPAddress.Loopback, 0), TestFramer.Frame, handler, new SipTcpTransportOptions
        {
            Tls = TlsOptions(_pki.Server()),
            MessageTimeout = TimeSpan.FromSeconds(1),
            OnError = _errors.Enqueue,
        });
        server.Start();
        await using var slow = await TlsTestClient.ConnectAsync(server.LocalEndPoint, _pki.Ca);
        await using var normal = await TlsTestClient.ConnectAsync(server.LocalEndPoint, _pki.Ca);
        // One TLS record per byte, one every 100 ms: about 10 s for the whole message, against a 1 s timeout.
        var trickled = TestFramer.Message("tls-slowloris", new string('s', 40));

        var sent = 0;
        for (; sent < trickled.Length && server.MessageTimeouts == 0; sent++)
        {
            try
            {
                await slow.SendAsync(trickled[sent..(sent + 1)]);
            }
            catch (IOException)
            {
                break;
            }
            await Task.Delay(TimeSpan.FromMilliseconds(100));
        }

        Assert.True(await slow.ClosedByPeerAsync());
        Assert.True(sent < trickled.Length, "the connection was closed before the message could complete");
        Assert.Equal(1, server.MessageTimeouts);
        await normal.SendAsync(TestFramer.Message("tls-served"));
        Assert.Contains("Call-ID: tls-served", (await handler.NextAsync()).Text, StringComparison.Ordinal);
        Assert.Equal(1, server.MessagesReceived);
    }

    [Fact]
    public async Task Tls_message_arrives_with_the_validated_client_certificate_and_the_answer_goes_back_on_the_same_connection()
    {
        var handler = new RecordingHandler();
        var clientCertificate = _pki.Client("trunk.example.test");
        await using var server = Start(handler, TlsOptions(_pki.Server(), SipClientCertificateMode.Required, trustedClientCa: _pki.Ca));
        await using var client = await TlsTestClient.ConnectAsync(server.LocalEndPoint, _pki.Ca, clientCertificate);

        await client.SendAsync(TestFramer.Message("tls-1", "hello"));
        var received = await handler.NextAsync();

        Assert.Contains("Call-ID: tls-1", received.Text, StringComparison.Ordinal);
        var connection = received.Connection;
        Assert.True(connection.IsTls);
        Assert.True(connection.IsInbound);
        Assert.Equal(Sha256(clientCertificate), connection.RemoteCertificateSha256);
        Assert.Equal(Sha256(clientCertificate), Sha256(connection.RemoteCertificate!));
        Assert.Equal(["trunk.example.test"], connection.RemoteCertificateDnsNames);
        Assert.Contains(connection.TlsProtocol, new[] { SslProtocols.Tls12, SslProtocols.Tls13 });
        Assert.StartsWith("tls#", connection.ToString(), StringComparison.Ordinal);

        await connection.SendAsync(TestFramer.Message("tls-1-answer"));
        Assert.Contains("Call-ID: tls-1-answer", await client.ReadMessageAsync(), StringComparison.Ordinal);
        Assert.True(server.TryGetConnection(connection.RemoteEndPoint, out var reused));
        Assert.Same(connection, reused);
        Assert.Equal(1, server.ConnectionCount);
        Assert.Equal(1, server.TlsHandshakes);
        Assert.Equal(0, server.TlsHandshakeFailures);
    }

    [Fact]
    public async Task A_client_without_a_certificate_is_refused_when_required_and_served_when_optional()
    {
        var requiredHandler = new RecordingHandler();
        await using var required = Start(requiredHandler, TlsOptions(_pki.Server(), SipClientCertificateMode.Required, trustedClientCa: _pki.Ca, name: "required"));
        // With TLS 1.3 the client's side of the handshake may complete before the server has seen (no) certificate;
        // the refusal then arrives as an alert or a close instead of a failed handshake.
        try
        {
            await using var refused = await TlsTestClient.ConnectAsync(required.LocalEndPoint, _pki.Ca);
            await refused.SendAsync(TestFramer.Message("no-cert"));
            Assert.True(await refused.ClosedByPeerAsync());
        }
        catch (AuthenticationException)
        {
        }
        await Loopback.WaitUntilAsync(() => required.TlsHandshakeFailures == 1, "the handshake failure is counted");
        Assert.Contains("no client certificate", HandshakeError().Reason, StringComparison.Ordinal);
        Assert.True(HandshakeError().IsInbound);
        Assert.Equal(0, required.MessagesReceived);
        await Loopback.WaitUntilAsync(() => required.ConnectionCount == 0, "the refused connection is closed");

        var optionalHandler = new RecordingHandler();
        await using var optional = Start(optionalHandler, TlsOptions(_pki.Server(), SipClientCertificateMode.Optional, trustedClientCa: _pki.Ca, name: "optional"));
        await using var served = await TlsTestClient.ConnectAsync(optional.LocalEndPoint, _pki.Ca);
        await served.SendAsync(TestFramer.Message("no-cert-optional"));
        var received = await optionalHandler.NextAsync();
        Assert.Null(received.Connection.RemoteCertificate);
        Assert.Null(received.Connection.RemoteCertificateSha256);
        Assert.Empty(received.Connection.RemoteCertificateDnsNames);
        Assert.Equal(0, optional.TlsHandshakeFailures);
    }

    [Theory]
    [InlineData(SipClientCertificateMode.Required)]
    [InlineData(SipClientCertificateMode.Optional)]
    public async Task A_client_certificate_from_an_untrusted_CA_is_refused(SipClientCertificateMode mode)
    {
        var handler = new RecordingHandler();
        var stranger = _pki.Client("stranger.example.test", issuer: _pki.OtherCa);
        await using var server = Start(handler, TlsOptions(_pki.Server(), mode, trustedClientCa: _pki.Ca));
        try
        {
            await using var client = await TlsTestClient.ConnectAsync(server.LocalEndPoint, _pki.Ca, stranger);
            await client.SendAsync(TestFramer.Message("stranger"));
            Assert.True(await client.ClosedByPeerAsync());
        }
        catch (AuthenticationException)
        {
        }

        await Loopback.WaitUntilAsync(() => server.TlsHandshakeFailures == 1, "the handshake failure is counted");
        var error = HandshakeError();
        Assert.Equal("CN=stranger.example.test", error.RefusedSubject);
        Assert.Equal(Sha256(stranger), error.RefusedSha256);
        Assert.Contains("TrustedClientCas", error.Reason, StringComparison.Ordinal);
        Assert.Equal(0, server.MessagesReceived);
        Assert.Equal(0, server.TlsHandshakes);
    }

    [Theory]
    [InlineData(SslProtocols.Tls12)]
    [InlineData(SslProtocols.Tls13)]
    public async Task Tls_1_2_and_1_3_clients_are_served_and_the_version_is_reported(SslProtocols protocol)
    {
        var handler = new RecordingHandler();
        await using var server = Start(handler, TlsOptions(_pki.Server()));
        await using var client = await TlsTestClient.ConnectAsync(server.LocalEndPoint, _pki.Ca, protocols: protocol);
        await client.SendAsync(TestFramer.Message("version"));

        var received = await handler.NextAsync();
        Assert.Equal(protocol, received.Connection.TlsProtocol);
        Assert.Equal(protocol, client.Stream.SslProtocol);
    }

    [Fact]
    public async Task Outbound_send_validates_the_next_hop_certificate_and_the_answer_comes_back_on_that_connection()
    {
        var serverCertificate = _pki.Server("next-hop.example.test");
        var serverHandler = new RecordingHandler();
        var clientHandler = new RecordingHandler();
        await using var nextHop = Start(serverHandler, TlsOptions(serverCertificate, name: "next-hop"));
        await using var edge = Start(clientHandler, TlsOptions(_pki.Server(), serverCa: _pki.Ca, name: "edge"));

        await edge.SendAsync(nextHop.LocalEndPoint, TestFramer.Message("out-1"));
        var request = await serverHandler.NextAsync();
        Assert.Contains("Call-ID: out-1", request.Text, StringComparison.Ordinal);
        await request.Connection.SendAsync(TestFramer.Message("out-1-answer"));

        var answer = await clientHandler.NextAsync();
        Assert.Contains("Call-ID: out-1-answer", answer.Text, StringComparison.Ordinal);
        Assert.False(answer.Connection.IsInbound);
        Assert.True(answer.Connection.IsTls);
        Assert.Equal(Sha256(serverCertificate), answer.Connection.RemoteCertificateSha256);
        Assert.Equal(1, edge.ConnectionsOpened);
        Assert.Equal(1, edge.TlsHandshakes);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Outbound_presents_the_edge_certificate_to_a_next_hop_that_requires_one(bool allowsClientAuthentication)
    {
        var edgeCertificate = _pki.Server("edge.example.test", alsoClient: allowsClientAuthentication);
        var serverHandler = new RecordingHandler();
        await using var nextHop = Start(serverHandler, TlsOptions(_pki.Server("next-hop.example.test"), SipClientCertificateMode.Required, trustedClientCa: _pki.Ca, name: "next-hop"));
        await using var edge = Start(new RecordingHandler(), TlsOptions(edgeCertificate, serverCa: _pki.Ca, name: "edge"));

        var send = edge.SendAsync(nextHop.LocalEndPoint, TestFramer.Message("mutual")).AsTask();
        if (allowsClientAuthentication)
        {
            await send.WaitAsync(Loopback.Timeout);
            var request = await serverHandler.NextAsync();
            Assert.Equal(Sha256(edgeCertificate), request.Connection.RemoteCertificateSha256);
            return;
        }
        // A server certificate without client authentication in its extended key usage is refused by such a next hop.
        // With TLS 1.3 the edge's side of the handshake may complete first: the refusal then closes the connection.
        try
        {
            await send.WaitAsync(Loopback.Timeout);
        }
        catch (IOException)
        {
        }
        await Loopback.WaitUntilAsync(() => nextHop.TlsHandshakeFailures == 1, "the next hop refuses the certificate");
        await Loopback.WaitUntilAsync(() => edge.ConnectionCount == 0, "the refused connection is closed");
        Assert.Equal(0, nextHop.MessagesReceived);
    }

    [Fact]
    public async Task Outbound_to_a_server_whose_certificate_is_not_trusted_fails_and_sends_nothing()
    {
        var serverHandler = new RecordingHandler();
        await using var nextHop = Start(serverHandler, TlsOptions(_pki.Server("untrusted.example.test", issuer: _pki.OtherCa), name: "untrusted"));
        await using var edge = Start(new RecordingHandler(), TlsOptions(_pki.Server(), serverCa: _pki.Ca, name: "edge"));

        var failure = await Assert.ThrowsAsync<SipTlsHandshakeException>(async () => await edge.SendAsync(nextHop.LocalEndPoint, TestFramer.Message("untrusted")));

        Assert.False(failure.IsInbound);
        Assert.Contains("not trusted", failure.Reason, StringComparison.Ordinal);
        Assert.Equal("CN=untrusted.example.test", failure.RefusedSubject);
        Assert.Equal(1, edge.TlsHandshakeFailures);
        Assert.Equal(1, edge.ConnectErrors);
        Assert.Equal(0, edge.ConnectionCount);
        Assert.False(edge.TryGetConnection(nextHop.LocalEndPoint, out _));
        await Loopback.WaitUntilAsync(() => nextHop.TlsHandshakeFailures + nextHop.TlsHandshakes == 1, "the next hop saw the handshake end");
        Assert.Equal(0, nextHop.MessagesReceived);
    }

    [Fact]
    public async Task Outbound_checks_the_certificate_names_the_host_or_the_address_connected_to()
    {
        // Trusted, but for 127.0.0.9 and sip.example.test: not for 127.0.0.1, which the edge connects to.
        var serverCertificate = _pki.Server("next-hop", ip: IPAddress.Parse("127.0.0.9"), dns: "sip.example.test");
        var serverHandler = new RecordingHandler();
        await using var nextHop = Start(serverHandler, TlsOptions(serverCertificate, name: "next-hop"));
        await using var edge = Start(new RecordingHandler(), TlsOptions(_pki.Server(), serverCa: _pki.Ca, name: "edge"));

        var byAddress = await Assert.ThrowsAsync<SipTlsHandshakeException>(async () => await edge.SendAsync(nextHop.LocalEndPoint, TestFramer.Message("by-address")));
        Assert.Contains("does not name 127.0.0.1", byAddress.Reason, StringComparison.Ordinal);

        await edge.SendAsync(nextHop.LocalEndPoint, "sip.example.test", TestFramer.Message("by-name"));
        Assert.Contains("Call-ID: by-name", (await serverHandler.NextAsync()).Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Replaced_certificate_files_are_served_to_new_connections_and_a_broken_replacement_keeps_the_old_one()
    {
        var clock = new FakeTimeProvider();
        var first = _pki.Server("first.example.test");
        var second = _pki.Server("second.example.test");
        var third = _pki.Server("third.example.test");
        var tls = TlsOptions(first, certificateClock: clock);
        var reloaded = new ConcurrentQueue<X509Certificate2>();
        var failed = new ConcurrentQueue<Exception>();
        tls.Certificate.Reloaded += reloaded.Enqueue;
        tls.Certificate.ReloadFailed += failed.Enqueue;
        await using var server = Start(new RecordingHandler(), tls);
        var certificatePath = Path.Combine(_pki.Directory, "server.crt");
        var keyPath = Path.Combine(_pki.Directory, "server.key");

        async Task<string?> PresentedAsync()
        {
            await using var client = await TlsTestClient.ConnectAsync(server.LocalEndPoint, _pki.Ca);
            return client.RemoteSha256;
        }

        Assert.Equal(Sha256(first), await PresentedAsync());

        TestPki.WritePem(second, certificatePath, keyPath);
        // Looked at no more than once a second: a connection within the second still gets the old certificate.
        Assert.Equal(Sha256(first), await PresentedAsync());
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(Sha256(second), await PresentedAsync());
        Assert.Equal(Sha256(second), Sha256(Assert.Single(reloaded)));
        Assert.Equal(1, tls.Certificate.Reloads);

        // Half a rotation: the third certificate with the second one's key does not load.
        File.WriteAllText(certificatePath, third.ExportCertificatePem());
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(Sha256(second), await PresentedAsync());
        Assert.Single(failed);
        Assert.Equal(1, tls.Certificate.ReloadFailures);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(Sha256(second), await PresentedAsync());
        Assert.Single(failed);

        // The key follows: the rotation completes.
        TestPki.WritePem(third, certificatePath, keyPath);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(Sha256(third), await PresentedAsync());
        Assert.Equal(2, tls.Certificate.Reloads);
    }

    [Fact]
    public async Task A_silent_peer_times_out_in_the_handshake_without_holding_up_other_connections()
    {
        var clock = new FakeTimeProvider();
        var handler = new RecordingHandler();
        await using var server = Start(handler, TlsOptions(_pki.Server()), clock);

        // Connects and never says hello.
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await silent.ConnectAsync(server.LocalEndPoint).WaitAsync(Loopback.Timeout);
        await Loopback.WaitUntilAsync(() => server.ConnectionsAccepted == 1, "the silent connection is accepted");

        await using var client = await TlsTestClient.ConnectAsync(server.LocalEndPoint, _pki.Ca);
        await client.SendAsync(TestFramer.Message("meanwhile"));
        Assert.Contains("Call-ID: meanwhile", (await handler.NextAsync()).Text, StringComparison.Ordinal);
        Assert.Equal(2, server.ConnectionCount);
        Assert.Equal(0, server.TlsHandshakeFailures);

        clock.Advance(TimeSpan.FromSeconds(10));
        await Loopback.WaitUntilAsync(() => server.TlsHandshakeFailures == 1, "the silent peer's handshake times out");
        Assert.Contains("not done within 10 s", HandshakeError().Reason, StringComparison.Ordinal);
        await Loopback.WaitUntilAsync(() => server.ConnectionCount == 1, "the silent connection is closed");
        Assert.Equal(0, await silent.ReceiveAsync(new byte[16]).WaitAsync(Loopback.Timeout));
    }
}
