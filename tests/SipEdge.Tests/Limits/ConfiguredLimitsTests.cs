using CallState.Grains;
using CallState.Silo.Limits;

namespace CallState.SipEdge.Tests.Limits;

/// <summary>Which limits have limits of their own, so their stored rows stay while idle (docs/architecture.md, "Rows of idle limits").</summary>
public sealed class ConfiguredLimitsTests
{
    private static readonly ConfiguredLimits Limits = new(new LimitsOptions
    {
        DefaultUser = new LimitValues { Total = 10, Inbound = 5, Outbound = 5 },
        Users =
        {
            ["alice"] = new LimitValues { Total = 2, Outbound = 1 },
            ["plain"] = new LimitValues { Total = 10, Inbound = 5, Outbound = 5 },
        },
        Trunks =
        {
            ["carrier"] = new LimitValues { Inbound = 3 },
            ["open"] = new LimitValues(),
        },
    });

    [Theory]
    [InlineData("user/alice", true)]     // listed, with limits other than the default's
    [InlineData("user/plain", false)]    // listed with exactly the default's
    [InlineData("user/random-7", false)] // local only through DefaultUser
    [InlineData("trunk/carrier", true)]
    [InlineData("trunk/open", false)]    // listed without any limit
    [InlineData("trunk/unknown", false)]
    [InlineData("key/+15550100", false)] // per-key maxima come with each call
    public void A_key_has_limits_of_its_own_only_when_configuration_gives_it_some_other_than_the_default(string key, bool own) =>
        Assert.Equal(own, Limits.HasOwnLimits(LimitKey.Parse(key)));

    [Fact]
    public void Without_a_default_user_a_listed_user_with_limits_has_its_own()
    {
        var limits = new ConfiguredLimits(new LimitsOptions { Users = { ["bob"] = new LimitValues { Total = 1 } } });

        Assert.True(limits.HasOwnLimits(LimitKey.User("bob")));
        Assert.False(limits.HasOwnLimits(LimitKey.User("carol")));
    }
}
