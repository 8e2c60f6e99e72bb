using BenchmarkDotNet.Running;
using CallState.Benchmarks;

// `admission ...` runs the storage-backed load driver; anything else goes to BenchmarkDotNet.
if (args.Length > 0 && args[0] == "admission")
{
    return await AdmissionLoad.RunAsync(args[1..]).ConfigureAwait(false);
}

BenchmarkSwitcher.FromAssembly(typeof(AdmissionLoad).Assembly).Run(args);
return 0;
