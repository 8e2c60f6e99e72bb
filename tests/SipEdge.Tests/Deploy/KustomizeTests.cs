using System.Text.Json.Nodes;
using CallState.Silo;
using CallState.Silo.Admin;
using CallState.Silo.Hosting;
using CallState.Sip.Proxy;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using static CallState.SipEdge.Tests.Deploy.Manifests;

namespace CallState.SipEdge.Tests.Deploy;

/// <summary>
/// Every overlay of <c>deploy/k8s</c>, rendered with <c>kubectl kustomize</c> and checked against the processes it runs
/// (issue 15's acceptance; docs/deploy.md): selectors, probes, resources, security contexts, ports, the SIP Service, the
/// configuration keys bound and validated by the silo's and the edge's own registration, and the NetworkPolicies.
/// </summary>
public sealed class KustomizeTests
{
    private static readonly Lazy<Dictionary<string, Manifests>> Rendered = new(() => Overlays.ToDictionary(o => o, Render));

    public static TheoryData<string> AllOverlays => [.. Overlays];

    private static Manifests Of(string overlay) => Rendered.Value[overlay];

    [Theory]
    [MemberData(nameof(AllOverlays))]
    public void Selectors_match_the_labels_of_existing_pods(string overlay)
    {
        var m = Of(overlay);
        var errors = new List<string>();
        foreach (var resource in m.Resources)
        {
            var kind = Text(resource["kind"]);
            var name = Text(resource["metadata"]!["name"]);
            switch (kind)
            {
                case "Deployment" or "StatefulSet":
                    if (!Selects(resource["spec"]!["selector"], Labels(resource["spec"]!["template"]!["metadata"]!["labels"])))
                    {
                        errors.Add($"{kind} {name}: its selector does not select its own pods");
                    }

                    break;
                case "Service" or "PodDisruptionBudget":
                    // A Service without a selector (endpoints managed elsewhere) selects nothing by design.
                    var selector = resource["spec"]!["selector"];
                    if (selector is not null && m.PodsSelectedBy(selector).Count == 0)
                    {
                        errors.Add($"{kind} {name}: selects no pod");
                    }

                    break;
                case "HorizontalPodAutoscaler":
                    var target = resource["spec"]!["scaleTargetRef"]!;
                    if (m.Find(Text(target["kind"])!, Text(target["name"])!) is null)
                    {
                        errors.Add($"{kind} {name}: scales {Text(target["kind"])} {Text(target["name"])}, which does not exist");
                    }

                    break;
            }
        }

        Assert.Empty(errors);
    }

    [Theory]
    [MemberData(nameof(AllOverlays))]
    public void Every_container_has_probes_resources_and_a_non_root_read_only_security_context(string overlay)
    {
        var errors = new List<string>();
        foreach (var (kind, name, template) in Of(overlay).Workloads())
        {
            var pod = template["spec"]!;
            foreach (var container in ((JsonArray)pod["containers"]!).OfType<JsonObject>())
            {
                var where = $"{kind} {name} container {Text(container["name"])}";

                // A Job's container runs to its end: no traffic to be ready for, nothing to restart while it works.
                if (kind != "Job" && (container["livenessProbe"] is null || container["readinessProbe"] is null))
                {
                    errors.Add($"{where}: no liveness or readiness probe");
                }

                var resources = container["resources"];
                if (resources?["requests"]?["cpu"] is null || resources["requests"]?["memory"] is null || resources["limits"]?["memory"] is null)
                {
                    errors.Add($"{where}: resources need cpu and memory requests and a memory limit");
                }

                var security = container["securityContext"];
                var runAsNonRoot = Text(security?["runAsNonRoot"]) ?? Text(pod["securityContext"]?["runAsNonRoot"]);
                var runAsUser = Text(security?["runAsUser"]) ?? Text(pod["securityContext"]?["runAsUser"]);
                if (runAsNonRoot != "true" || runAsUser is null or "0")
                {
                    errors.Add($"{where}: must run as non-root with a non-zero runAsUser (was runAsNonRoot {runAsNonRoot}, runAsUser {runAsUser})");
                }

                if (Text(security?["readOnlyRootFilesystem"]) != "true" || Text(security?["allowPrivilegeEscalation"]) != "false")
                {
                    errors.Add($"{where}: needs readOnlyRootFilesystem true and allowPrivilegeEscalation false");
                }

                if (security?["capabilities"]?["drop"] is not JsonArray drop || !drop.Any(d => Text(d) == "ALL"))
                {
                    errors.Add($"{where}: must drop all capabilities");
                }
            }
        }

        Assert.Empty(errors);
    }

    [Theory]
    [MemberData(nameof(AllOverlays))]
    public void The_edge_service_is_a_load_balancer_for_udp_and_tcp_5060_keeping_source_addresses(string overlay)
    {
        var m = Of(overlay);
        var service = m.Get("Service", "callstate-edge");
        var spec = service["spec"]!;
        Assert.Equal("LoadBalancer", Text(spec["type"]));
        Assert.Equal("Local", Text(spec["externalTrafficPolicy"]));
        var ports = ((JsonArray)spec["ports"]!).OfType<JsonObject>().Select(p => (Text(p["port"]), Text(p["protocol"]))).ToHashSet();
        Assert.Equal([("5060", "UDP"), ("5060", "TCP")], ports);

        // The named target ports are the edge container's SIP ports, protocol for protocol.
        var edge = (JsonObject)m.Get("Deployment", "callstate-edge")["spec"]!["template"]!["spec"]!["containers"]![0]!;
        var containerPorts = ((JsonArray)edge["ports"]!).OfType<JsonObject>().ToDictionary(p => Text(p["name"])!, p => (Text(p["containerPort"]), Text(p["protocol"])));
        foreach (var port in ((JsonArray)spec["ports"]!).OfType<JsonObject>())
        {
            Assert.True(containerPorts.TryGetValue(Text(port["targetPort"])!, out var target), $"targetPort {Text(port["targetPort"])} is no edge container port");
            Assert.Equal(("5060", Text(port["protocol"])), target);
        }
    }

    [Theory]
    [MemberData(nameof(AllOverlays))]
    public void Network_policies_select_existing_pods(string overlay)
    {
        var m = Of(overlay);
        var errors = new List<string>();
        foreach (var policy in m.OfKind("NetworkPolicy"))
        {
            var name = Text(policy["metadata"]!["name"]);
            if (m.PodsSelectedBy(policy["spec"]!["podSelector"]).Count == 0)
            {
                errors.Add($"NetworkPolicy {name}: its podSelector selects no pod");
            }

            foreach (var rule in ((policy["spec"]!["ingress"] as JsonArray) ?? []).OfType<JsonObject>())
            {
                foreach (var peer in ((rule["from"] as JsonArray) ?? []).OfType<JsonObject>())
                {
                    if (peer["podSelector"] is { } selector && m.PodsSelectedBy(selector).Count == 0)
                    {
                        errors.Add($"NetworkPolicy {name}: an ingress peer selects no pod ({selector.ToJsonString()})");
                    }
                }
            }
        }

        // Only silos reach PostgreSQL (where it runs in the cluster), and only edges, silos and the CLI reach the silos.
        if (m.Find("NetworkPolicy", "callstate-postgres") is { } postgres)
        {
            Assert.Equal(["callstate-silo"], Peers(m, postgres));
        }

        Assert.Equal(["callstate-cli", "callstate-edge", "callstate-silo"], Peers(m, m.Get("NetworkPolicy", "callstate-silo")));
        Assert.Empty(errors);
    }

    private static List<string> Peers(Manifests m, JsonObject policy) =>
        [.. ((JsonArray)policy["spec"]!["ingress"]!).OfType<JsonObject>()
            .SelectMany(r => ((r["from"] as JsonArray) ?? []).OfType<JsonObject>())
            .SelectMany(p => p["podSelector"] is { } s ? m.PodsSelectedBy(s) : ["(not a pod selector)"])
            .Distinct().Order(StringComparer.Ordinal)];

    [Theory]
    [MemberData(nameof(AllOverlays))]
    public void The_silo_configuration_binds_and_validates_and_its_container_ports_are_the_ones_it_listens_on(string overlay)
    {
        using var pod = Pod(overlay, "callstate-silo");
        var configuration = Configuration(pod, "Silo", out var errors);
        errors.AddRange(SiloHostErrors(configuration));
        Assert.Empty(errors);

        var cluster = configuration.GetSection(OrleansClusterOptions.SectionName).Get<OrleansClusterOptions>()!;
        var admin = AdminOptions.From(configuration);
        Assert.Equal(PodConfiguration.PodIP, cluster.AdvertisedAddress);
        Assert.Equal(ClusteringMode.Storage, cluster.Clustering);
        var listening = UrlPorts(configuration).Append(admin.HealthPort).Append(cluster.SiloPort).Append(cluster.GatewayPort)
            .Select(p => (p, "TCP")).ToHashSet();
        Assert.Equal(listening, ContainerPorts(overlay, "callstate-silo"));
    }

    [Theory]
    [MemberData(nameof(AllOverlays))]
    public void The_edge_configuration_binds_and_validates_and_its_container_ports_are_the_ones_it_listens_on(string overlay)
    {
        using var pod = Pod(overlay, "callstate-edge");
        var configuration = Configuration(pod, "SipEdge", out var errors);
        errors.AddRange(EdgeErrors(configuration));
        Assert.Empty(errors);

        var sip = configuration.GetSection(SipProxyOptions.SectionName).Get<SipProxyOptions>()!;
        var admin = AdminOptions.From(configuration);
        Assert.Equal(PodConfiguration.PodIP, sip.ViaHost);
        Assert.Equal(Manifests.Text(Of(overlay).Get("ConfigMap", "callstate-edge-network")["data"]!["advertised-host"]), sip.AdvertisedHost);
        var listening = UrlPorts(configuration).Append(admin.HealthPort).Select(p => (p, "TCP")).ToHashSet();
        if (sip.Udp)
        {
            listening.Add((sip.Port, "UDP"));
        }

        if (sip.Tcp)
        {
            listening.Add((sip.Port, "TCP"));
        }

        if (sip.Tls.Enabled)
        {
            listening.Add((sip.Tls.Port, "TCP"));
        }

        Assert.Equal(listening, ContainerPorts(overlay, "callstate-edge"));

        // The kubelet kills the pod after the grace period: the drain and the rest of the shutdown must fit in it.
        var grace = int.Parse(Manifests.Text(Of(overlay).Get("Deployment", "callstate-edge")["spec"]!["template"]!["spec"]!["terminationGracePeriodSeconds"])!,
            System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(TimeSpan.FromSeconds(grace) >= sip.DrainTimeout + EdgeHost.DrainShutdownMargin,
            $"terminationGracePeriodSeconds {grace} is below DrainTimeout {sip.DrainTimeout} + {EdgeHost.DrainShutdownMargin}");
    }

    [Fact]
    public void A_misspelt_or_invalid_key_in_a_manifest_fails_the_check()
    {
        // The same check as above, on the dev edge with one key misspelt and one value invalid.
        using var pod = Pod("dev", "callstate-edge");
        var configuration = Configuration(pod, "SipEdge", out var errors, new Dictionary<string, string?>
        {
            ["CallState:Sip:DrainTimout"] = "00:00:25",
            ["CallState:Sip:Port"] = "70000",
        });
        errors.AddRange(EdgeErrors(configuration));
        Assert.Contains(errors, e => e.Contains("CallState:Sip:DrainTimout", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("CallState:Sip:Port", StringComparison.Ordinal));
    }

    [Fact]
    public void The_prometheus_rule_holds_the_rules_of_deploy_prometheus_and_the_dashboard_config_map_the_dashboard_file()
    {
        var prod = Of("prod");
        var rule = prod.Get("PrometheusRule", "callstate");
        var file = Parse(File.ReadAllText(Repository.PathOf("deploy", "prometheus", "callstate-rules.yml")))[0];
        Assert.Equal(Sorted(file["groups"])!.ToJsonString(), Sorted(rule["spec"]!["groups"])!.ToJsonString());

        foreach (var overlay in Overlays)
        {
            var dashboard = Of(overlay).Data("ConfigMap", "callstate-grafana-dashboard")!;
            Assert.Equal(File.ReadAllText(Repository.PathOf("deploy", "grafana", "callstate-dashboard.json")), dashboard["callstate-dashboard.json"]);
            var rules = Of(overlay).Data("ConfigMap", "callstate-prometheus-rules")!;
            Assert.Equal(File.ReadAllText(Repository.PathOf("deploy", "prometheus", "callstate-rules.yml")), rules["callstate-rules.yml"]);
        }
    }

    [Fact]
    public void The_cli_job_presents_a_token_the_silos_accept()
    {
        var admin = Of("dev").Data("Secret", "callstate-admin")!;
        var token = admin["cli-token"].Trim();
        Assert.Contains(admin["tokens"].Split('\n'), line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries) is [_, _, var t] && t == token);
    }

    [Fact]
    public void The_local_cluster_script_runs_with_the_settings_the_dev_overlay_gives_its_pods()
    {
        // deploy/local/cluster.sh reads the env files the dev overlay turns into ConfigMaps for the pods' envFrom.
        var script = File.ReadAllText(Repository.PathOf("deploy", "local", "cluster.sh"));
        var dev = Of("dev");
        foreach (var (file, configMap, workloads) in new[]
        {
            ("callstate.env", "callstate-env", new[] { "callstate-silo", "callstate-edge" }),
            ("edge.env", "callstate-edge-env", ["callstate-edge"]),
        })
        {
            Assert.Contains($"\"$dev_overlay/{file}\"", script, StringComparison.Ordinal);
            var lines = File.ReadAllLines(Repository.PathOf("deploy", "k8s", "overlays", "dev", file))
                .Where(l => l.Length > 0 && l[0] != '#').Select(l => l.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
            Assert.NotEmpty(lines);
            Assert.Equal(lines, dev.Data("ConfigMap", configMap));
            foreach (var workload in workloads)
            {
                var container = dev.Workloads().Single(w => w.Name == workload).Template["spec"]!["containers"]![0]!;
                Assert.Contains(((JsonArray)container["envFrom"]!).OfType<JsonObject>(), e => Manifests.Text(e["configMapRef"]?["name"]) == configMap);
            }
        }
    }

    /// <summary>The same JSON with every object's keys in ordinal order (kustomize writes them sorted).</summary>
    private static JsonNode? Sorted(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => KeyValuePair.Create(p.Key, Sorted(p.Value)))),
        JsonArray a => new JsonArray([.. a.Select(Sorted)]),
        _ => node?.DeepClone(),
    };

    private static PodConfiguration Pod(string overlay, string workload)
    {
        var m = Of(overlay);
        var template = m.Workloads().Single(w => w.Name == workload).Template;
        return new PodConfiguration(m, overlay == "dev" ? null : Of("dev"), workload, template);
    }

    private static HashSet<(int, string)> ContainerPorts(string overlay, string workload)
    {
        var container = Of(overlay).Workloads().Single(w => w.Name == workload).Template["spec"]!["containers"]![0]!;
        return [.. ((JsonArray)container["ports"]!).OfType<JsonObject>()
            .Select(p => (int.Parse(Manifests.Text(p["containerPort"])!, System.Globalization.CultureInfo.InvariantCulture), Manifests.Text(p["protocol"]) ?? "TCP"))];
    }

    private static IEnumerable<int> UrlPorts(IConfiguration configuration) =>
        (configuration["Urls"] ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries).Select(u => new Uri(u).Port);

    /// <summary>
    /// The process's configuration as it would start in the pod: its appsettings.json, the mounted settings directory
    /// (<see cref="SettingsDirectory"/>), then the environment; keys nothing reads are errors (<see cref="SiloHost.ThrowOnUnknownKeys"/>).
    /// </summary>
    private static IConfigurationRoot Configuration(PodConfiguration pod, string project, out List<string> errors, IDictionary<string, string?>? extra = null)
    {
        errors = [];
        var keys = pod.ConfigurationKeys(errors);
        foreach (var (key, value) in extra ?? new Dictionary<string, string?>())
        {
            keys[key] = value;
        }

        var builder = new ConfigurationBuilder().AddJsonFile(Repository.PathOf("src", project, "appsettings.json"), optional: false, reloadOnChange: false);
        builder.AddCallStateSettingsDirectory(name => pod.Environment.TryGetValue(name, out var value) ? pod.Local(value) : null);
        var configuration = builder.AddInMemoryCollection(keys).Build();
        try
        {
            SiloHost.ThrowOnUnknownKeys(configuration, project == "Silo" ? SiloHost.Sections : EdgeHost.Sections);
        }
        catch (OptionsValidationException ex)
        {
            errors.AddRange(ex.Failures);
        }

        var admin = AdminOptions.From(configuration);
        errors.AddRange(admin.Validate([.. UrlPorts(configuration)]));
        admin.LoadCredentials(out var credentialErrors);
        errors.AddRange(credentialErrors);
        return configuration;
    }

    /// <summary>The silo's registration (<see cref="SiloServiceCollectionExtensions.AddCallStateSilo"/>) and its start-up validation.</summary>
    private static List<string> SiloHostErrors(IConfiguration configuration) =>
        Validate(configuration, services => services.AddCallStateSilo(configuration));

    /// <summary>The edge's registration (<see cref="EdgeHost.AddCallStateSipEdge"/>) and its start-up validation.</summary>
    private static List<string> EdgeErrors(IConfiguration configuration) =>
        Validate(configuration, services => services.AddCallStateSipEdge(configuration));

    private static List<string> Validate(IConfiguration configuration, Action<IServiceCollection> register)
    {
        var services = new ServiceCollection().AddLogging().AddMetrics().AddSingleton(configuration);
        try
        {
            register(services);
            using var provider = services.BuildServiceProvider();
            provider.GetRequiredService<IStartupValidator>().Validate();
            return [];
        }
        catch (OptionsValidationException ex)
        {
            return [.. ex.Failures];
        }
        catch (AggregateException ex)
        {
            return [.. ex.InnerExceptions.OfType<OptionsValidationException>().SelectMany(e => e.Failures)
                .Concat(ex.InnerExceptions.Where(e => e is not OptionsValidationException).Select(e => e.Message))];
        }
    }
}
