using CallState.Grains;
using CallState.Silo.Limits;

namespace CallState.SipEdge.Tests.Limits;

/// <summary>The one form of a user name that limits are keyed by, and configured users found in it.</summary>
public sealed class UserNameTests
{
    [Theory]
    [InlineData("alice", "alice")]
    [InlineData("Alice", "alice")]
    [InlineData("%61lice", "alice")]
    [InlineData("%41LICE", "alice")]
    [InlineData("j%C3%BCrgen", "jürgen")]
    [InlineData("+1-234.567", "+1234567")]
    [InlineData("+1(234)567", "+1234567")]
    [InlineData("0-800-1234", "08001234")]
    [InlineData("*21#", "*21#")]
    [InlineData("carol.smith-jones", "carol.smith-jones")]
    [InlineData("a.b-1", "a.b-1")]
    [InlineData("%zz", "%zz")]
    [InlineData("100%", "100%")]
    [InlineData("%FF", "%ff")]
    [InlineData("", "")]
    public void Case_insensitive_normal_forms(string name, string expected) =>
        Assert.Equal(expected, UserName.Normalize(name, UserNameMatching.CaseInsensitive));

    [Theory]
    [InlineData("Alice", "Alice")]
    [InlineData("%41lice", "Alice")]
    [InlineData("+49-30-1234", "+49301234")]
    public void Case_sensitive_normal_forms_keep_the_case(string name, string expected) =>
        Assert.Equal(expected, UserName.Normalize(name, UserNameMatching.CaseSensitive));

    [Fact]
    public void A_configured_user_is_found_in_the_normal_form_whatever_its_spelling()
    {
        var options = new LimitsOptions { Users = { ["Alice"] = new LimitValues { Total = 2 }, ["+1-555-0100"] = new LimitValues { Total = 1 } } };
        var limits = new ConfiguredLimits(options);

        Assert.Equal(2, limits.GetLimits(LimitKey.Parse("user/alice")).Total);
        Assert.Equal(1, limits.GetLimits(LimitKey.Parse("user/+15550100")).Total);
        Assert.Null(options.FindUser("Alice"));
    }

    [Fact]
    public void Two_configured_users_that_normalize_alike_are_an_error_naming_both()
    {
        var options = new LimitsOptions { Users = { ["alice"] = new LimitValues { Total = 2 }, ["Alice"] = new LimitValues { Total = 3 } } };

        var error = Assert.Single(options.Validate());
        Assert.StartsWith("CallState:Limits:Users:Alice: the same user as CallState:Limits:Users:alice", error, StringComparison.Ordinal);

        options.UserNames = UserNameMatching.CaseSensitive;
        Assert.Empty(options.Validate());
    }
}
