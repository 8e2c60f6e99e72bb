using System.Net;
using System.Net.Sockets;

namespace CallState.Silo.Hosting;

/// <summary>How silos find each other.</summary>
public enum ClusteringMode
{
    /// <summary>One silo alone (standalone mode, a single silo process): no membership table.</summary>
    Localhost,

    /// <summary>Silos join through the membership table in the state store's database (<c>CallState:Storage</c>).</summary>
    Storage,
}

/// <summary>
/// The Orleans cluster (configuration section <c>CallState:Orleans</c>): which cluster a silo or an edge belongs to, how
/// silos find each other, the silo's endpoints, and the gateways an edge connects to.
/// </summary>
public sealed class OrleansClusterOptions
{
    public const string SectionName = "CallState:Orleans";

    /// <summary>Silos and clients with the same cluster id form one cluster; rows of other ids are ignored.</summary>
    public string ClusterId { get; set; } = "callstate";

    /// <summary>Stays the same across deployments of one service (Orleans' ServiceId).</summary>
    public string ServiceId { get; set; } = "callstate";

    public ClusteringMode Clustering { get; set; } = ClusteringMode.Localhost;

    /// <summary>Where the silo and gateway listen; defaults to <see cref="AdvertisedAddress"/>.</summary>
    public string? ListenAddress { get; set; }

    /// <summary>
    /// Where other silos and clients reach this silo (in Kubernetes: the pod IP): an IP address, a host name (resolved
    /// once at start), either with <c>:port</c> (<c>[v6]:port</c>), the port then being the silo port others connect to
    /// while the silo listens on <see cref="SiloPort"/> (a port mapping in between).
    /// </summary>
    public string AdvertisedAddress { get; set; } = "127.0.0.1";

    /// <summary>Silo-to-silo port; 0 picks a free port at start (one silo alone, so parallel processes never collide).</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>Port edges connect to (the gateway); 0 means no gateway (standalone: the edge is in the process).</summary>
    public int GatewayPort { get; set; } = 30000;

    /// <summary>
    /// Edges: the silos' gateways, each <c>host:port</c>. A host name is resolved again on every refresh and every
    /// address it has is a gateway, so a Kubernetes headless Service name finds every silo pod.
    /// </summary>
    public List<string> Gateways { get; set; } = [];

    /// <summary>How long an edge waits between attempts to reach a gateway while none answers.</summary>
    public TimeSpan GatewayRetryInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Edges: how often the gateway list is read again (host names resolved again) and how long a gateway whose
    /// connection failed is passed over. Orleans' default is a minute, so an edge took one to two minutes to use a silo
    /// restarted on the same address again (docs/reliability.md, "Rolling restart of the silos").
    /// </summary>
    public TimeSpan GatewayRefreshInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Failure detection: a silo that misses <see cref="MissedProbesLimit"/> probes of <see cref="ProbeTimeout"/> each
    /// is suspected, and declared dead when enough silos agree (Orleans' membership protocol).
    /// </summary>
    public TimeSpan ProbeTimeout { get; set; } = TimeSpan.FromSeconds(5);

    public int MissedProbesLimit { get; set; } = 3;

    /// <summary>How often a silo writes its I-am-alive time to the membership table.</summary>
    public TimeSpan IAmAliveInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How often a silo reads the membership table (Orleans' default is a minute). A silo that was paused until the others
    /// declared it dead learns it from this read and stops; until then it still serves the activations it holds beside
    /// their new ones elsewhere, so the read comes every few seconds (one small query per silo).
    /// </summary>
    public TimeSpan TableRefreshInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Mutual TLS on every silo-to-silo and edge-to-gateway connection (<c>CallState:Orleans:Tls</c>).</summary>
    public OrleansTlsOptions Tls { get; set; } = new();

    /// <summary>
    /// Silos: Orleans' Kubernetes hosting, <c>auto</c> (on in a pod with <c>Clustering</c> Storage), <c>true</c> or
    /// <c>false</c>. What it changes is described on <see cref="KubernetesHosting"/>.
    /// </summary>
    public string Kubernetes { get; set; } = KubernetesHosting.Auto;

    /// <summary>Every error of these options, each naming its field; <paramref name="environment"/> (tests) defaults to the process's.</summary>
    public IEnumerable<string> Validate(bool silo, string path = SectionName, Func<string, string?>? environment = null)
    {
        if (string.IsNullOrWhiteSpace(ClusterId))
        {
            yield return $"{path}:ClusterId must not be empty.";
        }

        if (string.IsNullOrWhiteSpace(ServiceId))
        {
            yield return $"{path}:ServiceId must not be empty.";
        }

        if (silo)
        {
            if (!TryParseAdvertised(AdvertisedAddress, out var advertisedHost, out _)
                || (IPAddress.TryParse(advertisedHost, out var advertised) && (advertised.Equals(IPAddress.Any) || advertised.Equals(IPAddress.IPv6Any))))
            {
                yield return $"{path}:AdvertisedAddress must be the host, host:port or IP address other silos and edges reach this silo at (was '{AdvertisedAddress}').";
            }

            if (ListenAddress is not null && !IPAddress.TryParse(ListenAddress, out _))
            {
                yield return $"{path}:ListenAddress must be an IP address (was '{ListenAddress}').";
            }

            if (SiloPort is < 0 or > 65535 || (SiloPort == 0 && Clustering != ClusteringMode.Localhost))
            {
                yield return $"{path}:SiloPort must be 1-65535 (0, a free port, only with Clustering Localhost) (was {SiloPort}).";
            }

            if (GatewayPort is < 0 or > 65535)
            {
                yield return $"{path}:GatewayPort must be 0 (no gateway) or 1-65535 (was {GatewayPort}).";
            }
        }
        else
        {
            if (Gateways.Count == 0)
            {
                yield return $"{path}:Gateways must list at least one silo gateway (host:port).";
            }

            for (var i = 0; i < Gateways.Count; i++)
            {
                if (!TrySplitHostPort(Gateways[i], out _, out _))
                {
                    yield return $"{path}:Gateways:{i} must be host:port (was '{Gateways[i]}').";
                }
            }

            if (GatewayRetryInterval <= TimeSpan.Zero)
            {
                yield return $"{path}:GatewayRetryInterval must be positive (was {GatewayRetryInterval}).";
            }

            if (GatewayRefreshInterval <= TimeSpan.Zero)
            {
                yield return $"{path}:GatewayRefreshInterval must be positive (was {GatewayRefreshInterval}).";
            }
        }

        if (ProbeTimeout <= TimeSpan.Zero)
        {
            yield return $"{path}:ProbeTimeout must be positive (was {ProbeTimeout}).";
        }

        if (MissedProbesLimit < 1)
        {
            yield return $"{path}:MissedProbesLimit must be at least 1 (was {MissedProbesLimit}).";
        }

        if (IAmAliveInterval <= TimeSpan.Zero)
        {
            yield return $"{path}:IAmAliveInterval must be positive (was {IAmAliveInterval}).";
        }

        if (TableRefreshInterval <= TimeSpan.Zero)
        {
            yield return $"{path}:TableRefreshInterval must be positive (was {TableRefreshInterval}).";
        }

        foreach (var error in KubernetesHosting.Validate(this, silo, path, environment ?? Environment.GetEnvironmentVariable))
        {
            yield return error;
        }

        foreach (var error in Tls.Validate(silo, path + ":" + nameof(Tls)))
        {
            yield return error;
        }
    }

    /// <summary>
    /// Splits <see cref="AdvertisedAddress"/>: an IP address (IPv6 bare or in brackets), a host name, either followed by
    /// <c>:port</c> (an IPv6 address then in brackets). False for anything else, such as an empty text or a bad port.
    /// </summary>
    public static bool TryParseAdvertised(string? text, out string host, out int? port)
    {
        host = "";
        port = null;
        var value = text?.Trim();
        if (string.IsNullOrEmpty(value))
        {
            return false;
        }

        string rest;
        if (value[0] == '[')
        {
            var close = value.IndexOf(']', StringComparison.Ordinal);
            if (close < 0 || !IPAddress.TryParse(value[1..close], out var v6) || v6.AddressFamily != AddressFamily.InterNetworkV6)
            {
                return false;
            }

            host = value[1..close];
            rest = value[(close + 1)..];
        }
        else if (value.Count(c => c == ':') > 1)
        {
            // More than one colon and no brackets: a bare IPv6 address, which cannot carry a port.
            if (!IPAddress.TryParse(value, out var v6) || v6.AddressFamily != AddressFamily.InterNetworkV6)
            {
                return false;
            }

            host = value;
            return true;
        }
        else
        {
            var colon = value.IndexOf(':', StringComparison.Ordinal);
            host = colon < 0 ? value : value[..colon];
            rest = colon < 0 ? "" : value[colon..];
            if (Uri.CheckHostName(host) is not (UriHostNameType.Dns or UriHostNameType.IPv4))
            {
                return false;
            }
        }

        if (rest.Length == 0)
        {
            return true;
        }

        if (rest[0] != ':' || !int.TryParse(rest.AsSpan(1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var p)
            || p is < 1 or > 65535)
        {
            return false;
        }

        port = p;
        return true;
    }

    /// <summary>
    /// The address and silo port this silo advertises: <see cref="AdvertisedAddress"/> with a host name resolved (its
    /// first IPv4 address, else its first address) and its port, else <see cref="SiloPort"/>. Throws
    /// <see cref="Microsoft.Extensions.Options.OptionsValidationException"/> naming the field when the text is invalid or the name resolves to nothing.
    /// </summary>
    public (IPAddress Address, int? Port) ResolveAdvertised(Func<string, IPAddress[]>? resolve = null, string path = SectionName)
    {
        if (!TryParseAdvertised(AdvertisedAddress, out var host, out var port))
        {
            throw Invalid($"{path}:AdvertisedAddress must be the host, host:port or IP address other silos and edges reach this silo at (was '{AdvertisedAddress}').");
        }

        if (IPAddress.TryParse(host, out var address))
        {
            return (address, port);
        }

        IPAddress[] found;
        try
        {
            found = (resolve ?? Dns.GetHostAddresses)(host);
        }
        catch (SocketException ex)
        {
            throw Invalid($"{path}:AdvertisedAddress: the host name '{host}' could not be resolved ({ex.SocketErrorCode}).");
        }

        var chosen = Array.Find(found, a => a.AddressFamily == AddressFamily.InterNetwork) ?? found.FirstOrDefault();
        return chosen is null
            ? throw Invalid($"{path}:AdvertisedAddress: the host name '{host}' resolved to no address.")
            : (chosen, port);

        static Microsoft.Extensions.Options.OptionsValidationException Invalid(string message) =>
            new(SectionName, typeof(OrleansClusterOptions), [message]);
    }

    /// <summary>Splits <c>host:port</c> (an IPv6 literal in brackets).</summary>
    public static bool TrySplitHostPort(string? text, out string host, out int port)
    {
        host = "";
        port = 0;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out port) || port is < 1 or > 65535)
        {
            return false;
        }

        host = text[..colon].Trim('[', ']');
        return host.Length > 0;
    }

    /// <summary>A free TCP port on <paramref name="address"/> (the OS picks it); used for <see cref="SiloPort"/> 0.</summary>
    public static int FreePort(IPAddress address)
    {
        using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(address, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}

/// <summary>
/// Mutual TLS for the cluster (configuration section <c>CallState:Orleans:Tls</c>): every silo and edge presents a
/// certificate signed by one cluster CA and accepts only peers whose certificate chains to that CA (and, when listed,
/// carries one of <see cref="AllowedSubjectNames"/>). How peers are checked is described on <see cref="ClusterSecurity"/>.
/// </summary>
public sealed class OrleansTlsOptions
{
    /// <summary>Off by default (one machine, loopback); a cluster across machines or pods turns it on.</summary>
    public bool Enabled { get; set; }

    /// <summary>
    /// This process's certificate, PEM (a Kubernetes TLS Secret's <c>tls.crt</c>), signed directly by the CA of
    /// <see cref="CaPath"/>. A silo's certificate needs both server and client authentication in its extended key usage (or none).
    /// </summary>
    public string? CertificatePath { get; set; }

    /// <summary>The PEM private key of <see cref="CertificatePath"/> (<c>tls.key</c>); unset: the key is in that file.</summary>
    public string? KeyPath { get; set; }

    /// <summary>Instead of <see cref="CertificatePath"/>: a PKCS#12 file with the certificate and its private key.</summary>
    public string? PfxPath { get; set; }

    /// <summary>The password of <see cref="PfxPath"/>; a secret, never logged nor put in an error message.</summary>
    public string? PfxPassword { get; set; }

    /// <summary>
    /// The cluster CA, PEM (<c>ca.crt</c>): peers must chain to it and to nothing else (the machine's trust store is not
    /// used). Several CA certificates in the file are all trusted, so a CA can be rotated without downtime.
    /// </summary>
    public string? CaPath { get; set; }

    /// <summary>
    /// When not empty, a peer is accepted only if its certificate's common name or one of its DNS subject alternative
    /// names equals one of these (case-insensitive). A silo's own certificate must match, since its peers check it too.
    /// </summary>
    public List<string> AllowedSubjectNames { get; set; } = [];

    /// <summary>Every error of these options, each naming its field; loads the files to check them.</summary>
    public IEnumerable<string> Validate(bool silo, string path)
    {
        if (!Enabled)
        {
            return [];
        }

        var errors = new List<string>();
        ClusterCredentials.Load(this, silo, path, errors)?.Dispose();
        return errors;
    }
}
