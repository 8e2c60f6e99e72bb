using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using CallState.Silo.Hosting;

namespace CallState.Grains.Tests.Security;

/// <summary>The check every TLS handshake makes of the peer's certificate, in both directions.</summary>
public sealed class PeerCertificateValidatorTests : IDisposable
{
    // What the platform reports for a CA outside the machine's trust store, and for a pod IP: set aside by design.
    private const SslPolicyErrors PlatformVerdict = SslPolicyErrors.RemoteCertificateChainErrors | SslPolicyErrors.RemoteCertificateNameMismatch;

    private readonly TestPki _cluster = new("validator-ca");
    private readonly TestPki _other = new("validator-other-ca");

    [Fact]
    public void A_certificate_the_cluster_ca_signed_is_accepted_whatever_the_platform_said()
    {
        var validator = new PeerCertificateValidator([_cluster.Authority], []);

        Assert.True(validator.Validate(_cluster.Issue("silo-1").Certificate, null, PlatformVerdict));
    }

    [Fact]
    public void Certificates_of_another_ca_the_ca_itself_and_expired_ones_are_refused()
    {
        var validator = new PeerCertificateValidator([_cluster.Authority], []);
        var expired = _cluster.Issue("expired", notBefore: DateTimeOffset.UtcNow.AddDays(-3), notAfter: DateTimeOffset.UtcNow.AddDays(-1));
        var notYet = _cluster.Issue("not-yet", notBefore: DateTimeOffset.UtcNow.AddDays(1), notAfter: DateTimeOffset.UtcNow.AddDays(2));

        Assert.False(validator.Validate(_other.Issue("intruder").Certificate, null, SslPolicyErrors.None));
        Assert.False(validator.Validate(_cluster.Authority, null, SslPolicyErrors.None));
        Assert.False(validator.Validate(expired.Certificate, null, SslPolicyErrors.None));
        Assert.False(validator.Validate(notYet.Certificate, null, SslPolicyErrors.None));
    }

    [Fact]
    public void A_certificate_the_machine_trusts_but_the_cluster_ca_did_not_sign_is_refused()
    {
        // A chain the platform found valid (SslPolicyErrors.None) still has to end at the cluster CA.
        var validator = new PeerCertificateValidator([_cluster.Authority], []);
        using var selfSigned = _other.Authority;

        Assert.False(validator.Validate(selfSigned, null, SslPolicyErrors.None));
    }

    [Fact]
    public void With_allowed_names_only_a_listed_common_or_dns_name_is_accepted()
    {
        var validator = new PeerCertificateValidator([_cluster.Authority], ["callstate-silo", "CALLSTATE-EDGE"]);

        Assert.True(validator.Validate(_cluster.Issue("callstate-silo").Certificate, null, PlatformVerdict));
        Assert.True(validator.Validate(_cluster.Issue("callstate-edge").Certificate, null, PlatformVerdict));
        Assert.False(validator.Validate(_cluster.Issue("someone-else").Certificate, null, PlatformVerdict));
    }

    [Fact]
    public void Two_cas_in_the_ca_file_are_both_trusted_so_a_ca_can_be_rotated()
    {
        var bundle = Path.Combine(_cluster.Directory, "bundle.crt");
        File.WriteAllText(bundle, _cluster.Authority.ExportCertificatePem() + "\n" + _other.Authority.ExportCertificatePem());
        var authorities = new X509Certificate2Collection();
        authorities.ImportFromPemFile(bundle);
        var validator = new PeerCertificateValidator(authorities, []);

        Assert.Equal(2, authorities.Count);
        Assert.True(validator.Validate(_cluster.Issue("old-ca-member").Certificate, null, PlatformVerdict));
        Assert.True(validator.Validate(_other.Issue("new-ca-member").Certificate, null, PlatformVerdict));
    }

    public void Dispose()
    {
        _cluster.Dispose();
        _other.Dispose();
    }
}
