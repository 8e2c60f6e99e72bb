namespace CallState.Grains.Tests;

public sealed class LimitKeyTests
{
    [Theory]
    [InlineData("user/alice", LimitKind.User, "alice")]
    [InlineData("trunk/carrier-1", LimitKind.Trunk, "carrier-1")]
    [InlineData("key/+12345678", LimitKind.Key, "+12345678")]
    [InlineData("key/10.4.4.4", LimitKind.Key, "10.4.4.4")]
    [InlineData("key/a/b", LimitKind.Key, "a/b")]
    public void Valid_keys_parse_and_print_back(string text, LimitKind kind, string value)
    {
        Assert.True(LimitKey.TryParse(text, out var key, out var error));
        Assert.Null(error);
        Assert.Equal(new LimitKey(kind, value), key);
        Assert.Equal(text, key.ToString());
        Assert.Equal(key, LimitKey.Parse(text));
    }

    [Theory]
    [InlineData("group/sales", "unknown limit key prefix 'group'")]
    [InlineData("USER/alice", "unknown limit key prefix 'USER'")]
    [InlineData("alice", "has no prefix")]
    [InlineData("/alice", "has no prefix")]
    [InlineData("user/", "empty value")]
    [InlineData("key/", "empty value")]
    [InlineData("", "empty")]
    [InlineData(null, "empty")]
    public void Invalid_keys_are_reported_as_errors_not_exceptions(string? text, string expected)
    {
        Assert.False(LimitKey.TryParse(text, out var key, out var error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
        Assert.Equal(default, key);
    }

    [Fact]
    public void Too_long_value_is_an_error()
    {
        Assert.True(LimitKey.TryParse("key/" + new string('x', LimitKey.MaxValueLength), out _, out _));
        Assert.False(LimitKey.TryParse("key/" + new string('x', LimitKey.MaxValueLength + 1), out _, out var error));
        Assert.Contains("longer than", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_of_an_invalid_key_throws_FormatException_with_the_error()
    {
        var ex = Assert.Throws<FormatException>(() => LimitKey.Parse("group/x"));
        Assert.Contains("unknown limit key prefix", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Reject_reasons_have_the_documented_codes()
    {
        Assert.Equal("USER_TOTAL_LIMIT_REACHED", RejectReason.UserTotalLimitReached.ToCode());
        Assert.Equal("USER_OUT_LIMIT_REACHED", RejectReason.UserOutLimitReached.ToCode());
        Assert.Equal("TRUNK_TOTAL_LIMIT_REACHED", RejectReason.TrunkTotalLimitReached.ToCode());
        Assert.Equal("IN_PER_KEY_CAC_LIMIT_REACHED", RejectReason.InPerKeyCacLimitReached.ToCode());
        Assert.Equal("OUT_PER_KEY_CAC_LIMIT_REACHED", RejectReason.OutPerKeyCacLimitReached.ToCode());
        Assert.Equal("DIRECTION_BARRED", RejectReason.DirectionBarred.ToCode());
        foreach (var reason in Enum.GetValues<RejectReason>())
        {
            Assert.False(string.IsNullOrEmpty(reason.ToCode()));
        }
    }
}
