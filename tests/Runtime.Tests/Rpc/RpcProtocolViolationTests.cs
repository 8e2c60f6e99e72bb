using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using CallState.Runtime.Rpc;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Tests.Rpc;

/// <summary>
/// A peer that breaks the protocol loses its own connection, is counted and logged; the server keeps serving everyone else.
/// </summary>
public sealed class RpcProtocolViolationTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    public static TheoryData<string, string> Violations() => new()
    {
        { "garbage", "oversized" },
        { "oversized-length", "oversized" },
        { "unknown-kind", "malformed" },
        { "shorter-than-fixed-part", "malformed" },
        { "length-below-header", "malformed" },
        { "response-from-client", "malformed" },
        { "duplicate-request-id", "malformed" },
    };

    [Theory]
    [MemberData(nameof(Violations))]
    public async Task A_bad_frame_closes_that_connection_is_counted_and_other_clients_keep_working(string violation, string reason)
    {
        var handler = new DelegateHandler(async (request, reply, ct) =>
        {
            if (request.Method == 99)
            {
                // Keeps the first of two duplicate ids in flight.
                await Task.Delay(Timeout.Infinite, ct);
            }

            reply.Write(request.Body.Span);
            return RpcStatus.Ok;
        });
        var log = new CapturingLogger<RpcServer>();
        await using var host = await RpcTestHost.StartAsync(
            handler, serverOptions: new RpcOptions { MaxFrameBytes = 4096 }, clientOptions: new RpcOptions { ConnectionsPerEndpoint = 1 }, serverLogger: log);
        using var metrics = new MetricCollector(host.ServerMetrics);
        using (await host.CallAsync(1, "warm"u8.ToArray()))
        {
        }

        using var raw = await RawSocket.ConnectAsync(host.EndPoint);
        await raw.SendAsync(Bytes(violation), SocketFlags.None);

        Assert.True(await RawSocket.WaitForCloseAsync(raw, Bound), "the server should close the offending connection");
        Assert.Equal(1, metrics.Sum("callstate.rpc.frames.rejected", "callstate.rpc.reason", reason));
        Assert.Single(log.Entries, e => e.Level == LogLevel.Warning);
        Assert.Single(log.Entries, e => e.EventId.Id == 1101);
        using var reply = await host.CallAsync(1, "still here"u8.ToArray());
        Assert.Equal("still here", Encoding.UTF8.GetString(reply.Body.Span));
        await RpcCallTests.WaitUntilAsync(() => host.Server.ConnectionCount == 1);
    }

    [Fact]
    public async Task A_request_trickling_in_byte_by_byte_with_a_deadline_centuries_away_is_served()
    {
        await using var host = await RpcTestHost.StartAsync(new DelegateHandler((request, reply, _) =>
        {
            reply.Write(request.Body.Span);
            return ValueTask.FromResult(RpcStatus.Ok);
        }));
        using var raw = await RawSocket.ConnectAsync(host.EndPoint);
        var request = new ArrayBufferWriter<byte>();
        RpcFrameCodec.WriteRequest(request, 42, 1, long.MaxValue, default, "slow"u8);

        for (var i = 0; i < request.WrittenCount; i++)
        {
            await raw.SendAsync(request.WrittenMemory.Slice(i, 1), SocketFlags.None);
        }

        var response = new byte[4 + RpcFrameCodec.ResponseFixedBytes + 4];
        var received = 0;
        using var timeout = new CancellationTokenSource(Bound);
        while (received < response.Length)
        {
            var n = await raw.ReceiveAsync(response.AsMemory(received), SocketFlags.None, timeout.Token);
            Assert.NotEqual(0, n);
            received += n;
        }

        var buffer = new ReadOnlySequence<byte>(response);
        Assert.Equal(OperationStatus.Done, RpcFrameCodec.TryRead(ref buffer, 4096, out var frame, out _));
        Assert.Equal((RpcFrameKind.Response, 42ul, RpcStatus.Ok, "slow"), (frame.Kind, frame.RequestId, frame.Status, Encoding.UTF8.GetString(frame.Body.ToArray())));
    }

    private static byte[] Bytes(string violation)
    {
        var deadline = DateTimeOffset.UtcNow.AddMinutes(1).ToUnixTimeMilliseconds();
        var writer = new ArrayBufferWriter<byte>();
        switch (violation)
        {
            case "garbage":
                // "GET " read as a length is about 1.2 GB.
                return "GET / HTTP/1.1\r\nHost: silo\r\n\r\n"u8.ToArray();
            case "oversized-length":
                RpcFrameCodec.WriteRequest(writer, 1, 1, deadline, default, new byte[5000]);
                return writer.WrittenSpan.ToArray();
            case "unknown-kind":
                var unknown = new byte[4 + RpcFrameCodec.CommonBytes];
                BinaryPrimitives.WriteUInt32BigEndian(unknown, RpcFrameCodec.CommonBytes);
                unknown[4] = 9;
                return unknown;
            case "shorter-than-fixed-part":
                RpcFrameCodec.WriteRequest(writer, 1, 1, deadline, default, []);
                var shortened = writer.WrittenSpan.ToArray();
                BinaryPrimitives.WriteUInt32BigEndian(shortened, RpcFrameCodec.RequestFixedBytes - 1);
                return shortened[..^1];
            case "length-below-header":
                return [0, 0, 0, 3, 1, 0, 0];
            case "response-from-client":
                RpcFrameCodec.WriteResponse(writer, 1, RpcStatus.Ok, "?"u8);
                return writer.WrittenSpan.ToArray();
            case "duplicate-request-id":
                var trace = new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.None);
                RpcFrameCodec.WriteRequest(writer, 7, 99, deadline, trace, "first"u8);
                RpcFrameCodec.WriteRequest(writer, 7, 99, deadline, trace, "second"u8);
                return writer.WrittenSpan.ToArray();
            default:
                throw new ArgumentOutOfRangeException(nameof(violation));
        }
    }
}
