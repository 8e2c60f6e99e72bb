using System.Collections.Concurrent;
using CallState.Grains;
using CallState.Runtime.Storage;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime;

/// <summary>
/// Hosts limit and call grains: activates each key on first use with its state loaded from storage,
/// runs one turn at a time per activation and many activations in parallel, wakes grains at their due
/// times (leases, recovery) across restarts, and deactivates idle ones.
/// </summary>
public sealed class GrainRuntime : IAsyncDisposable
{
    internal const string LimitGrainType = "limit";
    internal const string CallGrainType = "call";

    /// <summary>Longest call key accepted (Call-ID plus From-tag); RFC 3261 sets no bound, memory does.</summary>
    public const int MaxCallKeyLength = 1024;

    private readonly ConcurrentDictionary<GrainId, LimitActivation> _limits = new();
    private readonly ConcurrentDictionary<GrainId, CallActivation> _calls = new();
    private readonly ITimer _idleSweep;
    private int _started;
    private int _disposed;

    public GrainRuntime(
        IGrainStorage storage,
        GrainRuntimeOptions options,
        ILimitSettingsSource limitSettings,
        TimeProvider time,
        ILoggerFactory loggerFactory,
        RuntimeMetrics? metrics = null)
    {
        var errors = options.Validate().ToList();
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", errors), nameof(options));
        }

        Storage = storage;
        Options = options;
        LimitSettings = limitSettings;
        Time = time;
        Logger = loggerFactory.CreateLogger<GrainRuntime>();
        Metrics = metrics ?? new RuntimeMetrics(null);
        LocalLimits = new LocalLimitClient(this);
        LimitClient = LocalLimits;
        Scheduler = new GrainTimerScheduler(time, OnDue);
        var sweep = options.IdleTimeout / 2;
        _idleSweep = time.CreateTimer(static s => ((GrainRuntime)s!).SweepIdle(), this, sweep, sweep);
    }

    internal IGrainStorage Storage { get; }

    /// <summary>The storage's group commit (batches, writes, commit durations, queue waits) once started; null without one.</summary>
    public GroupCommitter? GroupCommit => Storage.GroupCommit;

    internal GrainRuntimeOptions Options { get; }

    internal ILimitSettingsSource LimitSettings { get; }

    internal TimeProvider Time { get; }

    internal ILogger Logger { get; }

    internal RuntimeMetrics Metrics { get; }

    internal GrainTimerScheduler Scheduler { get; }

    /// <summary>How call grains reach limit grains: in this process, or through the cluster (<see cref="UseLimitClient"/>).</summary>
    internal ILimitGrainClient LimitClient { get; private set; }

    /// <summary>The limit grains of this process, bypassing placement (the cluster's RPC handler serves remote calls with it).</summary>
    public ILimitGrainClient LocalLimits { get; }

    /// <summary>
    /// In a cluster, whether this silo fires the timer of a grain (it owns the grain). Null: every timer fires here.
    /// A timer skipped here fires at its owner, which re-arms timers from storage when ownership moves.
    /// </summary>
    public Func<GrainId, bool>? TimerFilter { get; set; }

    /// <summary>Routes call grains' limit operations elsewhere (the cluster client). Set before <see cref="StartAsync"/>.</summary>
    public void UseLimitClient(ILimitGrainClient client)
    {
        ArgumentNullException.ThrowIfNull(client);
        if (Volatile.Read(ref _started) != 0)
        {
            throw new InvalidOperationException("the limit client must be set before the runtime starts");
        }

        LimitClient = client;
    }

    /// <summary>
    /// Deactivates every activation whose id matches (ownership moved, or this silo was declared dead): queued work
    /// still runs; the next message for the grain activates it afresh from storage. Returns how many were closed.
    /// </summary>
    public int DeactivateWhere(Func<GrainId, bool> predicate)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        var closed = 0;
        foreach (var (id, activation) in _limits)
        {
            if (predicate(id))
            {
                activation.Close();
                if (_limits.TryRemove(new KeyValuePair<GrainId, LimitActivation>(id, activation)))
                {
                    Metrics.Deactivated();
                    closed++;
                }
            }
        }

        foreach (var (id, activation) in _calls)
        {
            if (predicate(id))
            {
                activation.Close();
                if (_calls.TryRemove(new KeyValuePair<GrainId, CallActivation>(id, activation)))
                {
                    Metrics.Deactivated();
                    closed++;
                }
            }
        }

        return closed;
    }

    /// <summary>Reads every persisted due time again (ownership moved here) and arms the timers.</summary>
    public async Task<int> RearmTimersAsync(CancellationToken cancellationToken)
    {
        var due = await Storage.ReadDueAsync(cancellationToken).ConfigureAwait(false);
        var filter = TimerFilter;
        var armed = 0;
        foreach (var grain in due)
        {
            if (filter is null || filter(grain.Id))
            {
                Scheduler.Set(grain.Id, grain.DueAt);
                armed++;
            }
        }

        return armed;
    }

    /// <summary>One limit as committed in storage (for a limit owned by another silo).</summary>
    public async Task<LimitSnapshot> GetStoredLimitAsync(LimitKey key, CancellationToken cancellationToken)
    {
        var stored = await Storage.ReadAsync(new GrainId(LimitGrainType, key.ToString()), cancellationToken).ConfigureAwait(false);
        var state = stored is null ? new LimitGrainState() : GrainStateSerializer.DeserializeLimit(stored, out _);
        return new LimitGrain(key, state, LimitSettings.GetLimits(key)).Snapshot();
    }

    /// <summary>Activations in memory now.</summary>
    public int ActivationCount => _limits.Count + _calls.Count;

    /// <summary>Creates the storage schema and re-arms every persisted timer (leases, unfinished admissions).</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("the runtime is already started");
        }

        await Storage.InitializeAsync(cancellationToken).ConfigureAwait(false);
        var due = await Storage.ReadDueAsync(cancellationToken).ConfigureAwait(false);
        foreach (var grain in due)
        {
            Scheduler.Set(grain.Id, grain.DueAt);
        }

        Log.Started(Logger, due.Count);
    }

    /// <summary>Admits a call on every limit it asks for, all or nothing; answers once durable.</summary>
    public async Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken)
    {
        if (ValidateCallKey(callKey) is { } error)
        {
            Metrics.Admission(AdmitStatus.Invalid, RejectReason.None, TimeSpan.Zero);
            return AdmitResult.Invalid(error);
        }

        var started = Time.GetTimestamp();
        var result = await CallAsync(callKey, grain => grain.AdmitAsync(limits, cancellationToken)).ConfigureAwait(false);
        Metrics.Admission(result.Status, result.Reason, Time.GetElapsedTime(started));
        if (result.Status == AdmitStatus.Rejected && Logger.IsEnabled(LogLevel.Information))
        {
#pragma warning disable CA1873 // guarded by IsEnabled above; ToCode returns a literal
            Log.Rejected(Logger, callKey, result.LimitKey, result.Reason.ToCode(), result.Current, result.Limit);
#pragma warning restore CA1873
        }

        return result;
    }

    /// <summary>The call was answered: confirmed leases on all its limits. False for an unknown or ended call.</summary>
    public Task<bool> ConfirmCallAsync(string callKey, CancellationToken cancellationToken) =>
        ValidateCallKey(callKey) is null ? CallAsync(callKey, g => g.ConfirmAsync(cancellationToken)) : Task.FromResult(false);

    /// <summary>An in-dialog refresh extends the call's leases.</summary>
    public Task<bool> RenewCallAsync(string callKey, CancellationToken cancellationToken) =>
        ValidateCallKey(callKey) is null ? CallAsync(callKey, g => g.RenewAsync(cancellationToken)) : Task.FromResult(false);

    /// <summary>The call ended: releases every slot. Idempotent; false when nothing was held.</summary>
    public Task<bool> EndCallAsync(string callKey, CancellationToken cancellationToken) =>
        ValidateCallKey(callKey) is null ? CallAsync(callKey, g => g.EndAsync(cancellationToken)) : Task.FromResult(false);

    public Task<CallSnapshot> GetCallAsync(string callKey, CancellationToken cancellationToken)
    {
        if (ValidateCallKey(callKey) is { } error)
        {
            throw new ArgumentException(error, nameof(callKey));
        }

        _ = cancellationToken;
        return CallAsync(callKey, static g => Task.FromResult(g.Snapshot()));
    }

    /// <summary>The current state of one limit, from its activation.</summary>
    public async Task<LimitSnapshot> GetLimitAsync(LimitKey key, CancellationToken cancellationToken)
    {
        _ = cancellationToken;
        var result = await PostLimitAsync(key, new LimitWork(LimitOp.Snapshot)).ConfigureAwait(false);
        return result.Snapshot!;
    }

    /// <summary>Sets (or with null clears) the run-time limits of a user or trunk; persisted.</summary>
    public async Task<LimitSnapshot> SetLimitsAsync(LimitKey key, LimitSettings? limits, CancellationToken cancellationToken)
    {
        _ = cancellationToken;
        ValidateSettableLimits(key, limits);
        var result = await PostLimitAsync(key, new LimitWork(LimitOp.SetLimits) { Limits = limits }).ConfigureAwait(false);
        return result.Snapshot!;
    }

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="limits"/> may be set on <paramref name="key"/> at run time.</summary>
    public static void ValidateSettableLimits(LimitKey key, LimitSettings? limits)
    {
        if (key.Kind == LimitKind.Key)
        {
            throw new ArgumentException("per-key limits come with each call and cannot be set", nameof(key));
        }

        if (limits is not null)
        {
            var errors = limits.Validate(key.Kind, key.ToString()).ToList();
            if (errors.Count > 0)
            {
                throw new ArgumentException(string.Join(" ", errors), nameof(limits));
            }
        }
    }

    /// <summary>
    /// Every stored limit (optionally one kind), as committed in storage: what <c>show voip tags-cac</c> lists.
    /// </summary>
    public async Task<IReadOnlyList<LimitSnapshot>> ListLimitsAsync(LimitKind? kind, CancellationToken cancellationToken)
    {
        var rows = await Storage.ReadAllAsync(LimitGrainType, cancellationToken).ConfigureAwait(false);
        var list = new List<LimitSnapshot>(rows.Count);
        foreach (var (keyText, stored) in rows)
        {
            if (!LimitKey.TryParse(keyText, out var key, out _) || (kind is { } k && key.Kind != k))
            {
                continue;
            }

            var grain = new LimitGrain(key, GrainStateSerializer.DeserializeLimit(stored, out _), LimitSettings.GetLimits(key));
            list.Add(grain.Snapshot());
        }

        list.Sort(static (a, b) => string.CompareOrdinal(a.Key, b.Key));
        return list;
    }

    internal Task<LimitWorkResult> PostLimitAsync(LimitKey key, LimitWork work)
    {
        var id = new GrainId(LimitGrainType, key.ToString());
        while (true)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            var activation = _limits.GetOrAdd(id, static (id, state) => state.runtime.NewLimitActivation(id, state.key), (runtime: this, key));
            if (activation.TryPost(work))
            {
                return work.Completion.Task;
            }

            _limits.TryRemove(new KeyValuePair<GrainId, LimitActivation>(id, activation));
        }
    }

    private Task<T> CallAsync<T>(string callKey, Func<CallGrain, Task<T>> body)
    {
        var work = new CallWork<T>(body);
        PostCall(new GrainId(CallGrainType, callKey), work);
        return work.Completion.Task;
    }

    private void PostCall(GrainId id, CallWork work)
    {
        while (true)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            var activation = _calls.GetOrAdd(id, static (id, runtime) => runtime.NewCallActivation(id), this);
            if (activation.TryPost(work))
            {
                return;
            }

            _calls.TryRemove(new KeyValuePair<GrainId, CallActivation>(id, activation));
        }
    }

    /// <summary>A call activation that closed itself (its call is settled) leaves the directory.</summary>
    internal void ForgetCall(GrainId id, CallActivation activation)
    {
        if (_calls.TryRemove(new KeyValuePair<GrainId, CallActivation>(id, activation)))
        {
            Metrics.Deactivated();
        }
    }

    private LimitActivation NewLimitActivation(GrainId id, LimitKey key)
    {
        var activation = new LimitActivation(id, key, this);
        activation.Start();
        Metrics.Activated();
        return activation;
    }

    private CallActivation NewCallActivation(GrainId id)
    {
        var activation = new CallActivation(id, this);
        activation.Start();
        Metrics.Activated();
        return activation;
    }

    private void OnDue(GrainId id)
    {
        if (Volatile.Read(ref _disposed) != 0 || (TimerFilter is { } filter && !filter(id)))
        {
            return;
        }

        try
        {
            if (id.Type == LimitGrainType && LimitKey.TryParse(id.Key, out var key, out _))
            {
                _ = PostLimitAsync(key, new LimitWork(LimitOp.Timer)).ContinueWith(
                    static (t, s) => Log.TimerFailed(((GrainRuntime)s!).Logger, t.Exception!.GetBaseException()),
                    this,
                    CancellationToken.None,
                    TaskContinuationOptions.OnlyOnFaulted,
                    TaskScheduler.Default);
            }
            else if (id.Type == CallGrainType)
            {
                var work = new CallWork<bool>(async g =>
                {
                    await g.OnTimerAsync(CancellationToken.None).ConfigureAwait(false);
                    return true;
                });
                PostCall(id, work);
                _ = work.Completion.Task.ContinueWith(
                    static (t, s) => Log.TimerFailed(((GrainRuntime)s!).Logger, t.Exception!.GetBaseException()),
                    this,
                    CancellationToken.None,
                    TaskContinuationOptions.OnlyOnFaulted,
                    TaskScheduler.Default);
            }
        }
        catch (GrainOverloadedException ex)
        {
            // The grain is busy; its own turns keep it moving and the next due time will come.
            Log.TimerFailed(Logger, ex);
        }
        catch (ObjectDisposedException)
        {
            // Shutting down.
        }
    }

    private void SweepIdle()
    {
        var timeout = Options.IdleTimeout;
        foreach (var (id, activation) in _limits)
        {
            if (activation.TryDeactivateIfIdle(timeout) && _limits.TryRemove(new KeyValuePair<GrainId, LimitActivation>(id, activation)))
            {
                Metrics.Deactivated();
            }
        }

        foreach (var (id, activation) in _calls)
        {
            if (activation.TryDeactivateIfIdle(timeout) && _calls.TryRemove(new KeyValuePair<GrainId, CallActivation>(id, activation)))
            {
                Metrics.Deactivated();
            }
        }
    }

    private static string? ValidateCallKey(string? callKey) => callKey switch
    {
        null or "" => "call key is empty",
        { Length: > MaxCallKeyLength } => $"call key is longer than {MaxCallKeyLength} characters",
        _ => null,
    };

    /// <summary>Stops timers, lets queued turns finish, and releases the storage.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _idleSweep.DisposeAsync().ConfigureAwait(false);
        Scheduler.Dispose();
        var loops = new List<Task>();
        foreach (var activation in _limits.Values)
        {
            activation.Close();
            loops.Add(activation.Loop ?? Task.CompletedTask);
        }

        foreach (var activation in _calls.Values)
        {
            activation.Close();
            loops.Add(activation.Loop ?? Task.CompletedTask);
        }

        await Task.WhenAll(loops).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _limits.Clear();
        _calls.Clear();
        await Storage.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Call grains reach limit grains through the activation directory of this process.</summary>
    private sealed class LocalLimitClient(GrainRuntime runtime) : ILimitGrainClient
    {
        public async Task<ReserveOutcome> TryReserveAsync(LimitKey key, string callKey, Direction direction, TimeSpan lease, int? perCallMax, CancellationToken cancellationToken) =>
            (await runtime.PostLimitAsync(key, new LimitWork(LimitOp.Reserve, callKey) { Direction = direction, Lease = lease, PerCallMax = perCallMax }).ConfigureAwait(false)).Outcome;

        public async Task<bool> ConfirmAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
            (await runtime.PostLimitAsync(key, new LimitWork(LimitOp.Confirm, callKey) { Lease = lease }).ConfigureAwait(false)).Found;

        public async Task<bool> RenewAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken) =>
            (await runtime.PostLimitAsync(key, new LimitWork(LimitOp.Renew, callKey) { Lease = lease }).ConfigureAwait(false)).Found;

        public async Task<bool> ReleaseAsync(LimitKey key, string callKey, CancellationToken cancellationToken) =>
            (await runtime.PostLimitAsync(key, new LimitWork(LimitOp.Release, callKey)).ConfigureAwait(false)).Found;
    }
}
