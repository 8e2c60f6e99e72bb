using CallState.Grains;

namespace CallState.SipEdge.Admission;

/// <summary>How the edge reaches the calls (in their shard grains).</summary>
public interface IAdmissionClient
{
    Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken);

    Task ConfirmAsync(string callKey, CancellationToken cancellationToken);

    Task RenewAsync(string callKey, CancellationToken cancellationToken);

    Task EndAsync(string callKey, CancellationToken cancellationToken);
}

/// <summary>
/// The calls' shard grains through Orleans: the silo's own grain factory in standalone mode (no network hop), or the cluster
/// client of an edge connected to the silos' gateways. The admission deadline is the caller's cancellation token: when
/// it fires the edge stops waiting (the grain finishes or undoes what it started, and the edge ends the call).
/// </summary>
public sealed class GrainAdmissionClient(IGrainFactory grains) : IAdmissionClient
{
    public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken) =>
        GrainTypes.ValidateCallKey(callKey) is { } error
            ? Task.FromResult(AdmitResult.Invalid(error))
            : grains.GetCall(callKey).AdmitAsync(limits, cancellationToken);

    public Task ConfirmAsync(string callKey, CancellationToken cancellationToken) => Call(callKey).ConfirmAsync().WaitAsync(cancellationToken);

    public Task RenewAsync(string callKey, CancellationToken cancellationToken) => Call(callKey).RenewAsync().WaitAsync(cancellationToken);

    public Task EndAsync(string callKey, CancellationToken cancellationToken) => Call(callKey).EndAsync().WaitAsync(cancellationToken);

    private CallHandle Call(string callKey) =>
        GrainTypes.ValidateCallKey(callKey) is { } error ? throw new ArgumentException(error, nameof(callKey)) : grains.GetCall(callKey);
}
