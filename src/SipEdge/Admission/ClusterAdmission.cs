using CallState.Grains;
using CallState.Runtime.Cluster;
using CallState.Runtime.Rpc;
using CallState.Storage;
using Microsoft.Extensions.Options;

namespace CallState.SipEdge.Admission;

/// <summary>
/// The edge's admission over the cluster RPC: each call goes to the silo that owns its call grain in the current view;
/// the admission deadline bounds the whole request (redirect and retry included), so a silo tier that does not answer
/// in time is a 503 at the edge, never a wait.
/// </summary>
public sealed class ClusterAdmissionClient(ClusterClient client, IOptionsMonitor<AdmissionOptions> options, IOptionsMonitor<ClusterOptions> cluster) : IAdmissionClient
{
    public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken) =>
        client.AdmitAsync(callKey, limits, options.CurrentValue.Deadline, cancellationToken);

    // Lifecycle operations are not on the call setup path: they get the silo-to-silo timeout, longer than the deadline.
    public Task ConfirmAsync(string callKey, CancellationToken cancellationToken) =>
        client.ConfirmCallAsync(callKey, cluster.CurrentValue.RequestTimeout, cancellationToken);

    public Task RenewAsync(string callKey, CancellationToken cancellationToken) =>
        client.RenewCallAsync(callKey, cluster.CurrentValue.RequestTimeout, cancellationToken);

    public Task EndAsync(string callKey, CancellationToken cancellationToken) =>
        client.EndCallAsync(callKey, cluster.CurrentValue.RequestTimeout, cancellationToken);
}

/// <summary>Keeps the edge's cluster view fresh for the life of the process.</summary>
internal sealed class ClusterViewService(IClusterViewSource source, IOptions<ClusterOptions> options) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => source switch
    {
        // Wait a little for a first view so the first calls after start are not refused; never block start-up on it.
        RemoteViewSource remote => remote.StartAsync(options.Value.RequestTimeout, cancellationToken),
        TableViewSource table => table.StartAsync(TimeSpan.Zero, cancellationToken),
        _ => Task.CompletedTask,
    };

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

public static class ClusterAdmissionServiceCollectionExtensions
{
    /// <summary>
    /// Edge side of the cluster: <c>CallState:Cluster:Bootstrap</c> (silo addresses, a headless-service name) or, without
    /// it, the membership table in <c>CallState:Storage</c>.
    /// </summary>
    public static IServiceCollection AddCallStateClusterAdmission(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddClusterOptions(configuration);
        services.AddRpc();
        services.AddSingleton<IClusterViewSource>(sp =>
        {
            var options = sp.GetRequiredService<IOptions<ClusterOptions>>().Value;
            if (options.Bootstrap.Length > 0)
            {
                return new RemoteViewSource(sp.GetRequiredService<RpcClient>(), options, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<RemoteViewSource>>());
            }

            var storage = new StorageOptions();
            configuration.GetSection(StorageOptions.SectionName).Bind(storage);
            return new TableViewSource(MembershipTable.Create(storage), options, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<TableViewSource>>());
        });
        services.AddHostedService<ClusterViewService>();
        services.AddSingleton(sp => new ClusterClient(
            sp.GetRequiredService<RpcClient>(), sp.GetRequiredService<IClusterViewSource>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<ClusterClient>>()));
        services.AddSingleton<IAdmissionClient, ClusterAdmissionClient>();
        return services;
    }
}
