using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace CallState.Grains;

/// <summary>
/// A call as an Orleans grain: loads its record, runs <see cref="CallAdmission"/> (one turn at a time: the grain is not
/// reentrant), and persists through the state store with compare-and-set. A turn that throws (a limit could not answer,
/// storage failed, another activation wrote first) drops the in-memory record so the next turn reloads it. A call that
/// never was, was refused or has ended leaves memory after its turn: its record and due time are in storage.
/// </summary>
public sealed class CallGrain : Grain, ICallGrain, IDurableState<CallGrainState>, ILimitGrainClient
{
    private readonly IStateStore _store;
    private readonly GrainOptions _options;
    private readonly TimeProvider _time;
    private readonly GrainMetrics _metrics;
    private readonly ILogger<CallGrain> _logger;
    private string _callKey = "";
    private StateId _id;
    private CallAdmission? _admission;
    private long _version;

    /// <summary>When this activation next has work of its own; a wake before it is ignored (a live admission is stored as due for recovery).</summary>
    private DateTimeOffset? _dueAt;

    public CallGrain(IStateStore store, IOptions<GrainOptions> options, TimeProvider time, GrainMetrics metrics, ILogger<CallGrain> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _store = store;
        _options = options.Value;
        _time = time;
        _metrics = metrics;
        _logger = logger;
    }

    public CallGrainState State { get; private set; } = new();

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _callKey = this.GetPrimaryKeyString();
        _id = new StateId(GrainTypes.Call, _callKey);
        return Task.CompletedTask;
    }

    public async Task<AdmitResult> AdmitAsync(IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken = default)
    {
        if (GrainTypes.ValidateCallKey(_callKey) is { } error)
        {
            _metrics.Admission(AdmitStatus.Invalid, RejectReason.None, TimeSpan.Zero);
            return AdmitResult.Invalid(error);
        }

        var started = _time.GetTimestamp();
        var result = await RunAsync(admission => admission.AdmitAsync(limits, cancellationToken));
        _metrics.Admission(result.Status, result.Reason, _time.GetElapsedTime(started));
        if (result.Status == AdmitStatus.Rejected && _logger.IsEnabled(LogLevel.Information))
        {
#pragma warning disable CA1873 // guarded by IsEnabled above; ToCode returns a literal
            Log.Rejected(_logger, _callKey, result.LimitKey, result.Reason.ToCode(), result.Current, result.Limit);
#pragma warning restore CA1873
        }

        return result;
    }

    public Task<bool> ConfirmAsync() => RunAsync(static admission => admission.ConfirmAsync(CancellationToken.None));

    public Task<bool> RenewAsync() => RunAsync(static admission => admission.RenewAsync(CancellationToken.None));

    public Task<bool> EndAsync() => RunAsync(static admission => admission.EndAsync(CancellationToken.None));

    public Task<CallSnapshot> GetSnapshotAsync() => RunAsync(static admission => Task.FromResult(admission.Snapshot()));

    public Task WakeAsync() => RunAsync(async admission =>
    {
        // A live activation knows its own due time; the stored one (earlier for an admission in progress, so that a
        // crash is recovered) does not apply to it.
        if (_dueAt is { } due && due <= _time.GetUtcNow())
        {
            await admission.OnTimerAsync(CancellationToken.None);
        }

        return true;
    });

    private async Task<T> RunAsync<T>(Func<CallAdmission, Task<T>> body)
    {
        try
        {
            if (_admission is null)
            {
                await LoadAsync();
            }

            var result = await body(_admission!);
            if (State.Phase is CallPhase.New or CallPhase.Rejected or CallPhase.Ended)
            {
                // Settled: everything is durable and the due scan wakes the record when its retention ends.
                DeactivateOnIdle();
            }

            return result;
        }
        catch (Exception ex)
        {
            _admission = null;
            var failure = GrainStorageException.ForCaller(ex);
            if (ReferenceEquals(failure, ex))
            {
                throw;
            }

            throw failure;
        }
    }

    private async Task LoadAsync()
    {
        var stored = await _store.ReadAsync(_id, CancellationToken.None);
        State = stored is null ? new CallGrainState() : StateSerializer.DeserializeCall(stored.Data);
        _version = stored?.Version ?? 0;
        _dueAt = stored?.DueAt;
        _admission = new CallAdmission(_callKey, this, this, _options.Leases, _time);
    }

    async Task IDurableState<CallGrainState>.WriteAsync(DateTimeOffset? dueAt, DateTimeOffset? recoverAt, CancellationToken cancellationToken)
    {
        // A record stored as due earlier than this activation's own due time (an admission in progress) is recovered
        // by another activation only after the recovery delay: live admissions are not woken by every due scan.
        var stored = recoverAt is { } recover && recover != dueAt ? Earliest(dueAt, recover + _options.RecoveryDelay) : dueAt;
        var write = new StateWrite(_id, _version, StateSerializer.Serialize(State), stored);
        if (!await _store.WriteAsync(write, cancellationToken))
        {
            _metrics.StaleWrite(GrainTypes.Call);
            throw new StaleGrainStateException($"call {_callKey} was written by another activation");
        }

        _version++;
        _dueAt = dueAt;
    }

    async Task IDurableState<CallGrainState>.ClearAsync(CancellationToken cancellationToken)
    {
        if (_version == 0)
        {
            return;
        }

        if (!await _store.WriteAsync(new StateWrite(_id, _version, null, null), cancellationToken))
        {
            _metrics.StaleWrite(GrainTypes.Call);
            throw new StaleGrainStateException($"call {_callKey} was written by another activation");
        }

        // The in-memory record keeps its phase (Ended, Rejected) for the rest of this activation, which ends after the turn.
        _version = 0;
        _dueAt = null;
    }

    private static DateTimeOffset? Earliest(DateTimeOffset? a, DateTimeOffset b) => a is { } value && value < b ? value : b;

    // The limits, reached through Orleans wherever they are activated.
    Task<ReserveOutcome> ILimitGrainClient.TryReserveAsync(LimitKey key, string callKey, Direction direction, TimeSpan lease, int? perCallMax, CancellationToken cancellationToken) =>
        Limit(key).TryReserveAsync(callKey, direction, lease, perCallMax).WaitAsync(cancellationToken);

    Task<bool> ILimitGrainClient.ConfirmAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
        Limit(key).ConfirmAsync(callKey, lease).WaitAsync(cancellationToken);

    Task<bool> ILimitGrainClient.RenewAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
        Limit(key).RenewAsync(callKey, lease).WaitAsync(cancellationToken);

    Task<bool> ILimitGrainClient.ReleaseAsync(LimitKey key, string callKey, CancellationToken cancellationToken) =>
        Limit(key).ReleaseAsync(callKey).WaitAsync(cancellationToken);

    private ILimitGrain Limit(LimitKey key) => GrainFactory.GetGrain<ILimitGrain>(key.ToString());
}
