using CallState.Grains;
using CallState.Silo.Limits;
using CallState.SipEdge.Admission;
using Microsoft.Extensions.Configuration;

namespace CallState.SipEdge.Tests.Limits;

/// <summary>Call rates in configuration and their refusals' response (docs/policies.md, "Call rates").</summary>
public sealed class RateConfigurationTests
{
    private static IConfiguration Configuration(params (string Key, string Value)[] values) =>
        new ConfigurationBuilder().AddInMemoryCollection(values.Select(v => new KeyValuePair<string, string?>(v.Key, v.Value))).Build();

    [Fact]
    public void Rates_bind_from_configuration_into_the_users_and_trunks_limits()
    {
        var configuration = Configuration(
            ("CallState:Limits:Users:bob:OutboundRate", "10"),
            ("CallState:Limits:Users:bob:OutboundBurst", "5"),
            ("CallState:Limits:Trunks:carrier:TotalRate", "2.5"));
        var options = configuration.GetSection(LimitsOptions.SectionName).Get<LimitsOptions>()!;

        Assert.Empty(LimitsConfigurationValidator.Find(configuration));
        Assert.Empty(options.Validate());
        Assert.Equal(new LimitSettings(OutboundRate: 10, OutboundBurst: 5), new ConfiguredLimits(options).GetLimits(LimitKey.User("bob")));
        Assert.Equal(new LimitSettings(TotalRate: 2.5), new ConfiguredLimits(options).GetLimits(LimitKey.Trunk("carrier")));
    }

    [Fact]
    public void A_rate_or_burst_that_is_not_a_number_stops_start_up_naming_the_field()
    {
        var errors = LimitsConfigurationValidator.Find(Configuration(
            ("CallState:Limits:Users:bob:OutboundRate", "fast"),
            ("CallState:Limits:Users:bob:OutboundBurst", "1.5"),
            ("CallState:Limits:Trunks:carrier:InboundRate", "0.5"))).ToList();

        Assert.Equal(
            [
                "CallState:Limits:Users:bob:OutboundBurst: '1.5' is not a whole number (leave it out for unlimited)",
                "CallState:Limits:Users:bob:OutboundRate: 'fast' is not a number of calls per second (leave it out for no rate limit)",
            ],
            errors.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void An_invalid_rate_is_named_by_its_field()
    {
        var options = new LimitsOptions { Trunks = { ["carrier"] = new LimitValues { InboundRate = 0, InboundBurst = 3 } } };

        var error = Assert.Single(options.Validate());
        Assert.StartsWith("CallState:Limits:Trunks:carrier:InboundRate must be more than 0", error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_rates_refusal_gets_480_with_retry_after_and_cause_34_by_default_and_never_503()
    {
        Assert.Equal(new SipRejection(480, "Temporarily Unavailable", 34, true), SipRejection.Default(RejectionCategory.RateLimit));
        foreach (var reason in Enum.GetValues<RejectReason>().Where(r => r.IsRate()))
        {
            Assert.Equal(RejectionCategory.RateLimit, SipRejection.CategoryOf(reason, Direction.Outbound));
        }

        Assert.Equal(RejectionCategory.UserLimit, SipRejection.CategoryOf(RejectReason.UserOutLimitReached, Direction.Outbound));
        var errors = new AdmissionOptions { RejectCodes = new RejectCodesOptions { RateLimit = new RejectionOptions { Status = 503 } } }.Validate();
        Assert.Contains(errors, e => e.Contains("RejectCodes:RateLimit:Status: 503 would make the caller avoid this whole edge", StringComparison.Ordinal));
    }

    [Fact]
    public void A_configured_rate_limit_response_overrides_the_default_field_by_field()
    {
        var codes = new RejectCodesOptions { RateLimit = new RejectionOptions { Q850Cause = 63 } };

        Assert.Equal(new SipRejection(480, "Temporarily Unavailable", 63, true), RejectCodesOptions.Resolve(RejectionCategory.RateLimit, codes));
        Assert.Equal(new SipRejection(486, "Busy Here", 17, false), RejectCodesOptions.Resolve(RejectionCategory.UserLimit, codes));
    }

    [Fact]
    public void Rate_reason_codes_are_stable()
    {
        Assert.Equal("USER_OUT_RATE_LIMIT_REACHED", RejectReason.UserOutRateLimitReached.ToCode());
        Assert.Equal("USER_IN_RATE_LIMIT_REACHED", RejectReason.UserInRateLimitReached.ToCode());
        Assert.Equal("USER_TOTAL_RATE_LIMIT_REACHED", RejectReason.UserTotalRateLimitReached.ToCode());
        Assert.Equal("TRUNK_IN_RATE_LIMIT_REACHED", RejectReason.TrunkInRateLimitReached.ToCode());
        Assert.Equal("TRUNK_OUT_RATE_LIMIT_REACHED", RejectReason.TrunkOutRateLimitReached.ToCode());
        Assert.Equal("TRUNK_TOTAL_RATE_LIMIT_REACHED", RejectReason.TrunkTotalRateLimitReached.ToCode());
        Assert.Equal("IN_PER_KEY_RATE_LIMIT_REACHED", RejectReason.InPerKeyRateLimitReached.ToCode());
        Assert.Equal("OUT_PER_KEY_RATE_LIMIT_REACHED", RejectReason.OutPerKeyRateLimitReached.ToCode());
        Assert.False(RejectReason.DirectionBarred.IsRate());
    }
}
