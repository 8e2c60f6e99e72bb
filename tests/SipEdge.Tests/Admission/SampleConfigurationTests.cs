using System.Net;
using CallState.Silo.Limits;
using CallState.Sip.Proxy;
using CallState.SipEdge.Admission;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using static CallState.SipEdge.Tests.Admission.Fixtures;

namespace CallState.SipEdge.Tests.Admission;

/// <summary>
/// <c>samples/standalone/appsettings.json</c> (copied beside the tests) as the host binds it: the issue 4
/// acceptance situations classify as the issue says, and command-line keys adjust it the way the
/// integration tests do.
/// </summary>
public sealed class SampleConfigurationTests
{
    private static readonly string SamplePath = Path.Combine(AppContext.BaseDirectory, "samples", "standalone.appsettings.json");

    private static IConfigurationRoot Sample(params string[] commandLine) =>
        new ConfigurationBuilder().AddJsonFile(SamplePath, optional: false, reloadOnChange: false).AddCommandLine(commandLine).Build();

    private static ServiceProvider Services(IConfiguration configuration)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddOptions<SipProxyOptions>().Bind(configuration.GetSection(SipProxyOptions.SectionName));
        services.AddCallStateAdmission(configuration);
        return services.BuildServiceProvider();
    }

    private static CallClassifier Classifier(params string[] commandLine)
    {
        using var provider = Services(Sample(commandLine));
        return provider.GetRequiredService<CallClassifierSource>().Current;
    }

    [Fact]
    public void The_sample_binds_and_validates()
    {
        var configuration = Sample();
        var admission = configuration.GetSection(AdmissionOptions.SectionName).Get<AdmissionOptions>()!;
        var limits = configuration.GetSection(LimitsOptions.SectionName).Get<LimitsOptions>()!;
        var sip = configuration.GetSection(SipProxyOptions.SectionName).Get<SipProxyOptions>()!;

        Assert.Empty(admission.Validate(limits));
        Assert.Empty(limits.Validate());
        Assert.Empty(sip.Validate());
        Assert.Equal(new Grains.LimitSettings(2, null, 1), limits.Users["alice"].ToSettings());
        Assert.Equal(new Grains.LimitSettings(4, 3, 2), limits.Trunks["carrier"].ToSettings());
        Assert.NotNull(limits.DefaultUser);
        Assert.Equal(["127.0.0.1", "example.com"], admission.LocalDomains);
        Assert.Equal("Data Source=data/callstate.db", configuration["CallState:Storage:ConnectionString"]);
        Assert.Equal(("127.0.0.1", 5060), (sip.ListenAddress, sip.Port));
    }

    [Fact]
    public void Two_calls_from_alice_each_ask_for_her_outbound_slot()
    {
        var classifier = Classifier();

        var first = classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1", callId: "c1"));
        var second = classifier.Classify(Invite("alice@127.0.0.1", "carol@127.0.0.1", "127.0.0.1", callId: "c2"));

        Assert.Equal(["user/alice out", "user/bob in"], Requests(first));
        Assert.Equal(["user/alice out", "user/carol in"], Requests(second));
        Assert.NotEqual(first.CallKey, second.CallKey);
        Assert.Equal(IPEndPoint.Parse("127.0.0.1:5090"), first.NextHop);
    }

    [Fact]
    public void A_call_from_the_trunk_address_to_alice_is_trunk_inbound_and_alice_inbound()
    {
        var call = Classifier().Classify(Invite("sipp@127.0.0.2", "alice@127.0.0.1", "127.0.0.2"));

        Assert.Equal(["trunk/carrier in", "user/alice in"], Requests(call));
    }

    [Fact]
    public void A_plus_number_goes_to_the_carrier_next_hop()
    {
        var call = Classifier().Classify(Invite("bob@127.0.0.1", "+442071234567@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/bob out", "trunk/carrier out"], Requests(call));
        Assert.Equal(IPEndPoint.Parse("127.0.0.2:5090"), call.NextHop);
    }

    [Fact]
    public void A_plus_123_call_is_limited_per_from_user_to_three_and_stays_internal()
    {
        var call = Classifier().Classify(Invite("bob@127.0.0.1", "+1230001@127.0.0.1", "127.0.0.1"));

        Assert.Contains("key/bob in max 3", Requests(call));
        Assert.DoesNotContain(call.Limits, l => l.Key.StartsWith("trunk/", StringComparison.Ordinal));
        Assert.Equal(IPEndPoint.Parse("127.0.0.1:5090"), call.NextHop);
    }

    [Fact]
    public void The_per_key_rule_switches_to_the_source_ip_from_the_command_line()
    {
        var call = Classifier("--CallState:Admission:SetupRules:0:Key=SourceIp").Classify(Invite("bob@127.0.0.1", "+1230001@127.0.0.1", "127.0.0.1"));

        Assert.Contains("key/127.0.0.1 in max 3", Requests(call));
        Assert.DoesNotContain("key/bob in max 3", Requests(call));
    }

    [Fact]
    public void A_trunk_with_inbound_zero_from_the_command_line_still_classifies_inbound_calls()
    {
        var configuration = Sample("--CallState:Limits:Trunks:carrier:Inbound=0");
        using var provider = Services(configuration);

        var limits = provider.GetRequiredService<IOptions<LimitsOptions>>().Value;
        var call = provider.GetRequiredService<CallClassifierSource>().Current.Classify(Invite("sipp@127.0.0.2", "bob@127.0.0.1", "127.0.0.2"));

        Assert.Equal(0, limits.Trunks["carrier"].Inbound);
        Assert.Equal(["trunk/carrier in", "user/bob in"], Requests(call));
    }

    [Fact]
    public void An_emergency_call_is_marked()
    {
        Assert.True(Classifier().Classify(Invite("alice@127.0.0.1", "112@127.0.0.1", "127.0.0.1")).IsEmergency);
    }

    [Fact]
    public void An_invalid_configuration_fails_option_validation_naming_every_field()
    {
        using var provider = Services(Sample(
            "--CallState:Admission:Trunks:carrier:Sources:0=300.1.1.1",
            "--CallState:Limits:Trunks:carier:Inbound=1"));

        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<AdmissionOptions>>().Value);

        Assert.Equal(
        [
            "CallState:Admission:Trunks:carrier:Sources:0: '300.1.1.1' is not an IP address or CIDR",
            "CallState:Limits:Trunks:carier: no trunk 'carier' in CallState:Admission:Trunks, so no call can use these limits",
        ], ex.Failures);
    }

    [Fact]
    public void Reloaded_configuration_rebuilds_the_classifier()
    {
        var configuration = new ConfigurationBuilder()
            .AddJsonFile(SamplePath, optional: false, reloadOnChange: false)
            .AddInMemoryCollection()
            .Build();
        using var provider = Services(configuration);
        var source = provider.GetRequiredService<CallClassifierSource>();
        var before = source.Current;

        configuration["CallState:Admission:Routes:0:Prefix"] = "00";
        configuration.Reload();

        Assert.NotSame(before, source.Current);
        Assert.Equal(CallDestination.Trunk, source.Current.Classify(Invite("bob@127.0.0.1", "0044123@127.0.0.1", "127.0.0.1")).Destination);
        Assert.Equal(CallDestination.Trunk, before.Classify(Invite("bob@127.0.0.1", "+44123@127.0.0.1", "127.0.0.1")).Destination);
    }

    [Fact]
    public void A_reload_that_fails_validation_keeps_the_previous_classifier()
    {
        var configuration = new ConfigurationBuilder()
            .AddJsonFile(SamplePath, optional: false, reloadOnChange: false)
            .AddInMemoryCollection()
            .Build();
        using var provider = Services(configuration);
        var source = provider.GetRequiredService<CallClassifierSource>();
        var before = source.Current;

        configuration["CallState:Admission:Routes:0:Trunk"] = "nowhere";
        configuration.Reload();

        Assert.Same(before, source.Current);
    }

    [Fact]
    public void Users_from_a_users_file_are_local_users_of_the_classifier()
    {
        var directory = Directory.CreateTempSubdirectory("callstate-sample-").FullName;
        try
        {
            var file = Path.Combine(directory, "users.csv");
            File.WriteAllText(file, "name,total,outbound,inbound\n+15550100,1,1,\n");
            var configuration = Sample($"--CallState:Limits:UsersFile={file}");
            using var provider = Services(configuration);

            var call = provider.GetRequiredService<CallClassifierSource>().Current.Classify(Invite("+15550100@198.51.100.7", "bob@127.0.0.1", "198.51.100.7"));

            Assert.Equal(CallOrigin.LocalUser, call.Origin);
            Assert.Equal("user/+15550100", call.Limits[0].Key);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void An_edge_alone_validates_the_limits_and_the_users_file()
    {
        var directory = Directory.CreateTempSubdirectory("callstate-sample-").FullName;
        try
        {
            var file = Path.Combine(directory, "users.csv");
            File.WriteAllText(file, "bob,1,2,\n");
            using var provider = Services(Sample($"--CallState:Limits:UsersFile={file}", "--CallState:Limits:Users:alice:Outbound=3"));

            var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<LimitsOptions>>().Value);

            Assert.Equal(
            [
                $"CallState:Limits:UsersFile: {file}:1:bob:Outbound (2) must not exceed {file}:1:bob:Total (1).",
                "CallState:Limits:Users:alice:Outbound (3) must not exceed CallState:Limits:Users:alice:Total (2).",
            ], ex.Failures);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Registering_admission_twice_binds_the_lists_once()
    {
        var configuration = Sample();
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddOptions<SipProxyOptions>().Bind(configuration.GetSection(SipProxyOptions.SectionName));
        services.AddCallStateAdmission(configuration);
        services.AddCallStateAdmission(configuration);
        using var provider = services.BuildServiceProvider();

        Assert.Equal(3, provider.GetRequiredService<IOptions<AdmissionOptions>>().Value.Routes.Count);
    }
}
