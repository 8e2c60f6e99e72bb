using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>What a sipp run counted (its -trace_stat file, cumulative columns).</summary>
public sealed record SippStats(long Created, long Successful, long Failed, long Unexpected, long DeadCallMessages);

/// <summary>
/// Real sipp processes (Debian package sip-tester). A missing sipp fails the test; it never skips. Every run is
/// bounded in calls and in time, and a process is only ever killed by its own id.
/// </summary>
public sealed class Sipp : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly string _dir;

    private Sipp(Process process, string dir, string name)
    {
        _process = process;
        _dir = dir;
        Name = name;
    }

    public string Name { get; }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>
    /// Starts sipp with <paramref name="args"/> in a fresh directory, writing its statistics and errors there. With
    /// <paramref name="refusalsFail"/>, the scenario given with <c>-sf</c> runs without its optional receives that go to
    /// <c>next="rejected"</c> (a copy in that directory), so a refusal the caller did not expect is an unexpected
    /// message and fails the call instead of ending it normally.
    /// </summary>
    public static Sipp Start(string name, IEnumerable<string> args, bool refusalsFail = false)
    {
        ArgumentNullException.ThrowIfNull(args);
        var sipp = Executables.Find("sipp") ?? throw new InvalidOperationException(
            "sipp is not installed (Debian package sip-tester); scripts/test.sh installs it");
        var dir = Directory.CreateTempSubdirectory("callstate-sipp-").FullName;
        var list = args.ToList();
        if (refusalsFail)
        {
            var at = list.IndexOf("-sf") + 1;
            Assert.True(at > 0 && at < list.Count, "refusalsFail needs a scenario given with -sf");
            var strict = Path.Combine(dir, "strict-" + Path.GetFileName(list[at]));
            var lines = File.ReadAllLines(list[at]);
            var kept = lines.Where(l => !l.Contains("next=\"rejected\"", StringComparison.Ordinal)).ToArray();
            Assert.True(kept.Length < lines.Length, $"{list[at]} has no receive that goes to \"rejected\"");
            File.WriteAllLines(strict, kept);
            list[at] = strict;
        }
        var info = new ProcessStartInfo(sipp)
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
        };
        foreach (var arg in list)
        {
            info.ArgumentList.Add(arg);
        }
        foreach (var arg in new[] { "-nostdin", "-trace_stat", "-stf", Path.Combine(dir, "stats.csv"), "-fd", "1", "-trace_err" })
        {
            info.ArgumentList.Add(arg);
        }
        var process = new Process { StartInfo = info };
        var run = new Sipp(process, dir, name);
        process.OutputDataReceived += (_, e) => run.Append(e.Data);
        process.ErrorDataReceived += (_, e) => run.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return run;
    }

    /// <summary>Waits for sipp to finish by itself; past <paramref name="timeout"/> it is killed and the test fails.</summary>
    public async Task<SippStats> WaitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
            Assert.Fail($"sipp {Name} did not finish in {timeout}:\n{Describe()}");
        }
        _process.WaitForExit();
        return ReadStats();
    }

    /// <summary>
    /// Waits (bounded) until this sipp's statistics, written every second, satisfy <paramref name="done"/>; returns the
    /// last statistics either way. A callee counts a call as created when its INVITE arrives and as successful once its
    /// scenario ends, which includes the scenario's closing wait for retransmissions.
    /// </summary>
    public async Task<SippStats> WaitForStatsAsync(Func<SippStats, bool> done, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(done);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var stats = ReadStats();
            if (done(stats) || DateTime.UtcNow > deadline || _process.HasExited)
            {
                return stats;
            }

            await Task.Delay(250);
        }
    }

    /// <summary>Stops a server-side sipp (SIGKILL by its id) and returns what it counted.</summary>
    public SippStats Stop()
    {
        Kill();
        return ReadStats();
    }

    /// <summary>
    /// SIGUSR1 (by this sipp's id): a soft exit, as sipp's 'q' key. It places no new call, lets the calls under way
    /// finish, then exits; <see cref="WaitAsync"/> bounds the wait.
    /// </summary>
    public void Quit()
    {
        if (_process.HasExited)
        {
            return;
        }

        using var kill = Process.Start(new ProcessStartInfo("kill", ["-USR1", _process.Id.ToString(CultureInfo.InvariantCulture)]) { UseShellExecute = false })!;
        kill.WaitForExit(10_000);
        Assert.True(kill.ExitCode == 0, $"kill -USR1 {_process.Id} exited {kill.ExitCode}");
    }

    /// <summary>The lines the scenario's log actions wrote (run with <c>-trace_logs</c>).</summary>
    public string[] LogLines() =>
        Directory.GetFiles(_dir, "*_logs.log").SelectMany(f =>
        {
            using var stream = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        }).ToArray();

    /// <summary>
    /// The last line of sipp's message counts (run with <c>-trace_counts</c>), by column: <c>4_486_Recv</c> is how many
    /// 486 the scenario's fifth element received. Empty before sipp has written any.
    /// </summary>
    public Dictionary<string, long> Counts()
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        var file = Directory.GetFiles(_dir, "*_counts.csv").FirstOrDefault();
        if (file is null)
        {
            return counts;
        }

        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(stream);
        var lines = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length < 2)
        {
            return counts;
        }

        var header = lines[0].Split(';');
        var last = lines[^1].Split(';');
        for (var i = 2; i < Math.Min(header.Length, last.Length); i++)
        {
            if (long.TryParse(last[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
            {
                counts[header[i]] = value;
            }
        }

        return counts;
    }

    /// <summary>The messages sipp logged (run with <c>-trace_msg</c>).</summary>
    public string Messages() =>
        string.Concat(Directory.GetFiles(_dir, "*_messages.log").Select(File.ReadAllText));

    /// <summary>The process output and its error log, for a failure message.</summary>
    public string Describe()
    {
        var errors = Directory.GetFiles(_dir, "*_errors.log").Select(File.ReadAllText).FirstOrDefault() ?? "";
        if (errors.Length > 4000)
        {
            errors = errors[..4000] + "...";
        }
        var output = Output;
        if (output.Length > 4000)
        {
            output = output[^4000..];
        }
        return $"exit {(_process.HasExited ? _process.ExitCode.ToString(CultureInfo.InvariantCulture) : "running")}\n--- output ---\n{output}\n--- errors ---\n{errors}";
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        _process.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
        return ValueTask.CompletedTask;
    }

    private SippStats ReadStats()
    {
        var path = Path.Combine(_dir, "stats.csv");
        Assert.True(File.Exists(path), $"sipp {Name} wrote no statistics:\n{Describe()}");
        var lines = File.ReadAllLines(path).Where(l => l.Length > 0).ToArray();
        Assert.True(lines.Length >= 2, $"sipp {Name} statistics are empty:\n{Describe()}");
        var header = lines[0].Split(';');
        var last = lines[^1].Split(';');
        long Column(string name)
        {
            var index = Array.IndexOf(header, name);
            Assert.True(index >= 0, $"no column {name} in sipp statistics");
            return long.Parse(last[index], CultureInfo.InvariantCulture);
        }
        return new SippStats(Column("TotalCallCreated"), Column("SuccessfulCall(C)"), Column("FailedCall(C)"),
            Column("FailedUnexpectedMessage(C)"), Column("DeadCallMsgs(C)"));
    }

    private void Kill()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: false);
                _process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
            // Never started or already reaped.
        }
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_output)
        {
            _output.AppendLine(line);
        }
    }
}
