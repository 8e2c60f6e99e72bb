using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace CallState.Testing;

/// <summary>
/// Certificates made for one test: a CA, a second CA nobody trusts, and leaf certificates each signs (server ones for
/// 127.0.0.1 by IP subject alternative name, client ones for a trunk's DNS name), written as PEM files when asked.
/// </summary>
public sealed class TestPki : IDisposable
{
    private const string ServerAuthentication = "1.3.6.1.5.5.7.3.1";
    private const string ClientAuthentication = "1.3.6.1.5.5.7.3.2";

    private readonly List<X509Certificate2> _made = [];

    public TestPki()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("callstate-tls-").FullName;
        Ca = MakeCa("CN=CallState Test CA");
        OtherCa = MakeCa("CN=Someone Else's CA");
    }

    /// <summary>A fresh directory for this test's files, removed on dispose.</summary>
    public string Directory { get; }

    public X509Certificate2 Ca { get; }

    /// <summary>A CA that none of the tests' trust lists hold.</summary>
    public X509Certificate2 OtherCa { get; }

    /// <summary>
    /// A server certificate for 127.0.0.1 (and <paramref name="dns"/>), signed by <paramref name="issuer"/> (the CA by
    /// default); with <paramref name="alsoClient"/> it allows client authentication too.
    /// </summary>
    public X509Certificate2 Server(string commonName = "edge.example.test", X509Certificate2? issuer = null, IPAddress? ip = null, string? dns = null, bool alsoClient = false) =>
        Issue(commonName, issuer ?? Ca, alsoClient ? [ServerAuthentication, ClientAuthentication] : [ServerAuthentication], ip ?? IPAddress.Loopback, dns);

    /// <summary>A client certificate naming <paramref name="dns"/>, signed by <paramref name="issuer"/> (the CA by default).</summary>
    public X509Certificate2 Client(string dns = "trunk.example.test", X509Certificate2? issuer = null) =>
        Issue(dns, issuer ?? Ca, [ClientAuthentication], ip: null, dns);

    /// <summary>Writes the certificate and its key as PEM files; returns their paths.</summary>
    public (string Certificate, string Key) WritePem(X509Certificate2 certificate, string name)
    {
        var certificatePath = Path.Combine(Directory, name + ".crt");
        var keyPath = Path.Combine(Directory, name + ".key");
        WritePem(certificate, certificatePath, keyPath);
        return (certificatePath, keyPath);
    }

    /// <summary>Writes (or overwrites) the certificate and key files at the given paths.</summary>
    public static void WritePem(X509Certificate2 certificate, string certificatePath, string keyPath)
    {
        using var key = certificate.GetECDsaPrivateKey() ?? throw new InvalidOperationException("no private key");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>Writes the CA certificate (no key) as a PEM file; returns its path.</summary>
    public string WriteCa(X509Certificate2 ca, string name)
    {
        var path = Path.Combine(Directory, name + ".crt");
        File.WriteAllText(path, ca.ExportCertificatePem());
        return path;
    }

    public void Dispose()
    {
        foreach (var certificate in _made)
        {
            certificate.Dispose();
        }
        System.IO.Directory.Delete(Directory, recursive: true);
    }

    private X509Certificate2 MakeCa(string subject)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        var ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        _made.Add(ca);
        return ca;
    }

    private X509Certificate2 Issue(string commonName, X509Certificate2 issuer, string[] usages, IPAddress? ip, string? dns)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=" + commonName, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        var oids = new OidCollection();
        foreach (var usage in usages)
        {
            oids.Add(new Oid(usage));
        }
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(oids, critical: false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(issuer, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var names = new SubjectAlternativeNameBuilder();
        if (ip is not null)
        {
            names.AddIpAddress(ip);
        }
        if (dns is not null)
        {
            names.AddDnsName(dns);
        }
        request.CertificateExtensions.Add(names.Build());
        var serial = new byte[12];
        RandomNumberGenerator.Fill(serial);
        serial[0] &= 0x7f;
        using var signed = request.Create(issuer, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(30), serial);
        var certificate = signed.CopyWithPrivateKey(key);
        _made.Add(certificate);
        return certificate;
    }
}
