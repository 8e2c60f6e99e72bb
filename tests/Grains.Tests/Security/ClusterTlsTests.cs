using CallState.Silo.Hosting;
using CallState.Storage.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using Orleans.Connections.Security;
using Orleans.Runtime.MembershipService;
using static CallState.Grains.Tests.Security.TlsClusterHosts;

namespace CallState.Grains.Tests.Security;

/// <summary>
/// Mutual TLS between real silos and clients in this process, over TCP on loopback, with certificates from a CA made for
/// the test: members of the cluster CA work together; a process without such a certificate reaches nothing.
/// </summary>
public sealed class ClusterTlsTests : IDisposable
{
    private const int RefusedPeerEvent = 2101;
    private const int TlsOnEvent = 2100;

    private readonly TestPki _cluster = new("cluster-ca");
    private readonly TestPki _rogue = new("rogue-ca");

    [Fact]
    public async Task Silos_and_an_edge_with_certificates_from_the_cluster_ca_form_a_cluster_and_admit_calls()
    {
        await using var storage = TestStorage.Sqlite();
        await using var hosts = new Hosts();
        var logs = new CapturedLogs();
        var clusterId = NewClusterId();
        var limits = new Dictionary<string, string?> { ["CallState:Limits:Users:alice:Total"] = "3" };
        var first = Merge(SiloSettings(storage, clusterId), TlsSettings(_cluster, _cluster.Issue("silo-1")), limits);
        var second = Merge(SiloSettings(storage, clusterId), TlsSettings(_cluster, _cluster.Issue("silo-2")), limits);

        hosts.Add(await StartSiloAsync(first, logs));
        // The second silo joins only after it reached the first one (Orleans checks connectivity before it turns active).
        hosts.Add(await StartSiloAsync(second, logs));

        var edgeTls = ClusterOptionsOf(TlsSettings(_cluster, _cluster.Issue("edge"))).Tls;
        var edge = hosts.Add(BuildClient(clusterId, [GatewayPort(first), GatewayPort(second)], client => client.UseCallStateTls(edgeTls)));
        await edge.StartAsync().WaitAsync(Bound);
        var grains = edge.Services.GetRequiredService<IClusterClient>();

        Assert.True(await WaitUntilAsync(async () => (await grains.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true)).Count == 2), "both silos active");
        var results = new List<AdmitResult>();
        for (var i = 0; i < 8; i++)
        {
            results.Add(await grains.GetCall($"call-{i}").AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)]));
        }

        Assert.Equal(3, results.Count(r => r.Status == AdmitStatus.Admitted));
        Assert.All(results.Skip(3), r => Assert.Equal(RejectReason.UserTotalLimitReached, r.Reason));
        Assert.Equal(3, (await grains.GetGrain<ILimitGrain>("user/alice").GetSnapshotAsync()).Total);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(await grains.GetCall($"call-{i}").EndAsync());
        }

        Assert.Equal(0, (await grains.GetGrain<ILimitGrain>("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal(2, logs.Lines.Count(l => l.EventId == TlsOnEvent));
        Assert.DoesNotContain(logs.Lines, l => l.EventId == RefusedPeerEvent);
    }

    [Fact]
    public async Task A_silo_and_an_edge_with_pfx_files_work_together_and_the_password_is_never_logged()
    {
        const string Password = "pfx-Pa55word-never-logged";
        await using var storage = TestStorage.Sqlite();
        await using var hosts = new Hosts();
        var logs = new CapturedLogs();
        var clusterId = NewClusterId();
        var pfx = new Dictionary<string, string?>
        {
            ["CallState:Orleans:Tls:Enabled"] = "true",
            ["CallState:Orleans:Tls:PfxPath"] = _cluster.WritePfx(_cluster.Issue("pfx-silo"), Password),
            ["CallState:Orleans:Tls:PfxPassword"] = Password,
            ["CallState:Orleans:Tls:CaPath"] = _cluster.CaPath,
        };
        var settings = Merge(SiloSettings(storage, clusterId), pfx);
        hosts.Add(await StartSiloAsync(settings, logs));

        var edgeTls = ClusterOptionsOf(Merge(pfx, new Dictionary<string, string?> { ["CallState:Orleans:Tls:PfxPath"] = _cluster.WritePfx(_cluster.Issue("pfx-edge"), Password) })).Tls;
        var edge = hosts.Add(BuildClient(clusterId, [GatewayPort(settings)], client => client.UseCallStateTls(edgeTls), logs));
        await edge.StartAsync().WaitAsync(Bound);
        var result = await edge.Services.GetRequiredService<IClusterClient>().GetCall("pfx-call").AdmitAsync([new LimitRequest("user/dave", Direction.Outbound)]);

        Assert.Equal(AdmitStatus.Admitted, result.Status);
        Assert.Equal(2, logs.Lines.Count(l => l.EventId == TlsOnEvent));
        Assert.DoesNotContain(logs.Lines, l => l.Message.Contains(Password, StringComparison.Ordinal) || (l.Exception?.Contains(Password, StringComparison.Ordinal) ?? false));
    }

    [Fact]
    public async Task An_edge_without_tls_reaches_no_grain()
    {
        await using var storage = TestStorage.Sqlite();
        await using var hosts = new Hosts();
        var (settings, logs) = await StartOneSiloAsync(storage, hosts);

        await AssertReachesNoGrainAsync(settings, hosts, _ => { });

        // The gateway expected a TLS handshake and got Orleans' plain preamble.
        var refused = await logs.WaitForAsync(IsFailedHandshake, Bound);
        Assert.NotNull(refused);
        Assert.Contains("AuthenticationException", refused.Exception, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_edge_that_trusts_the_cluster_ca_but_has_no_certificate_reaches_no_grain()
    {
        await using var storage = TestStorage.Sqlite();
        await using var hosts = new Hosts();
        var (settings, logs) = await StartOneSiloAsync(storage, hosts);

        // It checks the gateway's certificate properly: only the gateway's demand for a client certificate stops it.
        await AssertReachesNoGrainAsync(settings, hosts, client => client.UseTls(o =>
        {
            o.LocalCertificate = null;
            o.ClientCertificateMode = RemoteCertificateMode.AllowCertificate;
            o.RemoteCertificateValidation = (certificate, _, _) => ClusterCredentials.ChainsTo(certificate, [_cluster.Authority], out _);
        }));

        // RemoteCertificateMode.RequireCertificate: the gateway refuses a handshake without a client certificate.
        var refused = await logs.WaitForAsync(IsFailedHandshake, Bound);
        Assert.NotNull(refused);
        Assert.Contains("The remote certificate was rejected", refused.Exception, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_edge_with_a_certificate_from_another_ca_reaches_no_grain_and_the_gateway_says_why()
    {
        await using var storage = TestStorage.Sqlite();
        await using var hosts = new Hosts();
        var (settings, logs) = await StartOneSiloAsync(storage, hosts);
        var intruder = _rogue.Issue("intruder-edge");

        // It accepts any gateway: only the gateway's check of its certificate stops it.
        await AssertReachesNoGrainAsync(settings, hosts, client => client.UseTls(intruder.Certificate, o =>
        {
            o.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
            o.AllowAnyRemoteCertificate();
        }));

        var refused = await logs.WaitForAsync(l => l.EventId == RefusedPeerEvent, Bound);
        Assert.NotNull(refused);
        Assert.Contains("CN=intruder-edge", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_silo_with_a_certificate_from_another_ca_cannot_join_and_the_cluster_carries_on()
    {
        await using var storage = TestStorage.Sqlite();
        await using var hosts = new Hosts();
        var (settings, logs) = await StartOneSiloAsync(storage, hosts);
        var clusterId = settings["CallState:Orleans:ClusterId"]!;
        var intruder = _rogue.Issue("intruder-silo");

        // Same cluster id and membership table, accepts any peer: only the cluster's check of its certificate stops it.
        var rogueSettings = SiloSettings(storage, clusterId);
        var rogue = hosts.Add(BuildSilo(rogueSettings, new CapturedLogs(), services =>
        {
            services.AddOrleans(silo => silo.UseTls(intruder.Certificate, o =>
            {
                o.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
                o.AllowAnyRemoteCertificate();
            }));
            // Bounds how long it keeps trying to reach the active silo before its start fails (Orleans' default is 5 minutes).
            services.Configure<ClusterMembershipOptions>(o => o.MaxJoinAttemptTime = TimeSpan.FromSeconds(10));
        }));

        var failure = await Record.ExceptionAsync(() => rogue.StartAsync().WaitAsync(Bound));
        Assert.NotNull(failure);
        Assert.Contains(nameof(OrleansClusterConnectivityCheckFailedException), failure.ToString(), StringComparison.Ordinal);

        var refused = await logs.WaitForAsync(l => l.EventId == RefusedPeerEvent, Bound);
        Assert.NotNull(refused);
        Assert.Contains("CN=intruder-silo", refused.Message, StringComparison.Ordinal);

        var edge = await StartEdgeAsync(settings, hosts);
        var active = await edge.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true);
        Assert.Single(active);
        Assert.Equal(AdmitStatus.Admitted, (await edge.GetCall("after-intruder").AdmitAsync([new LimitRequest("user/bob", Direction.Outbound)])).Status);
    }

    public void Dispose()
    {
        _cluster.Dispose();
        _rogue.Dispose();
    }

    private static string NewClusterId() => "tls-" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>One silo of the cluster CA, and proof that a proper edge reaches it (so a refusal later is the intruder's).</summary>
    private async Task<(Dictionary<string, string?> Settings, CapturedLogs Logs)> StartOneSiloAsync(TestStorage storage, Hosts hosts)
    {
        var logs = new CapturedLogs();
        var settings = Merge(SiloSettings(storage, NewClusterId()), TlsSettings(_cluster, _cluster.Issue("silo-1")));
        hosts.Add(await StartSiloAsync(settings, logs));
        var edge = await StartEdgeAsync(settings, hosts);
        Assert.Equal(AdmitStatus.Admitted, (await edge.GetCall("proper-edge").AdmitAsync([new LimitRequest("user/carol", Direction.Outbound)])).Status);
        return (settings, logs);
    }

    private async Task<IClusterClient> StartEdgeAsync(Dictionary<string, string?> siloSettings, Hosts hosts)
    {
        var tls = ClusterOptionsOf(TlsSettings(_cluster, _cluster.Issue("edge-" + Guid.NewGuid().ToString("N")[..6]))).Tls;
        var edge = hosts.Add(BuildClient(siloSettings["CallState:Orleans:ClusterId"]!, [GatewayPort(siloSettings)], client => client.UseCallStateTls(tls)));
        await edge.StartAsync().WaitAsync(Bound);
        return edge.Services.GetRequiredService<IClusterClient>();
    }

    /// <summary>
    /// An Orleans client configured by <paramref name="configure"/> never gets in: it keeps retrying (Orleans' client does
    /// not give up on its gateways), every attempt is refused, and its start never completes, so no grain can be called.
    /// Three refused attempts are the evidence; the start is then cancelled. All bounded.
    /// </summary>
    private static async Task AssertReachesNoGrainAsync(Dictionary<string, string?> siloSettings, Hosts hosts, Action<IClientBuilder> configure)
    {
        var logs = new CapturedLogs();
        var client = hosts.Add(BuildClient(siloSettings["CallState:Orleans:ClusterId"]!, [GatewayPort(siloSettings)], configure, logs));
        using var cancel = new CancellationTokenSource();
        var start = client.StartAsync(cancel.Token);

        Assert.True(await logs.WaitForAsync(IsRefusedAttempt, 3, Bound), "the client's connection attempts are refused");
        Assert.False(start.IsCompletedSuccessfully, "the client must not have connected");
        await cancel.CancelAsync();
        var failure = await Record.ExceptionAsync(() => start.WaitAsync(Bound));
        Assert.NotNull(failure);
        Assert.IsNotType<TimeoutException>(failure);
    }

    /// <summary>The gateway's TLS layer (Orleans' TLS middleware) ended a handshake.</summary>
    private static bool IsFailedHandshake(LogLine line) =>
        line.Category.EndsWith(".TlsServerConnectionMiddleware", StringComparison.Ordinal) && line.Message == "Authentication failed";

    private static bool IsRefusedAttempt(LogLine line) =>
        line.Category == "Orleans.Runtime.Messaging.ConnectionManager" && line.Message.StartsWith("Connection attempt to endpoint", StringComparison.Ordinal);

    /// <summary>Polls <paramref name="condition"/> (there is no event for it) until it holds or <see cref="TlsClusterHosts.Bound"/> passes.</summary>
    private static async Task<bool> WaitUntilAsync(Func<Task<bool>> condition)
    {
        using var cts = new CancellationTokenSource(Bound);
        while (!await condition())
        {
            try
            {
                await Task.Delay(100, cts.Token);
            }
            catch (OperationCanceledException)
            {
                return await condition();
            }
        }

        return true;
    }

    /// <summary>Hosts stopped in reverse order of creation, whatever happened.</summary>
    private sealed class Hosts : IAsyncDisposable
    {
        private readonly List<IHost> _hosts = [];

        public IHost Add(IHost host)
        {
            _hosts.Add(host);
            return host;
        }

        public async ValueTask DisposeAsync()
        {
            for (var i = _hosts.Count - 1; i >= 0; i--)
            {
                await StopAsync(_hosts[i]);
            }
        }
    }
}
