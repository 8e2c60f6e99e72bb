using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;

namespace CallState.Grains.Tests.Infrastructure;

/// <summary>
/// The silo's own state store with the test standing between it and the grains: it counts each grain's full reads and
/// version checks and the writes that reached storage per grain type, and can hold one grain's writes (before they reach storage) until the test opens the gate. Everything
/// else passes through unchanged; the storage underneath is the real one.
/// </summary>
public sealed class InterceptedStateStore(IStateStore inner) : IStateStore
{
    private readonly ConcurrentDictionary<StateId, int> _reads = new();
    private readonly ConcurrentDictionary<StateId, int> _versionReads = new();
    private readonly ConcurrentDictionary<string, int> _writes = new(StringComparer.Ordinal);
    private volatile WriteGate? _gate;
    private AfterWrite? _afterWrite;

    /// <summary>
    /// Puts an <see cref="InterceptedStateStore"/> around the store the silo registered (pass to
    /// <see cref="GrainTestCluster.StartAsync"/>'s <c>services</c>); the silo's grains, due scan and admin access all get it.
    /// </summary>
    public static void Install(IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        var registered = services.Last(d => d.ServiceType == typeof(IStateStore));
        var create = registered.ImplementationFactory
            ?? throw new InvalidOperationException("the silo's IStateStore is not registered through a factory");
        services.Remove(registered);
        services.AddSingleton<IStateStore>(sp => new InterceptedStateStore((IStateStore)create(sp)));
    }

    /// <summary>Full reads (<see cref="IStateStore.ReadAsync"/>: the row and every item) of <paramref name="id"/> so far.</summary>
    public int Reads(StateId id) => _reads.GetValueOrDefault(id);

    /// <summary>Version checks (<see cref="IStateStore.ReadVersionAsync"/>) of <paramref name="id"/> so far.</summary>
    public int VersionReads(StateId id) => _versionReads.GetValueOrDefault(id);

    /// <summary>
    /// Writes of grains of <paramref name="type"/> (<see cref="GrainTypes"/>) that reached storage so far, whether they
    /// committed or lost their compare-and-set: inserts, updates, items-only writes and deletes alike.
    /// </summary>
    public int Writes(string type) => _writes.GetValueOrDefault(type);

    /// <summary>From now on every write of <paramref name="id"/> waits, before it reaches storage, until the gate is opened.</summary>
    public WriteGate HoldWrites(StateId id)
    {
        var gate = new WriteGate(id);
        _gate = gate;
        return gate;
    }

    /// <summary>
    /// Runs <paramref name="action"/> once, right after the next successful write of <paramref name="id"/> and before the
    /// grain that wrote sees its outcome (off the grain's scheduler, so it may call into another cluster).
    /// </summary>
    public void AfterNextWrite(StateId id, Func<Task> action) => Volatile.Write(ref _afterWrite, new AfterWrite(id, action));

    public Task InitializeAsync(CancellationToken cancellationToken) => inner.InitializeAsync(cancellationToken);

    public Task<StoredState?> ReadAsync(StateId id, CancellationToken cancellationToken)
    {
        _reads.AddOrUpdate(id, 1, static (_, n) => n + 1);
        return inner.ReadAsync(id, cancellationToken);
    }

    public async Task<bool> WriteAsync(StateWrite write, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(write);
        if (_gate is { } gate && gate.Id == write.Id)
        {
            await gate.PassAsync();
        }

        _writes.AddOrUpdate(write.Id.Type, 1, static (_, n) => n + 1);
        var written = await inner.WriteAsync(write, cancellationToken);
        if (written && Volatile.Read(ref _afterWrite) is { } after && after.Id == write.Id
            && Interlocked.CompareExchange(ref _afterWrite, null, after) == after)
        {
            await Task.Run(after.Action, CancellationToken.None);
        }

        return written;
    }

    private sealed record AfterWrite(StateId Id, Func<Task> Action);

    public Task<long> ReadVersionAsync(StateId id, CancellationToken cancellationToken)
    {
        _versionReads.AddOrUpdate(id, 1, static (_, n) => n + 1);
        return inner.ReadVersionAsync(id, cancellationToken);
    }

    public Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken) =>
        inner.ReadAllAsync(type, cancellationToken);

    public Task<IReadOnlyList<DueState>> ReadDueAsync(DateTimeOffset until, int limit, CancellationToken cancellationToken) =>
        inner.ReadDueAsync(until, limit, cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}

/// <summary>
/// Holds the writes of one grain (see <see cref="InterceptedStateStore.HoldWrites"/>) until <see cref="Open"/>; disposing
/// it opens it, so a test that fails while writes are held does not leave the grain stuck.
/// </summary>
public sealed class WriteGate(StateId id) : IDisposable
{
    private readonly TaskCompletionSource _firstHeld = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _held;

    public StateId Id => id;

    /// <summary>Completes when the first write has been stopped at the gate: a turn of the grain is now stuck writing.</summary>
    public Task FirstHeld => _firstHeld.Task;

    /// <summary>Writes that have reached the gate so far (held, or let through once it opened).</summary>
    public int Held => Volatile.Read(ref _held);

    /// <summary>Lets every held write, and every later one, through to storage.</summary>
    public void Open() => _open.TrySetResult();

    public void Dispose() => Open();

    internal Task PassAsync()
    {
        Interlocked.Increment(ref _held);
        _firstHeld.TrySetResult();
        return _open.Task;
    }
}
