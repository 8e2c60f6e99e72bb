using System.Globalization;
using System.Text.Json.Nodes;
using System.Xml.Linq;
using CallState.Silo.Admin;
using CallState.Silo.Hosting;
using CallState.Sip.Proxy;
using Microsoft.Extensions.Configuration;

namespace CallState.SipEdge.Tests.Deploy;

/// <summary>
/// The images can be built neither here nor in CI (no container engine, no base-image registry), so what can be checked
/// is: each Dockerfile under <c>deploy/docker</c> builds its project with the SDK image and runs it on the chiseled runtime
/// image as a non-root user, exposes the ports the process listens on, starts the project's assembly, and agrees with the
/// project's own container settings (<c>dotnet publish /t:PublishContainer</c>) and with the Kubernetes container ports.
/// </summary>
public sealed class ContainerImageTests
{
    public static TheoryData<string, string, string> Images => new()
    {
        { "silo.Dockerfile", "Silo", "callstate-silo" },
        { "edge.Dockerfile", "SipEdge", "callstate-edge" },
        { "cli.Dockerfile", "Cli", "callstate-cli" },
    };

    [Fact]
    public void Every_dockerfile_is_checked()
    {
        var checkedFiles = Images.Select(row => (string)row[0]).Order(StringComparer.Ordinal);
        var present = Directory.GetFiles(Repository.PathOf("deploy", "docker")).Select(Path.GetFileName).Where(f => f!.Contains("Dockerfile", StringComparison.Ordinal)).Order(StringComparer.Ordinal);
        Assert.Equal(checkedFiles, present);
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void The_dockerfile_builds_with_the_sdk_and_runs_the_assembly_on_the_chiseled_runtime_as_a_non_root_user(string dockerfile, string project, string workload)
    {
        var file = Dockerfile.Read(Repository.PathOf("deploy", "docker", dockerfile));
        var csproj = Project.Read(project);

        // Two stages: the SDK of the repository's .NET version builds, the runtime image of the project's kind runs.
        Assert.Equal(2, file.Stages.Count);
        var version = Project.TargetFramework["net".Length..];
        Assert.Equal($"mcr.microsoft.com/dotnet/sdk:{version}", file.Stages[0].Image);
        Assert.Equal("build", file.Stages[0].Name);
        var runtime = csproj.IsWeb ? "aspnet" : "runtime";
        Assert.Equal($"mcr.microsoft.com/dotnet/{runtime}:{version}-noble-chiseled", file.Stages[1].Image);
        Assert.Contains(file.Stages[1].Instructions, i => i.Keyword == "COPY" && i.Arguments.StartsWith("--from=build ", StringComparison.Ordinal));

        // The restore layer copies every project file the project builds from, and the build copies their sources.
        foreach (var reference in csproj.ProjectClosure())
        {
            var directory = Path.GetRelativePath(Repository.Root, Path.GetDirectoryName(reference)!).Replace('\\', '/');
            Assert.Contains(file.Stages[0].Instructions, i => i.Keyword == "COPY" && i.Arguments == $"{directory}/{Path.GetFileName(reference)} {directory}/");
            Assert.Contains(file.Stages[0].Instructions, i => i.Keyword == "COPY" && i.Arguments == $"{directory}/ {directory}/");
        }

        // A non-root numeric user (Kubernetes' runAsNonRoot can check only a number), the same as the project's and the pod's.
        var user = file.Stages[1].Last("USER").Split(':')[0];
        Assert.True(int.TryParse(user, NumberStyles.None, CultureInfo.InvariantCulture, out var uid) && uid > 0, $"USER {user} must be a non-zero number");
        Assert.Equal(user, csproj.Property("ContainerUser"));
        var pod = Manifests.Render("dev").Workloads().Single(w => w.Name == workload).Template["spec"]!;
        Assert.Equal(user, Manifests.Text(pod["containers"]![0]!["securityContext"]!["runAsUser"]));

        // The entry point runs the project's own assembly.
        Assert.Equal($"[\"dotnet\", \"{csproj.AssemblyName}.dll\"]", file.Stages[1].Last("ENTRYPOINT"));

        // The same base image and ports for dotnet publish /t:PublishContainer.
        Assert.Equal(file.Stages[1].Image, csproj.Property("ContainerBaseImage"));
        Assert.Equal(csproj.ContainerPorts(), file.ExposedPorts());

        // Writable paths are volumes, and the pod mounts one there (its root file system is read-only).
        var volumes = file.Stages[1].Instructions.Where(i => i.Keyword == "VOLUME").SelectMany(i => JsonNode.Parse(i.Arguments)!.AsArray().Select(v => v!.GetValue<string>())).ToList();
        Assert.Equal(["/tmp"], volumes);
        var mounts = ((JsonArray)pod["containers"]![0]!["volumeMounts"]!).Select(m => Manifests.Text(m!["mountPath"])).ToList();
        Assert.All(volumes, v => Assert.Contains(v, mounts));
    }

    [Theory]
    [InlineData("silo.Dockerfile", "Silo", "callstate-silo")]
    [InlineData("edge.Dockerfile", "SipEdge", "callstate-edge")]
    public void The_exposed_ports_are_the_ones_the_process_listens_on_and_the_pods_container_ports(string dockerfile, string project, string workload)
    {
        var exposed = Dockerfile.Read(Repository.PathOf("deploy", "docker", dockerfile)).ExposedPorts();

        // The image's defaults: the project's appsettings.json over the options' defaults.
        var configuration = new ConfigurationBuilder().AddJsonFile(Repository.PathOf("src", project, "appsettings.json")).Build();
        var listening = new HashSet<(int, string)>
        {
            (new Uri(configuration["Urls"]!).Port, "TCP"),
            (AdminOptions.From(configuration).HealthPort, "TCP"),
        };
        if (project == "Silo")
        {
            var cluster = configuration.GetSection(OrleansClusterOptions.SectionName).Get<OrleansClusterOptions>() ?? new();
            listening.Add((cluster.SiloPort, "TCP"));
            listening.Add((cluster.GatewayPort, "TCP"));
        }
        else
        {
            var sip = configuration.GetSection(SipProxyOptions.SectionName).Get<SipProxyOptions>() ?? new();
            listening.Add((sip.Port, "UDP"));
            listening.Add((sip.Port, "TCP"));
        }

        Assert.Equal(listening, exposed);
        var container = Manifests.Render("dev").Workloads().Single(w => w.Name == workload).Template["spec"]!["containers"]![0]!;
        var ports = ((JsonArray)container["ports"]!).Select(p => (int.Parse(Manifests.Text(p!["containerPort"])!, CultureInfo.InvariantCulture), Manifests.Text(p["protocol"])!)).ToHashSet();
        Assert.Equal(exposed, ports);
    }

    [Fact]
    public void The_docker_context_leaves_out_build_output_tests_and_the_repository_history()
    {
        var ignored = File.ReadAllLines(Repository.PathOf(".dockerignore")).Where(l => l.Length > 0 && l[0] != '#').ToHashSet();
        Assert.Superset(new HashSet<string> { "**/bin/", "**/obj/", ".git/", "tests/" }, ignored);

        // Nothing a Dockerfile copies is left out of the context.
        var leftOut = ignored.Where(p => !p.StartsWith("**", StringComparison.Ordinal)).Select(p => p.TrimEnd('/')).ToList();
        foreach (var dockerfile in Directory.GetFiles(Repository.PathOf("deploy", "docker"), "*.Dockerfile"))
        {
            foreach (var copy in Dockerfile.Read(dockerfile).Stages[0].Instructions.Where(i => i.Keyword == "COPY"))
            {
                var sources = copy.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries)[..^1];
                foreach (var source in sources)
                {
                    Assert.True(File.Exists(Repository.PathOf(source)) || Directory.Exists(Repository.PathOf(source)), $"{dockerfile}: COPY {source}: no such file");
                    Assert.DoesNotContain(leftOut, l => source == l || source.StartsWith(l + "/", StringComparison.Ordinal));
                }
            }
        }
    }

    private sealed record Instruction(string Keyword, string Arguments);

    private sealed record Stage(string Image, string? Name, List<Instruction> Instructions)
    {
        public string Last(string keyword) => Instructions.Last(i => i.Keyword == keyword).Arguments;
    }

    private sealed record Dockerfile(List<Stage> Stages)
    {
        public static Dockerfile Read(string path)
        {
            var stages = new List<Stage>();
            var logical = new List<string>();
            var current = "";
            foreach (var raw in File.ReadAllLines(path))
            {
                var line = raw.Trim();
                if (line.StartsWith('#') || (line.Length == 0 && current.Length == 0))
                {
                    continue;
                }

                current += line.EndsWith('\\') ? line[..^1] + " " : line;
                if (!line.EndsWith('\\'))
                {
                    logical.Add(current.Trim());
                    current = "";
                }
            }

            foreach (var line in logical.Where(l => l.Length > 0))
            {
                var space = line.IndexOf(' ', StringComparison.Ordinal);
                var keyword = line[..space].ToUpperInvariant();
                var arguments = line[(space + 1)..].Trim();
                if (keyword == "FROM")
                {
                    var parts = arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    stages.Add(new Stage(parts[0], parts.Length == 3 && parts[1].Equals("AS", StringComparison.OrdinalIgnoreCase) ? parts[2] : null, []));
                    continue;
                }

                stages[^1].Instructions.Add(new Instruction(keyword, arguments));
            }

            return new Dockerfile(stages);
        }

        /// <summary>The final stage's EXPOSE ports as (port, protocol), protocol upper case as Kubernetes writes it.</summary>
        public HashSet<(int, string)> ExposedPorts() =>
            [.. Stages[^1].Instructions.Where(i => i.Keyword == "EXPOSE").SelectMany(i => i.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Select(p => p.Split('/'))
                .Select(p => (int.Parse(p[0], CultureInfo.InvariantCulture), (p.Length > 1 ? p[1] : "tcp").ToUpperInvariant()))];
    }

    private sealed record Project(string Path, XDocument Xml)
    {
        public static Project Read(string name)
        {
            var path = Directory.GetFiles(Repository.PathOf("src", name), "*.csproj").Single();
            return new Project(path, XDocument.Load(path));
        }

        public string? Property(string name) => Xml.Descendants(name).LastOrDefault()?.Value;

        public bool IsWeb => Xml.Root!.Attribute("Sdk")!.Value == "Microsoft.NET.Sdk.Web";

        public string AssemblyName => Property("AssemblyName") ?? System.IO.Path.GetFileNameWithoutExtension(Path);

        public static string TargetFramework =>
            XDocument.Load(Repository.PathOf("Directory.Build.props")).Descendants("TargetFramework").Single().Value;

        public HashSet<(int, string)> ContainerPorts() =>
            [.. Xml.Descendants("ContainerPort").Select(p => (int.Parse(p.Attribute("Include")!.Value, CultureInfo.InvariantCulture), (p.Attribute("Type")?.Value ?? "tcp").ToUpperInvariant()))];

        /// <summary>This project file and every one it references, directly or not.</summary>
        public List<string> ProjectClosure()
        {
            var seen = new List<string>();
            var pending = new Stack<string>([System.IO.Path.GetFullPath(Path)]);
            while (pending.TryPop(out var next))
            {
                if (seen.Contains(next))
                {
                    continue;
                }

                seen.Add(next);
                foreach (var reference in XDocument.Load(next).Descendants("ProjectReference"))
                {
                    pending.Push(System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(next)!, reference.Attribute("Include")!.Value)));
                }
            }

            return seen;
        }
    }
}
