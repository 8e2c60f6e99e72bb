using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace CallState.Grains.Tests.Security;

/// <summary>
/// A throwaway certificate authority made at run time, and the certificates it signs, written as PEM (and PKCS#12) files
/// into a temporary directory the way a Kubernetes Secret mounts them.
/// </summary>
public sealed class TestPki : IDisposable
{
    private static readonly Oid ServerAuthentication = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuthentication = new("1.3.6.1.5.5.7.3.2");

    private readonly ECDsa _caKey;

    public TestPki(string name, string? directory = null)
    {
        Directory = directory ?? Path.Combine(Path.GetTempPath(), "callstate-pki-" + Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(Directory);
        _caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}, O=CallState tests", _caKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        var now = DateTimeOffset.UtcNow;
        Authority = request.CreateSelfSigned(now.AddDays(-30), now.AddDays(30));
        CaPath = Path.Combine(Directory, name + "-ca.crt");
        File.WriteAllText(CaPath, Authority.ExportCertificatePem());
    }

    public string Directory { get; }

    /// <summary>The CA certificate (with its key).</summary>
    public X509Certificate2 Authority { get; }

    /// <summary>The CA certificate as PEM, as a Secret's <c>ca.crt</c>.</summary>
    public string CaPath { get; }

    /// <summary>
    /// A certificate for <paramref name="name"/> (common name and DNS name) signed by this CA, as <c>name.crt</c> and
    /// <c>name.key</c>; by default valid now and for both server and client authentication.
    /// </summary>
    public IssuedCertificate Issue(string name, bool serverAuth = true, bool clientAuth = true, DateTimeOffset? notBefore = null, DateTimeOffset? notAfter = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}, O=CallState tests", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        var usages = new OidCollection();
        if (serverAuth)
        {
            usages.Add(ServerAuthentication);
        }

        if (clientAuth)
        {
            usages.Add(ClientAuthentication);
        }

        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(usages, critical: false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(name);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Authority, includeKeyIdentifier: true, includeIssuerAndSerial: false));

        var now = DateTimeOffset.UtcNow;
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        using var issued = request.Create(Authority, notBefore ?? now.AddMinutes(-5), notAfter ?? now.AddHours(12), serial);
        var certificate = issued.CopyWithPrivateKey(key);
        var certificatePath = Path.Combine(Directory, name + ".crt");
        var keyPath = Path.Combine(Directory, name + ".key");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return new IssuedCertificate(name, certificatePath, keyPath, certificate);
    }

    /// <summary>The certificate and key of <paramref name="issued"/> as a PKCS#12 file protected by <paramref name="password"/>.</summary>
    public string WritePfx(IssuedCertificate issued, string password, bool withKey = true)
    {
        var path = Path.Combine(Directory, issued.Name + (withKey ? ".pfx" : "-nokey.pfx"));
        if (withKey)
        {
            File.WriteAllBytes(path, issued.Certificate.Export(X509ContentType.Pkcs12, password));
        }
        else
        {
            using var publicOnly = X509CertificateLoader.LoadCertificate(issued.Certificate.RawData);
            File.WriteAllBytes(path, publicOnly.Export(X509ContentType.Pkcs12, password));
        }

        return path;
    }

    public void Dispose()
    {
        Authority.Dispose();
        _caKey.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // Another TestPki shares the directory and deletes it; the OS cleans temp files anyway.
        }
    }
}

/// <summary>A certificate a <see cref="TestPki"/> issued: its files and the certificate with its key.</summary>
public sealed record IssuedCertificate(string Name, string CertificatePath, string KeyPath, X509Certificate2 Certificate);
