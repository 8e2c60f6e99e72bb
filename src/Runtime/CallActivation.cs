using CallState.Grains;
using CallState.Runtime.Storage;

namespace CallState.Runtime;

/// <summary>One turn of a call grain: an async method run alone on the activation.</summary>
internal abstract class CallWork
{
    public abstract Task RunAsync(CallGrain grain);

    public abstract void Fail(Exception exception);
}

internal sealed class CallWork<T>(Func<CallGrain, Task<T>> body) : CallWork
{
    public TaskCompletionSource<T> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public override async Task RunAsync(CallGrain grain) => Completion.TrySetResult(await body(grain).ConfigureAwait(false));

    public override void Fail(Exception exception) => Completion.TrySetException(exception);
}

/// <summary>
/// A call grain in memory. Turns run one at a time, in order. A turn that throws (a limit could not
/// answer, storage failed, another activation wrote first) drops the in-memory state: the next turn
/// reloads it.
/// </summary>
internal sealed class CallActivation : Activation<CallWork>, IGrainState<CallGrainState>
{
    private readonly string _callKey;
    private CallGrain? _grain;
    private long _version;

    public CallActivation(GrainId id, GrainRuntime runtime)
        : base(id, runtime) => _callKey = id.Key;

    public CallGrainState State { get; private set; } = new();

    protected override async Task RunTurnAsync(List<CallWork> batch)
    {
        foreach (var work in batch)
        {
            try
            {
                if (_grain is null)
                {
                    await LoadAsync().ConfigureAwait(false);
                }

                await work.RunAsync(_grain!).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                _grain = null;
                work.Fail(ex);
            }
        }
    }

    /// <summary>
    /// A call that never was, was refused or has ended: its record (if any) is durable and its retention timer is
    /// with the scheduler, so a later message or that timer loads it again. A call in progress stays in memory.
    /// </summary>
    protected override bool IsSettled => _grain is not null && State.Phase is CallPhase.New or CallPhase.Rejected or CallPhase.Ended;

    protected override void OnClosedItself() => Runtime.ForgetCall(Id, this);

    public async Task WriteAsync(DateTimeOffset? dueAt, DateTimeOffset? recoverAt, CancellationToken cancellationToken)
    {
        var write = new GrainWrite(Id, _version, GrainStateSerializer.Serialize(State), recoverAt);
        if (!await Runtime.Storage.WriteAsync(write, cancellationToken).ConfigureAwait(false))
        {
            Runtime.Metrics.StaleWrite();
            throw new StaleGrainStateException($"call {_callKey} was written by another activation");
        }

        _version++;
        Runtime.Scheduler.Set(Id, dueAt);
    }

    public async Task ClearAsync(CancellationToken cancellationToken)
    {
        if (_version == 0)
        {
            return;
        }

        if (!await Runtime.Storage.WriteAsync(new GrainWrite(Id, _version, null, null), cancellationToken).ConfigureAwait(false))
        {
            throw new StaleGrainStateException($"call {_callKey} was written by another activation");
        }

        _version = 0;
        State = new CallGrainState();
        Runtime.Scheduler.Set(Id, null);
    }

    private async Task LoadAsync()
    {
        var stored = await Runtime.Storage.ReadAsync(Id, CancellationToken.None).ConfigureAwait(false);
        State = stored is null ? new CallGrainState() : GrainStateSerializer.DeserializeCall(stored.Data);
        _version = stored?.Version ?? 0;
        _grain = new CallGrain(_callKey, this, Runtime.LimitClient, Runtime.Options.Leases, Runtime.Time);
    }
}
