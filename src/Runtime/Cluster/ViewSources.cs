using System.Net;
using CallState.Runtime.Rpc;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Cluster;

/// <summary>
/// A view an edge keeps by asking again every <see cref="ClusterOptions.ViewRefreshInterval"/>; a redirect's view is
/// taken at once. Subclasses say where the view comes from.
/// </summary>
public abstract class PolledViewSource(ClusterOptions options, TimeProvider time) : IClusterViewSource, IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private volatile ClusterView _current = ClusterView.Empty;
    private Task? _loop;

    public ClusterView Current => _current;

    protected ClusterOptions Options => options;

    protected TimeProvider Time => time;

    public void Offer(ClusterView view)
    {
        if (!view.IsEmpty)
        {
            _current = view;
        }
    }

    /// <summary>Fetches a first view (trying for at most <paramref name="wait"/>), then keeps it fresh in the background.</summary>
    public async Task StartAsync(TimeSpan wait, CancellationToken cancellationToken)
    {
        var until = time.GetUtcNow() + wait;
        while (!await RefreshAsync(cancellationToken).ConfigureAwait(false) && time.GetUtcNow() < until)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(200), time, cancellationToken).ConfigureAwait(false);
        }

        _loop = Task.Run(LoopAsync, CancellationToken.None);
    }

    /// <summary>Reads the view once; false (keeping the last view) when it could not.</summary>
    public abstract Task<bool> RefreshAsync(CancellationToken cancellationToken);

    /// <summary>Takes <paramref name="view"/>; true when it differs from the one held.</summary>
    protected bool Publish(ClusterView view)
    {
        var changed = view.Signature != _current.Signature;
        _current = view;
        return changed;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        await ReleaseAsync().ConfigureAwait(false);
        _stop.Dispose();
        GC.SuppressFinalize(this);
    }

    protected virtual ValueTask ReleaseAsync() => ValueTask.CompletedTask;

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(options.ViewRefreshInterval, time, _stop.Token).ConfigureAwait(false);
                await RefreshAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}

/// <summary>
/// An edge's view from silos: asks the bootstrap addresses (every address a name resolves to, so one Kubernetes
/// headless-service name finds every pod) and the silos it already knows for their view.
/// </summary>
public sealed partial class RemoteViewSource(RpcClient rpc, ClusterOptions options, TimeProvider time, ILogger<RemoteViewSource> logger)
    : PolledViewSource(options, time)
{
    private bool _warned;

    public override async Task<bool> RefreshAsync(CancellationToken cancellationToken)
    {
        foreach (var endPoint in await CandidatesAsync(cancellationToken).ConfigureAwait(false))
        {
            try
            {
                using var reply = await rpc.CallAsync(endPoint, (ushort)ClusterMethod.GetView, null, Options.RequestTimeout, cancellationToken).ConfigureAwait(false);
                if (reply.Status != RpcStatus.Ok)
                {
                    continue;
                }

                var view = ClusterProtocol.ReadView(reply.Body.Span);
                if (view.IsEmpty)
                {
                    continue;
                }

                if (Publish(view))
                {
                    LogView(logger, view);
                }

                _warned = false;
                return true;
            }
            catch (Exception ex) when (ex is IOException or TimeoutException or FormatException or System.Net.Sockets.SocketException)
            {
                // Try the next address.
            }
        }

        if (!_warned)
        {
            _warned = true;
            LogNoView(logger, string.Join(", ", Options.Bootstrap));
        }

        return false;
    }

    private async Task<List<EndPoint>> CandidatesAsync(CancellationToken cancellationToken)
    {
        var list = new List<EndPoint>();
        foreach (var member in Current.Members)
        {
            list.Add(member.EndPoint!);
        }

        foreach (var entry in Options.Bootstrap)
        {
            if (!SiloAddress.TryParse(entry, out var endPoint))
            {
                continue;
            }

            if (endPoint is DnsEndPoint dns)
            {
                try
                {
                    foreach (var address in await Dns.GetHostAddressesAsync(dns.Host, cancellationToken).ConfigureAwait(false))
                    {
                        list.Add(new IPEndPoint(address, dns.Port));
                    }
                }
                catch (System.Net.Sockets.SocketException)
                {
                    // Not resolvable now (no pod yet); next refresh.
                }
            }
            else
            {
                list.Add(endPoint);
            }
        }

        // Start from a different silo each time so one slow silo does not hold every refresh.
        var offset = list.Count == 0 ? 0 : Random.Shared.Next(list.Count);
        return [.. list.Skip(offset), .. list.Take(offset)];
    }

    [LoggerMessage(EventId = 4101, Level = LogLevel.Information, Message = "Cluster view: {View}")]
    private static partial void LogView(ILogger logger, ClusterView view);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Warning, Message = "No silo answered for the cluster view (bootstrap: {Bootstrap}); admissions fail closed until one does")]
    private static partial void LogNoView(ILogger logger, string bootstrap);
}

/// <summary>An edge's view from the membership table itself (when it has the storage settings rather than a bootstrap list).</summary>
public sealed partial class TableViewSource(IMembershipTable table, ClusterOptions options, TimeProvider time, ILogger<TableViewSource> logger)
    : PolledViewSource(options, time)
{
    private bool _warned;

    public override async Task<bool> RefreshAsync(CancellationToken cancellationToken)
    {
        try
        {
            var entries = await table.ReadAllAsync(cancellationToken).ConfigureAwait(false);
            var view = ClusterView.FromEntries(entries, Time.GetUtcNow(), Options.FailureTimeout);
            if (Publish(view))
            {
                LogView(logger, view);
            }

            _warned = false;
            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException and not OutOfMemoryException)
        {
            if (!_warned)
            {
                _warned = true;
                LogFailed(logger, ex);
            }

            return false;
        }
    }

    protected override ValueTask ReleaseAsync() => table.DisposeAsync();

    [LoggerMessage(EventId = 4103, Level = LogLevel.Information, Message = "Cluster view from the membership table: {View}")]
    private static partial void LogView(ILogger logger, ClusterView view);

    [LoggerMessage(EventId = 4104, Level = LogLevel.Warning, Message = "Membership table unreachable; keeping the last view")]
    private static partial void LogFailed(ILogger logger, Exception exception);
}
