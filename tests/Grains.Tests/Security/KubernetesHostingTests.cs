using System.Net;
using CallState.Silo;
using CallState.Silo.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting.Kubernetes;

namespace CallState.Grains.Tests.Security;

/// <summary>When the silo uses Orleans' Kubernetes hosting, and what it then advertises; nothing here talks to an API server.</summary>
public sealed class KubernetesHostingTests
{
    public static TheoryData<string?, bool, ClusteringMode, bool> Decisions => new()
    {
        // Mode, in a pod (KUBERNETES_SERVICE_HOST set), clustering, expected.
        { "auto", true, ClusteringMode.Storage, true },
        { "Auto", true, ClusteringMode.Storage, true },
        { null, true, ClusteringMode.Storage, true },
        { "auto", false, ClusteringMode.Storage, false },
        { "auto", true, ClusteringMode.Localhost, false },
        { "auto", false, ClusteringMode.Localhost, false },
        { "true", false, ClusteringMode.Storage, true },
        { "TRUE", false, ClusteringMode.Localhost, true },
        { "true", true, ClusteringMode.Storage, true },
        { "false", true, ClusteringMode.Storage, false },
        { "False", false, ClusteringMode.Storage, false },
        { "maybe", true, ClusteringMode.Storage, false },
    };

    [Theory]
    [MemberData(nameof(Decisions))]
    public void Kubernetes_hosting_is_on_in_a_pod_or_when_asked(string? mode, bool inPod, ClusteringMode clustering, bool expected)
    {
        var cluster = new OrleansClusterOptions { Kubernetes = mode!, Clustering = clustering };

        Assert.Equal(expected, KubernetesHosting.IsEnabled(cluster, Environment(inPod ? "10.96.0.1" : null, null)));
    }

    [Fact]
    public void Under_kubernetes_hosting_the_pod_ip_replaces_a_loopback_advertised_address()
    {
        var inPod = Environment("10.96.0.1", "10.244.1.17");

        Assert.Equal(IPAddress.Parse("10.244.1.17"), KubernetesHosting.AdvertisedAddress(new OrleansClusterOptions { Clustering = ClusteringMode.Storage }, inPod));
        Assert.Equal(IPAddress.Parse("10.0.0.9"), KubernetesHosting.AdvertisedAddress(new OrleansClusterOptions { Clustering = ClusteringMode.Storage, AdvertisedAddress = "10.0.0.9" }, inPod));
        Assert.Equal(IPAddress.Loopback, KubernetesHosting.AdvertisedAddress(new OrleansClusterOptions { Clustering = ClusteringMode.Storage, Kubernetes = "false" }, inPod));
        Assert.Equal(IPAddress.Loopback, KubernetesHosting.AdvertisedAddress(new OrleansClusterOptions { Clustering = ClusteringMode.Storage }, Environment(null, "10.244.1.17")));
    }

    [Fact]
    public void A_silo_under_kubernetes_hosting_without_an_address_to_advertise_fails_validation_naming_the_fields()
    {
        var cluster = new OrleansClusterOptions { Clustering = ClusteringMode.Storage, Kubernetes = "true" };

        var error = Assert.Single(cluster.Validate(silo: true, environment: Environment(null, null)));
        Assert.StartsWith("CallState:Orleans:AdvertisedAddress is a loopback address ('127.0.0.1') and POD_IP is unset", error, StringComparison.Ordinal);
        Assert.Contains("POD_IP is not an IP address ('pod')", Assert.Single(cluster.Validate(silo: true, environment: Environment(null, "pod"))), StringComparison.Ordinal);
        Assert.Empty(cluster.Validate(silo: true, environment: Environment(null, "10.244.1.17")));
        Assert.Empty(new OrleansClusterOptions { Clustering = ClusteringMode.Storage, Kubernetes = "true", AdvertisedAddress = "10.0.0.9" }.Validate(silo: true, environment: Environment(null, null)));
    }

    [Fact]
    public void An_unknown_mode_fails_validation_naming_the_field()
    {
        var error = Assert.Single(new OrleansClusterOptions { Kubernetes = "sometimes" }.Validate(silo: true, environment: Environment(null, null)));

        Assert.Equal("CallState:Orleans:Kubernetes must be auto, true or false (was 'sometimes').", error);
    }

    [Theory]
    [InlineData("true", true)]
    [InlineData("false", false)]
    public void The_silo_registers_orleans_kubernetes_agent_only_when_on(string mode, bool expected)
    {
        // Registration only: the agent would reach for the API server when resolved, and nothing is started here.
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["CallState:Orleans:Kubernetes"] = mode,
            ["CallState:Orleans:Clustering"] = "Storage",
            ["CallState:Orleans:AdvertisedAddress"] = "10.0.0.9",
        }).Build();
        var services = new ServiceCollection().AddCallStateSilo(configuration);

        Assert.Equal(expected, services.Any(d => d.ImplementationType == typeof(KubernetesClusterAgent)));
    }

    private static Func<string, string?> Environment(string? serviceHost, string? podIP) => name => name switch
    {
        KubernetesHosting.ServiceHostVariable => serviceHost,
        KubernetesHosting.PodIPVariable => podIP,
        _ => null,
    };
}
