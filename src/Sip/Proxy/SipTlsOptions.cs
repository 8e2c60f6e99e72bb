using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using CallState.Sip.Transport;

namespace CallState.Sip.Proxy;

/// <summary>
/// SIP over TLS (RFC 3261 26.2; configuration section <c>CallState:Sip:Tls</c>): a TLS listener on its own port beside
/// the UDP and TCP ones, and TLS to next hops named with <c>sips:</c> or <c>;transport=tls</c>. See docs/security.md.
/// </summary>
public sealed class SipTlsOptions
{
    private const string ServerAuthenticationOid = "1.3.6.1.5.5.7.3.1";

    /// <summary>Starts the TLS listener (and allows TLS to next hops). Off by default.</summary>
    public bool Enabled { get; set; }

    /// <summary>Port of the TLS listener, on <see cref="SipProxyOptions.ListenAddress"/> (RFC 3261 26.2.2: 5061 by default).</summary>
    public int Port { get; set; } = 5061;

    /// <summary>Port put in this edge's Via on requests sent over TLS; defaults to <see cref="Port"/>.</summary>
    public int? ViaPort { get; set; }

    /// <summary>Port put in the Record-Route entry for the TLS side of a call (the load balancer's TLS port); defaults to <see cref="Port"/>.</summary>
    public int? AdvertisedPort { get; set; }

    /// <summary>This edge's certificate, PEM; intermediate CA certificates may follow it in the file. Read again when it changes.</summary>
    public string? CertificateFile { get; set; }

    /// <summary>The private key of <see cref="CertificateFile"/>, PEM (unencrypted); without it the key is read from the certificate file.</summary>
    public string? KeyFile { get; set; }

    /// <summary>Instead of PEM files: a PKCS#12 file with the certificate and its key. Read again when it changes.</summary>
    public string? PfxFile { get; set; }

    /// <summary>Password of <see cref="PfxFile"/>; never logged nor put in an error message.</summary>
    public string? PfxPassword { get; set; }

    /// <summary>Whether peers connecting over TLS must present a client certificate (mutual TLS).</summary>
    public SipClientCertificateMode ClientCertificates { get; set; } = SipClientCertificateMode.None;

    /// <summary>PEM file of the CA certificates a client certificate must chain to; required unless <see cref="ClientCertificates"/> is None.</summary>
    public string? TrustedClientCas { get; set; }

    /// <summary>PEM file of the CA certificates a next hop's certificate must chain to; empty: the machine's trust store.</summary>
    public string? ServerCaFile { get; set; }

    /// <summary>Checks revocation (online) of peer certificates; off by default, as a private CA usually publishes no list.</summary>
    public bool CheckCertificateRevocation { get; set; }

    /// <summary>A TLS handshake not done within this time fails and closes its connection.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);

    internal int EffectiveViaPort => ViaPort ?? Port;

    internal int EffectiveAdvertisedPort => AdvertisedPort ?? Port;

    /// <summary>
    /// Adds every problem with these settings to <paramref name="errors"/>, each naming its field under
    /// <paramref name="prefix"/> (<c>CallState:Sip:Tls:</c>): the files are read and checked as they will be used.
    /// Nothing is checked when TLS is off. <paramref name="tcpPort"/> is the port the TCP listener takes on the same
    /// address, if it runs; <paramref name="timeProvider"/> tells whether the certificate is valid now.
    /// </summary>
    public void Validate(string prefix, List<string> errors, int? tcpPort = null, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(errors);
        if (!Enabled)
        {
            return;
        }
        using var loaded = Load(prefix, errors, tcpPort, timeProvider ?? TimeProvider.System);
    }

    /// <summary>The transport settings these options describe, with the certificate and CA files loaded.</summary>
    /// <exception cref="ArgumentException">A setting or file cannot be used; the message names each failing field.</exception>
    public SipTlsTransportOptions CreateTransportOptions(TimeProvider? timeProvider = null, string prefix = SipProxyOptions.SectionName + ":Tls:")
    {
        var errors = new List<string>();
        var loaded = Load(prefix, errors, tcpPort: null, timeProvider ?? TimeProvider.System);
        if (loaded is null)
        {
            throw new ArgumentException(string.Join("; ", errors));
        }
        return new SipTlsTransportOptions
        {
            Certificate = loaded.Certificate!,
            ClientCertificates = ClientCertificates,
            TrustedClientAuthorities = loaded.ClientAuthorities,
            ServerAuthorities = loaded.ServerAuthorities,
            CheckCertificateRevocation = CheckCertificateRevocation,
            HandshakeTimeout = HandshakeTimeout,
        };
    }

    private Loaded? Load(string prefix, List<string> errors, int? tcpPort, TimeProvider timeProvider)
    {
        var before = errors.Count;
        CheckPort(errors, prefix + nameof(Port), Port);
        if (ViaPort is { } via)
        {
            CheckPort(errors, prefix + nameof(ViaPort), via);
        }
        if (AdvertisedPort is { } advertised)
        {
            CheckPort(errors, prefix + nameof(AdvertisedPort), advertised);
        }
        if (tcpPort == Port)
        {
            errors.Add($"{prefix}{nameof(Port)}: {Port} is the TCP listener's port on the same address; TLS needs a port of its own (5061 by default)");
        }
        if (HandshakeTimeout <= TimeSpan.Zero)
        {
            errors.Add($"{prefix}{nameof(HandshakeTimeout)}: must be positive");
        }
        if (!Enum.IsDefined(ClientCertificates))
        {
            errors.Add($"{prefix}{nameof(ClientCertificates)}: must be None, Optional or Required");
        }

        var certificate = LoadCertificate(prefix, errors, timeProvider);
        X509Certificate2Collection? clientAuthorities = null;
        if (ClientCertificates is SipClientCertificateMode.Optional or SipClientCertificateMode.Required)
        {
            if (string.IsNullOrWhiteSpace(TrustedClientCas))
            {
                errors.Add($"{prefix}{nameof(TrustedClientCas)}: must name a PEM file of CA certificates when {prefix}{nameof(ClientCertificates)} is {ClientCertificates}");
            }
            else
            {
                clientAuthorities = LoadAuthorities(TrustedClientCas, prefix + nameof(TrustedClientCas), errors);
            }
        }
        var serverAuthorities = string.IsNullOrWhiteSpace(ServerCaFile) ? null : LoadAuthorities(ServerCaFile, prefix + nameof(ServerCaFile), errors);

        var loaded = new Loaded(certificate, clientAuthorities, serverAuthorities);
        if (errors.Count == before && certificate is not null)
        {
            return loaded;
        }
        loaded.Dispose();
        return null;
    }

    private SipTlsCertificateSource? LoadCertificate(string prefix, List<string> errors, TimeProvider timeProvider)
    {
        var pem = !string.IsNullOrWhiteSpace(CertificateFile);
        var pfx = !string.IsNullOrWhiteSpace(PfxFile);
        if (pem && pfx)
        {
            errors.Add($"{prefix}{nameof(CertificateFile)} and {prefix}{nameof(PfxFile)} are alternatives: set one of them");
            return null;
        }
        if (!pem && !pfx)
        {
            errors.Add($"{prefix}{nameof(CertificateFile)} (PEM, with {nameof(KeyFile)}) or {prefix}{nameof(PfxFile)} must be set when {prefix}{nameof(Enabled)} is true");
            return null;
        }
        if (!pem && !string.IsNullOrWhiteSpace(KeyFile))
        {
            errors.Add($"{prefix}{nameof(KeyFile)}: goes with {nameof(CertificateFile)}; a PKCS#12 file holds its own key");
            return null;
        }
        var field = prefix + (pem ? nameof(CertificateFile) : nameof(PfxFile));
        var path = pem ? CertificateFile! : PfxFile!;
        if (!File.Exists(path))
        {
            errors.Add($"{field}: file '{path}' not found");
            return null;
        }
        if (pem && !string.IsNullOrWhiteSpace(KeyFile) && !File.Exists(KeyFile))
        {
            errors.Add($"{prefix}{nameof(KeyFile)}: file '{KeyFile}' not found");
            return null;
        }

        SipTlsCertificateSource source;
        try
        {
            source = pem ? SipTlsCertificateSource.FromPem(path, KeyFile, timeProvider) : SipTlsCertificateSource.FromPfx(path, PfxPassword, timeProvider);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            // The exception's message never holds the password; ours names the fields instead of any secret.
            var from = pem
                ? $"with its private key from {(string.IsNullOrWhiteSpace(KeyFile) ? "the same file" : $"{prefix}{nameof(KeyFile)} ('{KeyFile}')")}"
                : $"(not PKCS#12, no private key, or {prefix}{nameof(PfxPassword)} does not open it)";
            errors.Add($"{field}: could not load a certificate from '{path}' {from}: {ex.Message}");
            return null;
        }

        var leaf = source.Certificate;
        var now = timeProvider.GetUtcNow().UtcDateTime;
        if (now > leaf.NotAfter.ToUniversalTime() || now < leaf.NotBefore.ToUniversalTime())
        {
            errors.Add($"{field}: the certificate ({leaf.Subject}) is not valid now: valid from {leaf.NotBefore.ToUniversalTime():u} to {leaf.NotAfter.ToUniversalTime():u}");
        }
        var usages = leaf.Extensions.OfType<X509EnhancedKeyUsageExtension>().ToList();
        if (usages.Count > 0 && !usages.Any(u => u.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == ServerAuthenticationOid)))
        {
            errors.Add($"{field}: the certificate ({leaf.Subject}) must allow server authentication ({ServerAuthenticationOid}) in its extended key usage");
        }
        return source;
    }

    private static X509Certificate2Collection? LoadAuthorities(string path, string field, List<string> errors)
    {
        if (!File.Exists(path))
        {
            errors.Add($"{field}: file '{path}' not found");
            return null;
        }
        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(path);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            errors.Add($"{field}: could not read '{path}': {ex.Message}");
            Dispose(authorities);
            return null;
        }
        if (authorities.Count == 0)
        {
            errors.Add($"{field}: '{path}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
            return null;
        }
        foreach (var authority in authorities)
        {
            if (authority.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is not { CertificateAuthority: true })
            {
                errors.Add($"{field}: '{authority.Subject}' in '{path}' is not a CA certificate (its basic constraints do not say CA)");
                Dispose(authorities);
                return null;
            }
        }
        return authorities;
    }

    private static void CheckPort(List<string> errors, string name, int port)
    {
        if (port is < 1 or > 65535)
        {
            errors.Add($"{name}: {port} is not a port (1-65535)");
        }
    }

    private static void Dispose(X509Certificate2Collection? certificates)
    {
        foreach (var certificate in certificates ?? [])
        {
            certificate.Dispose();
        }
    }

    private sealed record Loaded(SipTlsCertificateSource? Certificate, X509Certificate2Collection? ClientAuthorities, X509Certificate2Collection? ServerAuthorities) : IDisposable
    {
        public void Dispose()
        {
            Certificate?.Certificate.Dispose();
            SipTlsOptions.Dispose(ClientAuthorities);
            SipTlsOptions.Dispose(ServerAuthorities);
        }
    }
}
