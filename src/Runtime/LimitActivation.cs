using CallState.Grains;
using CallState.Runtime.Storage;

namespace CallState.Runtime;

internal enum LimitOp : byte
{
    Reserve,
    Confirm,
    Renew,
    Release,
    Timer,
    Snapshot,
    SetLimits,
}

/// <summary>One operation on a limit, queued on its activation.</summary>
internal sealed class LimitWork
{
    public LimitWork(LimitOp op, string? callKey = null)
    {
        Op = op;
        CallKey = callKey;
    }

    public LimitOp Op { get; }

    public string? CallKey { get; }

    public Direction Direction { get; init; }

    public TimeSpan Lease { get; init; }

    public int? PerCallMax { get; init; }

    public LimitSettings? Limits { get; init; }

    public TaskCompletionSource<LimitWorkResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

internal readonly record struct LimitWorkResult(ReserveOutcome Outcome, bool Found, LimitSnapshot? Snapshot);

/// <summary>
/// A limit grain in memory. Decides every queued operation of a turn on the in-memory state, writes the
/// state once (compare-and-set on the loaded version, through group commit), and only then answers: an
/// answer is never given on a change that is not durable. When the write loses (another activation of
/// the same key wrote first) the state is reloaded and every operation of the turn decided again.
/// The write is the small row (limits, counters) plus one item per call the turn added, changed or
/// released, so its size does not grow with the number of calls held.
/// </summary>
internal sealed class LimitActivation : Activation<LimitWork>
{
    private readonly LimitKey _key;
    private LimitGrain? _grain;
    private long _version;

    public LimitActivation(GrainId id, LimitKey key, GrainRuntime runtime)
        : base(id, runtime) => _key = key;

    protected override async Task RunTurnAsync(List<LimitWork> batch)
    {
        var results = new LimitWorkResult[batch.Count];
        try
        {
            for (var attempt = 0; ; attempt++)
            {
                var loadedNow = false;
                if (_grain is null)
                {
                    await LoadAsync().ConfigureAwait(false);
                    loadedNow = true;
                }

                var grain = _grain!;
                var now = Runtime.Time.GetUtcNow();
                var dueBefore = grain.NextDue;
                var changed = false;
                var missed = false;
                for (var i = 0; i < batch.Count; i++)
                {
                    results[i] = Apply(grain, batch[i], now, ref changed, ref missed);
                }

                // An operation on a call this activation does not know: the state may be stale (another
                // activation admitted it). Check against storage once before answering "not held".
                if (missed && !loadedNow && attempt < Runtime.Options.MaxStaleRetries)
                {
                    _grain = null;
                    continue;
                }

                var due = grain.NextDue;
                if (changed || due != dueBefore || grain.ChangedCalls.Count > 0)
                {
                    var write = new GrainWrite(Id, _version, GrainStateSerializer.SerializeLimitRow(grain.State), due, ItemChanges(grain));
                    if (!await Runtime.Storage.WriteAsync(write, CancellationToken.None).ConfigureAwait(false))
                    {
                        // The unsaved changes go with the dropped state: the reload starts from storage.
                        _grain = null;
                        Runtime.Metrics.StaleWrite();
                        if (attempt + 1 >= Runtime.Options.MaxStaleRetries)
                        {
                            throw new StaleGrainStateException($"limit {_key} lost {attempt + 1} compare-and-set writes in a row");
                        }

                        continue;
                    }

                    _version++;
                    grain.AcceptChanges();
                }

                Runtime.Scheduler.Set(Id, due);
                break;
            }
        }
        catch (Exception ex)
        {
            // Storage failed: the outcome of the write is unknown, so drop the in-memory state and
            // reload it next turn; every caller of this turn gets the error.
            _grain = null;
            foreach (var work in batch)
            {
                work.Completion.TrySetException(ex);
            }

            return;
        }

        for (var i = 0; i < batch.Count; i++)
        {
            batch[i].Completion.TrySetResult(results[i]);
        }
    }

    private LimitWorkResult Apply(LimitGrain grain, LimitWork work, DateTimeOffset now, ref bool changed, ref bool missed)
    {
        switch (work.Op)
        {
            case LimitOp.Reserve:
                var outcome = grain.TryReserve(work.CallKey!, work.Direction, work.Lease, work.PerCallMax, now, out var reserveChanged);
                changed |= reserveChanged;
                return new LimitWorkResult(outcome, outcome.Admitted, null);
            case LimitOp.Confirm:
                changed |= grain.ExpireLeases(now) > 0;
                return Found(grain.Confirm(work.CallKey!, work.Lease, now), ref changed, ref missed);
            case LimitOp.Renew:
                changed |= grain.ExpireLeases(now) > 0;
                return Found(grain.Renew(work.CallKey!, work.Lease, now), ref changed, ref missed);
            case LimitOp.Release:
                return Found(grain.Release(work.CallKey!), ref changed, ref missed);
            case LimitOp.Timer:
                var reclaimed = grain.ExpireLeases(now);
                if (reclaimed > 0)
                {
                    changed = true;
                    Runtime.Metrics.Reclaimed(_key.Kind, reclaimed);
                    if (Runtime.Logger.IsEnabled(Microsoft.Extensions.Logging.LogLevel.Information))
                    {
#pragma warning disable CA1873 // guarded by IsEnabled above
                        Log.LeasesReclaimed(Runtime.Logger, _key.ToString(), reclaimed);
#pragma warning restore CA1873
                    }
                }

                return default;
            case LimitOp.Snapshot:
                return new LimitWorkResult(default, true, grain.Snapshot());
            case LimitOp.SetLimits:
                grain.SetOverride(work.Limits);
                changed = true;
                return new LimitWorkResult(default, true, grain.Snapshot());
            default:
                throw new InvalidOperationException($"unknown limit operation {work.Op}");
        }
    }

    /// <summary>One item per call changed since the last write: its current hold, or a delete when it was released.</summary>
    private static List<GrainItemWrite>? ItemChanges(LimitGrain grain)
    {
        if (grain.ChangedCalls.Count == 0)
        {
            return null;
        }

        var items = new List<GrainItemWrite>(grain.ChangedCalls.Count);
        foreach (var callKey in grain.ChangedCalls)
        {
            items.Add(new GrainItemWrite(
                callKey,
                grain.State.Calls.TryGetValue(callKey, out var call) ? GrainStateSerializer.SerializeHeldCall(call) : null));
        }

        return items;
    }

    private static LimitWorkResult Found(bool found, ref bool changed, ref bool missed)
    {
        changed |= found;
        missed |= !found;
        return new LimitWorkResult(default, found, null);
    }

    private async Task LoadAsync()
    {
        var stored = await Runtime.Storage.ReadAsync(Id, CancellationToken.None).ConfigureAwait(false);
        var callsInRow = false;
        var state = stored is null ? new LimitGrainState() : GrainStateSerializer.DeserializeLimit(stored, out callsInRow);
        _version = stored?.Version ?? 0;
        var grain = new LimitGrain(_key, state, Runtime.LimitSettings.GetLimits(_key));
        if (callsInRow)
        {
            // A row from before items: this turn writes (even without a change) the row without calls and every call as an item.
            grain.MarkAllCallsChanged();
        }

        _grain = grain;
    }
}
