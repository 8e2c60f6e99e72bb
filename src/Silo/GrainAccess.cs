using CallState.Grains;
using CallState.Runtime;
using CallState.Runtime.Cluster;

namespace CallState.Silo;

/// <summary>
/// How the admin API reaches grains: the runtime of this process for a single silo; in a cluster, each grain's owner
/// (through placement and RPC), with limits read from storage when another silo owns them.
/// </summary>
public sealed class GrainAccess(GrainRuntime runtime, SiloCluster? cluster = null)
{
    private static readonly TimeSpan AdminTimeout = TimeSpan.FromSeconds(5);

    public GrainRuntime Runtime => runtime;

    public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken) =>
        cluster is null ? runtime.AdmitAsync(callKey, limits, cancellationToken) : cluster.Client.AdmitAsync(callKey, limits, AdminTimeout, cancellationToken);

    public Task<bool> ConfirmCallAsync(string callKey, CancellationToken cancellationToken) =>
        cluster is null ? runtime.ConfirmCallAsync(callKey, cancellationToken) : cluster.Client.ConfirmCallAsync(callKey, AdminTimeout, cancellationToken);

    public Task<bool> RenewCallAsync(string callKey, CancellationToken cancellationToken) =>
        cluster is null ? runtime.RenewCallAsync(callKey, cancellationToken) : cluster.Client.RenewCallAsync(callKey, AdminTimeout, cancellationToken);

    public Task<bool> EndCallAsync(string callKey, CancellationToken cancellationToken) =>
        cluster is null ? runtime.EndCallAsync(callKey, cancellationToken) : cluster.Client.EndCallAsync(callKey, AdminTimeout, cancellationToken);

    public Task<LimitSnapshot> GetLimitAsync(LimitKey key, CancellationToken cancellationToken) =>
        cluster is null || cluster.Owns(new Runtime.Storage.StateId("limit", key.ToString()))
            ? runtime.GetLimitAsync(key, cancellationToken)
            : runtime.GetStoredLimitAsync(key, cancellationToken);

    public async Task<LimitSnapshot> SetLimitsAsync(LimitKey key, LimitSettings? limits, CancellationToken cancellationToken)
    {
        if (cluster is null)
        {
            return await runtime.SetLimitsAsync(key, limits, cancellationToken).ConfigureAwait(false);
        }

        GrainRuntime.ValidateSettableLimits(key, limits);
        await cluster.Client.SetLimitsAsync(key, limits, AdminTimeout, cancellationToken).ConfigureAwait(false);
        return await GetLimitAsync(key, cancellationToken).ConfigureAwait(false);
    }

    public Task<CallSnapshot> GetCallAsync(string callKey, CancellationToken cancellationToken) => runtime.GetCallAsync(callKey, cancellationToken);
}
