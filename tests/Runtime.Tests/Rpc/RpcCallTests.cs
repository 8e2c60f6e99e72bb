using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using CallState.Runtime.Rpc;
using CallState.Runtime.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Runtime.Tests.Rpc;

/// <summary>Calls between a real <see cref="RpcClient"/> and <see cref="RpcServer"/> over loopback TCP.</summary>
public sealed class RpcCallTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private static DelegateHandler Echo() => new((request, reply, _) =>
    {
        reply.Write(request.Body.Span);
        return ValueTask.FromResult(RpcStatus.Ok);
    });

    [Fact]
    public async Task A_call_gets_the_handlers_status_and_body_and_the_handler_sees_method_body_and_deadline()
    {
        RpcRequest seen = default;
        var handler = new DelegateHandler((request, reply, _) =>
        {
            seen = request;
            reply.Write("pong:"u8);
            reply.Write(request.Body.Span);
            return ValueTask.FromResult(RpcStatus.Redirect);
        });
        await using var host = await RpcTestHost.StartAsync(handler);

        var before = DateTimeOffset.UtcNow;
        using var reply = await host.CallAsync(513, "ping"u8.ToArray(), TimeSpan.FromSeconds(30));

        Assert.Equal(RpcStatus.Redirect, reply.Status);
        Assert.Equal("pong:ping", Encoding.UTF8.GetString(reply.Body.Span));
        Assert.Equal(513, seen.Method);
        Assert.InRange(seen.Deadline, before.AddSeconds(29), DateTimeOffset.UtcNow.AddSeconds(31));
        Assert.Equal(IPAddress.Loopback, Assert.IsType<IPEndPoint>(seen.RemoteEndPoint).Address);
        Assert.Equal(default, seen.TraceContext);
    }

    [Fact]
    public async Task An_empty_body_and_a_null_body_writer_round_trip_as_empty()
    {
        await using var host = await RpcTestHost.StartAsync(Echo());

        using var reply = await host.Client.CallAsync(host.EndPoint, 1, null, RpcTestHost.LongTimeout, CancellationToken.None);

        Assert.Equal(RpcStatus.Ok, reply.Status);
        Assert.True(reply.Body.IsEmpty);
    }

    [Fact]
    public async Task A_DnsEndPoint_target_works()
    {
        await using var host = await RpcTestHost.StartAsync(Echo());

        using var reply = await host.Client.CallAsync(
            new DnsEndPoint("127.0.0.1", host.EndPoint.Port), 1, "x"u8.ToArray(), static (b, w) => w.Write(b), RpcTestHost.LongTimeout, CancellationToken.None);

        Assert.Equal("x", Encoding.UTF8.GetString(reply.Body.Span));
    }

    [Fact]
    public async Task Two_thousand_concurrent_calls_on_one_connection_answered_out_of_order_each_get_their_own_reply()
    {
        const int Calls = 2000;
        var handler = new DelegateHandler(async (request, reply, ct) =>
        {
            // Random delays finish the calls in another order than they were sent.
            await Task.Delay(Random.Shared.Next(0, 20), ct);
            var n = BinaryPrimitives.ReadInt32BigEndian(request.Body.Span);
            BinaryPrimitives.WriteInt32BigEndian(reply.GetSpan(4), n * 3);
            reply.Advance(4);
            return RpcStatus.Ok;
        });
        await using var host = await RpcTestHost.StartAsync(handler, clientOptions: new RpcOptions { ConnectionsPerEndpoint = 1 });

        var calls = Enumerable.Range(0, Calls).Select(async n =>
        {
            using var reply = await host.Client.CallAsync(
                host.EndPoint,
                7,
                n,
                static (value, w) =>
                {
                    BinaryPrimitives.WriteInt32BigEndian(w.GetSpan(4), value);
                    w.Advance(4);
                },
                RpcTestHost.LongTimeout,
                CancellationToken.None);
            return (n, reply.Status, Value: BinaryPrimitives.ReadInt32BigEndian(reply.Body.Span));
        }).ToArray();
        var results = await Task.WhenAll(calls);

        Assert.All(results, r => Assert.Equal((r.n, RpcStatus.Ok, r.n * 3), r));
        Assert.Equal(1, host.Server.ConnectionCount);
        Assert.Equal(1, host.Client.OpenConnections(host.EndPoint));
    }

    [Fact]
    public async Task A_handler_that_throws_gives_Error_with_the_exception_message_and_the_connection_stays_usable()
    {
        var handler = new DelegateHandler((request, reply, _) =>
        {
            if (request.Method == 1)
            {
                reply.Write("partial reply that must not be sent"u8);
                throw new InvalidOperationException("limit grain is gone: é");
            }

            return ValueTask.FromResult(RpcStatus.Ok);
        });
        await using var host = await RpcTestHost.StartAsync(handler, clientOptions: new RpcOptions { ConnectionsPerEndpoint = 1 });

        using var failed = await host.CallAsync(1, []);
        using var next = await host.CallAsync(2, []);

        Assert.Equal(RpcStatus.Error, failed.Status);
        Assert.Equal("limit grain is gone: é", Encoding.UTF8.GetString(failed.Body.Span));
        Assert.Equal(RpcStatus.Ok, next.Status);
    }

    [Fact]
    public async Task When_the_deadline_passes_the_caller_gets_TimeoutException_and_the_handler_token_fires()
    {
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new DelegateHandler(async (_, _, ct) =>
        {
            using var registration = ct.Register(handlerCancelled.SetResult);
            await Task.Delay(Timeout.Infinite, ct);
            return RpcStatus.Ok;
        });
        await using var host = await RpcTestHost.StartAsync(handler);

        await Assert.ThrowsAsync<TimeoutException>(() => host.CallAsync(1, [], TimeSpan.FromMilliseconds(200)));

        await handlerCancelled.Task.WaitAsync(Bound);
    }

    [Fact]
    public async Task A_client_timeout_sends_a_Cancel_frame_that_cancels_the_handler_before_the_servers_deadline()
    {
        // The client's clock is moved by hand: its timeout fires while the server (real clock) still has 10 minutes.
        var clientTime = new ManualTimeProvider(DateTimeOffset.UtcNow);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new DelegateHandler(async (_, _, ct) =>
        {
            using var registration = ct.Register(handlerCancelled.SetResult);
            started.SetResult();
            await Task.Delay(Timeout.Infinite, ct);
            return RpcStatus.Ok;
        });
        await using var host = await RpcTestHost.StartAsync(handler, clientTime: clientTime);

        var call = host.CallAsync(1, [], TimeSpan.FromMinutes(10));
        await started.Task.WaitAsync(Bound);
        clientTime.Advance(TimeSpan.FromMinutes(10));

        await Assert.ThrowsAsync<TimeoutException>(() => call);
        await handlerCancelled.Task.WaitAsync(Bound);
    }

    [Fact]
    public async Task Cancelling_the_call_throws_OperationCanceledException_and_cancels_the_handler_through_a_Cancel_frame()
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new DelegateHandler(async (_, _, ct) =>
        {
            using var registration = ct.Register(handlerCancelled.SetResult);
            started.SetResult();
            await Task.Delay(Timeout.Infinite, ct);
            return RpcStatus.Ok;
        });
        await using var host = await RpcTestHost.StartAsync(handler);
        using var cts = new CancellationTokenSource();

        var call = host.CallAsync(1, [], TimeSpan.FromMinutes(10), cts.Token);
        await started.Task.WaitAsync(Bound);
        await cts.CancelAsync();

        var error = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
        Assert.Equal(cts.Token, error.CancellationToken);
        await handlerCancelled.Task.WaitAsync(Bound);
    }

    [Fact]
    public async Task A_request_arriving_after_its_deadline_gets_DeadlineExceeded_without_running_the_handler()
    {
        var ran = 0;
        var handler = new DelegateHandler((_, _, _) =>
        {
            Interlocked.Increment(ref ran);
            return ValueTask.FromResult(RpcStatus.Ok);
        });

        // The caller's clock is an hour behind: the deadline it computes has passed on the server's clock.
        var clientTime = new ManualTimeProvider(DateTimeOffset.UtcNow.AddHours(-1));
        await using var host = await RpcTestHost.StartAsync(handler, clientTime: clientTime);

        using var reply = await host.CallAsync(1, "late"u8.ToArray(), TimeSpan.FromSeconds(5));

        Assert.Equal(RpcStatus.DeadlineExceeded, reply.Status);
        Assert.Equal(0, ran);
    }

    [Fact]
    public async Task Above_the_servers_in_flight_limit_a_request_is_answered_Unavailable()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = 0;
        var twoStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new DelegateHandler(async (_, _, ct) =>
        {
            if (Interlocked.Increment(ref started) == 2)
            {
                twoStarted.SetResult();
            }

            await release.Task.WaitAsync(ct);
            return RpcStatus.Ok;
        });
        await using var host = await RpcTestHost.StartAsync(
            handler, serverOptions: new RpcOptions { MaxInFlightPerConnection = 2 }, clientOptions: new RpcOptions { ConnectionsPerEndpoint = 1 });

        var first = host.CallAsync(1, []);
        var second = host.CallAsync(1, []);
        await twoStarted.Task.WaitAsync(Bound);
        using var third = await host.CallAsync(1, []);
        release.SetResult();

        Assert.Equal(RpcStatus.Unavailable, third.Status);
        Assert.Equal(RpcStatus.Ok, (await first).Status);
        Assert.Equal(RpcStatus.Ok, (await second).Status);
        Assert.Equal(2, started);
    }

    [Fact]
    public async Task After_the_server_restarts_on_the_same_port_the_next_call_reconnects()
    {
        await using var host = await RpcTestHost.StartAsync(Echo(), clientOptions: new RpcOptions { ConnectionsPerEndpoint = 2 });
        using (await host.CallAsync(1, "a"u8.ToArray()))
        using (await host.CallAsync(1, "b"u8.ToArray()))
        {
            Assert.Equal(2, host.Client.OpenConnections(host.EndPoint));
        }

        await host.RestartServerAsync(Echo());
        await WaitUntilAsync(() => host.Client.OpenConnections(host.EndPoint) == 0);

        using var reply = await host.CallAsync(1, "again"u8.ToArray());
        Assert.Equal("again", Encoding.UTF8.GetString(reply.Body.Span));
    }

    [Fact]
    public async Task Calls_in_flight_when_the_server_dies_fail_at_once_with_RpcConnectionException_and_handler_tokens_fire()
    {
        const int Calls = 10;
        var started = 0;
        var allStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancelled = new CountdownEvent(Calls);
        var handler = new DelegateHandler(async (_, _, ct) =>
        {
            using var registration = ct.Register(() => cancelled.Signal());
            if (Interlocked.Increment(ref started) == Calls)
            {
                allStarted.SetResult();
            }

            await Task.Delay(Timeout.Infinite, ct);
            return RpcStatus.Ok;
        });
        await using var host = await RpcTestHost.StartAsync(handler);

        // Ten minutes: only the broken connection can end these calls within the test's bound.
        var calls = Enumerable.Range(0, Calls).Select(_ => host.CallAsync(1, [], TimeSpan.FromMinutes(10))).ToArray();
        await allStarted.Task.WaitAsync(Bound);
        await host.Server.DisposeAsync();

        foreach (var call in calls)
        {
            await Assert.ThrowsAsync<RpcConnectionException>(() => call.WaitAsync(Bound));
        }

        Assert.True(cancelled.Wait(Bound));
    }

    [Fact]
    public async Task A_refused_connect_fails_with_RpcConnectionException_then_fails_fast_until_the_backoff_passes()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var closedPort = (IPEndPoint)probe.LocalEndPoint!;
        probe.Close();
        var time = new ManualTimeProvider(DateTimeOffset.UtcNow);
        using var metrics = new RpcMetrics(null);
        await using var client = new RpcClient(
            new RpcOptions { ConnectionsPerEndpoint = 1, ReconnectBackoff = TimeSpan.FromSeconds(5) }, time, NullLogger<RpcClient>.Instance, metrics);

        Task<RpcReply> Call() => client.CallAsync(closedPort, 1, null, TimeSpan.FromSeconds(5), CancellationToken.None);

        var refused = await Assert.ThrowsAsync<RpcConnectionException>(Call);
        Assert.IsType<SocketException>(refused.InnerException);

        var fast = await Assert.ThrowsAsync<RpcConnectionException>(Call);
        Assert.Null(fast.InnerException);

        time.Advance(TimeSpan.FromSeconds(5));
        var retried = await Assert.ThrowsAsync<RpcConnectionException>(Call);
        Assert.IsType<SocketException>(retried.InnerException);
    }

    [Fact]
    public async Task The_server_counts_requests_by_status()
    {
        var handler = new DelegateHandler((request, _, _) => ValueTask.FromResult((RpcStatus)request.Method));
        await using var host = await RpcTestHost.StartAsync(handler);
        using var server = new MetricCollector(host.ServerMetrics);

        (await host.CallAsync((ushort)RpcStatus.Ok, [])).Dispose();
        (await host.CallAsync((ushort)RpcStatus.Ok, [])).Dispose();
        (await host.CallAsync((ushort)RpcStatus.UnknownMethod, [])).Dispose();

        Assert.Equal(2, server.Sum("callstate.rpc.server.requests", "callstate.rpc.status", "ok"));
        Assert.Equal(1, server.Sum("callstate.rpc.server.requests", "callstate.rpc.status", "unknown_method"));
    }

    /// <summary>Waits (bounded) for something the client notices asynchronously, such as the peer closing.</summary>
    internal static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (var i = 0; i < 200 && !condition(); i++)
        {
            await Task.Delay(25);
        }

        Assert.True(condition());
    }
}
