using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using CallState.Grains;
using CallState.Silo.Admin;

namespace CallState.Silo.Dashboard;

/// <summary>What the dashboard's stream sends each second (event <c>snapshot</c>); see docs/dashboard.md.</summary>
public sealed record DashboardSnapshot(
    DateTimeOffset At,
    IReadOnlyList<LimitKindSummary> Kinds,
    IReadOnlyList<LimitEntry> Top,
    int Limits,
    FiguresDto Figures,
    ClusterDto? Cluster,
    IReadOnlyList<string> Errors);

/// <summary>The limit a browser watches (event <c>key</c>), with its calls (at most <see cref="DashboardFeed.MaxCallsShown"/>).</summary>
public sealed record WatchedDto(string Key, LimitEntry? Entry, string? Error);

/// <summary>Who the dashboard's session is: the token's name and role.</summary>
public sealed record SessionDto(string Name, string Role);

[JsonSerializable(typeof(DashboardSnapshot))]
[JsonSerializable(typeof(WatchedDto))]
[JsonSerializable(typeof(SessionDto))]
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UseStringEnumConverter = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
internal sealed partial class DashboardJsonContext : JsonSerializerContext;

/// <summary>
/// The one producer of the dashboard's figures: each second, while at least one browser is connected, it samples the
/// meters (<see cref="DashboardFigures"/>), reads the limits once from storage (the listing <c>GET /api/limits</c> reads),
/// every fifth second the cluster's silos and edges, and each limit some browser watches once; then it hands the same
/// serialized frame to every stream. However many browsers, the grains and the store see one reader.
/// </summary>
public sealed partial class DashboardFeed : BackgroundService
{
    /// <summary>How often the figures are sent.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    /// <summary>Keys in the top table.</summary>
    public const int TopKeys = 20;

    /// <summary>Calls of a watched key sent (a busy trunk holds thousands).</summary>
    public const int MaxCallsShown = 100;

    /// <summary>Streams open at once: each costs a connection and a frame per second.</summary>
    public const int MaxStreams = 64;

    /// <summary>Frames waiting for a slow stream; older ones are dropped (the next frame carries every figure again).</summary>
    private const int StreamBacklog = 4;

    /// <summary>The cluster (a management grain call) is read every this many ticks.</summary>
    private const int ClusterEvery = 5;

    private readonly ConcurrentDictionary<DashboardSubscriber, byte> _streams = new();
    private readonly DashboardFigures _figures;
    private readonly GrainAccess _grains;
    private readonly IGrainFactory _grainFactory;
    private readonly CallEnding _ending;
    private readonly TimeProvider _time;
    private readonly ILogger<DashboardFeed> _logger;
    private volatile string? _latest;
    private volatile bool _stopping;

    public DashboardFeed(DashboardFigures figures, GrainAccess grains, IGrainFactory grainFactory, CallEnding ending, TimeProvider time,
        IHostApplicationLifetime lifetime, ILogger<DashboardFeed> logger)
    {
        ArgumentNullException.ThrowIfNull(lifetime);
        _figures = figures;
        _grains = grains;
        _grainFactory = grainFactory;
        _ending = ending;
        _time = time;
        _logger = logger;

        // Open streams would hold the web server's graceful stop until its timeout: they end as soon as stopping begins.
        lifetime.ApplicationStopping.Register(() =>
        {
            _stopping = true;
            foreach (var (stream, _) in _streams)
            {
                stream.Frames.Writer.TryComplete();
            }
        });
    }

    /// <summary>A new stream watching <paramref name="watched"/> (or no key); null when <see cref="MaxStreams"/> are open or the process stops.</summary>
    public DashboardSubscriber? Subscribe(LimitKey? watched)
    {
        if (_stopping || _streams.Count >= MaxStreams)
        {
            return null;
        }

        var stream = new DashboardSubscriber(watched, Channel.CreateBounded<string>(new BoundedChannelOptions(StreamBacklog)
        {
            FullMode = BoundedChannelFullMode.DropOldest,
            SingleReader = true,
            SingleWriter = true,
        }));
        _streams[stream] = 0;
        if (_latest is { } latest)
        {
            stream.Frames.Writer.TryWrite(latest);
        }

        return stream;
    }

    public void Unsubscribe(DashboardSubscriber stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        _streams.TryRemove(stream, out _);
        stream.Frames.Writer.TryComplete();
    }

    /// <summary>Streams open now.</summary>
    public int Streams => _streams.Count;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, _time);
        var tick = 0;
        ClusterDto? cluster = null;
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                if (_streams.IsEmpty)
                {
                    tick = 0;
                    continue;
                }

                var errors = new List<string>();
                if (tick++ % ClusterEvery == 0)
                {
                    cluster = await ReadClusterAsync(errors).ConfigureAwait(false) ?? cluster;
                }

                await PublishAsync(cluster, errors, stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private async Task PublishAsync(ClusterDto? cluster, List<string> errors, CancellationToken cancellationToken)
    {
        var figures = _figures.Sample();
        IReadOnlyList<LimitKindSummary> kinds = [];
        IReadOnlyList<LimitEntry> top = [];
        var count = 0;
        try
        {
            (kinds, top, count) = await _grains.OverviewAsync(TopKeys, cancellationToken).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // the storage cannot be read now: the figures still go out, with the error shown
        catch (Exception ex) when (ex is not OperationCanceledException)
#pragma warning restore CA1031
        {
            LogReadFailed(_logger, "limits", ex);
            errors.Add("limits: " + ex.Message);
        }

        var snapshot = new DashboardSnapshot(_time.GetUtcNow(), kinds, top, count, figures, cluster, errors);
        var frame = Frame("snapshot", JsonSerializer.Serialize(snapshot, DashboardJsonContext.Default.DashboardSnapshot));
        _latest = frame;

        var watched = new Dictionary<LimitKey, string>();
        foreach (var (stream, _) in _streams)
        {
            if (stream.Watched is { } key && !watched.ContainsKey(key))
            {
                watched[key] = Frame("key", JsonSerializer.Serialize(await ReadWatchedAsync(key).ConfigureAwait(false), DashboardJsonContext.Default.WatchedDto));
            }
        }

        foreach (var (stream, _) in _streams)
        {
            stream.Frames.Writer.TryWrite(stream.Watched is { } key ? frame + watched[key] : frame);
        }
    }

    private async Task<WatchedDto> ReadWatchedAsync(LimitKey key)
    {
        try
        {
            var entry = _grains.Entry(await _grains.GetLimitAsync(key).ConfigureAwait(false), includeCalls: true);
            if (entry.Calls is { Count: > MaxCallsShown } calls)
            {
                entry = entry with { Calls = [.. calls.Take(MaxCallsShown)] };
            }

            return new WatchedDto(key.ToString(), entry, null);
        }
#pragma warning disable CA1031 // the limit's grain does not answer now: the stream says so and tries again next second
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogReadFailed(_logger, key.ToString(), ex);
            return new WatchedDto(key.ToString(), null, ex.Message);
        }
    }

    private async Task<ClusterDto?> ReadClusterAsync(List<string> errors)
    {
        try
        {
            var cluster = await ClusterStatus.ReadAsync(_grainFactory).ConfigureAwait(false);
            return cluster with { Edges = await _ending.EdgesAsync().ConfigureAwait(false) };
        }
#pragma warning disable CA1031 // the management grain does not answer now: the last cluster read stays shown
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogReadFailed(_logger, "cluster", ex);
            errors.Add("cluster: " + ex.Message);
            return null;
        }
    }

    /// <summary>One server-sent event: its name and one line of JSON (JSON has no raw line breaks).</summary>
    private static string Frame(string name, string json) => "event: " + name + "\ndata: " + json + "\n\n";

    [LoggerMessage(EventId = 2130, Level = LogLevel.Warning, Message = "Dashboard could not read {What}")]
    private static partial void LogReadFailed(ILogger logger, string what, Exception exception);
}

/// <summary>One browser's stream: the key it watches and the frames waiting to be written to it.</summary>
public sealed class DashboardSubscriber(LimitKey? watched, Channel<string> frames)
{
    public LimitKey? Watched { get; } = watched;

    internal Channel<string> Frames { get; } = frames;
}
