using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace CallState.Sip.Transport;

/// <summary>A TLS handshake that failed; its connection is closed. Reported through the transport's error sink.</summary>
public sealed class SipTlsHandshakeException : IOException
{
    public SipTlsHandshakeException(IPEndPoint remoteEndPoint, bool inbound, string reason, string? refusedSubject = null, string? refusedSha256 = null,
        Exception? innerException = null)
        : base($"TLS handshake {(inbound ? "from" : "with")} {remoteEndPoint} failed: {reason}", innerException)
    {
        RemoteEndPoint = remoteEndPoint;
        IsInbound = inbound;
        Reason = reason;
        RefusedSubject = refusedSubject;
        RefusedSha256 = refusedSha256;
    }

    public IPEndPoint RemoteEndPoint { get; }

    /// <summary>True when the peer connected to us, false for a connection to a next hop.</summary>
    public bool IsInbound { get; }

    /// <summary>Why, in a few words (no certificate, chain status, name mismatch, timeout, protocol error).</summary>
    public string Reason { get; }

    /// <summary>Subject of the peer certificate this side refused; null when the handshake failed for another reason.</summary>
    public string? RefusedSubject { get; }

    /// <summary>SHA-256 thumbprint (hex) of the refused certificate.</summary>
    public string? RefusedSha256 { get; }
}

/// <summary>
/// Runs the handshakes of a TLS transport (RFC 3261 26.2): as server with the current certificate of the
/// <see cref="SipTlsCertificateSource"/> and, per <see cref="SipClientCertificateMode"/>, a client certificate checked
/// against the trusted client CAs; as client with the next hop's certificate checked against the server CAs and its name.
/// </summary>
internal sealed class SipTlsHandshake
{
    private const string ServerAuthenticationOid = "1.3.6.1.5.5.7.3.1";
    private const string ClientAuthenticationOid = "1.3.6.1.5.5.7.3.2";

    private readonly SipTlsTransportOptions _options;
    private readonly X509ChainPolicy? _clientCertificatePolicy;
    private readonly X509ChainPolicy? _serverCertificatePolicy;
    private readonly X509RevocationMode _revocation;

    public SipTlsHandshake(SipTlsTransportOptions options)
    {
        _options = options;
        _revocation = options.CheckCertificateRevocation ? X509RevocationMode.Online : X509RevocationMode.NoCheck;
        if (options.ClientCertificates != SipClientCertificateMode.None)
        {
            _clientCertificatePolicy = CustomRootPolicy(options.TrustedClientAuthorities!, ClientAuthenticationOid, _revocation);
        }
        if (options.ServerAuthorities is { Count: > 0 } authorities)
        {
            _serverCertificatePolicy = CustomRootPolicy(authorities, ServerAuthenticationOid, _revocation);
        }
    }

    public TimeSpan Timeout => _options.HandshakeTimeout;

    /// <summary>The server side of a handshake on an accepted connection.</summary>
    /// <exception cref="SipTlsHandshakeException">It failed or timed out.</exception>
    public async Task AcceptAsync(SslStream stream, IPEndPoint remote, CancellationToken timeout)
    {
        var verdict = new Verdict();
        var options = new SslServerAuthenticationOptions
        {
            ServerCertificateContext = _options.Certificate.Context,
            EnabledSslProtocols = SipTlsTransportOptions.Protocols,
            ClientCertificateRequired = _options.ClientCertificates != SipClientCertificateMode.None,
            CertificateRevocationCheckMode = _revocation,
            CertificateChainPolicy = _clientCertificatePolicy,
            AllowRenegotiation = false,
            RemoteCertificateValidationCallback = (_, certificate, chain, errors) => ValidateClient(certificate, chain, errors, verdict),
        };
        await RunAsync(stream.AuthenticateAsServerAsync(options, timeout), remote, inbound: true, verdict, timeout).ConfigureAwait(false);
    }

    /// <summary>
    /// The client side of a handshake on a connection to a next hop, whose certificate must name
    /// <paramref name="serverName"/> (a DNS name, or the IP address connected to). Our own certificate is presented
    /// when the next hop asks for one.
    /// </summary>
    /// <exception cref="SipTlsHandshakeException">It failed, timed out, or the next hop's certificate was refused.</exception>
    public async Task ConnectAsync(SslStream stream, IPEndPoint remote, string serverName, CancellationToken timeout)
    {
        var verdict = new Verdict();
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = serverName,
            EnabledSslProtocols = SipTlsTransportOptions.Protocols,
            ClientCertificateContext = _options.Certificate.Context,
            CertificateRevocationCheckMode = _revocation,
            CertificateChainPolicy = _serverCertificatePolicy,
            AllowRenegotiation = false,
            RemoteCertificateValidationCallback = (_, certificate, chain, errors) => ValidateServer(certificate, chain, errors, serverName, verdict),
        };
        await RunAsync(stream.AuthenticateAsClientAsync(options, timeout), remote, inbound: false, verdict, timeout).ConfigureAwait(false);
    }

    private async Task RunAsync(Task handshake, IPEndPoint remote, bool inbound, Verdict verdict, CancellationToken timeout)
    {
        try
        {
            await handshake.ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Whatever ended the handshake (the peer, OpenSSL, the timeout) fails this connection alone.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            var reason = verdict.Reason
                ?? (ex is OperationCanceledException && timeout.IsCancellationRequested ? $"not done within {_options.HandshakeTimeout.TotalSeconds:0.###} s" : null)
                ?? (ex.InnerException is { } inner ? $"{ex.Message} ({inner.Message})" : ex.Message);
            throw new SipTlsHandshakeException(remote, inbound, reason, verdict.RefusedSubject, verdict.RefusedSha256, ex);
        }
    }

    private bool ValidateClient(X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors, Verdict verdict)
    {
        if (certificate is null)
        {
            if (_options.ClientCertificates == SipClientCertificateMode.Required)
            {
                verdict.Reason = "the peer presented no client certificate (ClientCertificates is Required)";
                return false;
            }
            return true;
        }
        if (_options.ClientCertificates == SipClientCertificateMode.None)
        {
            // Not asked for, so not checked: it identifies nothing (the connection exposes no certificate it did not validate).
            return true;
        }
        // A client certificate names a client, not a host: there is no name to compare.
        errors &= ~SslPolicyErrors.RemoteCertificateNameMismatch;
        if (errors != SslPolicyErrors.None)
        {
            return Refuse(certificate, verdict, $"its client certificate does not chain to TrustedClientCas ({Describe(chain, errors)})");
        }
        return true;
    }

    private static bool ValidateServer(X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors, string serverName, Verdict verdict)
    {
        if (certificate is null)
        {
            verdict.Reason = "the next hop presented no certificate";
            return false;
        }
        // The platform's name check is replaced by ours below, the same for DNS names and IP addresses.
        errors &= ~SslPolicyErrors.RemoteCertificateNameMismatch;
        if (errors != SslPolicyErrors.None)
        {
            return Refuse(certificate, verdict, $"its certificate is not trusted ({Describe(chain, errors)})");
        }
        using var copy = certificate as X509Certificate2 is null ? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()) : null;
        var leaf = copy ?? (X509Certificate2)certificate;
        bool matches;
        try
        {
            // RFC 5922 7: the names of a SIP domain certificate are compared whole, without wildcards; an IP address
            // is compared with the certificate's IP address entries.
            matches = leaf.MatchesHostname(serverName, allowWildcards: false, allowCommonName: true);
        }
        catch (CryptographicException)
        {
            matches = false;
        }
        catch (ArgumentException)
        {
            matches = false;
        }
        return matches || Refuse(certificate, verdict, $"its certificate does not name {serverName}");
    }

    private static bool Refuse(X509Certificate certificate, Verdict verdict, string reason)
    {
        // Taken now: the stream disposes the peer's certificate once the handshake has failed.
        verdict.Reason = reason;
        verdict.RefusedSubject = certificate.Subject;
        verdict.RefusedSha256 = certificate.GetCertHashString(HashAlgorithmName.SHA256);
        return false;
    }

    private static string Describe(X509Chain? chain, SslPolicyErrors errors)
    {
        var statuses = chain?.ChainStatus.Select(s => s.Status.ToString()).Distinct().ToArray() ?? [];
        return statuses.Length > 0 ? string.Join(", ", statuses) : errors.ToString();
    }

    private static X509ChainPolicy CustomRootPolicy(X509Certificate2Collection authorities, string usage, X509RevocationMode revocation)
    {
        var policy = new X509ChainPolicy
        {
            // Only these CAs: the machine's trust store plays no part.
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = revocation,
            // Never fetch an issuer a peer's certificate names: a peer must not make the edge connect anywhere.
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.AddRange(authorities);
        policy.ApplicationPolicy.Add(new Oid(usage));
        return policy;
    }

    /// <summary>What the validation callback of one handshake decided, for the error that follows a refusal.</summary>
    private sealed class Verdict
    {
        public string? Reason { get; set; }

        public string? RefusedSubject { get; set; }

        public string? RefusedSha256 { get; set; }
    }
}
