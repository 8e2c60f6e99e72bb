using CallState.Sip.Proxy;

namespace CallState.Sip.Tests.Proxy;

/// <summary>
/// The edge's settings for real networks (docs/operations.md, "Edges in pods"): listening on all addresses needs the
/// address that goes in Via; the drain's length.
/// </summary>
public sealed class SipProxyOptionsTests
{
    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("::")]
    public void Listening_on_all_addresses_without_a_Via_host_fails_naming_the_field(string listen)
    {
        var error = Assert.Single(new SipProxyOptions { ListenAddress = listen }.Validate());
        Assert.StartsWith($"CallState:Sip:ViaHost: required when ListenAddress is '{listen}' (all addresses)", error, StringComparison.Ordinal);
        Assert.Single(new SipProxyOptions { ListenAddress = listen, ViaHost = " " }.Validate());
    }

    [Theory]
    [InlineData("0.0.0.0", "10.244.1.17", null)]
    [InlineData("::", "fd00::17", "sip.example.com")]
    [InlineData("0.0.0.0", "edge-0.edges.callstate.svc", "203.0.113.10")]
    [InlineData("127.0.0.1", null, null)]
    [InlineData("10.0.0.5", null, "203.0.113.10")]
    public void Listening_on_all_addresses_with_a_Via_host_or_on_one_address_is_valid(string listen, string? via, string? advertised)
    {
        Assert.Empty(new SipProxyOptions { ListenAddress = listen, ViaHost = via, AdvertisedHost = advertised }.Validate());
    }

    [Theory]
    [InlineData("0.0.0.0", "ViaHost")]
    [InlineData("::", "ViaHost")]
    [InlineData("[::]", "ViaHost")]
    public void An_unspecified_address_as_the_Via_host_is_refused(string via, string field)
    {
        var error = Assert.Single(new SipProxyOptions { ListenAddress = "0.0.0.0", ViaHost = via }.Validate());
        Assert.Equal($"CallState:Sip:{field}: '{via}' is not an address anyone can reach", error);
    }

    [Fact]
    public void An_unspecified_address_in_Record_Route_is_refused()
    {
        var error = Assert.Single(new SipProxyOptions { ListenAddress = "0.0.0.0", ViaHost = "10.244.1.17", AdvertisedHost = "0.0.0.0" }.Validate());
        Assert.Equal("CallState:Sip:AdvertisedHost: '0.0.0.0' is not an address anyone can reach", error);
    }

    [Fact]
    public void The_drain_defaults_to_fit_a_pods_default_grace_period_and_may_be_zero_but_not_negative()
    {
        Assert.Equal(TimeSpan.FromSeconds(25), new SipProxyOptions().DrainTimeout);
        Assert.Empty(new SipProxyOptions { DrainTimeout = TimeSpan.Zero }.Validate());
        Assert.Equal("CallState:Sip:DrainTimeout: must not be negative (was -00:00:01)",
            Assert.Single(new SipProxyOptions { DrainTimeout = TimeSpan.FromSeconds(-1) }.Validate()));
    }
}
