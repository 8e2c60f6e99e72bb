using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace CallState.Sip.Transport;

/// <summary>Whether a peer connecting over TLS must present a certificate of its own (mutual TLS).</summary>
public enum SipClientCertificateMode
{
    /// <summary>No client certificate is asked for.</summary>
    None,

    /// <summary>One is asked for; a peer without one is served, a peer with one that does not validate is refused.</summary>
    Optional,

    /// <summary>A peer without a valid client certificate is refused during the handshake.</summary>
    Required,
}

/// <summary>
/// TLS on a <see cref="SipTcpTransport"/> (RFC 3261 26.2: SIP over TLS is a TLS session on a TCP connection, framed like
/// TCP). Every connection, inbound and outbound, is a TLS connection; the transport keeps no plain ones.
/// </summary>
public sealed class SipTlsTransportOptions
{
    /// <summary>TLS 1.2 and 1.3 only: older versions are refused in both directions.</summary>
    public const SslProtocols Protocols = SslProtocols.Tls12 | SslProtocols.Tls13;

    /// <summary>The certificate this transport presents: to peers connecting to it, and to next hops that ask for one.</summary>
    public required SipTlsCertificateSource Certificate { get; init; }

    public SipClientCertificateMode ClientCertificates { get; init; }

    /// <summary>The CA certificates a client certificate must chain to (and to nothing else); required unless <see cref="ClientCertificates"/> is None.</summary>
    public X509Certificate2Collection? TrustedClientAuthorities { get; init; }

    /// <summary>The CA certificates a next hop's certificate must chain to; null trusts the machine's store instead.</summary>
    public X509Certificate2Collection? ServerAuthorities { get; init; }

    /// <summary>Checks revocation (CRL or OCSP, fetched online) of every peer certificate; a private CA usually publishes none.</summary>
    public bool CheckCertificateRevocation { get; init; }

    /// <summary>A handshake not done within this time fails and closes its connection.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(Certificate, nameof(Certificate));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(HandshakeTimeout, TimeSpan.Zero, nameof(HandshakeTimeout));
        if (ClientCertificates != SipClientCertificateMode.None && (TrustedClientAuthorities is null || TrustedClientAuthorities.Count == 0))
        {
            throw new ArgumentException($"{nameof(TrustedClientAuthorities)} must hold a CA certificate when {nameof(ClientCertificates)} is {ClientCertificates}.", nameof(TrustedClientAuthorities));
        }
    }
}
