using System.Net;
using System.Net.Sockets;
using CallState.Silo.Hosting;
using Microsoft.Extensions.Options;

namespace CallState.Grains.Tests.Hosting;

/// <summary>
/// A silo's <c>CallState:Orleans:AdvertisedAddress</c>: an IP address, a host name (a pod's DNS name) or either with a
/// port; anything else stops start-up naming the field, never with a bare FormatException (docs/operations.md, "Silos in pods").
/// </summary>
public sealed class AdvertisedAddressTests
{
    public static TheoryData<string, string, int?> Valid => new()
    {
        { "10.244.1.17", "10.244.1.17", null },
        { "10.244.1.17:11111", "10.244.1.17", 11111 },
        { "silo-0.silo.callstate.svc.cluster.local", "silo-0.silo.callstate.svc.cluster.local", null },
        { "silo-0.silo:11112", "silo-0.silo", 11112 },
        { "localhost", "localhost", null },
        { "fd00::17", "fd00::17", null },
        { "[fd00::17]", "fd00::17", null },
        { "[fd00::17]:11111", "fd00::17", 11111 },
        { " 10.0.0.9 ", "10.0.0.9", null },
    };

    [Theory]
    [MemberData(nameof(Valid))]
    public void Host_host_and_port_and_IP_addresses_are_accepted(string text, string host, int? port)
    {
        Assert.True(OrleansClusterOptions.TryParseAdvertised(text, out var parsedHost, out var parsedPort));
        Assert.Equal(host, parsedHost);
        Assert.Equal(port, parsedPort);
        Assert.Empty(new OrleansClusterOptions { AdvertisedAddress = text }.Validate(silo: true, environment: NotInPod));
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("silo-0:")]
    [InlineData("silo-0:0")]
    [InlineData("silo-0:65536")]
    [InlineData("silo-0:port")]
    [InlineData("bad host")]
    [InlineData("silo_0!:11111")]
    [InlineData("[fd00::17")]
    [InlineData("[10.0.0.1]:11111")]
    [InlineData("fd00::17:11111:x")]
    [InlineData("0.0.0.0")]
    [InlineData("::")]
    [InlineData("[::]:11111")]
    public void Anything_else_fails_validation_naming_the_field(string text)
    {
        var error = Assert.Single(new OrleansClusterOptions { AdvertisedAddress = text }.Validate(silo: true, environment: NotInPod));
        Assert.Equal($"CallState:Orleans:AdvertisedAddress must be the host, host:port or IP address other silos and edges reach this silo at (was '{text}').", error);
    }

    [Fact]
    public void A_host_name_resolves_to_its_first_IPv4_address_and_keeps_its_port()
    {
        var options = new OrleansClusterOptions { AdvertisedAddress = "silo-0.silo:11112" };
        var (address, port) = options.ResolveAdvertised(host =>
        {
            Assert.Equal("silo-0.silo", host);
            return [IPAddress.Parse("fd00::17"), IPAddress.Parse("10.244.1.17")];
        });
        Assert.Equal(IPAddress.Parse("10.244.1.17"), address);
        Assert.Equal(11112, port);
        Assert.Equal((IPAddress.Parse("fd00::17"), null), new OrleansClusterOptions { AdvertisedAddress = "silo-0" }.ResolveAdvertised(_ => [IPAddress.Parse("fd00::17")]));

        // An IP address is not resolved.
        Assert.Equal((IPAddress.Parse("10.0.0.9"), 11111), new OrleansClusterOptions { AdvertisedAddress = "10.0.0.9:11111" }.ResolveAdvertised(_ => throw new InvalidOperationException("resolved")));
    }

    [Fact]
    public void A_host_name_that_resolves_to_nothing_names_the_field()
    {
        var unknown = Assert.Throws<OptionsValidationException>(() => new OrleansClusterOptions { AdvertisedAddress = "silo-9.silo" }
            .ResolveAdvertised(_ => throw new SocketException((int)SocketError.HostNotFound)));
        Assert.Equal("CallState:Orleans:AdvertisedAddress: the host name 'silo-9.silo' could not be resolved (HostNotFound).", Assert.Single(unknown.Failures));
        var empty = Assert.Throws<OptionsValidationException>(() => new OrleansClusterOptions { AdvertisedAddress = "silo-9.silo" }.ResolveAdvertised(_ => []));
        Assert.Equal("CallState:Orleans:AdvertisedAddress: the host name 'silo-9.silo' resolved to no address.", Assert.Single(empty.Failures));
        var invalid = Assert.Throws<OptionsValidationException>(() => new OrleansClusterOptions { AdvertisedAddress = "silo 9" }.ResolveAdvertised(_ => []));
        Assert.Contains("CallState:Orleans:AdvertisedAddress must be", Assert.Single(invalid.Failures), StringComparison.Ordinal);
    }

    [Fact]
    public void Under_kubernetes_hosting_a_loopback_address_with_a_port_still_asks_for_the_pod_IP()
    {
        var cluster = new OrleansClusterOptions { Clustering = ClusteringMode.Storage, Kubernetes = "true", AdvertisedAddress = "127.0.0.1:11111" };
        Assert.Contains("POD_IP is unset", Assert.Single(cluster.Validate(silo: true, environment: NotInPod)), StringComparison.Ordinal);
    }

    private static string? NotInPod(string name) => null;
}
