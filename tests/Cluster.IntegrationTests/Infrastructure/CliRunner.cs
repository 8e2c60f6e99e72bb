using System.Diagnostics;
using System.Text.Json;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>What one run of the built <c>callstate</c> command gave: its exit code and output.</summary>
public sealed record CliResult(int ExitCode, string Output, string Error)
{
    /// <summary>The output as JSON (a run with <c>--json</c>); fails the test with the output when it does not parse.</summary>
    public JsonElement Json()
    {
        try
        {
            using var document = JsonDocument.Parse(Output);
            return document.RootElement.Clone();
        }
        catch (JsonException ex)
        {
            throw new InvalidOperationException($"callstate printed no JSON ({ex.Message}); exit {ExitCode}:\n{Output}\n{Error}", ex);
        }
    }

    public override string ToString() => $"exit {ExitCode}\n{Output}\n{Error}";
}

/// <summary>Runs the built <c>callstate</c> command (src/Cli) against an admin API, the way an operator or a script would.</summary>
public static class CliRunner
{
    /// <summary>
    /// Runs <c>callstate</c> with <paramref name="args"/>, the admin API at <paramref name="port"/> and <paramref name="token"/>
    /// given through the environment (<c>CALLSTATE_URL</c>, <c>CALLSTATE_TOKEN</c>); at most 60 s.
    /// </summary>
    public static async Task<CliResult> RunAsync(int port, string? token, params string[] args)
    {
        var info = new ProcessStartInfo(RepoPaths.DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(RepoPaths.BuiltAssembly("Cli", "callstate.dll"));
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["CALLSTATE_URL"] = $"http://127.0.0.1:{port}";
        info.Environment.Remove("CALLSTATE_TOKEN");
        info.Environment.Remove("CALLSTATE_TOKEN_FILE");
        if (token is not null)
        {
            info.Environment["CALLSTATE_TOKEN"] = token;
        }

        // A wide console, so tables are not wrapped in the middle of a key.
        info.Environment["COLUMNS"] = "240";
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw new TimeoutException($"callstate {string.Join(' ', args)} did not finish in 60 s");
        }

        return new CliResult(process.ExitCode, await output, await error);
    }
}
