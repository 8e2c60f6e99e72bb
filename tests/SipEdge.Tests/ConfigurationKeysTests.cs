using CallState.Silo.Hosting;
using Microsoft.Extensions.Configuration;

namespace CallState.SipEdge.Tests;

/// <summary>Keys nothing reads are reported at start, naming the key (and, for a removed one, what replaced it).</summary>
public sealed class ConfigurationKeysTests
{
    private static IReadOnlyList<string> Unknown(params (string Key, string Value)[] settings) =>
        ConfigurationKeys.FindUnknown(
            new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>(s.Key, s.Value))).Build(),
            EdgeHost.Sections);

    [Fact]
    public void The_standalone_sample_has_no_unknown_key()
    {
        var configuration = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "samples", "standalone.appsettings.json"), optional: false)
            .Build();

        Assert.Empty(ConfigurationKeys.FindUnknown(configuration, EdgeHost.Sections));
    }

    [Fact]
    public void Known_keys_in_every_section_dictionary_and_list_pass()
    {
        Assert.Empty(Unknown(
            ("CallState:Storage:Provider", "Sqlite"),
            ("CallState:Grains:Leases:Early", "00:03:00"),
            ("CallState:Limits:Users:alice:Total", "2"),
            ("CallState:Limits:DefaultUser:outbound", "1"),
            ("CallState:Orleans:Gateways:0", "127.0.0.1:30000"),
            ("CallState:Sip:NextHops:example.com", "127.0.0.1:5090"),
            ("CallState:Sip:Tls:CertificateFile", "/etc/callstate/tls.crt"),
            ("CallState:Sip:Tls:ClientCertificates", "Required"),
            ("CallState:Admission:Routes:0:Prefix", "+"),
            ("CallState:Admission:Trunks:carrier:Sources:0", "127.0.0.2"),
            ("CallState:Admission:Trunks:carrier:CertificateThumbprints:0", "3F2A9C0B7D41E5A8C6F1023B4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F70"),
            ("CallState:Admission:Trunks:carrier:CertificateNames:0", "sbc.carrier.example.net"),
            ("CallState:Admission:Trunks:carrier:RequireCertificate", "true"),
            ("Logging:LogLevel:Default", "Information")));
    }

    [Fact]
    public void A_misspelt_key_is_named_wherever_it_is()
    {
        var errors = Unknown(
            ("CallState:Limits:Users:bob:Outbnd", "3"),
            ("CallState:Admission:Routes:0:Prefx", "+"),
            ("CallState:Sip:Port:Extra", "1"),
            ("CallState:Sip:Tls:CertificatePath", "/etc/callstate/tls.crt"),
            ("CallState:Limit:Users:bob:Total", "3"));

        Assert.Equal(5, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("CallState:Limits:Users:bob:Outbnd ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Admission:Routes:0:Prefx ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Sip:Port:Extra ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Sip:Tls:CertificatePath ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Limit ", StringComparison.Ordinal));
    }

    [Fact]
    public void A_removed_key_names_what_replaced_it()
    {
        var errors = Unknown(
            ("CallState:Runtime:Leases:Early", "00:01:00"),
            ("CallState:Cluster:Bootstrap:0", "127.0.0.1:11111"),
            ("CallState:Admission:SiloUrl", "http://127.0.0.1:8081"));

        Assert.Contains(errors, e => e.StartsWith("CallState:Runtime is no longer read; use CallState:Grains", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Cluster is no longer read; use CallState:Orleans", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Admission:SiloUrl is no longer read; use CallState:Orleans:Gateways", StringComparison.Ordinal));
    }
}
