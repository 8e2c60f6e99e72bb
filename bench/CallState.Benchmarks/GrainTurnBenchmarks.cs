using BenchmarkDotNet.Attributes;
using CallState.Grains;

namespace CallState.Benchmarks;

/// <summary>In-memory grain turns: the decision logic of a limit without storage (reserve then release).</summary>
[MemoryDiagnoser]
public class GrainTurnBenchmarks
{
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly string[] _callKeys = Enumerable.Range(0, 64).Select(i => "call-" + i).ToArray();
    private LimitGrain _trunk = null!;

    [GlobalSetup]
    public void Setup() =>
        _trunk = new LimitGrain(LimitKey.Trunk("carrier"), new LimitGrainState(), new LimitSettings(Total: 1000, Inbound: 600, Outbound: 600));

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
