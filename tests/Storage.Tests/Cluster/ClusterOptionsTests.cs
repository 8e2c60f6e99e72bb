using CallState.Runtime.Cluster;

namespace CallState.Storage.Tests.Cluster;

public sealed class ClusterOptionsTests
{
    [Theory]
    [InlineData("silo-0.callstate", "silo-0.callstate:11111")]
    [InlineData("silo-0.callstate:12000", "silo-0.callstate:12000")]
    [InlineData("10.0.0.7", "10.0.0.7:11111")]
    [InlineData("10.0.0.7:12000", "10.0.0.7:12000")]
    [InlineData("::1", "[::1]:11111")]
    [InlineData("[::1]:12000", "[::1]:12000")]
    public void An_advertised_address_gets_the_bound_port_unless_it_names_one(string advertised, string expected)
    {
        Assert.True(SiloAddress.TryFormatAdvertised(advertised, 11111, out var address));
        Assert.Equal(expected, address);
        Assert.Empty(new ClusterOptions { AdvertisedAddress = advertised, Port = 11111 }.Validate());
    }

    [Theory]
    [InlineData("bad host")]
    [InlineData("silo-0:99999")]
    [InlineData("silo_0!")]
    public void A_malformed_advertised_address_is_a_configuration_error_naming_the_field(string advertised)
    {
        var errors = new ClusterOptions { AdvertisedAddress = advertised, Port = 11111 }.Validate().ToList();

        var error = Assert.Single(errors);
        Assert.StartsWith("CallState:Cluster:AdvertisedAddress must be", error, StringComparison.Ordinal);
        Assert.Contains(advertised, error, StringComparison.Ordinal);
    }
}
