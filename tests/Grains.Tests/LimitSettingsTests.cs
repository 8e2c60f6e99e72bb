namespace CallState.Grains.Tests;

public sealed class LimitSettingsTests
{
    private const string UserPath = "CallState:Limits:Users:alice";
    private const string TrunkPath = "CallState:Limits:Trunks:carrier";

    [Fact]
    public void User_outbound_larger_than_total_is_an_error_naming_both_fields()
    {
        var errors = new LimitSettings(Total: 2, Outbound: 3).Validate(LimitKind.User, UserPath).ToList();

        var error = Assert.Single(errors);
        Assert.Contains(UserPath + ":Outbound", error, StringComparison.Ordinal);
        Assert.Contains(UserPath + ":Total", error, StringComparison.Ordinal);
    }

    [Fact]
    public void User_inbound_larger_than_total_is_an_error()
    {
        var error = Assert.Single(new LimitSettings(Total: 1, Inbound: 2).Validate(LimitKind.User, UserPath));
        Assert.Contains(UserPath + ":Inbound", error, StringComparison.Ordinal);
    }

    [Fact]
    public void User_outbound_equal_to_total_or_without_total_is_valid()
    {
        Assert.Empty(new LimitSettings(Total: 3, Outbound: 3).Validate(LimitKind.User, UserPath));
        Assert.Empty(new LimitSettings(Outbound: 3).Validate(LimitKind.User, UserPath));
        Assert.Empty(new LimitSettings(Total: 0).Validate(LimitKind.User, UserPath));
        Assert.Empty(LimitSettings.Unlimited.Validate(LimitKind.User, UserPath));
    }

    [Fact]
    public void Trunk_with_outbound_larger_than_total_is_allowed_because_trunk_limits_are_independent()
    {
        Assert.Empty(new LimitSettings(Total: 2, Inbound: 5, Outbound: 3).Validate(LimitKind.Trunk, TrunkPath));
    }

    [Theory]
    [InlineData(-1, null, null, "Total")]
    [InlineData(null, -1, null, "Inbound")]
    [InlineData(null, null, -2, "Outbound")]
    public void Negative_values_are_errors_naming_the_field(int? total, int? inbound, int? outbound, string field)
    {
        foreach (var kind in new[] { LimitKind.User, LimitKind.Trunk })
        {
            var error = Assert.Single(new LimitSettings(total, inbound, outbound).Validate(kind, TrunkPath));
            Assert.StartsWith(TrunkPath + ":" + field + " must be 0 or more", error, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Every_error_is_reported_not_only_the_first()
    {
        var errors = new LimitSettings(Total: -1, Inbound: -1, Outbound: -1).Validate(LimitKind.Trunk, TrunkPath).ToList();
        Assert.Equal(3, errors.Count);
    }

    [Fact]
    public void Lease_options_validate_positive_leases()
    {
        Assert.Empty(new LeaseOptions().Validate("CallState:Leases"));
        var errors = new LeaseOptions { Early = TimeSpan.Zero, Confirmed = TimeSpan.FromSeconds(-1) }
            .Validate("CallState:Leases").ToList();
        Assert.Equal(2, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("CallState:Leases:Early", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Leases:Confirmed", StringComparison.Ordinal));
    }
}
