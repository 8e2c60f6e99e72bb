using System.Text;
using CallState.Silo.Limits;
using CallState.SipEdge.Admission;
using Microsoft.Extensions.Configuration;
using static CallState.SipEdge.Tests.Admission.Fixtures;

namespace CallState.SipEdge.Tests.Admission;

public sealed class AdmissionOptionsTests
{
    private const string Json = """
        {
          "CallState": {
            "Admission": {
              "LocalDomains": [ "127.0.0.1", "example.com" ],
              "Trunks": {
                "carrier": {
                  "Sources": [ "127.0.0.2", "198.51.100.0/24", "2001:db8::/32" ],
                  "CertificateThumbprints": [ "3f:2a:9c:0b:7d:41:e5:a8:c6:f1:02:3b:4d:5e:6f:70:81:92:a3:b4:c5:d6:e7:f8:09:1a:2b:3c:4d:5e:6f:70" ],
                  "CertificateNames": [ "sbc.carrier.example.net" ],
                  "NextHop": "127.0.0.2:5090",
                  "RejectCodes": { "TrunkLimit": { "Status": 503 } }
                }
              },
              "Routes": [
                { "Prefix": "+", "Trunk": "carrier" },
                { "Prefix": "", "Upstream": "127.0.0.1:5090" }
              ],
              "DialPlan": [ { "Prefix": "+123", "Tags": "cacMax=3;class=gold" } ],
              "SetupRules": [ { "Prefix": "+123", "Key": "FromUser", "Max": "tag:cacMax", "Direction": "In" } ],
              "EmergencyNumbers": [ "112" ],
              "Deadline": "00:00:00.150",
              "FailOpen": true,
              "RetryAfterSeconds": 30,
              "RejectCodes": { "UserLimit": { "Status": 600, "Q850Cause": 17 } }
            }
          }
        }
        """;

    private static AdmissionOptions Bind(IConfiguration configuration)
    {
        var options = new AdmissionOptions();
        configuration.GetSection(AdmissionOptions.SectionName).Bind(options);
        return options;
    }

    private static IConfigurationRoot FromJson(string json, params string[] commandLine) =>
        new ConfigurationBuilder()
            .AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(json)))
            .AddCommandLine(commandLine)
            .Build();

    [Fact]
    public void Every_field_binds_from_json()
    {
        var options = Bind(FromJson(Json));

        Assert.Equal(["127.0.0.1", "example.com"], options.LocalDomains);
        var carrier = Assert.Single(options.Trunks);
        Assert.Equal("carrier", carrier.Key);
        Assert.Equal(["127.0.0.2", "198.51.100.0/24", "2001:db8::/32"], carrier.Value.Sources);
        Assert.Equal([Sha256Colons], carrier.Value.CertificateThumbprints);
        Assert.Equal(["sbc.carrier.example.net"], carrier.Value.CertificateNames);
        Assert.False(carrier.Value.RequireCertificate);
        Assert.Equal("127.0.0.2:5090", carrier.Value.NextHop);
        Assert.Equal(503, carrier.Value.RejectCodes?.TrunkLimit?.Status);
        Assert.Equal([("+", "carrier", null), ("", null, "127.0.0.1:5090")], options.Routes.Select(r => (r.Prefix ?? "", r.Trunk, r.Upstream)));
        Assert.Equal(("+123", "cacMax=3;class=gold"), (options.DialPlan[0].Prefix, options.DialPlan[0].Tags));
        var rule = Assert.Single(options.SetupRules);
        Assert.Equal(("+123", "FromUser", "tag:cacMax", "In"), (rule.Prefix, rule.Key, rule.Max, rule.Direction));
        Assert.Equal(["112"], options.EmergencyNumbers);
        Assert.Equal(TimeSpan.FromMilliseconds(150), options.Deadline);
        Assert.True(options.FailOpen);
        Assert.Equal(30, options.RetryAfterSeconds);
        Assert.Equal(600, options.RejectCodes.UserLimit?.Status);
        Assert.Empty(options.Validate());
    }

    [Fact]
    public void Collections_bind_from_command_line_keys_alone()
    {
        var configuration = new ConfigurationBuilder().AddCommandLine(
        [
            "--CallState:Admission:LocalDomains:0=example.com",
            "--CallState:Admission:Trunks:carrier:Sources:0=127.0.0.2",
            "--CallState:Admission:Trunks:carrier:Sources:1=10.0.0.0/8",
            "--CallState:Admission:Trunks:carrier:NextHop=127.0.0.2:5090",
            "--CallState:Admission:Routes:0:Prefix=+",
            "--CallState:Admission:Routes:0:Trunk=carrier",
            "--CallState:Admission:DialPlan:0:Prefix=+123",
            "--CallState:Admission:DialPlan:0:Tags=cacMax=3",
            "--CallState:Admission:SetupRules:0:Key=SourceIp",
            "--CallState:Admission:SetupRules:0:Max=tag:cacMax",
            "--CallState:Admission:SetupRules:0:Direction=Out",
            "--CallState:Admission:EmergencyNumbers:0=911",
            "--CallState:Admission:FailOpen=true",
        ]).Build();

        var options = Bind(configuration);

        Assert.Equal(["example.com"], options.LocalDomains);
        Assert.Equal(["127.0.0.2", "10.0.0.0/8"], options.Trunks["carrier"].Sources);
        Assert.Equal("carrier", options.Routes[0].Trunk);
        Assert.Equal("cacMax=3", options.DialPlan[0].Tags);
        Assert.Equal(("SourceIp", "tag:cacMax", "Out"), (options.SetupRules[0].Key, options.SetupRules[0].Max, options.SetupRules[0].Direction));
        Assert.Equal(["911"], options.EmergencyNumbers);
        Assert.True(options.FailOpen);
        Assert.Empty(options.Validate());
    }

    [Fact]
    public void A_command_line_key_overrides_one_field_of_a_json_list_element()
    {
        var options = Bind(FromJson(Json, "--CallState:Admission:SetupRules:0:Key=SourceIp", "--CallState:Admission:Trunks:carrier:Sources:0=127.0.0.9"));

        Assert.Equal(("SourceIp", "tag:cacMax", "In"), (options.SetupRules[0].Key, options.SetupRules[0].Max, options.SetupRules[0].Direction));
        Assert.Equal(["127.0.0.9", "198.51.100.0/24", "2001:db8::/32"], options.Trunks["carrier"].Sources);
    }

    [Fact]
    public void Defaults_follow_the_design()
    {
        var options = Bind(new ConfigurationBuilder().Build());

        Assert.Equal(TimeSpan.FromMilliseconds(200), options.Deadline);
        Assert.False(options.FailOpen);
        Assert.Equal(5, options.RetryAfterSeconds);
        Assert.Empty(options.Trunks);
        Assert.Empty(options.Routes);
        Assert.Empty(options.Validate());
    }

    [Fact]
    public void The_sample_like_configuration_is_valid_with_its_limits()
    {
        Assert.Empty(SampleAdmission().Validate(SampleLimits()));
    }

    private const string Sha256 = "3F2A9C0B7D41E5A8C6F1023B4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F70";

    private const string Sha256Colons = "3f:2a:9c:0b:7d:41:e5:a8:c6:f1:02:3b:4d:5e:6f:70:81:92:a3:b4:c5:d6:e7:f8:09:1a:2b:3c:4d:5e:6f:70";

    private const string Sha1 = "A94A8FE5CCB19BA61C4C0873D391E987982FBBD3";

    [Fact]
    public void A_trunk_known_by_its_certificate_alone_may_require_it_and_thumbprints_compare_without_colons_or_case()
    {
        var options = Bind(FromJson(Json,
            "--CallState:Admission:Trunks:carrier:RequireCertificate=true",
            "--CallState:Admission:Trunks:tls-only:CertificateThumbprints:0=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "--CallState:Admission:Trunks:tls-only:RequireCertificate=true"));

        Assert.True(options.Trunks["carrier"].RequireCertificate);
        Assert.Empty(options.Trunks["tls-only"].Sources);
        Assert.Empty(options.Validate());
        Assert.Equal(Sha256, AdmissionTrunkOptions.NormalizeThumbprint(Sha256Colons));
        Assert.Equal(Sha256, AdmissionTrunkOptions.NormalizeThumbprint(" " + Sha256.ToLowerInvariant() + " "));
        Assert.Null(AdmissionTrunkOptions.NormalizeThumbprint(Sha256 + "00"));
    }

    public static TheoryData<string, string> InvalidCases => new()
    {
        { "--CallState:Admission:Trunks:carrier:Sources:0=300.1.1.1", "CallState:Admission:Trunks:carrier:Sources:0: '300.1.1.1' is not an IP address or CIDR" },
        { "--CallState:Admission:Trunks:carrier:Sources:0=10.1", "CallState:Admission:Trunks:carrier:Sources:0: '10.1' is not an IP address or CIDR" },
        { "--CallState:Admission:Trunks:carrier:Sources:0=10.0.0.1/8", "CallState:Admission:Trunks:carrier:Sources:0: '10.0.0.1/8' has address bits set past the /8 prefix (did you mean 10.0.0.0/8?)" },
        { "--CallState:Admission:Trunks:carrier:Sources:0=10.0.0.0/33", "CallState:Admission:Trunks:carrier:Sources:0: '10.0.0.0/33' is not an IP address or CIDR (the prefix length must be 0-32)" },
        { "--CallState:Admission:Trunks:carrier:Sources:0=carrier.example.net", "CallState:Admission:Trunks:carrier:Sources:0: 'carrier.example.net' is not an IP address or CIDR" },
        { "--CallState:Admission:Trunks:carrier:NextHop=127.0.0.2", "CallState:Admission:Trunks:carrier:NextHop: '127.0.0.2' is not ip:port" },
        { "--CallState:Admission:Trunks:other:Sources:0=127.0.0.2", "CallState:Admission:Trunks:other:Sources:0: '127.0.0.2' is also a source of trunk 'carrier'; a source address must name one trunk" },
        { "--CallState:Admission:Trunks:idle:RejectCodes:TrunkLimit:Status=480", "CallState:Admission:Trunks:idle: the trunk has no Sources, CertificateThumbprints, CertificateNames or NextHop, so no call can use it" },
        { "--CallState:Admission:Trunks:carrier:CertificateThumbprints:0=3F2A9C0B7D41E5A8", "CallState:Admission:Trunks:carrier:CertificateThumbprints:0: '3F2A9C0B7D41E5A8' is not a SHA-256 thumbprint: 64 hex digits, colons allowed" },
        { "--CallState:Admission:Trunks:carrier:CertificateThumbprints:0=" + new string('g', 64), "CallState:Admission:Trunks:carrier:CertificateThumbprints:0: '" + new string('g', 64) + "' is not a SHA-256 thumbprint: 64 hex digits, colons allowed" },
        { "--CallState:Admission:Trunks:carrier:CertificateThumbprints:0=" + Sha1, "CallState:Admission:Trunks:carrier:CertificateThumbprints:0: '" + Sha1 + "' is not a SHA-256 thumbprint: 64 hex digits, colons allowed (this looks like a SHA-1 thumbprint; give the SHA-256 one)" },
        { "--CallState:Admission:Trunks:other:CertificateThumbprints:0=" + Sha256, "CallState:Admission:Trunks:other:CertificateThumbprints:0: this certificate is also trunk 'carrier''s; a certificate must name one trunk" },
        { "--CallState:Admission:Trunks:carrier:CertificateNames:1=sbc carrier", "CallState:Admission:Trunks:carrier:CertificateNames:1: 'sbc carrier' is not a DNS name (as in a certificate's subject alternative names, such as carrier.example.net)" },
        { "--CallState:Admission:Trunks:other:CertificateNames:0=SBC.carrier.example.net", "CallState:Admission:Trunks:other:CertificateNames:0: 'SBC.carrier.example.net' is also a certificate name of trunk 'carrier'; a certificate name must name one trunk" },
        { "--CallState:Admission:Trunks:pbx:RequireCertificate=true", "CallState:Admission:Trunks:pbx:RequireCertificate: true, but the trunk has no CertificateThumbprints or CertificateNames, so every call from it would be refused" },
        { "--CallState:Admission:LocalDomains:0=example.com:5060", "CallState:Admission:LocalDomains:0: 'example.com:5060' is not a host name or IP address (without port)" },
        { "--CallState:Admission:Routes:0:Upstream=127.0.0.1:5090", "CallState:Admission:Routes:0: set exactly one of Trunk and Upstream" },
        { "--CallState:Admission:Routes:0:Trunk=carier", "CallState:Admission:Routes:0:Trunk: no trunk 'carier' in CallState:Admission:Trunks" },
        { "--CallState:Admission:Routes:1:Upstream=pbx.local:5090", "CallState:Admission:Routes:1:Upstream: 'pbx.local:5090' is not ip:port" },
        { "--CallState:Admission:Routes:2:Prefix=+", "CallState:Admission:Routes:2:Prefix: prefix '+' is already routed by CallState:Admission:Routes:0" },
        { "--CallState:Admission:DialPlan:0:Tags=cacMax", "CallState:Admission:DialPlan:0:Tags: 'cacMax' is not name=value" },
        { "--CallState:Admission:DialPlan:0:Tags=cacMax=three", "CallState:Admission:DialPlan:0:Tags: tag 'cacMax' is 'three', not a whole number 0 or more (CallState:Admission:SetupRules:0 uses it as a maximum)" },
        { "--CallState:Admission:SetupRules:0:Key=FromHost", "CallState:Admission:SetupRules:0:Key: 'FromHost' is not FromUser, ToUser or SourceIp" },
        { "--CallState:Admission:SetupRules:0:Direction=Both", "CallState:Admission:SetupRules:0:Direction: 'Both' is not In or Out" },
        { "--CallState:Admission:SetupRules:0:Max=-1", "CallState:Admission:SetupRules:0:Max: '-1' is not tag:<name> or a whole number 0 or more" },
        { "--CallState:Admission:SetupRules:0:Max=tag:cacMx", "CallState:Admission:SetupRules:0:Max: no CallState:Admission:DialPlan entry sets tag 'cacMx', so this rule never applies" },
        { "--CallState:Admission:EmergencyNumbers:0= ", "CallState:Admission:EmergencyNumbers:0: empty; write the number, such as 112" },
        { "--CallState:Admission:Deadline=00:00:00", "CallState:Admission:Deadline: must be positive (was 00:00:00)" },
        { "--CallState:Admission:RetryAfterSeconds=0", "CallState:Admission:RetryAfterSeconds: must be between 1 and 86400 (was 0)" },
        { "--CallState:Admission:RejectCodes:UserLimit:Status=503", "CallState:Admission:RejectCodes:UserLimit:Status: 503 would make the caller avoid this whole edge for Retry-After (RFC 3261 21.5.4); a user or per-key limit must not use it" },
        { "--CallState:Admission:Trunks:carrier:RejectCodes:PerKeyLimit:Status=503", "CallState:Admission:Trunks:carrier:RejectCodes:PerKeyLimit:Status: 503 would make the caller avoid this whole edge for Retry-After (RFC 3261 21.5.4); a user or per-key limit must not use it" },
        { "--CallState:Admission:RejectCodes:RateLimit:Status=503", "CallState:Admission:RejectCodes:RateLimit:Status: 503 would make the caller avoid this whole edge for Retry-After (RFC 3261 21.5.4); a rate limit must not use it" },
        { "--CallState:Admission:RejectCodes:TrunkLimit:Status=487", "CallState:Admission:RejectCodes:TrunkLimit:Status: 487 answers a CANCEL (RFC 3261 9.2), never a refused call" },
        { "--CallState:Admission:RejectCodes:Unavailable:Status=200", "CallState:Admission:RejectCodes:Unavailable:Status: 200 is not a rejection status (400-699)" },
        { "--CallState:Admission:RejectCodes:OutgoingBarred:Status=700", "CallState:Admission:RejectCodes:OutgoingBarred:Status: 700 is not a rejection status (400-699)" },
        { "--CallState:Admission:RejectCodes:IncomingBarred:Q850Cause=128", "CallState:Admission:RejectCodes:IncomingBarred:Q850Cause: 128 is not a Q.850 cause (1-127, or 0 for no Reason header)" },
    };

    [Theory]
    [MemberData(nameof(InvalidCases))]
    public void Each_error_names_its_field(string commandLine, string expected)
    {
        var options = Bind(FromJson(Json, commandLine));

        var errors = options.Validate();

        Assert.Contains(expected, errors);
    }

    [Fact]
    public void Validation_reports_every_error_not_only_the_first()
    {
        var options = Bind(FromJson(Json,
            "--CallState:Admission:Trunks:carrier:Sources:0=300.1.1.1",
            "--CallState:Admission:Routes:1:Upstream=nowhere",
            "--CallState:Admission:SetupRules:0:Key=Nobody",
            "--CallState:Admission:Deadline=00:00:00"));

        var errors = options.Validate();

        Assert.Equal(4, errors.Count);
        Assert.All(errors, e => Assert.StartsWith("CallState:Admission:", e, StringComparison.Ordinal));
    }

    [Fact]
    public void Trunk_limits_without_an_admission_trunk_are_reported_against_the_limits_section()
    {
        var limits = SampleLimits();
        limits.Trunks["carier"] = new LimitValues { Inbound = 1 };

        var errors = SampleAdmission().Validate(limits);

        Assert.Equal(["CallState:Limits:Trunks:carier: no trunk 'carier' in CallState:Admission:Trunks, so no call can use these limits"], errors);
    }

    [Fact]
    public void A_route_to_a_trunk_without_a_next_hop_is_an_error()
    {
        var admission = SampleAdmission();
        admission.Trunks["carrier"].NextHop = null;

        Assert.Contains("CallState:Admission:Routes:0:Trunk: trunk 'carrier' has no NextHop, so calls cannot be routed to it", admission.Validate());
    }

    [Fact]
    public void Too_many_setup_rules_for_one_call_are_an_error()
    {
        var admission = SampleAdmission();
        for (var i = 0; i < 14; i++)
        {
            admission.SetupRules.Add(new SetupRule { Key = "ToUser", Max = "1", Direction = "In" });
        }

        Assert.Contains("CallState:Admission:SetupRules: at most 14 rules (a call touches at most 16 limits)", admission.Validate());
    }

    [Theory]
    [InlineData("cacMax=3", "cacMax", "3")]
    [InlineData(" cacMax = 3 ; class=gold ", "class", "gold")]
    [InlineData("CACMAX=3", "cacMax", "3")]
    public void Dial_plan_tags_parse_name_value_pairs(string text, string name, string value)
    {
        Assert.True(DialPlanEntry.TryParseTags(text, out var tags, out _));
        Assert.Equal(value, tags[name]);
    }

    [Theory]
    [InlineData("")]
    [InlineData("=3")]
    [InlineData("a=1;a=2")]
    [InlineData("a=")]
    public void Malformed_dial_plan_tags_are_refused(string text)
    {
        Assert.False(DialPlanEntry.TryParseTags(text, out _, out var error));
        Assert.NotNull(error);
    }
}
