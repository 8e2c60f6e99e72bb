using CallState.Grains;

namespace CallState.SipEdge.Admission;

/// <summary>How the edge reaches the calls (in their shard grains).</summary>
public interface IAdmissionClient
{
    /// <summary>Admits the call; <paramref name="leg"/> names the INVITE transaction, so another one is answered <see cref="AdmitStatus.Duplicate"/>.</summary>
    Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CallLeg? leg, CancellationToken cancellationToken);

    /// <summary>
    /// The call was answered; <paramref name="answer"/> is the dialog the 2xx set up. False when the call is no longer
    /// counted (its lease lapsed and a limit reclaimed its slot, or it ended): the grains ended it. Repeating it is harmless.
    /// </summary>
    Task<bool> ConfirmAsync(string callKey, CallAnswer? answer, CancellationToken cancellationToken);

    /// <summary>Extends the call's leases (early or confirmed, as it stands); false when it is no longer counted. Repeating it is harmless.</summary>
    Task<bool> RenewAsync(string callKey, CancellationToken cancellationToken);

    Task EndAsync(string callKey, CancellationToken cancellationToken);

    /// <summary>Gives up an admission whose answer never came: ends the call only if <paramref name="attempt"/> admitted it.</summary>
    Task AbandonAsync(string callKey, string attempt, CancellationToken cancellationToken);

    /// <summary>The dialog of a call being admitted or up, to check an in-dialog request against; null for any other call key.</summary>
    Task<CallDialog?> GetDialogAsync(string callKey, CancellationToken cancellationToken);
}

/// <summary>
/// The calls' shard grains through Orleans: the silo's own grain factory in standalone mode (no network hop), or the cluster
/// client of an edge connected to the silos' gateways. The admission deadline is the caller's cancellation token: when
/// it fires the edge stops waiting (the grain finishes or undoes what it started, and the edge ends the call).
/// </summary>
public sealed class GrainAdmissionClient(IGrainFactory grains) : IAdmissionClient
{
    public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CallLeg? leg, CancellationToken cancellationToken) =>
        GrainTypes.ValidateCallKey(callKey) is { } error
            ? Task.FromResult(AdmitResult.Invalid(error))
            : grains.GetCall(callKey).AdmitAsync(limits, leg, cancellationToken);

    public Task<bool> ConfirmAsync(string callKey, CallAnswer? answer, CancellationToken cancellationToken) => Call(callKey).ConfirmAsync(answer).WaitAsync(cancellationToken);

    public Task<bool> RenewAsync(string callKey, CancellationToken cancellationToken) => Call(callKey).RenewAsync().WaitAsync(cancellationToken);

    public Task EndAsync(string callKey, CancellationToken cancellationToken) => Call(callKey).EndAsync().WaitAsync(cancellationToken);

    public Task AbandonAsync(string callKey, string attempt, CancellationToken cancellationToken) => Call(callKey).AbandonAsync(attempt).WaitAsync(cancellationToken);

    /// <summary>A key no call can have (empty, too long) has no dialog: null, not an error, since it comes from a request.</summary>
    public Task<CallDialog?> GetDialogAsync(string callKey, CancellationToken cancellationToken) =>
        GrainTypes.ValidateCallKey(callKey) is null
            ? grains.GetCall(callKey).GetDialogAsync().WaitAsync(cancellationToken)
            : Task.FromResult<CallDialog?>(null);

    private CallHandle Call(string callKey) =>
        GrainTypes.ValidateCallKey(callKey) is { } error ? throw new ArgumentException(error, nameof(callKey)) : grains.GetCall(callKey);
}
