using CallState.Silo.Hosting;

namespace CallState.Grains.Tests.Hosting;

/// <summary>
/// An edge's <c>CallState:Orleans:GatewayRefreshInterval</c>: how soon a restarted silo's gateway is used again
/// (docs/reliability.md, "Rolling restart of the silos"). A few seconds by default, never Orleans' minute; zero or less
/// stops start-up naming the field.
/// </summary>
public sealed class GatewayRefreshIntervalTests
{
    private static readonly Func<string, string?> NotInPod = _ => null;

    [Fact]
    public void An_edge_refreshes_its_gateways_every_few_seconds_by_default()
    {
        var edge = new OrleansClusterOptions { Gateways = ["127.0.0.1:30000"] };
        Assert.Equal(TimeSpan.FromSeconds(5), edge.GatewayRefreshInterval);
        Assert.Empty(edge.Validate(silo: false, environment: NotInPod));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    public void A_refresh_interval_that_is_not_positive_fails_validation_naming_the_field(int seconds)
    {
        var edge = new OrleansClusterOptions { Gateways = ["127.0.0.1:30000"], GatewayRefreshInterval = TimeSpan.FromSeconds(seconds) };
        var error = Assert.Single(edge.Validate(silo: false, environment: NotInPod));
        Assert.StartsWith("CallState:Orleans:GatewayRefreshInterval must be positive", error, StringComparison.Ordinal);
    }
}
