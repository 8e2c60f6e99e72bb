using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace CallState.SipEdge.Tests.Deploy;

/// <summary>The repository seen from the test assembly.</summary>
internal static class Repository
{
    private static readonly Lazy<string> RootPath = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Cluster.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Cluster.sln not found above " + AppContext.BaseDirectory);
    });

    public static string Root => RootPath.Value;

    public static string PathOf(params string[] parts) => Path.Combine([Root, .. parts]);
}

/// <summary>
/// One overlay of <c>deploy/k8s</c> rendered by <c>kubectl kustomize</c> (the Debian package kubectl; scripts/test.sh
/// installs it) and parsed into JSON nodes, one per resource.
/// </summary>
internal sealed class Manifests
{
    private Manifests(string overlay, IReadOnlyList<JsonObject> resources)
    {
        Overlay = overlay;
        Resources = resources;
    }

    public string Overlay { get; }

    public IReadOnlyList<JsonObject> Resources { get; }

    public static readonly string[] Overlays = ["dev", "prod"];

    /// <summary>Renders <paramref name="overlay"/>; fails (never skips) when kubectl is missing or kustomize refuses.</summary>
    public static Manifests Render(string overlay)
    {
        var directory = Repository.PathOf("deploy", "k8s", "overlays", overlay);
        var yaml = Kubectl(["kustomize", directory]);
        return new Manifests(overlay, Parse(yaml));
    }

    public static string Kubectl(IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo("kubectl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("kubectl did not start");
        }
        catch (Win32Exception ex)
        {
            throw new InvalidOperationException("kubectl is not installed (Debian: apt-get install kubectl; scripts/test.sh installs it)", ex);
        }

        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException("kubectl " + string.Join(' ', start.ArgumentList) + " did not end within 60 s");
            }

            Assert.True(process.ExitCode == 0, $"kubectl {string.Join(' ', start.ArgumentList)} failed ({process.ExitCode}): {error.Result}");
            return output.Result;
        }
    }

    /// <summary>Every document of a multi-document YAML stream, as JSON (scalars stay strings, as YAML wrote them).</summary>
    public static List<JsonObject> Parse(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        return [.. stream.Documents.Select(d => ToJson(d.RootNode)).OfType<JsonObject>()];
    }

    private static JsonNode? ToJson(YamlNode node) => node switch
    {
        YamlMappingNode map => new JsonObject(map.Children.Select(c => KeyValuePair.Create(((YamlScalarNode)c.Key).Value!, ToJson(c.Value)))),
        YamlSequenceNode list => new JsonArray([.. list.Children.Select(ToJson)]),
        YamlScalarNode { Value: null or "null" or "~", Style: ScalarStyle.Plain } => null,
        YamlScalarNode scalar => JsonValue.Create(scalar.Value),
        _ => throw new InvalidOperationException("unexpected YAML node " + node.NodeType),
    };

    public IEnumerable<JsonObject> OfKind(string kind) => Resources.Where(r => Text(r["kind"]) == kind);

    public JsonObject? Find(string kind, string name) => OfKind(kind).FirstOrDefault(r => Text(r["metadata"]?["name"]) == name);

    public JsonObject Get(string kind, string name) => Find(kind, name) ?? throw new Xunit.Sdk.XunitException($"{Overlay}: no {kind} {name}");

    /// <summary>Deployments, StatefulSets and Jobs: their name, kind and pod template.</summary>
    public IEnumerable<(string Kind, string Name, JsonObject Template)> Workloads() =>
        Resources.Where(r => Text(r["kind"]) is "Deployment" or "StatefulSet" or "Job" or "DaemonSet")
            .Select(r => (Text(r["kind"])!, Text(r["metadata"]!["name"])!, (JsonObject)r["spec"]!["template"]!));

    public static string? Text(JsonNode? node) => node?.GetValueKind() == System.Text.Json.JsonValueKind.String ? node.GetValue<string>() : node?.ToJsonString();

    public static Dictionary<string, string> Labels(JsonNode? labels) =>
        labels is JsonObject map ? map.ToDictionary(p => p.Key, p => Text(p.Value) ?? "") : [];

    /// <summary>Whether <paramref name="selector"/> (a map of labels, or one with matchLabels) selects a pod with <paramref name="labels"/>.</summary>
    public static bool Selects(JsonNode? selector, IReadOnlyDictionary<string, string> labels)
    {
        var wanted = selector is JsonObject o && o.ContainsKey("matchLabels") ? Labels(o["matchLabels"]) : Labels(selector);
        return wanted.All(w => labels.TryGetValue(w.Key, out var v) && v == w.Value);
    }

    /// <summary>The pod templates whose labels <paramref name="selector"/> selects.</summary>
    public List<string> PodsSelectedBy(JsonNode? selector) =>
        [.. Workloads().Where(w => Selects(selector, Labels(w.Template["metadata"]?["labels"]))).Select(w => w.Name)];

    /// <summary>The data of a rendered ConfigMap or Secret (a Secret's base64 decoded), by key.</summary>
    public Dictionary<string, string>? Data(string kind, string name)
    {
        var resource = Find(kind, name);
        if (resource is null)
        {
            return null;
        }

        var data = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in (resource["data"] as JsonObject) ?? [])
        {
            var text = Text(value) ?? "";
            data[key] = kind == "Secret" ? System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(text)) : text;
        }

        foreach (var (key, value) in (resource["stringData"] as JsonObject) ?? [])
        {
            data[key] = Text(value) ?? "";
        }

        return data;
    }
}
