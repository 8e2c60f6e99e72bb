using BenchmarkDotNet.Running;
using CallState.Benchmarks;

// Load programs against an Orleans silo in this process (`hotkey`, `rows`, `admission`); anything else goes to BenchmarkDotNet.
switch (args.Length > 0 ? args[0] : "")
{
    case "hotkey":
        return await HotKeyLoad.RunAsync(args[1..]).ConfigureAwait(false);
    case "rows":
        return await RowsLoad.RunAsync(args[1..]).ConfigureAwait(false);
    case "admission":
        return await AdmissionLoad.RunAsync(args[1..]).ConfigureAwait(false);
    default:
        BenchmarkSwitcher.FromAssembly(typeof(AdmissionLoad).Assembly).Run(args);
        return 0;
}
