using BenchmarkDotNet.Attributes;
using CallState.Grains;

namespace CallState.Benchmarks;

/// <summary>In-memory turns: the decision logic of a limit (<see cref="LimitLedger"/>) without Orleans or storage (reserve then release).</summary>
[MemoryDiagnoser]
public class GrainTurnBenchmarks
{
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly string[] _callKeys = Enumerable.Range(0, 64).Select(i => "call-" + i).ToArray();
    private LimitLedger _trunk = null!;

    [GlobalSetup]
    public void Setup() =>
        _trunk = new LimitLedger(LimitKey.Trunk("carrier"), new LimitGrainState(), new LimitSettings(Total: 1000, Inbound: 600, Outbound: 600));

    /// <summary>One reservation and one release on a trunk holding no calls.</summary>
    [Benchmark]
    public bool ReserveRelease()
    {
        _trunk.TryReserve("call-x", Direction.Inbound, TimeSpan.FromMinutes(3), null, Now, out _);
        return _trunk.Release("call-x");
    }

    /// <summary>64 reservations then 64 releases (a busy trunk), per operation pair.</summary>
    [Benchmark(OperationsPerInvoke = 64)]
    public int Reserve64Release64()
    {
        var admitted = 0;
        foreach (var key in _callKeys)
        {
            if (_trunk.TryReserve(key, Direction.Outbound, TimeSpan.FromMinutes(3), null, Now, out _).Admitted)
            {
                admitted++;
            }
        }

        foreach (var key in _callKeys)
        {
            _trunk.Release(key);
        }

        return admitted;
    }
}

/// <summary>
/// The same pair through Orleans: <see cref="ILimitGrain"/> of a silo in this process over <see cref="InMemoryGrainStorage"/>,
/// so what is measured is Orleans' call path, the limit grain's turn and its (free) write, not a database.
/// </summary>
[MemoryDiagnoser]
public class LimitGrainCallBenchmarks
{
    private readonly string[] _callKeys = Enumerable.Range(0, 64).Select(i => "call-" + i).ToArray();
    private BenchSilo _silo = null!;
    private ILimitGrain _trunk = null!;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _silo = await BenchSilo.StartAsync(BenchStorage.Memory, postgres: null).ConfigureAwait(false);
        _trunk = _silo.Grains.GetGrain<ILimitGrain>("trunk/carrier");
        await _trunk.GetSnapshotAsync().ConfigureAwait(false);
    }

    [GlobalCleanup]
    public async Task CleanupAsync() => await _silo.DisposeAsync().ConfigureAwait(false);

    /// <summary>One caller: a reservation, then its release, each awaited.</summary>
    [Benchmark]
    public async Task<bool> ReserveRelease()
    {
        await _trunk.TryReserveAsync("call-x", Direction.Inbound, TimeSpan.FromMinutes(3), null).ConfigureAwait(false);
        return await _trunk.ReleaseAsync("call-x").ConfigureAwait(false);
    }

    /// <summary>64 callers at once on the one key, per pair (the reentrant grain decides the waiting operations in one turn).</summary>
    [Benchmark(OperationsPerInvoke = 64)]
    public async Task Concurrent64()
    {
        var pairs = new Task[_callKeys.Length];
        for (var i = 0; i < pairs.Length; i++)
        {
            pairs[i] = PairAsync(_callKeys[i]);
        }

        await Task.WhenAll(pairs).ConfigureAwait(false);
    }

    private async Task PairAsync(string callKey)
    {
        await _trunk.TryReserveAsync(callKey, Direction.Outbound, TimeSpan.FromMinutes(3), null).ConfigureAwait(false);
        await _trunk.ReleaseAsync(callKey).ConfigureAwait(false);
    }
}
