using CallState.Grains;
using Microsoft.Extensions.Options;

namespace CallState.Silo.Hosting;

/// <summary>
/// Wakes grains whose due time has passed, from the state store: leases that ended, admissions a crash cut, calls whose
/// record is kept no longer. Because it reads storage, this work survives the loss of every activation and of every silo
/// (after SIGKILL and restart, with no new traffic to a key, its expired leases are still reclaimed). One query per
/// <see cref="GrainOptions.DueScanInterval"/>, run by one silo only: the active silo with the lowest address, so a cluster
/// does not wake every grain once per silo. A woken grain that has nothing due does nothing.
/// </summary>
internal sealed partial class DueScanner(
    IStateStore store,
    IGrainFactory grains,
    IClusterMembershipService membership,
    ILocalSiloDetails localSilo,
    IOptions<GrainOptions> options,
    TimeProvider time,
    ILogger<DueScanner> logger) : ILifecycleParticipant<ISiloLifecycle>, IDisposable
{
    /// <summary>Grains woken at once; bounds the burst a scan sends into the cluster.</summary>
    private const int Parallelism = 64;

    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(DueScanner), ServiceLifecycleStage.Active, StartAsync, StopAsync);

    /// <summary>Scans once now: what a test or the loop calls. Returns how many grains were woken.</summary>
    public async Task<int> ScanAsync(CancellationToken cancellationToken)
    {
        if (!IsScanner())
        {
            return 0;
        }

        var due = await store.ReadDueAsync(time.GetUtcNow(), options.Value.DueScanBatch, cancellationToken).ConfigureAwait(false);
        var failed = 0;
        await Parallel.ForEachAsync(due, new ParallelOptions { MaxDegreeOfParallelism = Parallelism, CancellationToken = cancellationToken }, async (grain, _) =>
        {
            try
            {
                await WakeAsync(grain.Id).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // one grain that cannot be woken now is woken by the next scan
            catch (Exception ex)
#pragma warning restore CA1031
            {
                if (Interlocked.Increment(ref failed) == 1)
                {
                    LogWakeFailed(logger, grain.Id.ToString(), ex);
                }
            }
        }).ConfigureAwait(false);
        return due.Count;
    }

    private Task WakeAsync(StateId id) => id.Type switch
    {
        GrainTypes.Limit => grains.GetGrain<ILimitGrain>(id.Key).WakeAsync(),
        GrainTypes.Call => grains.GetCall(id.Key).WakeAsync(),
        _ => Task.CompletedTask,
    };

    private bool IsScanner()
    {
        var lowest = membership.CurrentSnapshot.Members.Values
            .Where(static m => m.Status == SiloStatus.Active)
            .Select(static m => m.SiloAddress)
            .DefaultIfEmpty(localSilo.SiloAddress)
            .Min();
        return lowest == localSilo.SiloAddress;
    }

    private Task StartAsync(CancellationToken cancellationToken)
    {
        _loop = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    private async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                // At start first: whatever came due while no silo ran is finished at once.
                await ScanAsync(cancellationToken).ConfigureAwait(false);
                await Task.Delay(options.Value.DueScanInterval, time, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // storage unavailable: try again at the next interval
            catch (Exception ex)
#pragma warning restore CA1031
            {
                LogScanFailed(logger, ex);
                await Task.Delay(options.Value.DueScanInterval, time, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }

    public void Dispose() => _stop.Dispose();

    [LoggerMessage(EventId = 2010, Level = LogLevel.Warning, Message = "Due scan failed; retrying at the next interval")]
    private static partial void LogScanFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 2011, Level = LogLevel.Warning, Message = "Grain {Grain} could not be woken (others of this scan may have failed too); the next scan retries")]
    private static partial void LogWakeFailed(ILogger logger, string grain, Exception exception);
}
