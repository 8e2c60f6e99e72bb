using System.Collections.Concurrent;
using System.Diagnostics;
using CallState.Runtime.Rpc;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace CallState.Runtime.Tests.Rpc;

/// <summary>W3C trace context travels with each request; the server's span continues the caller's trace.</summary>
public sealed class RpcTraceTests
{
    [Fact]
    public async Task The_callers_trace_reaches_the_handler_and_the_server_span_is_a_child_of_the_client_span()
    {
        var started = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == RpcMetrics.ActivitySourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStarted = started.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        RpcRequest seen = default;
        Activity? serverActivity = null;
        var handler = new DelegateHandler((request, _, _) =>
        {
            seen = request;
            serverActivity = Activity.Current;
            return ValueTask.FromResult(RpcStatus.Ok);
        });
        await using var host = await RpcTestHost.StartAsync(handler);

        using var root = new Activity("edge.invite").SetIdFormat(ActivityIdFormat.W3C).Start();
        (await host.CallAsync(1, [])).Dispose();
        root.Stop();

        var client = Assert.Single(started, a => a.Kind == ActivityKind.Client && a.TraceId == root.TraceId);
        Assert.Equal(root.SpanId, client.ParentSpanId);
        Assert.Equal(root.TraceId, seen.TraceContext.TraceId);
        Assert.Equal(client.SpanId, seen.TraceContext.SpanId);
        Assert.True(seen.TraceContext.IsRemote);
        Assert.NotNull(serverActivity);
        Assert.Equal(ActivityKind.Server, serverActivity.Kind);
        Assert.Equal(root.TraceId, serverActivity.TraceId);
        Assert.Equal(client.SpanId, serverActivity.ParentSpanId);
    }
}

/// <summary>Configuration mistakes name the key to fix.</summary>
public sealed class RpcOptionsTests
{
    [Fact]
    public void Defaults_are_valid()
    {
        var options = new RpcOptions();

        Assert.Empty(options.Validate());
        Assert.Equal("CallState:Cluster:Rpc", RpcOptions.SectionName);
        Assert.Equal(1024 * 1024, options.MaxFrameBytes);
        Assert.Equal(2, options.ConnectionsPerEndpoint);
    }

    [Fact]
    public void Each_bad_field_gives_one_message_naming_its_key_and_value()
    {
        var options = new RpcOptions
        {
            MaxFrameBytes = 10,
            ConnectTimeout = TimeSpan.Zero,
            ConnectionsPerEndpoint = 0,
            MaxInFlightPerConnection = 0,
            ReconnectBackoff = TimeSpan.FromSeconds(-1),
        };

        var errors = options.Validate().ToList();

        Assert.Equal(5, errors.Count);
        Assert.Contains("CallState:Cluster:Rpc:MaxFrameBytes must be between 64 and 67108864 (was 10).", errors);
        Assert.Contains(errors, e => e.StartsWith("CallState:Cluster:Rpc:ConnectTimeout ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Cluster:Rpc:ConnectionsPerEndpoint ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Cluster:Rpc:MaxInFlightPerConnection ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("CallState:Cluster:Rpc:ReconnectBackoff ", StringComparison.Ordinal));
    }

    [Fact]
    public void The_client_refuses_invalid_options_naming_the_key()
    {
        using var metrics = new RpcMetrics(null);
        var bad = new RpcOptions { ConnectionsPerEndpoint = 0 };

        var error = Assert.Throws<ArgumentException>(() =>
            new RpcClient(bad, TimeProvider.System, NullLogger<RpcClient>.Instance, metrics));
        Assert.Contains("CallState:Cluster:Rpc:ConnectionsPerEndpoint", error.Message, StringComparison.Ordinal);
    }
}

/// <summary>The host registration binds and validates the configuration section.</summary>
public sealed class RpcRegistrationTests
{
    [Fact]
    public async Task AddRpc_binds_the_CallState_Cluster_Rpc_section_and_refuses_invalid_values_naming_the_key()
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["CallState:Cluster:Rpc:ConnectionsPerEndpoint"] = "0",
                ["CallState:Cluster:Rpc:MaxFrameBytes"] = "65536",
            })
            .Build();
        var services = new ServiceCollection()
            .AddSingleton<IConfiguration>(configuration)
            .AddLogging()
            .AddRpc();
        await using (var provider = services.BuildServiceProvider())
        {
            var failure = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<RpcClient>());
            Assert.Contains("CallState:Cluster:Rpc:ConnectionsPerEndpoint must be between 1 and 64 (was 0).", failure.Failures);
        }

        configuration["CallState:Cluster:Rpc:ConnectionsPerEndpoint"] = "3";
        await using var fixedProvider = services.BuildServiceProvider();
        var options = fixedProvider.GetRequiredService<IOptions<RpcOptions>>().Value;
        Assert.Equal((65536, 3), (options.MaxFrameBytes, options.ConnectionsPerEndpoint));
        Assert.NotNull(fixedProvider.GetRequiredService<RpcClient>());
    }
}
