using System.Security.Cryptography.X509Certificates;
using CallState.Sip.Proxy;
using CallState.Sip.Transport;
using CallState.Testing;

namespace CallState.Sip.Tests.Proxy;

/// <summary>CallState:Sip:Tls settings are checked at start, files read as they will be used, each error naming its field.</summary>
public sealed class SipTlsOptionsTests : IDisposable
{
    private const string Prefix = "CallState:Sip:Tls:";

    private readonly TestPki _pki = new();

    public void Dispose() => _pki.Dispose();

    private SipProxyOptions Valid(Action<SipTlsOptions>? change = null)
    {
        var (certificate, key) = _pki.WritePem(_pki.Server(), "edge");
        var options = new SipProxyOptions
        {
            Tls = new SipTlsOptions
            {
                Enabled = true,
                CertificateFile = certificate,
                KeyFile = key,
                ClientCertificates = SipClientCertificateMode.Required,
                TrustedClientCas = _pki.WriteCa(_pki.Ca, "clients-ca"),
                ServerCaFile = _pki.WriteCa(_pki.Ca, "servers-ca"),
            },
        };
        change?.Invoke(options.Tls);
        return options;
    }

    private static string Single(SipProxyOptions options, string field)
    {
        var error = Assert.Single(options.Validate());
        Assert.StartsWith(Prefix + field, error, StringComparison.Ordinal);
        return error;
    }

    [Fact]
    public void Valid_settings_pass_and_disabled_settings_are_not_looked_at()
    {
        Assert.Empty(Valid().Validate());
        Assert.Empty(new SipProxyOptions { Tls = new SipTlsOptions { Enabled = false, CertificateFile = "/nonexistent", Port = 0 } }.Validate());
    }

    [Fact]
    public void Missing_or_conflicting_certificate_settings_name_their_fields()
    {
        Single(Valid(t => t.CertificateFile = Path.Combine(_pki.Directory, "missing.crt")), "CertificateFile: file '");
        Single(Valid(t => t.KeyFile = Path.Combine(_pki.Directory, "missing.key")), "KeyFile: file '");
        Assert.Contains("PfxFile must be set", Single(Valid(t => t.CertificateFile = null), "CertificateFile"), StringComparison.Ordinal);
        Assert.Contains("alternatives", Single(Valid(t => t.PfxFile = t.CertificateFile), "CertificateFile"), StringComparison.Ordinal);
    }

    [Fact]
    public void A_key_that_does_not_match_the_certificate_is_named_with_the_certificate()
    {
        var (_, otherKey) = _pki.WritePem(_pki.Server("other.example.test"), "other");
        var error = Single(Valid(t => t.KeyFile = otherKey), "CertificateFile");
        Assert.Contains("KeyFile", error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_certificate_not_valid_now_or_not_for_servers_is_refused()
    {
        var options = Valid();
        var errors = new List<string>();
        options.Tls.Validate(Prefix, errors, timeProvider: new FakeTimeProvider(DateTimeOffset.UtcNow.AddYears(2)));
        Assert.Contains("is not valid now", Assert.Single(errors), StringComparison.Ordinal);

        var (clientOnly, key) = _pki.WritePem(_pki.Client(), "client-only");
        Assert.Contains("server authentication", Single(Valid(t => (t.CertificateFile, t.KeyFile) = (clientOnly, key)), "CertificateFile"), StringComparison.Ordinal);
    }

    [Fact]
    public void Client_certificates_need_a_file_of_CA_certificates()
    {
        Assert.Contains("Required", Single(Valid(t => t.TrustedClientCas = null), "TrustedClientCas"), StringComparison.Ordinal);
        var (leaf, _) = _pki.WritePem(_pki.Client(), "not-a-ca");
        Assert.Contains("not a CA certificate", Single(Valid(t => t.TrustedClientCas = leaf), "TrustedClientCas"), StringComparison.Ordinal);
        Single(Valid(t => t.ServerCaFile = Path.Combine(_pki.Directory, "missing-ca.crt")), "ServerCaFile");
        Assert.Empty(Valid(t => (t.ClientCertificates, t.TrustedClientCas) = (SipClientCertificateMode.None, null)).Validate());
    }

    [Fact]
    public void The_tls_port_must_differ_from_the_tcp_port()
    {
        var options = Valid(t => t.Port = 5060);
        Single(options, "Port");
        options.Tcp = false;
        Assert.Empty(options.Validate());
    }

    [Fact]
    public void A_pfx_file_loads_with_its_password_and_a_wrong_password_is_named_without_its_value()
    {
        var pfx = Path.Combine(_pki.Directory, "edge.pfx");
        File.WriteAllBytes(pfx, _pki.Server().Export(X509ContentType.Pkcs12, "right-password"));

        Assert.Empty(Valid(t => (t.CertificateFile, t.KeyFile, t.PfxFile, t.PfxPassword) = (null, null, pfx, "right-password")).Validate());
        var error = Single(Valid(t => (t.CertificateFile, t.KeyFile, t.PfxFile, t.PfxPassword) = (null, null, pfx, "wrong-password")), "PfxFile");
        Assert.Contains("PfxPassword", error, StringComparison.Ordinal);
        Assert.DoesNotContain("wrong-password", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Tls_alone_is_enough_of_a_transport()
    {
        var options = Valid();
        options.Udp = false;
        options.Tcp = false;
        Assert.Empty(options.Validate());
        options.Tls.Enabled = false;
        Assert.Contains(options.Validate(), e => e.StartsWith("CallState:Sip:Udp/Tcp/Tls:Enabled", StringComparison.Ordinal));
    }
}
