using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using CallState.Silo.Hosting;
using CallState.Testing;
using static CallState.SipEdge.Tests.Deploy.Manifests;

namespace CallState.SipEdge.Tests.Deploy;

/// <summary>
/// What one container of a rendered manifest gets, made real on this machine: its environment as Kubernetes builds it
/// (downward API, ConfigMap and Secret references, <c>$(VAR)</c> expansion) and its ConfigMap and Secret volumes written
/// under a temporary root at their mount paths, so settings naming mounted files point at files with the rendered content.
/// </summary>
internal sealed partial class PodConfiguration : IDisposable
{
    /// <summary>The pod IP the downward API gives in these tests.</summary>
    public const string PodIP = "10.244.1.17";

    /// <summary>Environment variables read by libraries, not bound to our options (the issue's allow-list).</summary>
    public static readonly string[] LibraryPrefixes = ["OTEL_", "ORLEANS_", "POD_", "DOTNET_", "ASPNETCORE_"];

    private readonly List<(string MountPath, string Local)> _mounts = [];
    private readonly TestPki? _pki;

    public PodConfiguration(Manifests manifests, Manifests? fallback, string workload, JsonObject template)
    {
        Root = Directory.CreateTempSubdirectory("callstate-pod-").FullName;
        var spec = template["spec"]!.AsObject();
        var container = spec["containers"]![0]!.AsObject();
        var volumes = ((spec["volumes"] as JsonArray) ?? []).OfType<JsonObject>().ToDictionary(v => Text(v["name"])!);
        foreach (var mount in ((container["volumeMounts"] as JsonArray) ?? []).OfType<JsonObject>())
        {
            var mountPath = Text(mount["mountPath"])!;
            var local = Path.Combine(Root, mountPath.TrimStart('/'));
            Directory.CreateDirectory(local);
            _mounts.Add((mountPath, local));
            var volume = volumes[Text(mount["name"])!];
            var (kind, name, items) = volume switch
            {
                _ when volume["configMap"] is JsonObject c => ("ConfigMap", Text(c["name"])!, c["items"] as JsonArray),
                _ when volume["secret"] is JsonObject s => ("Secret", Text(s["secretName"])!, s["items"] as JsonArray),
                _ => ("", "", null),
            };
            if (kind.Length == 0)
            {
                continue;
            }

            var data = Lookup(manifests, fallback, kind, name, ref _pki)
                ?? throw new Xunit.Sdk.XunitException($"{manifests.Overlay} {workload}: volume {Text(mount["name"])} names {kind} {name}, which is not rendered and has no stand-in");
            var files = items is null
                ? data.Select(d => (d.Key, Path: d.Key))
                : items.OfType<JsonObject>().Select(i => (Key: Text(i["key"])!, Path: Text(i["path"])!));
            foreach (var (key, path) in files)
            {
                Assert.True(data.ContainsKey(key), $"{manifests.Overlay} {workload}: {kind} {name} has no key {key}");
                File.WriteAllText(Path.Combine(local, path), data[key]);
            }
        }

        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var from in ((container["envFrom"] as JsonArray) ?? []).OfType<JsonObject>())
        {
            var name = Text(from["configMapRef"]?["name"]) ?? Text(from["secretRef"]?["name"])!;
            var kind = from.ContainsKey("configMapRef") ? "ConfigMap" : "Secret";
            var data = Lookup(manifests, fallback, kind, name, ref _pki) ?? throw new Xunit.Sdk.XunitException($"{manifests.Overlay} {workload}: envFrom names {kind} {name}, which is not rendered");
            foreach (var (key, value) in data)
            {
                environment[key] = value;
            }
        }

        var referenced = new HashSet<string>(StringComparer.Ordinal);
        foreach (var variable in ((container["env"] as JsonArray) ?? []).OfType<JsonObject>())
        {
            var name = Text(variable["name"])!;
            string value;
            if (variable["valueFrom"] is JsonObject source)
            {
                value = source switch
                {
                    _ when Text(source["fieldRef"]?["fieldPath"]) is { } field => field switch
                    {
                        "metadata.name" => workload + "-7d9f8c6b5-x2x4z",
                        "metadata.namespace" => "callstate",
                        "status.podIP" => PodIP,
                        _ => throw new Xunit.Sdk.XunitException($"{workload}: {name} reads {field}, unknown to this test"),
                    },
                    _ when source["configMapKeyRef"] is JsonObject c => Key(manifests, fallback, "ConfigMap", c, workload, name),
                    _ when source["secretKeyRef"] is JsonObject s => Key(manifests, fallback, "Secret", s, workload, name),
                    _ => throw new Xunit.Sdk.XunitException($"{workload}: {name} has a valueFrom this test does not know"),
                };
            }
            else
            {
                value = VariableReference().Replace(Text(variable["value"]) ?? "", m =>
                {
                    var inner = m.Groups[1].Value;
                    referenced.Add(inner);
                    return environment.TryGetValue(inner, out var known) ? known : m.Value;
                });
            }

            environment[name] = value;
        }

        Environment = environment;
        Referenced = referenced;
    }

    /// <summary>The temporary directory standing for the container's file system.</summary>
    public string Root { get; }

    /// <summary>The container's environment, as the kubelet would set it.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; }

    /// <summary>Variables another variable's value names with <c>$(NAME)</c>.</summary>
    public IReadOnlySet<string> Referenced { get; }

    /// <summary>A value naming a path under a mount, moved to the mount's local copy; any other value as it is.</summary>
    public string Local(string value)
    {
        foreach (var (mountPath, local) in _mounts)
        {
            if (value == mountPath || value.StartsWith(mountPath + "/", StringComparison.Ordinal))
            {
                return local + value[mountPath.Length..];
            }
        }

        return value;
    }

    /// <summary>
    /// The configuration keys the environment sets (<c>__</c> becomes <c>:</c>), file paths moved to the local copies,
    /// without the variables libraries read, <see cref="SettingsDirectory.Variable"/> and helper variables only used in
    /// other variables' values. Any other variable without <c>__</c> (apart from <c>Urls</c>) is returned as an error.
    /// </summary>
    public Dictionary<string, string?> ConfigurationKeys(List<string> errors)
    {
        var keys = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in Environment)
        {
            if (LibraryPrefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal)) || name == SettingsDirectory.Variable)
            {
                continue;
            }

            if (!name.Contains("__", StringComparison.Ordinal) && name != "Urls")
            {
                if (!Referenced.Contains(name))
                {
                    errors.Add($"{name}: neither a configuration key (Section__Key) nor a variable a library reads or another variable uses");
                }

                continue;
            }

            keys[name.Replace("__", ":", StringComparison.Ordinal)] = Local(value);
        }

        return keys;
    }

    private static string Key(Manifests manifests, Manifests? fallback, string kind, JsonObject reference, string workload, string variable)
    {
        var name = Text(reference["name"])!;
        var key = Text(reference["key"])!;
        TestPki? pki = null;
        var data = Lookup(manifests, fallback, kind, name, ref pki);
        pki?.Dispose();
        return data is not null && data.TryGetValue(key, out var value)
            ? value
            : throw new Xunit.Sdk.XunitException($"{manifests.Overlay} {workload}: {variable} reads key {key} of {kind} {name}, which is not rendered");
    }

    /// <summary>
    /// A ConfigMap or Secret of the overlay; else (a Secret the operator makes, prod) the dev overlay's of the same name;
    /// else, for the cluster TLS Secret (cert-manager's in a real cluster), one made by a test CA.
    /// </summary>
    private static Dictionary<string, string>? Lookup(Manifests manifests, Manifests? fallback, string kind, string name, ref TestPki? pki)
    {
        if (manifests.Data(kind, name) is { } own)
        {
            return own;
        }

        if (kind == "Secret" && fallback?.Data(kind, name) is { } dev)
        {
            return dev;
        }

        if (kind == "Secret" && name == "callstate-cluster-tls")
        {
            pki ??= new TestPki();
            var certificate = pki.Server("callstate-silo", alsoClient: true, dns: "callstate-silo");
            var (crt, key) = pki.WritePem(certificate, "cluster");
            return new Dictionary<string, string>
            {
                ["tls.crt"] = File.ReadAllText(crt),
                ["tls.key"] = File.ReadAllText(key),
                ["ca.crt"] = File.ReadAllText(pki.WriteCa(pki.Ca, "ca")),
            };
        }

        return null;
    }

    public void Dispose()
    {
        _pki?.Dispose();
        Directory.Delete(Root, recursive: true);
    }

    [GeneratedRegex(@"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")]
    private static partial Regex VariableReference();
}
