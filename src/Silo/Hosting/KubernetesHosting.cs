using System.Net;

namespace CallState.Silo.Hosting;

/// <summary>
/// Orleans' Kubernetes hosting (Microsoft.Orleans.Hosting.Kubernetes) on a silo that runs in a pod
/// (<c>CallState:Orleans:Kubernetes</c>: <c>auto</c>, <c>true</c>, <c>false</c>).
/// </summary>
/// <remarks>
/// What <c>UseKubernetesHosting()</c> of version 10.4.2 reads and changes (checked in the package itself):
/// <list type="bullet">
/// <item><c>POD_NAME</c>, else the machine name (a pod's host name is its name): the silo's name
/// (<c>SiloOptions.SiloName</c>), which its agent compares with pod names.</item>
/// <item><c>POD_NAMESPACE</c>, else the service account's <c>/var/run/secrets/kubernetes.io/serviceaccount/namespace</c>:
/// the namespace whose pods it watches; the silo does not start without one.</item>
/// <item><c>POD_IP</c>: the advertised address, but only while <c>EndpointOptions.AdvertisedIPAddress</c> is unset. The
/// silo always sets it from <c>CallState:Orleans:AdvertisedAddress</c>, so <see cref="AdvertisedAddress"/> applies
/// <c>POD_IP</c> in its place (when that setting is left at a loopback address such as the default).</item>
/// <item><c>ORLEANS_CLUSTER_ID</c> and <c>ORLEANS_SERVICE_ID</c>, when set: they replace <c>CallState:Orleans:ClusterId</c>
/// and <c>ServiceId</c> (its configuration runs after ours).</item>
/// <item>Ports: none. It sets the listening endpoints to 0.0.0.0 only when they are unset, and the silo sets them
/// (<c>CallState:Orleans:ListenAddress</c>, <c>SiloPort</c>, <c>GatewayPort</c>, the pod's container ports).</item>
/// <item>The API server, through the pod's service account (<c>KUBERNETES_SERVICE_HOST</c>/<c>PORT</c> and its token): at
/// start it labels its own pod <c>orleans/clusterId</c> and <c>orleans/serviceId</c>, lists the pods with those labels and
/// declares dead every active silo whose pod is gone; then two silos watch pods and do the same when one is deleted. It
/// needs a Role with get, list, watch and patch on pods; a Forbidden answer at start is retried without end, so a silo
/// without that Role never becomes active.</item>
/// </list>
/// <c>auto</c> turns it on only in a pod (<c>KUBERNETES_SERVICE_HOST</c> set) with <c>Clustering</c> Storage: a single
/// silo (<c>Localhost</c>, the standalone mode) has no cluster for the agent to reconcile and would only need the Role.
/// </remarks>
public static class KubernetesHosting
{
    public const string Auto = "auto";

    /// <summary>Set by Kubernetes in every container of a pod.</summary>
    public const string ServiceHostVariable = "KUBERNETES_SERVICE_HOST";

    /// <summary>The pod's IP address, from the Downward API (<c>fieldRef: status.podIP</c>).</summary>
    public const string PodIPVariable = "POD_IP";

    private enum Mode
    {
        Auto,
        On,
        Off,
        Invalid,
    }

    /// <summary>Whether a silo with <paramref name="cluster"/> uses Kubernetes hosting, given its environment variables.</summary>
    public static bool IsEnabled(OrleansClusterOptions cluster, Func<string, string?> environment)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(environment);
        return Parse(cluster.Kubernetes) switch
        {
            Mode.On => true,
            Mode.Auto => !string.IsNullOrEmpty(environment(ServiceHostVariable)) && cluster.Clustering == ClusteringMode.Storage,
            _ => false,
        };
    }

    /// <summary>
    /// The address the silo advertises: <c>POD_IP</c> under Kubernetes hosting while <c>AdvertisedAddress</c> is a loopback
    /// address (no other pod could reach it), otherwise <c>AdvertisedAddress</c>.
    /// </summary>
    public static IPAddress AdvertisedAddress(OrleansClusterOptions cluster, Func<string, string?>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        environment ??= Environment.GetEnvironmentVariable;
        var configured = cluster.ResolveAdvertised().Address;
        return IsEnabled(cluster, environment) && IPAddress.IsLoopback(configured) && IPAddress.TryParse(environment(PodIPVariable), out var pod)
            ? pod
            : configured;
    }

    /// <summary>Adds Orleans' Kubernetes hosting when <see cref="IsEnabled"/> says so; otherwise leaves the silo as it is.</summary>
    public static ISiloBuilder UseCallStateKubernetesHosting(this ISiloBuilder silo, OrleansClusterOptions cluster, Func<string, string?>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(silo);
        if (IsEnabled(cluster, environment ?? Environment.GetEnvironmentVariable))
        {
            silo.UseKubernetesHosting();
        }

        return silo;
    }

    internal static IEnumerable<string> Validate(OrleansClusterOptions cluster, bool silo, string path, Func<string, string?> environment)
    {
        if (Parse(cluster.Kubernetes) == Mode.Invalid)
        {
            yield return $"{path}:Kubernetes must be auto, true or false (was '{cluster.Kubernetes}').";
            yield break;
        }

        if (!silo || !IsEnabled(cluster, environment) || !OrleansClusterOptions.TryParseAdvertised(cluster.AdvertisedAddress, out var host, out _)
            || !IPAddress.TryParse(host, out var advertised) || !IPAddress.IsLoopback(advertised))
        {
            yield break;
        }

        var podIP = environment(PodIPVariable);
        if (!IPAddress.TryParse(podIP, out _))
        {
            var found = string.IsNullOrEmpty(podIP) ? "unset" : $"not an IP address ('{podIP}')";
            yield return $"{path}:AdvertisedAddress is a loopback address ('{cluster.AdvertisedAddress}') and {PodIPVariable} is {found}: with Kubernetes hosting, "
                + $"set {PodIPVariable} from the pod's status.podIP (Downward API) or set {path}:AdvertisedAddress to an address other silos reach.";
        }
    }

    private static Mode Parse(string? value) => value?.Trim().ToUpperInvariant() switch
    {
        null or "" or "AUTO" => Mode.Auto,
        "TRUE" => Mode.On,
        "FALSE" => Mode.Off,
        _ => Mode.Invalid,
    };
}
