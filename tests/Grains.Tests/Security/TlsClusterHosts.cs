using System.Globalization;
using System.Net;
using CallState.Silo;
using CallState.Silo.Hosting;
using CallState.Storage.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace CallState.Grains.Tests.Security;

/// <summary>
/// Silos built as the silo process builds them (<see cref="SiloServiceCollectionExtensions.AddCallStateSilo"/>: the
/// membership table in one SQLite file, TCP on loopback ports of their own) and Orleans clients, each in its own host.
/// </summary>
internal static class TlsClusterHosts
{
    /// <summary>The longest any start, stop or connection attempt in these tests may take.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    public static Dictionary<string, string?> SiloSettings(TestStorage storage, string clusterId) => new()
    {
        ["CallState:Storage:Provider"] = storage.Options.Provider.ToString(),
        ["CallState:Storage:ConnectionString"] = storage.Options.ConnectionString,
        ["CallState:Storage:Schema"] = storage.Options.Schema,
        ["CallState:Grains:DueScanInterval"] = "01:00:00",
        ["CallState:Orleans:ClusterId"] = clusterId,
        ["CallState:Orleans:Clustering"] = "Storage",
        ["CallState:Orleans:AdvertisedAddress"] = "127.0.0.1",
        ["CallState:Orleans:SiloPort"] = FreePort(),
        ["CallState:Orleans:GatewayPort"] = FreePort(),
        // Never the API server of a pod the tests may run in.
        ["CallState:Orleans:Kubernetes"] = "false",
    };

    /// <summary>The <c>CallState:Orleans:Tls</c> keys for <paramref name="certificate"/> and the CA of <paramref name="trusted"/>.</summary>
    public static Dictionary<string, string?> TlsSettings(TestPki trusted, IssuedCertificate certificate) => new()
    {
        ["CallState:Orleans:Tls:Enabled"] = "true",
        ["CallState:Orleans:Tls:CertificatePath"] = certificate.CertificatePath,
        ["CallState:Orleans:Tls:KeyPath"] = certificate.KeyPath,
        ["CallState:Orleans:Tls:CaPath"] = trusted.CaPath,
    };

    public static Dictionary<string, string?> Merge(params IReadOnlyDictionary<string, string?>[] parts)
    {
        var merged = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (var part in parts)
        {
            foreach (var (key, value) in part)
            {
                merged[key] = value;
            }
        }

        return merged;
    }

    public static int GatewayPort(IReadOnlyDictionary<string, string?> settings) =>
        int.Parse(settings["CallState:Orleans:GatewayPort"]!, CultureInfo.InvariantCulture);

    /// <summary>The options a process reads from <paramref name="settings"/> (<c>CallState:Orleans</c>).</summary>
    public static OrleansClusterOptions ClusterOptionsOf(IReadOnlyDictionary<string, string?> settings) =>
        new ConfigurationBuilder().AddInMemoryCollection(settings).Build().GetSection(OrleansClusterOptions.SectionName).Get<OrleansClusterOptions>()!;

    /// <summary>A silo host from <paramref name="settings"/>; <paramref name="configure"/> adds to it (what a test changes).</summary>
    public static IHost BuildSilo(IReadOnlyDictionary<string, string?> settings, CapturedLogs logs, Action<IServiceCollection>? configure = null)
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Logging.AddProvider(logs);
        builder.Services.AddCallStateSilo(builder.Configuration);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));
        configure?.Invoke(builder.Services);
        return builder.Build();
    }

    /// <summary>Starts a silo; it is active when this returns.</summary>
    public static async Task<IHost> StartSiloAsync(IReadOnlyDictionary<string, string?> settings, CapturedLogs logs)
    {
        var host = BuildSilo(settings, logs);
        try
        {
            await host.StartAsync().WaitAsync(Bound);
            return host;
        }
        catch
        {
            await StopAsync(host);
            throw;
        }
    }

    /// <summary>An Orleans client of <paramref name="clusterId"/> that connects to the gateways on <paramref name="gatewayPorts"/>.</summary>
    public static IHost BuildClient(string clusterId, IEnumerable<int> gatewayPorts, Action<IClientBuilder> configure, CapturedLogs? logs = null)
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
        }

        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));
        builder.Services.AddOrleansClient(client =>
        {
            client.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = clusterId;
                o.ServiceId = "callstate";
            });
            client.UseStaticClustering(gatewayPorts.Select(p => new IPEndPoint(IPAddress.Loopback, p)).ToArray());
            configure(client);
        });
        return builder.Build();
    }

    /// <summary>Stops and disposes <paramref name="host"/>, started or not, within <see cref="Bound"/>.</summary>
    public static async Task StopAsync(IHost host)
    {
        using var cts = new CancellationTokenSource(Bound);
        try
        {
            await host.StopAsync(cts.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or InvalidOperationException or OrleansException or AggregateException)
        {
            // A host that never started, or failed to: what it holds is released by Dispose below.
        }
        finally
        {
            host.Dispose();
        }
    }

    private static string FreePort() => OrleansClusterOptions.FreePort(IPAddress.Loopback).ToString(CultureInfo.InvariantCulture);
}
