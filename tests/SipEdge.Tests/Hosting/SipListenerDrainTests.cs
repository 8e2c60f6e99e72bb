using System.Diagnostics.Metrics;
using CallState.Sip.Proxy;
using CallState.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Hosting;

/// <summary>
/// The listeners' drain when the host stops (docs/operations.md, "Draining an edge"), on real loopback sockets and a fake
/// clock: readiness turns unhealthy, and the drain ends at once behind a load balancer's Record-Route (nothing in
/// progress), at its timeout when Record-Route names this edge, or at the host's shutdown timeout.
/// </summary>
public sealed class SipListenerDrainTests : IAsyncDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    private readonly FakeTimeProvider _clock = new();
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();

    public async ValueTask DisposeAsync() => await _services.DisposeAsync();

    [Fact]
    public async Task Behind_a_load_balancers_Record_Route_an_idle_edge_drains_at_once_and_reports_not_ready()
    {
        await using var listener = await StartAsync(advertisedHost: "203.0.113.10");
        Assert.Equal(HealthStatus.Healthy, (await listener.CheckHealthAsync(new HealthCheckContext())).Status);

        await listener.StoppingAsync(CancellationToken.None).WaitAsync(Wait);

        Assert.True(listener.Endpoint!.Proxy.IsDraining);
        var health = await listener.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, health.Status);
        Assert.Contains("draining", health.Description, StringComparison.Ordinal);
        await listener.StopAsync(CancellationToken.None);
    }

    [Fact]
    public async Task With_Record_Route_naming_this_edge_the_drain_lasts_its_timeout()
    {
        await using var listener = await StartAsync(advertisedHost: null);

        var drain = listener.StoppingAsync(CancellationToken.None);
        Assert.True(listener.Endpoint!.Proxy.IsDraining);
        Assert.False(drain.IsCompleted);

        _clock.Advance(TimeSpan.FromSeconds(25));
        await drain.WaitAsync(Wait);
        await listener.StopAsync(CancellationToken.None);
        Assert.Null(listener.Endpoint);
    }

    [Fact]
    public async Task The_hosts_shutdown_timeout_ends_the_drain()
    {
        await using var listener = await StartAsync(advertisedHost: null);
        using var shutdown = new CancellationTokenSource();

        var drain = listener.StoppingAsync(shutdown.Token);
        Assert.False(drain.IsCompleted);
        await shutdown.CancelAsync();

        await drain.WaitAsync(Wait);
    }

    [Fact]
    public async Task A_zero_drain_timeout_closes_at_once_without_draining()
    {
        await using var listener = await StartAsync(advertisedHost: null, drain: TimeSpan.Zero);

        await listener.StoppingAsync(CancellationToken.None).WaitAsync(Wait);

        Assert.False(listener.Endpoint!.Proxy.IsDraining);
    }

    [Fact]
    public void The_hosts_shutdown_timeout_covers_the_drain_and_a_margin()
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection([new("CallState:Sip:DrainTimeout", "00:01:00")]).Build();
        using var provider = new ServiceCollection().AddLogging().AddMetrics().AddCallStateSipEdge(configuration).BuildServiceProvider();

        Assert.Equal(TimeSpan.FromSeconds(65), provider.GetRequiredService<IOptions<Microsoft.Extensions.Hosting.HostOptions>>().Value.ShutdownTimeout);
    }

    private async Task<SipListenerService> StartAsync(string? advertisedHost, TimeSpan? drain = null)
    {
        var options = new SipProxyOptions
        {
            ListenAddress = "127.0.0.1",
            Port = TestPorts.FreeUdpAndTcp(),
            UdpReceiveLoops = 1,
            AdvertisedHost = advertisedHost,
            DrainTimeout = drain ?? TimeSpan.FromSeconds(25),
        };
        var listener = new SipListenerService(Options.Create(options), _clock, _services.GetRequiredService<IMeterFactory>(), NullLogger<SipListenerService>.Instance);
        await listener.StartAsync(CancellationToken.None);
        return listener;
    }
}
