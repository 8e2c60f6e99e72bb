using Microsoft.Extensions.Logging;
using Orleans.Concurrency;

namespace CallState.Grains;

/// <summary>
/// An edge as the silos reach it: an Orleans observer the edge (a cluster client) registers with the
/// <see cref="IEdgeRegistryGrain"/>, so that a silo, which has no SIP stack, can have an edge send SIP on its behalf
/// (docs/architecture.md, "Ending a call from the admin API").
/// </summary>
[Alias("CallState.IEdgeObserver")]
public interface IEdgeObserver : IGrainObserver
{
    /// <summary>Sends the two BYEs of <paramref name="teardown"/> at once; throws when this edge cannot (no SIP listeners, a target it cannot read).</summary>
    [Alias("SendTeardown")]
    Task SendTeardownAsync(string callKey, DialogTeardown teardown);
}

/// <summary>
/// The edges alive in the cluster (one grain, key <see cref="EdgeRegistry.Key"/>). Observers are not durable: an edge
/// registers again every <see cref="EdgeRegistry.RefreshInterval"/>, and one not heard of for
/// <see cref="EdgeRegistry.Expiry"/> is forgotten, so a registry reactivated on another silo fills again within one interval.
/// </summary>
[Alias("CallState.IEdgeRegistryGrain")]
public interface IEdgeRegistryGrain : IGrainWithIntegerKey
{
    /// <summary>Registers (or refreshes) the edge named <paramref name="edge"/>.</summary>
    [Alias("Register")]
    Task RegisterAsync(string edge, IEdgeObserver observer);

    /// <summary>The edge is stopping: forget it.</summary>
    [Alias("Unregister")]
    Task UnregisterAsync(string edge);

    /// <summary>
    /// Has one live edge send the BYEs of <paramref name="teardown"/>, trying the next on failure; the name of the edge that
    /// sent them, or null when none could.
    /// </summary>
    [Alias("SendTeardown")]
    Task<string?> SendTeardownAsync(string callKey, DialogTeardown teardown);

    /// <summary>The names of the edges registered and not expired.</summary>
    [Alias("GetEdges")]
    Task<IReadOnlyList<string>> GetEdgesAsync();
}

/// <summary>Timing of the edge registry, shared by the grain and the edges.</summary>
public static class EdgeRegistry
{
    /// <summary>The one registry grain's key.</summary>
    public const long Key = 0;

    /// <summary>How often an edge registers again (a new registry activation knows it again within this).</summary>
    public static readonly TimeSpan RefreshInterval = TimeSpan.FromSeconds(30);

    /// <summary>An edge not heard of for this long (three missed refreshes) is taken to be gone.</summary>
    public static readonly TimeSpan Expiry = TimeSpan.FromSeconds(95);

    /// <summary>How long one edge may take to accept a teardown before the next one is tried (a dead client's call would wait for Orleans' response timeout).</summary>
    public static readonly TimeSpan SendTimeout = TimeSpan.FromSeconds(5);
}

/// <summary>
/// The registered edges, plain logic under <see cref="EdgeRegistryGrain"/>: which are alive (heard of within the expiry)
/// and in which order to try them (round robin, so ends spread over the edges).
/// </summary>
public sealed class EdgeRoster<T>(TimeProvider time, TimeSpan expiry) where T : class
{
    private readonly Dictionary<string, (T Edge, DateTimeOffset Seen)> _edges = new(StringComparer.Ordinal);
    private int _next;

    /// <summary>Registers or refreshes <paramref name="name"/> (a new reference replaces the old one).</summary>
    public void Register(string name, T edge)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(edge);
        _edges[name] = (edge, time.GetUtcNow());
    }

    /// <summary>Forgets <paramref name="name"/>; with <paramref name="edge"/>, only while that is still its reference (a failure does not drop a newer registration).</summary>
    public bool Remove(string name, T? edge = null)
    {
        if (edge is not null && (!_edges.TryGetValue(name, out var known) || !ReferenceEquals(known.Edge, edge)))
        {
            return false;
        }

        return _edges.Remove(name);
    }

    /// <summary>The names of the live edges, in order (expired ones are forgotten); does not move the round robin on.</summary>
    public IReadOnlyList<string> Names() => [.. Live().Select(static e => e.Name)];

    /// <summary>The live edges in the order to try them, starting one further each time; expired ones are forgotten.</summary>
    public IReadOnlyList<(string Name, T Edge)> Candidates()
    {
        var live = Live();
        if (live.Count == 0)
        {
            return live;
        }

        var start = (int)(unchecked((uint)_next++) % (uint)live.Count);
        return [.. live.Skip(start), .. live.Take(start)];
    }

    private List<(string Name, T Edge)> Live()
    {
        var now = time.GetUtcNow();
        var live = new List<(string Name, T Edge)>(_edges.Count);
        var expired = new List<string>();
        foreach (var (name, (edge, seen)) in _edges)
        {
            if (now - seen > expiry)
            {
                expired.Add(name);
            }
            else
            {
                live.Add((name, edge));
            }
        }

        foreach (var name in expired)
        {
            _edges.Remove(name);
        }

        live.Sort(static (a, b) => string.CompareOrdinal(a.Name, b.Name));
        return live;
    }
}

/// <summary>The edge registry (<see cref="IEdgeRegistryGrain"/>); in memory only, refilled by the edges' refreshes.</summary>
[Reentrant]
public sealed class EdgeRegistryGrain(TimeProvider time, ILogger<EdgeRegistryGrain> logger) : Grain, IEdgeRegistryGrain
{
    private readonly EdgeRoster<IEdgeObserver> _roster = new(time, EdgeRegistry.Expiry);

    public Task RegisterAsync(string edge, IEdgeObserver observer)
    {
        _roster.Register(edge, observer);
        return Task.CompletedTask;
    }

    public Task UnregisterAsync(string edge)
    {
        _roster.Remove(edge);
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<string>> GetEdgesAsync() => Task.FromResult(_roster.Names());

    public async Task<string?> SendTeardownAsync(string callKey, DialogTeardown teardown)
    {
        foreach (var (name, edge) in _roster.Candidates())
        {
            try
            {
                await edge.SendTeardownAsync(callKey, teardown).WaitAsync(EdgeRegistry.SendTimeout, time);
                return name;
            }
#pragma warning disable CA1031 // any failure of one edge (gone, timed out, refused) means: try the next
            catch (Exception ex)
#pragma warning restore CA1031
            {
                _roster.Remove(name, edge);
                Log.EdgeFailed(logger, name, callKey, ex.Message);
            }
        }

        return null;
    }
}
