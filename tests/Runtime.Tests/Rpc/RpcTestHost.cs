using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using CallState.Runtime.Rpc;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Runtime.Tests.Rpc;

/// <summary>A handler made of a delegate, so each test states its server behaviour in place.</summary>
internal sealed class DelegateHandler(Func<RpcRequest, IBufferWriter<byte>, CancellationToken, ValueTask<RpcStatus>> handle) : IRpcHandler
{
    public ValueTask<RpcStatus> HandleAsync(RpcRequest request, IBufferWriter<byte> reply, CancellationToken cancellationToken) =>
        handle(request, reply, cancellationToken);
}

/// <summary>A real server on 127.0.0.1 (a free port) and a client, each with their own metrics.</summary>
internal sealed class RpcTestHost : IAsyncDisposable
{
    private RpcTestHost(RpcServer server, RpcClient client, RpcMetrics serverMetrics, RpcMetrics clientMetrics)
    {
        Server = server;
        Client = client;
        ServerMetrics = serverMetrics;
        ClientMetrics = clientMetrics;
    }

    /// <summary>Generous next to the few milliseconds a loopback call takes; only hit when something is broken.</summary>
    public static TimeSpan LongTimeout { get; } = TimeSpan.FromSeconds(20);

    public RpcServer Server { get; private set; }

    public RpcClient Client { get; }

    public RpcMetrics ServerMetrics { get; }

    public RpcMetrics ClientMetrics { get; }

    public IPEndPoint EndPoint => Server.LocalEndPoint;

    public static async Task<RpcTestHost> StartAsync(
        IRpcHandler handler, RpcOptions? serverOptions = null, RpcOptions? clientOptions = null, TimeProvider? clientTime = null, ILogger<RpcServer>? serverLogger = null)
    {
        var serverMetrics = new RpcMetrics(null);
        var clientMetrics = new RpcMetrics(null);
        var server = await StartServerAsync(handler, serverOptions ?? new RpcOptions(), serverMetrics, serverLogger: serverLogger);
        var client = new RpcClient(clientOptions ?? new RpcOptions(), clientTime ?? TimeProvider.System, NullLogger<RpcClient>.Instance, clientMetrics);
        return new RpcTestHost(server, client, serverMetrics, clientMetrics);
    }

    public static async Task<RpcServer> StartServerAsync(IRpcHandler handler, RpcOptions options, RpcMetrics metrics, int port = 0, ILogger<RpcServer>? serverLogger = null)
    {
        var server = new RpcServer(
            new IPEndPoint(IPAddress.Loopback, port), handler, options, TimeProvider.System, serverLogger ?? NullLogger<RpcServer>.Instance, metrics);
        await server.StartAsync(CancellationToken.None);
        return server;
    }

    /// <summary>Stops the server and starts a new one on the same port.</summary>
    public async Task RestartServerAsync(IRpcHandler handler)
    {
        var port = EndPoint.Port;
        await Server.DisposeAsync();
        Server = await StartServerAsync(handler, new RpcOptions(), ServerMetrics, port);
    }

    public Task<RpcReply> CallAsync(ushort method, byte[] body, TimeSpan? timeout = null, CancellationToken ct = default) =>
        Client.CallAsync(EndPoint, method, body, static (b, w) => w.Write(b), timeout ?? LongTimeout, ct);

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        await Server.DisposeAsync();
        ServerMetrics.Dispose();
        ClientMetrics.Dispose();
    }
}

/// <summary>Collects the long-valued measurements of one <see cref="RpcMetrics"/> instance (not of other tests' meters).</summary>
internal sealed class MetricCollector : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentQueue<(string Instrument, long Value, KeyValuePair<string, object?>[] Tags)> _measurements = new();

    public MetricCollector(RpcMetrics metrics)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (ReferenceEquals(instrument.Meter, metrics.Meter))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => _measurements.Enqueue((instrument.Name, value, tags.ToArray())));
        _listener.Start();
    }

    /// <summary>Sum of <paramref name="instrument"/> where the attribute <paramref name="key"/> equals <paramref name="value"/>.</summary>
    public long Sum(string instrument, string key, string value) =>
        _measurements.Where(m => m.Instrument == instrument && m.Tags.Any(t => t.Key == key && (string?)t.Value == value)).Sum(m => m.Value);

    public void Dispose() => _listener.Dispose();
}

/// <summary>A plain TCP socket for sending bytes no well-behaved client would.</summary>
internal static class RawSocket
{
    public static async Task<Socket> ConnectAsync(IPEndPoint endPoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(endPoint);
        return socket;
    }

    /// <summary>True when the peer closes (or resets) the connection before <paramref name="within"/> passes.</summary>
    public static async Task<bool> WaitForCloseAsync(Socket socket, TimeSpan within)
    {
        using var timeout = new CancellationTokenSource(within);
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                if (await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token) == 0)
                {
                    return true;
                }
            }
        }
        catch (SocketException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}

/// <summary>Keeps the level and event id of every entry, to check what is logged and how often.</summary>
internal sealed class CapturingLogger<T> : ILogger<T>
{
    private readonly ConcurrentQueue<(LogLevel Level, EventId EventId)> _entries = new();

    public IReadOnlyCollection<(LogLevel Level, EventId EventId)> Entries => _entries;

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        _entries.Enqueue((logLevel, eventId));
}
