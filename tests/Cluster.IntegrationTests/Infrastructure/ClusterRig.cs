using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>
/// A cluster on loopback: silo processes joined through the membership table of one database, edge processes that
/// find them through a bootstrap list, and one sipp callee (uas_oracle.xml) that logs every call it sees.
/// </summary>
public sealed class ClusterRig : IAsyncDisposable
{
    public static readonly TimeSpan FailureTimeout = TimeSpan.FromSeconds(3);

    private readonly IReadOnlyList<string> _storage;
    private readonly IReadOnlyList<string> _limits;
    private readonly List<string> _files = [];

    private ClusterRig(IReadOnlyList<string> storage, IReadOnlyList<string> limits, Sipp uas, int uasPort)
    {
        _storage = storage;
        _limits = limits;
        Uas = uas;
        UasPort = uasPort;
    }

    public List<SiloProcess> Silos { get; } = [];

    public List<int> RpcPorts { get; } = [];

    public List<SipEdgeProcess> Edges { get; } = [];

    public Sipp Uas { get; }

    /// <summary>Started with the callee: its elapsed time is (about) the callee's clock_tick in its log lines.</summary>
    public System.Diagnostics.Stopwatch UasClock { get; } = System.Diagnostics.Stopwatch.StartNew();

    public int UasPort { get; }

    /// <summary>
    /// Starts the callee, <paramref name="silos"/> silos and <paramref name="edges"/> edges on <paramref name="storage"/> with
    /// <paramref name="limits"/>, and waits until all are ready. With <paramref name="advertiseLast"/> every edge puts the last
    /// edge's address in Record-Route (a load balancer's address would be there).
    /// </summary>
    public static async Task<ClusterRig> StartAsync(IReadOnlyList<string> storage, IReadOnlyList<string> limits, int silos = 3, int edges = 2, bool advertiseLast = false)
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_oracle.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-trace_logs",
            "-default_behaviors", "all,-abortunexp"]);
        var rig = new ClusterRig(storage, limits, uas, uasPort);
        for (var i = 0; i < silos; i++)
        {
            rig.RpcPorts.Add(SipEdgeProcess.FreeUdpAndTcpPort());
            rig.Silos.Add(rig.StartSilo(i));
        }

        await Task.WhenAll(rig.Silos.Select(s => s.WaitReadyAsync(TimeSpan.FromSeconds(60))));
        var edgePorts = Enumerable.Range(0, edges).Select(_ => SipEdgeProcess.FreeUdpAndTcpPort()).ToArray();
        for (var i = 0; i < edges; i++)
        {
            rig.Edges.Add(SipEdgeProcess.Start(rig.EdgeSettings(advertiseLast ? edgePorts[^1] : null), edgePorts[i]));
        }

        await Task.WhenAll(rig.Edges.Select(e => e.WaitReadyAsync(TimeSpan.FromSeconds(60))));

        // Every edge has a view naming every silo before load starts.
        foreach (var edge in rig.Edges)
        {
            await edge.OutputContainsAsync("silo" + (silos - 1), TimeSpan.FromSeconds(15));
        }

        return rig;
    }

    /// <summary>(Re)starts silo <paramref name="index"/> on its RPC port.</summary>
    public SiloProcess StartSilo(int index) => SiloProcess.Start(
    [
        .. _storage,
        "--CallState:Cluster:Enabled=true",
        $"--CallState:Cluster:SiloId=silo{index}",
        "--CallState:Cluster:ListenAddress=127.0.0.1",
        $"--CallState:Cluster:Port={RpcPorts[index]}",
        "--CallState:Cluster:HeartbeatInterval=00:00:00.500",
        $"--CallState:Cluster:FailureTimeout={FailureTimeout:c}",
        "--CallState:Cluster:RequestTimeout=00:00:02",
        .. _limits,
    ]);

    private List<string> EdgeSettings(int? advertisedPort)
    {
        var list = new List<string>();
        for (var i = 0; i < RpcPorts.Count; i++)
        {
            list.Add($"--CallState:Cluster:Bootstrap:{i}=127.0.0.1:{RpcPorts[i]}");
        }

        list.AddRange(
        [
            "--CallState:Cluster:ViewRefreshInterval=00:00:00.500",
            "--CallState:Cluster:RequestTimeout=00:00:02",
            $"--CallState:Cluster:FailureTimeout={FailureTimeout:c}",
            "--CallState:Admission:Deadline=00:00:02",
            "--CallState:Admission:LocalDomains:0=127.0.0.1",
            "--CallState:Admission:Routes:0:Prefix=",
            $"--CallState:Admission:Routes:0:Upstream=127.0.0.1:{UasPort}",
            "--Logging:LogLevel:CallState=Information",
            .. _limits,
        ]);
        if (advertisedPort is { } port)
        {
            list.Add("--CallState:Sip:AdvertisedHost=127.0.0.1");
            list.Add($"--CallState:Sip:AdvertisedPort={port}");
        }

        return list;
    }

    /// <summary>A caller: <paramref name="calls"/> calls from the users in turn through <paramref name="edge"/>, each held <paramref name="holdMs"/>.</summary>
    public Sipp StartCallers(SipEdgeProcess edge, IEnumerable<string> users, int calls, double rate, int holdMs, int limit = 200)
    {
        var file = Path.Combine(Path.GetTempPath(), $"callstate-cluster-{Guid.NewGuid():N}.csv");
        File.WriteAllText(file, "SEQUENTIAL\n" + string.Join("\n", users) + "\n");
        _files.Add(file);
        // -recv_timeout: a call whose edge died after its 100 Trying gets no more retransmissions and would wait for ever.
        return Sipp.Start("uac", [
            $"127.0.0.1:{edge.SipPort}", "-sf", RepoPaths.Scenario("uac_rr.xml"), "-inf", file, "-s", "svc", "-i", "127.0.0.1",
            "-p", Port(SipEdgeProcess.FreeUdpAndTcpPort()), "-t", "u1", "-m", Port(calls), "-r", rate.ToString(CultureInfo.InvariantCulture),
            "-l", Port(limit), "-d", Port(holdMs), "-timeout", "120s", "-timeout_error", "-recv_timeout", "40s", "-trace_msg", "-default_behaviors", "all,-abortunexp"]);
    }

    /// <summary>Every stored limit's total, read through a live silo's admin API (committed state).</summary>
    public async Task<Dictionary<string, int>> TotalsAsync()
    {
        foreach (var silo in Silos.Where(s => !s.HasExited))
        {
            try
            {
                using var limits = JsonDocument.Parse(await silo.Http.GetStringAsync("/api/limits"));
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

    /// <summary>Waits until every stored limit is back to 0; returns the ones that are not.</summary>
    public async Task<string> WaitAllZeroAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var last = "";
        while (DateTime.UtcNow < deadline)
        {
            var totals = await TotalsAsync();
            var busy = totals.Where(t => t.Value != 0).Select(t => $"{t.Key}={t.Value}").ToList();
            if (busy.Count == 0 && totals.Count > 0)
            {
                return "";
            }

            last = string.Join(", ", busy);
            await Task.Delay(250);
        }

        return last.Length == 0 ? "no limit stored" : last;
    }

    public string Describe() =>
        string.Join("\n", Silos.Select((s, i) => $"--- silo{i} ---\n{Tail(s.Output)}")) + "\n" +
        string.Join("\n", Edges.Select((e, i) => $"--- edge{i} ---\n{Tail(e.Output)}"));

    public async ValueTask DisposeAsync()
    {
        foreach (var edge in Edges)
        {
            await edge.DisposeAsync();
        }

        foreach (var silo in Silos)
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

    public override string ToString() => $"{Calls} calls, {Unended} without BYE; peaks: {string.Join(", ", Peaks.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"))}";

    [GeneratedRegex(@"^(?<tick>\d+) (?<what>start|end) (?<call>\S+) From: <sip:(?<user>[^@>]+)@")]
    private static partial Regex LogLine();
}
