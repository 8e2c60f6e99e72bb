using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Orleans.Connections.Security;

namespace CallState.Silo.Hosting;

/// <summary>
/// Mutual TLS on the cluster's connections (Microsoft.Orleans.Connections.Security, <c>CallState:Orleans:Tls</c>): silo to
/// silo, and edge (an Orleans client) to a silo's gateway.
/// </summary>
/// <remarks>
/// Both ends present their certificate and both verify the other's; a process without a certificate from the cluster CA
/// neither joins the cluster nor reaches a grain. A peer is accepted when its certificate chains to a CA of
/// <see cref="OrleansTlsOptions.CaPath"/> (a chain built with <see cref="X509ChainTrustMode.CustomRootTrust"/>: the
/// machine's trust store plays no part), is within its validity period, is not the CA itself and, when
/// <see cref="OrleansTlsOptions.AllowedSubjectNames"/> is set, names an allowed subject. The host name is not checked:
/// silos are reached at pod IPs that change with every restart, so the CA's signature is what makes a cluster member.
/// Revocation is not checked (a private CA publishes no revocation list) and the files are read once at start: issue
/// short-lived certificates (cert-manager) and let pods restart before they expire.
/// </remarks>
public static class ClusterSecurity
{
    /// <summary>Mutual TLS on the silo's listeners (silo and gateway) and on its connections to other silos; nothing when disabled.</summary>
    /// <exception cref="OptionsValidationException">The certificate, its key or the CA cannot be used; each failure names its field.</exception>
    public static ISiloBuilder UseCallStateTls(this ISiloBuilder silo, OrleansTlsOptions tls)
    {
        ArgumentNullException.ThrowIfNull(silo);
        ArgumentNullException.ThrowIfNull(tls);
        if (!tls.Enabled)
        {
            return silo;
        }

        var credentials = ClusterCredentials.LoadOrThrow(tls, silo: true);
        var validator = new PeerCertificateValidator(credentials.Authorities, tls.AllowedSubjectNames);
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => new ClusterTlsStartup(credentials, validator, sp.GetRequiredService<ILoggerFactory>()));
        silo.UseTls(credentials.Certificate, options => Configure(options, validator));
        return silo;
    }

    /// <summary>Mutual TLS on the client's connections to the silos' gateways; nothing when disabled.</summary>
    /// <exception cref="OptionsValidationException">The certificate, its key or the CA cannot be used; each failure names its field.</exception>
    public static IClientBuilder UseCallStateTls(this IClientBuilder client, OrleansTlsOptions tls)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(tls);
        if (!tls.Enabled)
        {
            return client;
        }

        var credentials = ClusterCredentials.LoadOrThrow(tls, silo: false);
        var validator = new PeerCertificateValidator(credentials.Authorities, tls.AllowedSubjectNames);
        client.Services.AddSingleton<ILifecycleParticipant<IClusterClientLifecycle>>(sp => new ClusterTlsStartup(credentials, validator, sp.GetRequiredService<ILoggerFactory>()));
        client.UseTls(credentials.Certificate, options => Configure(options, validator));
        return client;
    }

    private static void Configure(TlsOptions options, PeerCertificateValidator validator)
    {
        // Incoming: the peer must present a certificate. Outgoing (a silo calling a silo, an edge its gateway): present
        // ours, and fail at start rather than connect without it when it does not allow client authentication.
        options.RemoteCertificateMode = RemoteCertificateMode.RequireCertificate;
        options.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
        options.RemoteCertificateValidation = validator.Validate;
    }
}

/// <summary>This process's certificate with its private key, and the cluster CA certificates, loaded and checked.</summary>
public sealed class ClusterCredentials : IDisposable
{
    private const string ServerAuthenticationOid = "1.3.6.1.5.5.7.3.1";
    private const string ClientAuthenticationOid = "1.3.6.1.5.5.7.3.2";

    private ClusterCredentials(X509Certificate2 certificate, X509Certificate2Collection authorities)
    {
        Certificate = certificate;
        Authorities = authorities;
    }

    public X509Certificate2 Certificate { get; }

    /// <summary>The CA certificates of <see cref="OrleansTlsOptions.CaPath"/>: the only roots a peer may chain to.</summary>
    public X509Certificate2Collection Authorities { get; }

    /// <summary>Loads and checks the files of <paramref name="options"/>.</summary>
    /// <exception cref="OptionsValidationException">Something cannot be used; each failure names its field.</exception>
    public static ClusterCredentials LoadOrThrow(OrleansTlsOptions options, bool silo, string path = OrleansClusterOptions.SectionName + ":Tls")
    {
        var errors = new List<string>();
        return Load(options, silo, path, errors)
            ?? throw new OptionsValidationException(path, typeof(OrleansTlsOptions), errors);
    }

    /// <summary>
    /// Loads and checks the files of <paramref name="options"/> (under <paramref name="path"/>); null with
    /// <paramref name="errors"/> added, each naming its field, when something cannot be used. Secrets are never in a message.
    /// </summary>
    public static ClusterCredentials? Load(OrleansTlsOptions options, bool silo, string path, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(errors);
        var before = errors.Count;
        var authorities = LoadAuthorities(options.CaPath, path, errors);
        var certificate = LoadCertificate(options, path, errors);
        var certificateField = string.IsNullOrWhiteSpace(options.PfxPath) ? $"{path}:CertificatePath" : $"{path}:PfxPath";
        if (certificate is not null)
        {
            CheckUsage(certificate, silo, certificateField, errors);
            if (authorities is not null && !ChainsTo(certificate, authorities, out var problem))
            {
                errors.Add($"{certificateField}: the certificate ({certificate.Subject}) does not chain to a CA of {path}:CaPath ({problem}).");
            }
        }

        for (var i = 0; i < options.AllowedSubjectNames.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(options.AllowedSubjectNames[i]))
            {
                errors.Add($"{path}:AllowedSubjectNames:{i} must not be empty.");
            }
        }

        // Silos connect to each other with the same list: a silo whose own name is not on it would be refused by every peer.
        if (silo && certificate is not null && options.AllowedSubjectNames.Count > 0 && !PeerCertificateValidator.IsAllowed(certificate, options.AllowedSubjectNames))
        {
            errors.Add($"{path}:AllowedSubjectNames must include a name of this silo's own certificate ({string.Join(", ", PeerCertificateValidator.NamesOf(certificate))}), "
                + "since the other silos check it against the same list.");
        }

        if (errors.Count == before && certificate is not null && authorities is not null)
        {
            return new ClusterCredentials(certificate, authorities);
        }

        certificate?.Dispose();
        Dispose(authorities);
        return null;
    }

    /// <summary>
    /// Whether <paramref name="certificate"/> chains to one of <paramref name="authorities"/> and to nothing else, now,
    /// without being one of them; otherwise <paramref name="problem"/> says why.
    /// </summary>
    public static bool ChainsTo(X509Certificate2 certificate, X509Certificate2Collection authorities, out string problem)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        ArgumentNullException.ThrowIfNull(authorities);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        // A private CA publishes no revocation list (see the remarks on ClusterSecurity).
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        // Never fetch an issuer named in the certificate: a peer must not make this process connect anywhere.
        chain.ChainPolicy.DisableCertificateDownloads = true;
        try
        {
            if (!chain.Build(certificate))
            {
                var now = chain.ChainPolicy.VerificationTime;
                problem = now < certificate.NotBefore || now > certificate.NotAfter
                    ? $"not valid now: valid from {certificate.NotBefore:u} to {certificate.NotAfter:u}"
                    : string.Join(", ", chain.ChainStatus.Select(s => s.Status).Distinct());
                return false;
            }

            if (chain.ChainElements.Count < 2)
            {
                problem = "it is a CA certificate itself, not one the CA signed";
                return false;
            }

            problem = "";
            return true;
        }
        finally
        {
            // The elements are copies the chain made; never dispose what the caller passed in.
            foreach (var element in chain.ChainElements)
            {
                if (!ReferenceEquals(element.Certificate, certificate) && !authorities.Any(a => ReferenceEquals(a, element.Certificate)))
                {
                    element.Certificate.Dispose();
                }
            }
        }
    }

    public void Dispose()
    {
        Certificate.Dispose();
        Dispose(Authorities);
    }

    private static X509Certificate2Collection? LoadAuthorities(string? caPath, string path, List<string> errors)
    {
        var field = $"{path}:CaPath";
        if (string.IsNullOrWhiteSpace(caPath))
        {
            errors.Add($"{field} must name the cluster CA certificate (PEM) when {path}:Enabled is true.");
            return null;
        }

        if (!File.Exists(caPath))
        {
            errors.Add($"{field}: file '{caPath}' not found.");
            return null;
        }

        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(caPath);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            errors.Add($"{field}: could not read '{caPath}': {ex.Message}");
            Dispose(authorities);
            return null;
        }

        if (authorities.Count == 0)
        {
            errors.Add($"{field}: '{caPath}' holds no PEM certificate (-----BEGIN CERTIFICATE-----).");
            return null;
        }

        var valid = true;
        foreach (var authority in authorities)
        {
            if (authority.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is not { CertificateAuthority: true })
            {
                errors.Add($"{field}: '{authority.Subject}' in '{caPath}' is not a CA certificate (its basic constraints do not say CA).");
                valid = false;
            }
        }

        if (valid)
        {
            return authorities;
        }

        Dispose(authorities);
        return null;
    }

    private static X509Certificate2? LoadCertificate(OrleansTlsOptions options, string path, List<string> errors)
    {
        var pem = !string.IsNullOrWhiteSpace(options.CertificatePath);
        var pfx = !string.IsNullOrWhiteSpace(options.PfxPath);
        if (pem && pfx)
        {
            errors.Add($"{path}:CertificatePath and {path}:PfxPath are alternatives: set one of them.");
            return null;
        }

        if (!pem && !pfx)
        {
            errors.Add($"{path}:CertificatePath (PEM, with KeyPath) or {path}:PfxPath must be set when {path}:Enabled is true.");
            return null;
        }

        return pem ? LoadPem(options.CertificatePath!, options.KeyPath, path, errors) : LoadPfx(options.PfxPath!, options.PfxPassword, path, errors);
    }

    private static X509Certificate2? LoadPem(string certificatePath, string? keyPath, string path, List<string> errors)
    {
        var field = $"{path}:CertificatePath";
        if (!File.Exists(certificatePath))
        {
            errors.Add($"{field}: file '{certificatePath}' not found.");
            return null;
        }

        if (!string.IsNullOrWhiteSpace(keyPath) && !File.Exists(keyPath))
        {
            errors.Add($"{path}:KeyPath: file '{keyPath}' not found.");
            return null;
        }

        X509Certificate2 certificate;
        try
        {
            certificate = X509Certificate2.CreateFromPemFile(certificatePath, string.IsNullOrWhiteSpace(keyPath) ? null : keyPath);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            var keySource = string.IsNullOrWhiteSpace(keyPath) ? "the same file" : $"{path}:KeyPath ('{keyPath}')";
            errors.Add($"{field}: could not load a certificate from '{certificatePath}' with its private key from {keySource}: {ex.Message}");
            return null;
        }

        if (!certificate.HasPrivateKey)
        {
            errors.Add($"{field}: the certificate in '{certificatePath}' comes with no private key (set {path}:KeyPath).");
            certificate.Dispose();
            return null;
        }

        if (!OperatingSystem.IsWindows())
        {
            return certificate;
        }

        // SChannel cannot use the ephemeral key of a PEM file; a PKCS#12 round trip gives it one it can.
        using (certificate)
        {
            return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
        }
    }

    private static X509Certificate2? LoadPfx(string pfxPath, string? password, string path, List<string> errors)
    {
        var field = $"{path}:PfxPath";
        if (!File.Exists(pfxPath))
        {
            errors.Add($"{field}: file '{pfxPath}' not found.");
            return null;
        }

        X509Certificate2 certificate;
        try
        {
            certificate = X509CertificateLoader.LoadPkcs12FromFile(pfxPath, password);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            // The exception's message never holds the password; ours names the field instead of its value.
            errors.Add($"{field}: could not load '{pfxPath}' (not PKCS#12, or {path}:PfxPassword does not open it): {ex.Message}");
            return null;
        }

        if (!certificate.HasPrivateKey)
        {
            errors.Add($"{field}: '{pfxPath}' holds no private key for its certificate ({certificate.Subject}).");
            certificate.Dispose();
            return null;
        }

        return certificate;
    }

    private static void CheckUsage(X509Certificate2 certificate, bool silo, string field, List<string> errors)
    {
        var usages = certificate.Extensions.OfType<X509EnhancedKeyUsageExtension>().ToList();
        if (usages.Count == 0)
        {
            // No extended key usage: any purpose.
            return;
        }

        bool Allows(string oid) => usages.Any(u => u.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == oid));
        if (!Allows(ClientAuthenticationOid) || (silo && !Allows(ServerAuthenticationOid)))
        {
            var needed = silo ? "server and client authentication (1.3.6.1.5.5.7.3.1, 1.3.6.1.5.5.7.3.2)" : "client authentication (1.3.6.1.5.5.7.3.2)";
            errors.Add($"{field}: the certificate ({certificate.Subject}) must allow {needed} in its extended key usage: "
                + (silo ? "a silo accepts connections and opens them to other silos." : "an edge opens connections to the gateways."));
        }
    }

    private static void Dispose(X509Certificate2Collection? certificates)
    {
        foreach (var certificate in certificates ?? [])
        {
            certificate.Dispose();
        }
    }
}

/// <summary>Checks each peer's certificate during the TLS handshake, in both directions (see <see cref="ClusterSecurity"/>).</summary>
internal sealed class PeerCertificateValidator(X509Certificate2Collection authorities, IReadOnlyList<string> allowedNames)
{
    private volatile ILogger _logger = NullLogger.Instance;

    /// <summary>Set once the host's services exist (the TLS options are built before them).</summary>
    public void Attach(ILogger logger) => _logger = logger;

    public bool Validate(X509Certificate2 certificate, X509Chain? chain, SslPolicyErrors policyErrors)
    {
        // The platform's verdict (policyErrors) is set aside: it used the machine's trust store, which does not hold the
        // cluster CA, and the peer's host name, which a silo's pod IP never matches. Missing certificates never get here
        // (RemoteCertificateMode.RequireCertificate refuses them first).
        if (!ClusterCredentials.ChainsTo(certificate, authorities, out var problem))
        {
            ClusterSecurityLog.PeerRejected(_logger, certificate.Subject, certificate.Thumbprint, problem);
            return false;
        }

        if (allowedNames.Count > 0 && !IsAllowed(certificate, allowedNames))
        {
            ClusterSecurityLog.PeerRejected(_logger, certificate.Subject, certificate.Thumbprint, "no name of it is in AllowedSubjectNames");
            return false;
        }

        return true;
    }

    public static bool IsAllowed(X509Certificate2 certificate, IReadOnlyList<string> allowedNames) =>
        NamesOf(certificate).Any(name => allowedNames.Contains(name, StringComparer.OrdinalIgnoreCase));

    /// <summary>The certificate's common name and DNS subject alternative names.</summary>
    public static IEnumerable<string> NamesOf(X509Certificate2 certificate)
    {
        var commonName = certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
        if (!string.IsNullOrEmpty(commonName))
        {
            yield return commonName;
        }

        foreach (var extension in certificate.Extensions)
        {
            if (extension.Oid?.Value == "2.5.29.17")
            {
                foreach (var name in new X509SubjectAlternativeNameExtension(extension.RawData, extension.Critical).EnumerateDnsNames())
                {
                    yield return name;
                }
            }
        }
    }
}

/// <summary>Logs what the process presents and trusts once the host starts, and hands the validator its logger.</summary>
internal sealed class ClusterTlsStartup(ClusterCredentials credentials, PeerCertificateValidator validator, ILoggerFactory loggerFactory)
    : ILifecycleParticipant<ISiloLifecycle>, ILifecycleParticipant<IClusterClientLifecycle>
{
    public void Participate(ISiloLifecycle lifecycle) => lifecycle.Subscribe(nameof(ClusterTlsStartup), ServiceLifecycleStage.First, StartAsync);

    public void Participate(IClusterClientLifecycle lifecycle) => lifecycle.Subscribe(nameof(ClusterTlsStartup), ServiceLifecycleStage.First, StartAsync);

    private Task StartAsync(CancellationToken cancellationToken)
    {
        var logger = loggerFactory.CreateLogger(typeof(ClusterSecurity));
        validator.Attach(logger);
        if (logger.IsEnabled(LogLevel.Information))
        {
            var certificate = credentials.Certificate;
            var authorities = string.Join("; ", credentials.Authorities.Select(a => a.Subject));
            var notAfter = certificate.NotAfter.ToUniversalTime();
            ClusterSecurityLog.TlsOn(logger, certificate.Subject, certificate.Thumbprint, notAfter, authorities);
        }

        return Task.CompletedTask;
    }
}

internal static partial class ClusterSecurityLog
{
    [LoggerMessage(EventId = 2100, Level = LogLevel.Information,
        Message = "Cluster TLS on: presenting {Subject} ({Thumbprint}, valid until {NotAfter:u}); peers must present a certificate signed by {Authorities}")]
    public static partial void TlsOn(ILogger logger, string subject, string thumbprint, DateTime notAfter, string authorities);

    [LoggerMessage(EventId = 2101, Level = LogLevel.Warning, Message = "Refused a peer's certificate {Subject} ({Thumbprint}): {Reason}")]
    public static partial void PeerRejected(ILogger logger, string subject, string thumbprint, string reason);
}
