using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace CallState.Runtime.Cluster;

/// <summary>
/// Cluster settings (configuration section <c>CallState:Cluster</c>), read by silos (membership, RPC server) and by
/// edges (how to find silos).
/// </summary>
public sealed class ClusterOptions
{
    public const string SectionName = "CallState:Cluster";

    /// <summary>Silo: join a cluster (membership row, RPC server, placement). Off: a single silo serving everything.</summary>
    public bool Enabled { get; set; }

    /// <summary>
    /// Silo: this silo's name in the membership table, unique in the cluster and stable across restarts (a pod name).
    /// Empty: the host name and the RPC port.
    /// </summary>
    public string? SiloId { get; set; }

    /// <summary>Silo: the address the RPC server binds (0.0.0.0 for every interface).</summary>
    public string ListenAddress { get; set; } = "0.0.0.0";

    /// <summary>Silo: the RPC port.</summary>
    public int Port { get; set; } = 11111;

    /// <summary>
    /// Silo: the address other silos and edges dial, written to the membership table (the pod IP on Kubernetes).
    /// Empty: <see cref="ListenAddress"/> when it names one address, otherwise this host's first non-loopback IPv4 address.
    /// </summary>
    public string? AdvertisedAddress { get; set; }

    /// <summary>Silo: how often the membership row is refreshed and the table read.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>A silo whose heartbeat is older than this is dead: its keys move to the live silos.</summary>
    public TimeSpan FailureTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Edge: silos to ask for the membership view, as <c>host:port</c>. A name that resolves to several addresses
    /// (a Kubernetes headless service) counts as all of them. Empty: the edge reads the membership table in
    /// <c>CallState:Storage</c>.
    /// </summary>
    public string[] Bootstrap { get; set; } = [];

    /// <summary>Edge and silo: how often a client refreshes its view of the live silos.</summary>
    public TimeSpan ViewRefreshInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Silo to silo: how long a call grain waits for a limit on another silo. (The RPC transport's own settings are <c>CallState:Cluster:Rpc</c>.)</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The silo id in effect.</summary>
    public string EffectiveSiloId => string.IsNullOrWhiteSpace(SiloId) ? $"{Dns.GetHostName()}-{Port}" : SiloId;

    public IEnumerable<string> Validate(string path = SectionName)
    {
        if (!IPAddress.TryParse(ListenAddress, out _))
        {
            yield return $"{path}:ListenAddress must be an IP address (was '{ListenAddress}').";
        }

        if (Port is < 0 or > 65535)
        {
            yield return $"{path}:Port must be between 0 and 65535 (was {Port}).";
        }

        if (SiloId is { } id && (id.Length > 200 || id.Any(char.IsWhiteSpace)))
        {
            yield return $"{path}:SiloId must be at most 200 characters without spaces (was '{id}').";
        }

        if (HeartbeatInterval <= TimeSpan.Zero)
        {
            yield return $"{path}:HeartbeatInterval must be positive (was {HeartbeatInterval}).";
        }

        if (FailureTimeout < HeartbeatInterval * 2)
        {
            yield return $"{path}:FailureTimeout must be at least twice HeartbeatInterval (was {FailureTimeout}, heartbeat {HeartbeatInterval}).";
        }

        if (ViewRefreshInterval <= TimeSpan.Zero)
        {
            yield return $"{path}:ViewRefreshInterval must be positive (was {ViewRefreshInterval}).";
        }

        if (RequestTimeout <= TimeSpan.Zero)
        {
            yield return $"{path}:RequestTimeout must be positive (was {RequestTimeout}).";
        }

        if (!string.IsNullOrWhiteSpace(AdvertisedAddress) && !SiloAddress.TryFormatAdvertised(AdvertisedAddress, Port == 0 ? 1 : Port, out _))
        {
            yield return $"{path}:AdvertisedAddress must be an IP address, a host name, or either with :port (was '{AdvertisedAddress}').";
        }

        for (var i = 0; i < Bootstrap.Length; i++)
        {
            if (!SiloAddress.TryParse(Bootstrap[i], out _))
            {
                yield return $"{path}:Bootstrap:{i} must be host:port (was '{Bootstrap[i]}').";
            }
        }
    }
}

/// <summary>A silo's RPC address as written in the membership table: <c>host:port</c> (IPv6 as <c>[addr]:port</c>).</summary>
public static class SiloAddress
{
    public static bool TryParse(string? text, out EndPoint endPoint)
    {
        endPoint = null!;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        if (IPEndPoint.TryParse(text, out var ip) && ip.Port != 0)
        {
            endPoint = ip;
            return true;
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port)
            || port is < 1 or > 65535)
        {
            return false;
        }

        var host = text[..colon];
        if (Uri.CheckHostName(host) == UriHostNameType.Unknown)
        {
            return false;
        }

        endPoint = new DnsEndPoint(host, port);
        return true;
    }

    public static string Format(IPEndPoint endPoint) => endPoint.ToString();

    /// <summary>
    /// The address a silo writes for itself from <c>AdvertisedAddress</c>: an IP address or host name gets
    /// <paramref name="port"/> (the bound RPC port), a <c>host:port</c> or <c>[v6]:port</c> is kept as given.
    /// </summary>
    public static bool TryFormatAdvertised(string advertised, int port, out string address)
    {
        ArgumentNullException.ThrowIfNull(advertised);
        address = "";
        var text = advertised.Trim();
        if (TryParse(text, out _))
        {
            address = text;
            return true;
        }

        if (IPAddress.TryParse(text, out var ip))
        {
            address = new IPEndPoint(ip, port).ToString();
            return port is >= 1 and <= 65535;
        }

        if (Uri.CheckHostName(text) is UriHostNameType.Dns && port is >= 1 and <= 65535)
        {
            address = $"{text}:{port}";
            return true;
        }

        return false;
    }
}

/// <summary>Turns <see cref="ClusterOptions.Validate"/> into options validation.</summary>
public sealed class ClusterOptionsValidator : IValidateOptions<ClusterOptions>
{
    public ValidateOptionsResult Validate(string? name, ClusterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

public static class ClusterServiceCollectionExtensions
{
    /// <summary>Binds <c>CallState:Cluster</c> and validates it at start (silos and edges alike).</summary>
    public static IServiceCollection AddClusterOptions(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<ClusterOptions>().Bind(configuration.GetSection(ClusterOptions.SectionName)).ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ClusterOptions>, ClusterOptionsValidator>());
        return services;
    }
}
