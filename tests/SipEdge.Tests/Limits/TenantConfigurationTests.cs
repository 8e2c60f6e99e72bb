using CallState.Grains;
using CallState.Silo.Limits;
using CallState.SipEdge.Admission;
using Microsoft.Extensions.Configuration;
using static CallState.SipEdge.Tests.Admission.Fixtures;

namespace CallState.SipEdge.Tests.Limits;

/// <summary>
/// Tenants and trunk reservations in configuration (docs/policies.md, "Tenants", "Guaranteed reservations"):
/// <c>samples/tenants/appsettings.json</c> binds, validates and classifies as documented, and each mistake is named by field.
/// </summary>
public sealed class TenantConfigurationTests
{
    private static readonly string SamplePath = Path.Combine(AppContext.BaseDirectory, "samples", "tenants.appsettings.json");

    private static (AdmissionOptions Admission, LimitsOptions Limits) Sample()
    {
        var configuration = new ConfigurationBuilder().AddJsonFile(SamplePath, optional: false, reloadOnChange: false).Build();
        return (configuration.GetSection(AdmissionOptions.SectionName).Get<AdmissionOptions>()!, configuration.GetSection(LimitsOptions.SectionName).Get<LimitsOptions>()!);
    }

    /// <summary>The limits as <c>key direction [tenant]</c>, in classification order.</summary>
    private static string[] Limits(CallClassification call) =>
        [.. call.Limits.Select(l => $"{l.Key} {(l.Direction == Direction.Inbound ? "in" : "out")}{(l.Tenant is { } t ? $" [{t}]" : "")}")];

    [Fact]
    public void The_tenants_sample_binds_and_validates()
    {
        var (admission, limits) = Sample();
        Assert.Empty(limits.Validate());
        Assert.Empty(admission.Validate(limits));
        Assert.Equal("a", limits.TenantOfDomain("SIP.A.example"));
        Assert.Equal("a", limits.TenantOfTrunk("a-pbx"));
        Assert.Null(limits.TenantOfTrunk("shared"));
        Assert.Equal(new TenantReservation(4, 6), limits.Trunks["shared"].ToReservations()!.Tenants["b"]);
        var configured = new ConfiguredLimits(limits);
        Assert.Equal(new LimitSettings(Total: 30, Outbound: 20, TotalRate: 10, TotalBurst: 20), configured.GetLimits(LimitKey.Tenant("a")));
        Assert.Equal(4, configured.GetLimits(LimitKey.User("alice@a.example")).Total);
        Assert.Equal(2, configured.GetLimits(LimitKey.User("alice")).Total);
        Assert.Equal(4, configured.GetReservations(LimitKey.Trunk("shared"))!.Tenants["a"].Guaranteed);
    }

    [Fact]
    public void A_users_key_carries_the_domain_of_its_tenant_and_each_trunk_names_the_tenant_on_the_other_side()
    {
        var (admission, limits) = Sample();
        var classifier = new CallClassifier(admission, limits);

        Assert.Equal(
            ["user/alice@a.example out", "trunk/shared out [a]", "tenant/a out"],
            Limits(classifier.Classify(Invite("alice@a.example", "+15550100@127.0.0.1", "127.0.0.1"))));
        Assert.Equal(
            ["user/alice@b.example out", "trunk/shared out [b]", "tenant/b out"],
            Limits(classifier.Classify(Invite("alice@b.example", "+15550100@127.0.0.1", "127.0.0.1"))));

        // A domain no tenant owns: the user part alone, as before tenants (Users:alice applies).
        Assert.Equal(
            ["user/alice out", "trunk/shared out"],
            Limits(classifier.Classify(Invite("alice@127.0.0.1", "+15550100@127.0.0.1", "127.0.0.1"))));

        // From the shared trunk to a tenant's user; from a tenant's own trunk out through the shared one.
        Assert.Equal(
            ["trunk/shared in [a]", "user/bob@a.example in", "tenant/a in"],
            Limits(classifier.Classify(Invite("+15550100@127.0.0.2", "bob@a.example", "127.0.0.2"))));
        Assert.Equal(
            ["trunk/a-pbx in", "trunk/shared out [a]", "tenant/a out"],
            Limits(classifier.Classify(Invite("100@127.0.0.3", "+15550100@127.0.0.1", "127.0.0.3"))));

        // Within one tenant the pool counts the call once.
        Assert.Equal(
            ["user/carol@sip.a.example out", "user/dave@a.example in", "tenant/a out"],
            Limits(classifier.Classify(Invite("carol@sip.a.example", "dave@a.example", "127.0.0.1"))));

        // An escaped '@' in a user part never names a tenant's user.
        Assert.Equal(
            ["user/alice%40a.example out", "user/bob in"],
            Limits(classifier.Classify(Invite("alice%40a.example@127.0.0.1", "bob@127.0.0.1", "127.0.0.1"))));
    }

    [Fact]
    public void Each_mistake_in_tenants_and_reservations_is_named_by_field()
    {
        var limits = new LimitsOptions
        {
            Users = { ["bob"] = new LimitValues { Reservations = new() { ["a"] = new ReservationValues { Guaranteed = 1 } } } },
            Tenants =
            {
                ["a"] = new TenantValues { Domains = ["a.example"], Total = -1 },
                ["b"] = new TenantValues { Domains = ["A.example"], Trunks = ["pbx"] },
                ["c"] = new TenantValues { Trunks = ["pbx"] },
            },
            Trunks =
            {
                ["shared"] = new LimitValues
                {
                    Total = 10,
                    Reservations = new()
                    {
                        ["a"] = new ReservationValues { Guaranteed = 6, Maximum = 5 },
                        ["b"] = new ReservationValues { Guaranteed = 5 },
                        ["nobody"] = new ReservationValues { Guaranteed = -1 },
                    },
                },
                ["open"] = new LimitValues { Reservations = new() { ["a"] = new ReservationValues { Guaranteed = 1 } } },
            },
        };

        var errors = limits.Validate().ToList();
        Assert.Contains("CallState:Limits:Trunks:shared:Reservations:a:Maximum (5) must not be below CallState:Limits:Trunks:shared:Reservations:a:Guaranteed (6).", errors);
        Assert.Contains("CallState:Limits:Trunks:shared:Reservations: the guarantees add up to 11, more than the trunk's Total (10).", errors);
        Assert.Contains("CallState:Limits:Trunks:shared:Reservations:nobody: no tenant 'nobody' is configured (CallState:Limits:Tenants).", errors);
        Assert.Contains("CallState:Limits:Trunks:shared:Reservations:nobody:Guaranteed must be 0 or more (was -1).", errors);
        Assert.Contains("CallState:Limits:Trunks:open:Reservations: guarantees need the trunk's Total (the capacity they divide).", errors);
        Assert.Contains("CallState:Limits:Users:bob:Reservations: only a trunk has reservations (CallState:Limits:Users:bob is not one).", errors);
        Assert.Contains("CallState:Limits:Tenants:a:Total must be 0 or more (was -1).", errors);
        Assert.Contains("CallState:Limits:Tenants:b:Domains:0: domain 'A.example' is already tenant 'a''s; a domain has one tenant.", errors);
        Assert.Contains(errors, e => e.StartsWith("CallState:Limits:Tenants:c:Trunks:0: trunk 'pbx' is already tenant 'b''s", StringComparison.Ordinal));
        Assert.Equal(9, errors.Count);
    }

    [Fact]
    public void A_value_that_is_not_a_whole_number_is_named_before_binding()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["CallState:Limits:Tenants:a:Total"] = "many",
            ["CallState:Limits:Trunks:shared:Reservations:a:Guaranteed"] = "four",
        }).Build();

        Assert.Equal(
            [
                "CallState:Limits:Tenants:a:Total: 'many' is not a whole number (leave it out for unlimited)",
                "CallState:Limits:Trunks:shared:Reservations:a:Guaranteed: 'four' is not a whole number (leave it out for unlimited)",
            ],
            LimitsConfigurationValidator.Find(configuration).Order(StringComparer.Ordinal));
    }
}
