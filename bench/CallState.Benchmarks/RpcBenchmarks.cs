using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Net;
using BenchmarkDotNet.Attributes;
using CallState.Runtime.Rpc;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Benchmarks;

/// <summary>Cluster RPC round trips over loopback TCP: a 64-byte request echoed back by the server.</summary>
[MemoryDiagnoser]
[SuppressMessage("Reliability", "CA1001", Justification = "GlobalCleanup disposes them; BenchmarkDotNet owns the instance.")]
public class RpcBenchmarks
{
    private const int Concurrent = 64;
    private static readonly byte[] Body = Enumerable.Range(0, 64).Select(i => (byte)i).ToArray();
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private static readonly Action<byte[], IBufferWriter<byte>> WriteBody = static (body, writer) => writer.Write(body);
    private readonly Task<RpcReply>[] _calls = new Task<RpcReply>[Concurrent];
    private RpcMetrics _metrics = null!;
    private RpcServer _server = null!;
    private RpcClient _client = null!;
    private IPEndPoint _target = null!;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _metrics = new RpcMetrics(null);
        var options = new RpcOptions();
        _server = new RpcServer(new IPEndPoint(IPAddress.Loopback, 0), new EchoHandler(), options, TimeProvider.System, NullLogger<RpcServer>.Instance, _metrics);
        await _server.StartAsync(CancellationToken.None);
        _target = _server.LocalEndPoint;
        _client = new RpcClient(options, TimeProvider.System, NullLogger<RpcClient>.Instance, _metrics);
        (await CallAsync()).Dispose();
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _client.DisposeAsync();
        await _server.DisposeAsync();
        _metrics.Dispose();
    }

    /// <summary>One call at a time: latency of a round trip.</summary>
    [Benchmark]
    public async Task<int> Sequential()
    {
        using var reply = await CallAsync();
        return reply.Body.Length;
    }

    /// <summary>64 calls in flight (over the default two connections), per call.</summary>
    [Benchmark(OperationsPerInvoke = Concurrent)]
    public async Task<int> Concurrent64()
    {
        for (var i = 0; i < _calls.Length; i++)
        {
            _calls[i] = CallAsync();
        }

        var bytes = 0;
        foreach (var call in _calls)
        {
            using var reply = await call;
            bytes += reply.Body.Length;
        }

        return bytes;
    }

    private Task<RpcReply> CallAsync() => _client.CallAsync(_target, 1, Body, WriteBody, Timeout, CancellationToken.None);

    private sealed class EchoHandler : IRpcHandler
    {
        public ValueTask<RpcStatus> HandleAsync(RpcRequest request, IBufferWriter<byte> reply, CancellationToken cancellationToken)
        {
            reply.Write(request.Body.Span);
            return ValueTask.FromResult(RpcStatus.Ok);
        }
    }
}
