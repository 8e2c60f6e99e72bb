using System.Diagnostics;

namespace CallState.Silo;

/// <summary>
/// The process's own runtime counters, cumulative since start: CPU time, bytes allocated on the managed heap, garbage
/// collections per generation and the time the process was paused for them, thread-pool threads and lock contentions. A benchmark reads them before and after a load
/// and divides by the calls in between (CPU and bytes per call).
/// </summary>
public sealed record RuntimeCountersDto(
    double CpuSeconds,
    long AllocatedBytes,
    int Gen0Collections,
    int Gen1Collections,
    int Gen2Collections,
    long HeapBytes,
    int ThreadPoolThreads,
    long LockContentions,
    long CompletedWorkItems,
    double GcPauseSeconds);

public static class RuntimeCountersApi
{
    /// <summary>Maps <c>GET /api/runtime</c>.</summary>
    public static IEndpointRouteBuilder MapRuntimeCounters(this IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        endpoints.MapGet("/api/runtime", () => Results.Json(Read(), AdminJsonContext.Default.RuntimeCountersDto));
        return endpoints;
    }

    public static RuntimeCountersDto Read()
    {
        using var process = Process.GetCurrentProcess();
        return new RuntimeCountersDto(
            process.TotalProcessorTime.TotalSeconds,
            GC.GetTotalAllocatedBytes(precise: false),
            GC.CollectionCount(0),
            GC.CollectionCount(1),
            GC.CollectionCount(2),
            GC.GetTotalMemory(forceFullCollection: false),
            ThreadPool.ThreadCount,
            Monitor.LockContentionCount,
            ThreadPool.CompletedWorkItemCount,
            GC.GetTotalPauseDuration().TotalSeconds);
    }
}
