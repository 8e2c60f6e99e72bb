using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace CallState.Sip.Tests.Transport;

/// <summary>
/// A TLS peer made directly from <see cref="SslStream"/> (not from the code under test): a client that trusts only the
/// test CA for the server's certificate and may present a client certificate, or the server side of an accepted
/// connection. Reads whole SIP messages (framed by Content-Length).
/// </summary>
internal sealed class TlsTestClient : IAsyncDisposable
{
    private readonly TcpClient _tcp;
    private byte[] _pending = [];

    private TlsTestClient(TcpClient tcp, SslStream stream)
    {
        _tcp = tcp;
        Stream = stream;
    }

    public SslStream Stream { get; }

    /// <summary>Connects and completes the client side of the handshake; throws what the handshake throws.</summary>
    public static async Task<TlsTestClient> ConnectAsync(IPEndPoint server, X509Certificate2 trustedCa, X509Certificate2? clientCertificate = null,
        SslProtocols protocols = SslProtocols.Tls12 | SslProtocols.Tls13)
    {
        var tcp = new TcpClient(server.AddressFamily) { NoDelay = true };
        try
        {
            await tcp.ConnectAsync(server).WaitAsync(Loopback.Timeout);
            var stream = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false);
            var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
            policy.CustomTrustStore.Add(trustedCa);
            await stream.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = server.Address.ToString(),
                EnabledSslProtocols = protocols,
                CertificateChainPolicy = policy,
                ClientCertificateContext = clientCertificate is null ? null : SslStreamCertificateContext.Create(clientCertificate, null, offline: true),
                RemoteCertificateValidationCallback = (_, _, _, errors) => errors == SslPolicyErrors.None,
            }).WaitAsync(Loopback.Timeout);
            return new TlsTestClient(tcp, stream);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>Accepts one connection on <paramref name="listener"/> and completes the server side of the handshake with <paramref name="certificate"/>.</summary>
    public static async Task<TlsTestClient> AcceptAsync(TcpListener listener, X509Certificate2 certificate)
    {
        var tcp = await listener.AcceptTcpClientAsync().WaitAsync(Loopback.Timeout);
        try
        {
            var stream = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false);
            await stream.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = SslStreamCertificateContext.Create(certificate, null, offline: true),
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            }).WaitAsync(Loopback.Timeout);
            return new TlsTestClient(tcp, stream);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    public string? RemoteSha256 => Stream.RemoteCertificate is X509Certificate2 c ? c.GetCertHashString(HashAlgorithmName.SHA256) : null;

    public async Task SendAsync(string message) => await Stream.WriteAsync(Encoding.ASCII.GetBytes(message)).AsTask().WaitAsync(Loopback.Timeout);

    public async Task SendAsync(byte[] message) => await Stream.WriteAsync(message).AsTask().WaitAsync(Loopback.Timeout);

    /// <summary>The next whole message; fails the test if none comes within <see cref="Loopback.Timeout"/> or the peer closes.</summary>
    public async Task<string> ReadMessageAsync()
    {
        var buffer = new byte[4096];
        while (true)
        {
            var sequence = new ReadOnlySequence<byte>(_pending);
            if (TestFramer.Frame(in sequence, out var consumed, out _, out var message) == OperationStatus.Done)
            {
                var text = Encoding.ASCII.GetString(message);
                _pending = sequence.Slice(consumed).ToArray();
                return text;
            }
            var read = await Stream.ReadAsync(buffer).AsTask().WaitAsync(Loopback.Timeout);
            Assert.True(read > 0, "the peer closed the connection before a whole message arrived");
            _pending = [.. _pending, .. buffer.AsSpan(0, read)];
        }
    }

    /// <summary>
    /// True once the peer closed the connection or broke off the TLS session (an alert, a reset); false if it sent
    /// data instead. Fails the test if neither happens within <see cref="Loopback.Timeout"/>.
    /// </summary>
    public async Task<bool> ClosedByPeerAsync()
    {
        try
        {
            var read = await Stream.ReadAsync(new byte[256]).AsTask().WaitAsync(Loopback.Timeout);
            return read == 0;
        }
        catch (Exception ex) when (ex is IOException or AuthenticationException or SocketException)
        {
            return true;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Stream.DisposeAsync();
        _tcp.Dispose();
    }
}
