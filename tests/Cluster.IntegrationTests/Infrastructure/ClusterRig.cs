using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using CallState.Storage;
using CallState.Storage.Membership;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Orleans.Configuration;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>A silo process that exited without the test asking for it, seen by the rig's supervisor.</summary>
/// <param name="Index">The silo's slot in the rig.</param>
/// <param name="ProcessId">The process that exited.</param>
/// <param name="ExitCode">Its exit code (Orleans' fail-fast aborts the process).</param>
/// <param name="At">When the supervisor saw it, on <see cref="ClusterRig.UasClock"/>.</param>
/// <param name="Output">What the process wrote, for the failure message or the test's assertions.</param>
public sealed record SiloExit(int Index, int ProcessId, int ExitCode, TimeSpan At, string Output);

/// <summary>
/// A cluster on loopback: Orleans silo processes joined through the membership table in the state store's database
/// (Storage clustering, one cluster id per rig), edge processes connected to every silo's gateway, and one sipp callee
/// (uas_oracle.xml) that logs every call it sees. A supervisor restarts a silo whose process exits by itself (Orleans
/// makes a silo that learns it was declared dead end its own process) on the same ports, as a process manager would.
/// </summary>
public sealed class ClusterRig : IAsyncDisposable
{
    /// <summary>Orleans probes each silo this often and waits this long for each answer (CallState:Orleans:ProbeTimeout).</summary>
    public static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(1);

    /// <summary>Missed probes before a silo is suspected (CallState:Orleans:MissedProbesLimit).</summary>
    public const int MissedProbesLimit = 3;

    /// <summary>How long after a cut admission another silo finishes or undoes it (CallState:Grains:RecoveryDelay).</summary>
    public static readonly TimeSpan RecoveryDelay = TimeSpan.FromSeconds(2);

    /// <summary>
    /// An upper bound, with margin for two loaded cores, on the time from a silo going silent to Orleans declaring it
    /// dead: missed direct probes, then indirect probes through another silo, then the votes written to the table.
    /// </summary>
    public static readonly TimeSpan DeathDeclaration = TimeSpan.FromSeconds(30);


    private readonly IReadOnlyList<string> _storage;
    private readonly IReadOnlyList<string> _settings;
    private readonly IReadOnlyList<string> _edgeSettings;
    private readonly List<string> _files = [];
    private readonly Lock _lock = new();
    private readonly SiloProcess?[] _silos;
    private readonly bool[] _stoppedByTest;
    private readonly (int Http, int Silo, int Gateway)[] _siloPorts;
    private readonly int[] _edgePorts;
    private readonly int? _advertisedEdgePort;
    private readonly List<SiloProcess> _exited = [];
    private readonly List<SiloExit> _exits = [];
    private readonly List<SipEdgeProcess> _retiredEdges = [];
    private readonly CancellationTokenSource _stopSupervisor = new();
    private Task _supervisor = Task.CompletedTask;

    private ClusterRig(IReadOnlyList<string> storage, IReadOnlyList<string> settings, int silos, int edges, bool advertiseLast, string uasScenario,
        IReadOnlyList<string>? edgeSettings)
    {
        _edgeSettings = edgeSettings ?? [];
        _storage = storage;
        _settings = settings;
        _silos = new SiloProcess?[silos];
        _stoppedByTest = new bool[silos];
        _siloPorts = Enumerable.Range(0, silos)
            .Select(_ => (SipEdgeProcess.FreeUdpAndTcpPort(), SipEdgeProcess.FreeUdpAndTcpPort(), SipEdgeProcess.FreeUdpAndTcpPort()))
            .ToArray();
        _edgePorts = Enumerable.Range(0, edges).Select(_ => SipEdgeProcess.FreeUdpAndTcpPort()).ToArray();
        _advertisedEdgePort = advertiseLast ? _edgePorts[^1] : null;
        UasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        Uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario(uasScenario), "-i", "127.0.0.1", "-p", Port(UasPort), "-t", "u1", "-trace_logs",
            "-default_behaviors", "all,-abortunexp"]);
    }

    /// <summary>
    /// Most restarts the supervisor makes in one rig (6 unless the test allows more): a silo that dies at every start
    /// fails the test instead.
    /// </summary>
    public int MaxRestarts { get; set; } = 6;

    /// <summary>This rig's Orleans cluster: silos of other rigs on the same database never join it.</summary>
    public string ClusterId { get; } = "it-" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>The silo processes now running in each slot (a restarted silo replaces the one that exited).</summary>
    public IReadOnlyList<SiloProcess> Silos
    {
        get
        {
            lock (_lock)
            {
                return _silos.Select(s => s ?? throw new InvalidOperationException("the silos are not started")).ToArray();
            }
        }
    }

    /// <summary>Silo processes that exited by themselves, in order, each restarted by the supervisor.</summary>
    public IReadOnlyList<SiloExit> SiloExits
    {
        get
        {
            lock (_lock)
            {
                return [.. _exits];
            }
        }
    }

    public List<SipEdgeProcess> Edges { get; } = [];

    public Sipp Uas { get; }

    /// <summary>Started with the callee: its elapsed time is (about) the callee's clock_tick in its log lines.</summary>
    public Stopwatch UasClock { get; } = Stopwatch.StartNew();

    public int UasPort { get; }

    /// <summary>
    /// Starts the callee, <paramref name="silos"/> silos and <paramref name="edges"/> edges on <paramref name="storage"/> with
    /// <paramref name="settings"/> (limits, leases: given to silos and edges), and waits until every silo is ready and every
    /// edge is connected to every silo's gateway. With <paramref name="advertiseLast"/> every edge puts the last edge's address
    /// in Record-Route (a load balancer's address would be there). The callee runs <paramref name="uasScenario"/>, which
    /// writes the start and end lines <see cref="CallOracle"/> replays. <paramref name="edgeSettings"/> go to the edges only
    /// (a silo refuses the edge's sections, such as <c>CallState:Admission</c>).
    /// </summary>
    public static async Task<ClusterRig> StartAsync(IReadOnlyList<string> storage, IReadOnlyList<string> settings, int silos = 3, int edges = 2, bool advertiseLast = false,
        string uasScenario = "uas_oracle.xml", IReadOnlyList<string>? edgeSettings = null)
    {
        var rig = Create(storage, settings, silos, edges, advertiseLast, uasScenario, edgeSettings);
        try
        {
            await rig.StartSilosAsync();
            rig.StartEdges();
            await rig.WaitEdgesReadyAsync(TimeSpan.FromSeconds(60));
            await rig.WaitEveryEdgeSeesEverySiloAsync(TimeSpan.FromSeconds(30));
            return rig;
        }
        catch
        {
            await rig.DisposeAsync();
            throw;
        }
    }

    /// <summary>Chooses every port and starts the callee; silos and edges are started by the test, in its own order.</summary>
    public static ClusterRig Create(IReadOnlyList<string> storage, IReadOnlyList<string> settings, int silos = 3, int edges = 2, bool advertiseLast = false,
        string uasScenario = "uas_oracle.xml", IReadOnlyList<string>? edgeSettings = null) =>
        new(storage, settings, silos, edges, advertiseLast, uasScenario, edgeSettings);

    /// <summary>Starts every silo, waits until each is ready, then supervises them.</summary>
    public async Task StartSilosAsync()
    {
        lock (_lock)
        {
            for (var i = 0; i < _silos.Length; i++)
            {
                _silos[i] = StartSilo(i);
            }
        }

        await Task.WhenAll(Silos.Select(s => s.WaitReadyAsync(TimeSpan.FromSeconds(60))));
        _supervisor = Task.Run(() => SuperviseAsync(_stopSupervisor.Token));
    }

    /// <summary>Starts every edge, each with every silo's gateway; does not wait for them.</summary>
    public void StartEdges()
    {
        for (var i = 0; i < _edgePorts.Length; i++)
        {
            Edges.Add(SipEdgeProcess.Start(EdgeSettings(), _edgePorts[i]));
        }
    }

    /// <summary>Waits until every edge answers ready: its SIP listeners are bound and it is connected to the cluster.</summary>
    public Task WaitEdgesReadyAsync(TimeSpan timeout) => Task.WhenAll(Edges.Select(e => e.WaitReadyAsync(timeout)));

    /// <summary>
    /// Waits until every edge has logged a connection to as many gateways as there are silos: an edge that reached only
    /// some silos would still be ready, and would put all of its traffic on them.
    /// </summary>
    public async Task WaitEveryEdgeSeesEverySiloAsync(TimeSpan timeout)
    {
        var line = $"Connected to {_silos.Length.ToString(CultureInfo.InvariantCulture)} silo gateways";
        for (var i = 0; i < Edges.Count; i++)
        {
            if (!await Edges[i].OutputContainsAsync(line, timeout))
            {
                throw new TimeoutException($"edge{i} never logged '{line}':\n{Describe()}");
            }
        }
    }

    /// <summary>SIGKILL of silo <paramref name="index"/>; the supervisor leaves it down.</summary>
    public void KillSilo(int index)
    {
        lock (_lock)
        {
            _stoppedByTest[index] = true;
        }

        Silos[index].Kill();
    }

    /// <summary>
    /// SIGTERM of silo <paramref name="index"/>, as Kubernetes stops a pod: Orleans shuts the silo down gracefully (its
    /// grains deactivate and their next calls activate them on the other silos) and the process exits by itself. The
    /// supervisor leaves it down; <see cref="RestartSilo"/> starts its successor.
    /// </summary>
    public SiloProcess TerminateSilo(int index)
    {
        SiloProcess silo;
        lock (_lock)
        {
            _stoppedByTest[index] = true;
            silo = _silos[index] ?? throw new InvalidOperationException($"silo{index} is not started");
        }

        silo.Terminate();
        return silo;
    }

    /// <summary>
    /// Starts silo <paramref name="index"/> again, on its own ports, after <see cref="KillSilo"/> or <see cref="TerminateSilo"/>; the supervisor restarts
    /// it again should it exit by itself.
    /// </summary>
    public SiloProcess RestartSilo(int index)
    {
        lock (_lock)
        {
            if (_silos[index] is { } old)
            {
                old.Kill();
                _exited.Add(old);
            }

            var silo = StartSilo(index);
            _silos[index] = silo;
            _stoppedByTest[index] = false;
            return silo;
        }
    }

    /// <summary>SIGSTOP of silo <paramref name="index"/>: frozen with its sockets open, as in a long pause of the machine.</summary>
    public void PauseSilo(int index) => Silos[index].Pause();

    /// <summary>SIGCONT of silo <paramref name="index"/>.</summary>
    public void ResumeSilo(int index) => Silos[index].Resume();

    /// <summary>SIGKILL of edge <paramref name="index"/>, then a new edge process on the same SIP port, as a process manager would.</summary>
    public SipEdgeProcess RestartEdge(int index)
    {
        var old = Edges[index];
        old.Kill();
        _retiredEdges.Add(old);
        var edge = SipEdgeProcess.Start(EdgeSettings(), _edgePorts[index]);
        Edges[index] = edge;
        return edge;
    }

    /// <summary>SIGSTOP of edge <paramref name="index"/>: frozen with its sockets open.</summary>
    public void PauseEdge(int index) => Edges[index].Pause();

    /// <summary>SIGCONT of edge <paramref name="index"/>.</summary>
    public void ResumeEdge(int index) => Edges[index].Resume();

    /// <summary>
    /// The status the membership table gives the newest generation of silo <paramref name="index"/> (by its silo port), read
    /// with the product's own membership table over this rig's storage; null when it has no row.
    /// </summary>
    public async Task<SiloStatus?> MembershipStatusAsync(int index)
    {
        var storage = new ConfigurationBuilder().AddCommandLine([.. _storage]).Build()
            .GetSection(StorageOptions.SectionName).Get<StorageOptions>() ?? new StorageOptions();
        await using var table = new StorageMembershipTable(Options.Create(storage), Options.Create(new ClusterOptions { ClusterId = ClusterId }));
        await table.InitializeMembershipTableAsync(tryInitTableVersion: false);
        var data = await table.ReadAllAsync();
        return data.Members
            .Select(m => m.Item1)
            .Where(e => e.SiloAddress.Endpoint.Port == _siloPorts[index].Silo)
            .OrderByDescending(e => e.SiloAddress.Generation)
            .Select(e => (SiloStatus?)e.Status)
            .FirstOrDefault();
    }

    /// <summary>Waits (bounded) until the membership table gives silo <paramref name="index"/> <paramref name="status"/>.</summary>
    public async Task WaitMembershipStatusAsync(int index, SiloStatus status, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        SiloStatus? last = null;
        while (DateTime.UtcNow < deadline)
        {
            last = await MembershipStatusAsync(index);
            if (last == status)
            {
                return;
            }

            await Task.Delay(200);
        }

        throw new TimeoutException($"silo{index} is {last?.ToString() ?? "absent"} in the membership table after {timeout}, not {status}:\n{Describe()}");
    }

    /// <summary>A caller: <paramref name="calls"/> calls from the users in turn to <paramref name="callee"/> through <paramref name="edge"/>, each held <paramref name="holdMs"/>.</summary>
    public Sipp StartCallers(SipEdgeProcess edge, IEnumerable<string> users, int calls, double rate, int holdMs, int limit = 200, string callee = "svc")
    {
        var file = Path.Combine(Path.GetTempPath(), $"callstate-cluster-{Guid.NewGuid():N}.csv");
        File.WriteAllText(file, "SEQUENTIAL\n" + string.Join("\n", users) + "\n");
        lock (_lock)
        {
            _files.Add(file);
        }

        // -recv_timeout: a call whose edge died after its 100 Trying gets no more retransmissions and would wait for ever.
        return Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", file, "-s", callee, "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(calls), "-r", rate.ToString(CultureInfo.InvariantCulture),
            "-l", Port(limit), "-d", Port(holdMs), "-timeout", "120s", "-timeout_error", "-recv_timeout", "40s", "-trace_msg", "-default_behaviors", "all,-abortunexp"]);
    }

    /// <summary>
    /// Waits until what the callee saw satisfies <paramref name="done"/> and returns it; past <paramref name="timeout"/>
    /// the test fails, naming <paramref name="what"/>. Faults are injected at a state of the load, not after a fixed delay.
    /// </summary>
    public async Task<CallOracle> WaitForCallsAsync(Func<CallOracle, bool> done, TimeSpan timeout, string what)
    {
        ArgumentNullException.ThrowIfNull(done);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var oracle = CallOracle.From(Uas.LogLines());
            if (done(oracle))
            {
                return oracle;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"not within {timeout}: {what}; the callee saw {oracle}\n{Describe()}");
            }

            await Task.Delay(250);
        }
    }

    /// <summary>Every stored limit's total, read through a live silo's admin API (committed state).</summary>
    public async Task<Dictionary<string, int>> TotalsAsync()
    {
        foreach (var silo in Silos.Where(s => !s.HasExited))
        {
            try
            {
                using var limits = JsonDocument.Parse(await silo.Http.GetStringAsync("/api/limits?limit=1000"));
                return limits.RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("key").GetString()!, e => e.GetProperty("total").GetInt32());
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }
        }

        throw new InvalidOperationException("no silo answered the admin API");
    }

    /// <summary>Every stored limit's total as its activation counts it (<c>GET /api/limits/{key}</c>).</summary>
    public async Task<Dictionary<string, int>> LiveTotalsAsync()
    {
        var silo = Silos.First(s => !s.HasExited);
        var live = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var key in (await TotalsAsync()).Keys)
        {
            // 404: the limit is idle and no longer stored (nothing held).
            using var response = await silo.Http.GetAsync("/api/limits/" + key);
            if (response.StatusCode == System.Net.HttpStatusCode.NotFound)
            {
                live[key] = 0;
                continue;
            }

            using var snapshot = JsonDocument.Parse(await response.EnsureSuccessStatusCode().Content.ReadAsStringAsync());
            live[key] = snapshot.RootElement.GetProperty("total").GetInt32();
        }

        return live;
    }

    /// <summary>
    /// Waits until every stored limit is back to 0; returns the ones that are not. With <paramref name="live"/>, each
    /// listed limit's count is asked of its activation (what admission decides on) instead of read from storage.
    /// </summary>
    public async Task<string> WaitAllZeroAsync(TimeSpan timeout, bool live = false)
    {
        var deadline = DateTime.UtcNow + timeout;
        var last = "";
        while (DateTime.UtcNow < deadline)
        {
            var totals = live ? await LiveTotalsAsync() : await TotalsAsync();
            var busy = totals.Where(t => t.Value != 0).Select(t => $"{t.Key}={t.Value}").ToList();
            if (busy.Count == 0 && totals.Count > 0)
            {
                return "";
            }

            last = string.Join(", ", busy);
            await Task.Delay(250);
        }

        return last.Length == 0 ? "no limit stored" : last + "\n" + await DescribeHeldAsync(last);
    }

    /// <summary>For a failure message: each busy limit's held calls (lease, phase) and each of those calls as its shard sees it.</summary>
    private async Task<string> DescribeHeldAsync(string busy)
    {
        var text = new StringBuilder();
        var silo = Silos.FirstOrDefault(s => !s.HasExited);
        if (silo is null)
        {
            return "no silo left to ask";
        }

        try
        {
            using var stored = JsonDocument.Parse(await silo.Http.GetStringAsync("/api/limits?limit=1000"));
            foreach (var key in busy.Split(", ").Select(b => b[..b.LastIndexOf('=')]))
            {
                var row = stored.RootElement.EnumerateArray().FirstOrDefault(e => e.GetProperty("key").GetString() == key);
                text.Append(key).Append(" stored: ").AppendLine(row.ValueKind == JsonValueKind.Undefined ? "(none)" : row.ToString());
                using var snapshot = JsonDocument.Parse(await silo.Http.GetStringAsync("/api/limits/" + key + "?calls=true"));
                var calls = snapshot.RootElement.GetProperty("calls").EnumerateArray().ToList();
                text.Append(key).Append(" at ").Append(DateTimeOffset.UtcNow.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture))
                    .Append(": ").Append(calls.Count.ToString(CultureInfo.InvariantCulture)).AppendLine(" calls held, the first 8:");
                foreach (var call in calls.Take(8))
                {
                    var callKey = call.GetProperty("callKey").GetString()!;
                    text.Append("  ").Append(call.ToString()).Append(" -> ")
                        .AppendLine(await silo.Http.GetStringAsync("/api/calls?key=" + Uri.EscapeDataString(callKey)));
                }
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or JsonException or KeyNotFoundException)
        {
            text.Append("(could not describe: ").Append(ex.Message).Append(')');
        }

        return text.ToString();
    }

    /// <summary>
    /// Writes the whole output of every process this rig started (silos and edges, the ones that exited or were replaced
    /// too) and the callee's log into <paramref name="directory"/>, one file each, for a person to read after a run.
    /// </summary>
    public void SaveLogs(string directory)
    {
        Directory.CreateDirectory(directory);
        List<SiloProcess> silos;
        lock (_lock)
        {
            silos = [.. _exited, .. _silos.OfType<SiloProcess>()];
        }

        foreach (var silo in silos)
        {
            File.WriteAllText(Path.Combine(directory, $"silo-{silo.Port}-pid{silo.Id}.log"), silo.Output);
        }

        foreach (var edge in _retiredEdges.Concat(Edges))
        {
            File.WriteAllText(Path.Combine(directory, $"edge-{edge.SipPort}-pid{edge.Id}.log"), edge.Output);
        }

        File.WriteAllLines(Path.Combine(directory, "callee.log"), Uas.LogLines());
    }

    /// <summary>The end of every process's output: silos (those that exited too), then edges.</summary>
    public string Describe()
    {
        SiloProcess?[] silos;
        SiloExit[] exits;
        lock (_lock)
        {
            silos = [.. _silos];
            exits = [.. _exits];
        }

        return string.Join("\n", exits.Select(e => $"--- silo{e.Index} (pid {e.ProcessId}, exited {e.ExitCode} at {e.At}) ---\n{Tail(e.Output)}")) + "\n" +
            string.Join("\n", silos.Select((s, i) => $"--- silo{i}{(s is null ? " (not started)" : $" (pid {s.Id})")} ---\n{Tail(s?.Output ?? "")}")) + "\n" +
            string.Join("\n", Edges.Select((e, i) => $"--- edge{i} ---\n{Tail(e.Output)}"));
    }

    public async ValueTask DisposeAsync()
    {
        await _stopSupervisor.CancelAsync();
        await _supervisor;
        _stopSupervisor.Dispose();
        foreach (var edge in Edges.Concat(_retiredEdges))
        {
            edge.Resume();
            await edge.DisposeAsync();
        }

        foreach (var silo in _silos.OfType<SiloProcess>().Concat(_exited))
        {
            silo.Resume();
            await silo.DisposeAsync();
        }

        await Uas.DisposeAsync();
        foreach (var file in _files)
        {
            File.Delete(file);
        }
    }

    private SiloProcess StartSilo(int index) => SiloProcess.Start(
        [
            .. _storage,
            "--CallState:Orleans:Clustering=Storage",
            $"--CallState:Orleans:ClusterId={ClusterId}",
            "--CallState:Orleans:AdvertisedAddress=127.0.0.1",
            $"--CallState:Orleans:ProbeTimeout={ProbeTimeout:c}",
            $"--CallState:Orleans:MissedProbesLimit={MissedProbesLimit.ToString(CultureInfo.InvariantCulture)}",
            "--CallState:Orleans:IAmAliveInterval=00:00:05",
            "--CallState:Grains:DueScanInterval=00:00:00.500",
            $"--CallState:Grains:RecoveryDelay={RecoveryDelay:c}",
            .. _settings,
        ],
        _siloPorts[index].Http,
        _siloPorts[index].Silo,
        _siloPorts[index].Gateway);

    /// <summary>
    /// Restarts, on the same ports, every silo whose process exited while the test did not stop it: Orleans accepts a new
    /// generation of a silo on the endpoint of a dead one.
    /// </summary>
    private async Task SuperviseAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(100));
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken))
            {
                lock (_lock)
                {
                    for (var i = 0; i < _silos.Length; i++)
                    {
                        if (_silos[i] is not { HasExited: true } exited || _stoppedByTest[i] || _exits.Count >= MaxRestarts)
                        {
                            continue;
                        }

                        _exits.Add(new SiloExit(i, exited.Id, exited.ExitCode, UasClock.Elapsed, exited.Output));
                        _exited.Add(exited);
                        _silos[i] = StartSilo(i);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The rig is being disposed.
        }
    }

    private List<string> EdgeSettings()
    {
        var list = new List<string>
        {
            $"--CallState:Orleans:ClusterId={ClusterId}",

            // An edge started before the silos tries again soon after they are up.
            "--CallState:Orleans:GatewayRetryInterval=00:00:00.500",
        };
        for (var i = 0; i < _siloPorts.Length; i++)
        {
            list.Add($"--CallState:Orleans:Gateways:{i.ToString(CultureInfo.InvariantCulture)}=127.0.0.1:{Port(_siloPorts[i].Gateway)}");
        }

        list.AddRange(
        [
            "--CallState:Admission:Deadline=00:00:02",
            "--CallState:Admission:LocalDomains:0=127.0.0.1",
            "--CallState:Admission:Routes:0:Prefix=",
            $"--CallState:Admission:Routes:0:Upstream=127.0.0.1:{Port(UasPort)}",
            "--Logging:LogLevel:CallState=Information",
            .. _settings,
            .. _edgeSettings,
        ]);
        if (_advertisedEdgePort is { } port)
        {
            list.Add("--CallState:Sip:AdvertisedHost=127.0.0.1");
            list.Add($"--CallState:Sip:AdvertisedPort={Port(port)}");
        }

        return list;
    }

    private static string Tail(string text) => text.Length > 3000 ? text[^3000..] : text;

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// What the callee saw, replayed: each call counts from its INVITE reaching the callee (the edge forwards only admitted
/// calls) to its BYE reaching the callee (the edge forwards the BYE before it releases the slot). The most calls any
/// caller had up at once can never exceed that caller's limit.
/// </summary>
public sealed partial class CallOracle
{
    private CallOracle(Dictionary<string, int> peaks, int calls, int unended, List<(long Tick, string User)> starts)
    {
        Peaks = peaks;
        Calls = calls;
        Unended = unended;
        Starts = starts;
    }

    /// <summary>The most calls each caller had up at once.</summary>
    public Dictionary<string, int> Peaks { get; }

    public int Calls { get; }

    /// <summary>Calls whose BYE never reached the callee.</summary>
    public int Unended { get; }

    /// <summary>Every call's start, in sipp's clock (ms since the callee started).</summary>
    public List<(long Tick, string User)> Starts { get; }

    public static CallOracle From(IEnumerable<string> lines)
    {
        var up = new Dictionary<string, int>();
        var peaks = new Dictionary<string, int>();
        var open = new Dictionary<string, string>();
        var starts = new List<(long, string)>();
        var calls = 0;
        foreach (var line in lines)
        {
            var match = LogLine().Match(line);
            if (!match.Success)
            {
                continue;
            }

            var tick = long.Parse(match.Groups["tick"].Value, CultureInfo.InvariantCulture);
            var callId = match.Groups["call"].Value;
            var user = match.Groups["user"].Value;
            if (match.Groups["what"].Value == "start")
            {
                if (!open.TryAdd(callId, user))
                {
                    continue;
                }

                calls++;
                starts.Add((tick, user));
                up[user] = up.GetValueOrDefault(user) + 1;
                peaks[user] = Math.Max(peaks.GetValueOrDefault(user), up[user]);
            }
            else if (open.Remove(callId))
            {
                up[user]--;
            }
        }

        return new CallOracle(peaks, calls, open.Count, starts);
    }

    /// <summary>
    /// For a failure message: each moment the callee's log shows a caller with more than <paramref name="limit"/> calls
    /// up, with the calls up then (Call-ID and start, in ms on the callee's clock).
    /// </summary>
    public static List<string> Excesses(IEnumerable<string> lines, int limit)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var open = new Dictionary<string, (string User, long Tick)>();
        var excesses = new List<string>();
        foreach (var line in lines)
        {
            var match = LogLine().Match(line);
            if (!match.Success)
            {
                continue;
            }

            var tick = long.Parse(match.Groups["tick"].Value, CultureInfo.InvariantCulture);
            var callId = match.Groups["call"].Value;
            var user = match.Groups["user"].Value;
            if (match.Groups["what"].Value != "start")
            {
                open.Remove(callId);
                continue;
            }

            if (!open.TryAdd(callId, (user, tick)))
            {
                continue;
            }

            var up = open.Where(o => o.Value.User == user).ToList();
            if (up.Count > limit)
            {
                excesses.Add($"{user} {up.Count} calls up at {tick} ms: " + string.Join(", ", up.Select(o => $"{o.Key} from {o.Value.Tick}")));
            }
        }

        return excesses;
    }

    public override string ToString() => $"{Calls} calls, {Unended} without BYE; peaks: {string.Join(", ", Peaks.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"))}";

    [GeneratedRegex(@"^(?<tick>\d+) (?<what>start|end) (?<call>\S+) From: <sip:(?<user>[^@>]+)@")]
    private static partial Regex LogLine();
}
