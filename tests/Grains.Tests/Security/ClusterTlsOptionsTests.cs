using CallState.Silo;
using CallState.Silo.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace CallState.Grains.Tests.Security;

/// <summary><c>CallState:Orleans:Tls</c> is checked at start, files loaded; every error names its field and no secret.</summary>
public sealed class ClusterTlsOptionsTests : IDisposable
{
    private const string Tls = "CallState:Orleans:Tls";
    private const string Password = "s3cret-Pfx-pa55word";

    private readonly TestPki _pki = new("options-ca");
    private readonly TestPki _other = new("other-ca");

    [Fact]
    public void Pem_files_and_a_pfx_from_the_ca_pass_for_a_silo_and_an_edge()
    {
        var issued = _pki.Issue("silo");
        var pfx = _pki.WritePfx(issued, Password);

        Assert.Empty(Errors(silo: true, t => Pem(t, issued)));
        Assert.Empty(Errors(silo: false, t => Pem(t, issued)));
        Assert.Empty(Errors(silo: true, t => Pfx(t, pfx, Password)));
        Assert.Empty(Errors(silo: true, t =>
        {
            // The key in the certificate's file, as some tools write them.
            var combined = Path.Combine(_pki.Directory, "combined.pem");
            File.WriteAllText(combined, File.ReadAllText(issued.CertificatePath) + "\n" + File.ReadAllText(issued.KeyPath));
            t.CertificatePath = combined;
            t.CaPath = _pki.CaPath;
        }));
    }

    [Fact]
    public void Disabled_tls_checks_nothing()
    {
        var options = new OrleansClusterOptions();
        options.Tls.CertificatePath = "/nowhere/tls.crt";
        Assert.Empty(options.Validate(silo: true, environment: _ => null));
    }

    [Fact]
    public void Missing_files_are_named_by_their_field()
    {
        var issued = _pki.Issue("silo");
        var missing = Path.Combine(_pki.Directory, "missing.pem");

        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.CertificatePath = missing; }), $"{Tls}:CertificatePath: file '{missing}' not found");
        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.KeyPath = missing; }), $"{Tls}:KeyPath: file '{missing}' not found");
        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.CaPath = missing; }), $"{Tls}:CaPath: file '{missing}' not found");
        AssertOneError(Errors(silo: true, t => Pfx(t, missing, Password)), $"{Tls}:PfxPath: file '{missing}' not found");
    }

    [Fact]
    public void Enabled_tls_needs_a_ca_and_exactly_one_certificate_source()
    {
        var issued = _pki.Issue("silo");
        var pfx = _pki.WritePfx(issued, Password);

        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.CaPath = null; }), $"{Tls}:CaPath must name the cluster CA");
        AssertOneError(Errors(silo: true, t => t.CaPath = _pki.CaPath), $"{Tls}:CertificatePath (PEM, with KeyPath) or {Tls}:PfxPath must be set");
        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.PfxPath = pfx; }), $"{Tls}:CertificatePath and {Tls}:PfxPath are alternatives");
    }

    [Fact]
    public void A_certificate_that_cannot_be_loaded_with_its_private_key_is_refused()
    {
        var issued = _pki.Issue("silo");
        var another = _pki.Issue("another");
        var garbage = Path.Combine(_pki.Directory, "garbage.crt");
        File.WriteAllText(garbage, "not a certificate");

        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.KeyPath = null; }), $"{Tls}:CertificatePath: could not load");
        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.KeyPath = another.KeyPath; }), $"{Tls}:CertificatePath: could not load");
        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.CertificatePath = garbage; }), $"{Tls}:CertificatePath: could not load");
        AssertOneError(Errors(silo: true, t => Pfx(t, _pki.WritePfx(issued, Password, withKey: false), Password)), $"{Tls}:PfxPath: '");
    }

    [Fact]
    public void A_wrong_pfx_password_is_named_by_its_field_and_never_shown()
    {
        var pfx = _pki.WritePfx(_pki.Issue("silo"), Password);

        var errors = Errors(silo: true, t => Pfx(t, pfx, "wrong-" + Password));

        AssertOneError(errors, $"{Tls}:PfxPath: could not load '{pfx}' (not PKCS#12, or {Tls}:PfxPassword does not open it)");
        Assert.DoesNotContain(Password, errors[0], StringComparison.Ordinal);
    }

    [Fact]
    public void The_ca_file_must_hold_ca_certificates()
    {
        var issued = _pki.Issue("silo");
        var garbage = Path.Combine(_pki.Directory, "garbage-ca.crt");
        File.WriteAllText(garbage, "no PEM here");

        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.CaPath = issued.CertificatePath; }), $"{Tls}:CaPath: 'CN=silo, O=CallState tests' in '{issued.CertificatePath}' is not a CA certificate");
        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.CaPath = garbage; }), $"{Tls}:CaPath: '{garbage}' holds no PEM certificate");
    }

    [Fact]
    public void The_certificate_must_chain_to_the_ca_and_be_valid_now()
    {
        var foreign = _other.Issue("foreign");
        var expired = _pki.Issue("expired", notBefore: DateTimeOffset.UtcNow.AddDays(-10), notAfter: DateTimeOffset.UtcNow.AddDays(-1));

        AssertOneError(Errors(silo: true, t => { Pem(t, foreign); t.CaPath = _pki.CaPath; }), $"{Tls}:CertificatePath: the certificate (CN=foreign, O=CallState tests) does not chain to a CA of {Tls}:CaPath");
        AssertOneError(Errors(silo: true, t => Pem(t, expired)), $"{Tls}:CertificatePath: the certificate (CN=expired, O=CallState tests) does not chain to a CA of {Tls}:CaPath (not valid now");
    }

    [Fact]
    public void A_silo_needs_server_and_client_authentication_an_edge_client_authentication()
    {
        var serverOnly = _pki.Issue("server-only", clientAuth: false);
        var clientOnly = _pki.Issue("client-only", serverAuth: false);

        AssertOneError(Errors(silo: true, t => Pem(t, serverOnly)), $"{Tls}:CertificatePath: the certificate (CN=server-only, O=CallState tests) must allow server and client authentication");
        AssertOneError(Errors(silo: false, t => Pem(t, serverOnly)), $"{Tls}:CertificatePath: the certificate (CN=server-only, O=CallState tests) must allow client authentication");
        AssertOneError(Errors(silo: true, t => Pem(t, clientOnly)), $"{Tls}:CertificatePath: the certificate (CN=client-only, O=CallState tests) must allow server and client authentication");
        Assert.Empty(Errors(silo: false, t => Pem(t, clientOnly)));
    }

    [Fact]
    public void Allowed_subject_names_must_not_be_empty_and_must_name_a_silo_itself()
    {
        var issued = _pki.Issue("silo-0");

        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.AllowedSubjectNames = ["edge"]; }), $"{Tls}:AllowedSubjectNames must include a name of this silo's own certificate (silo-0");
        AssertOneError(Errors(silo: true, t => { Pem(t, issued); t.AllowedSubjectNames = ["SILO-0", " "]; }), $"{Tls}:AllowedSubjectNames:1 must not be empty");
        // An edge only connects to silos: its own name need not be on its list.
        Assert.Empty(Errors(silo: false, t => { Pem(t, issued); t.AllowedSubjectNames = ["silo-1"]; }));
    }

    [Fact]
    public void The_silo_stops_at_registration_naming_the_field()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            [$"{Tls}:Enabled"] = "true",
            [$"{Tls}:CertificatePath"] = Path.Combine(_pki.Directory, "absent.crt"),
            [$"{Tls}:CaPath"] = _pki.CaPath,
            ["CallState:Orleans:Kubernetes"] = "false",
        }).Build();

        var failure = Assert.Throws<OptionsValidationException>(() => new ServiceCollection().AddCallStateSilo(configuration));

        Assert.Contains(failure.Failures, f => f.StartsWith($"{Tls}:CertificatePath: file ", StringComparison.Ordinal));
    }

    [Fact]
    public void Every_tls_and_kubernetes_key_is_a_known_setting()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            [$"{Tls}:Enabled"] = "true",
            [$"{Tls}:CertificatePath"] = "/etc/callstate/tls/tls.crt",
            [$"{Tls}:KeyPath"] = "/etc/callstate/tls/tls.key",
            [$"{Tls}:PfxPath"] = "/etc/callstate/tls/tls.pfx",
            [$"{Tls}:PfxPassword"] = Password,
            [$"{Tls}:CaPath"] = "/etc/callstate/tls/ca.crt",
            [$"{Tls}:AllowedSubjectNames:0"] = "callstate-silo",
            ["CallState:Orleans:Kubernetes"] = "auto",
        }).Build();

        Assert.Empty(ConfigurationKeys.FindUnknown(configuration, SiloHost.Sections));
        var bound = configuration.GetSection(OrleansClusterOptions.SectionName).Get<OrleansClusterOptions>()!;
        Assert.Equal(["callstate-silo"], bound.Tls.AllowedSubjectNames);
        Assert.Equal(Password, bound.Tls.PfxPassword);
    }

    public void Dispose()
    {
        _pki.Dispose();
        _other.Dispose();
    }

    private void Pem(OrleansTlsOptions tls, IssuedCertificate issued)
    {
        tls.CertificatePath = issued.CertificatePath;
        tls.KeyPath = issued.KeyPath;
        tls.CaPath = _pki.CaPath;
    }

    private void Pfx(OrleansTlsOptions tls, string path, string password)
    {
        tls.PfxPath = path;
        tls.PfxPassword = password;
        tls.CaPath = _pki.CaPath;
    }

    private static List<string> Errors(bool silo, Action<OrleansTlsOptions> configure)
    {
        var options = new OrleansClusterOptions { Gateways = ["127.0.0.1:30000"], Kubernetes = "false" };
        options.Tls.Enabled = true;
        configure(options.Tls);
        return options.Validate(silo, environment: _ => null).ToList();
    }

    private static void AssertOneError(List<string> errors, string start)
    {
        var error = Assert.Single(errors);
        Assert.StartsWith(start, error, StringComparison.Ordinal);
    }
}
