namespace CallState.Grains.Tests.Infrastructure;

/// <summary>
/// Routes a call admission's requests to real <see cref="LimitLedger"/> instances, one per key, as the runtime
/// would (one turn at a time, here simply synchronous). Keys without configured limits are unlimited.
/// </summary>
public sealed class InMemoryLimitClient : ILimitGrainClient
{
    private readonly Dictionary<LimitKey, LimitLedger> _grains = [];
    private readonly Dictionary<LimitKey, LimitSettings> _configured = [];
    private readonly HashSet<LimitKey> _failing = [];
    private readonly Dictionary<LimitKey, (TaskCompletionSource Sent, Task Arrives)> _delayed = [];
    private readonly TimeProvider _time;
    private readonly List<string> _events;

    public InMemoryLimitClient(TimeProvider time, List<string>? events = null)
    {
        _time = time;
        _events = events ?? [];
    }

    /// <summary>Every request, in order: <c>reserve:trunk/a</c>, <c>release:user/b</c>, ...</summary>
    public List<string> Events => _events;

    /// <summary>When set, every request throws: the process hosting the call's shard has died.</summary>
    public bool Dead { get; set; }

    /// <summary>After this many more successful reservations, every request throws (<see cref="Dead"/>).</summary>
    public int? DieAfterReservations { get; set; }

    public InMemoryLimitClient Configure(string key, LimitSettings limits)
    {
        var parsed = LimitKey.Parse(key);
        _configured[parsed] = limits;
        _grains.Remove(parsed);
        return this;
    }

    /// <summary>The limit at <paramref name="key"/> cannot answer (its silo is unreachable).</summary>
    public void Fail(string key) => _failing.Add(LimitKey.Parse(key));

    public void Heal(string key) => _failing.Remove(LimitKey.Parse(key));

    public LimitLedger Grain(string key) => Grain(LimitKey.Parse(key));

    public LimitLedger Grain(LimitKey key)
    {
        if (!_grains.TryGetValue(key, out var grain))
        {
            grain = new LimitLedger(key, new LimitGrainState(), _configured.GetValueOrDefault(key, LimitSettings.Unlimited));
            _grains[key] = grain;
        }

        return grain;
    }

    /// <summary>Calls counted on <paramref name="key"/> now (without expiring leases).</summary>
    public int Held(string key) => Grain(key).Snapshot().Total;

    /// <summary>Runs every limit's lease timer, as the runtime does at their due times.</summary>
    public void ExpireAll()
    {
        foreach (var grain in _grains.Values)
        {
            grain.ExpireLeases(_time.GetUtcNow());
        }
    }

    /// <summary>
    /// When set, every check answers "admit" whatever the limit holds: as if the slots were taken between the check and the
    /// reservation (a racing call), so the reservations themselves refuse.
    /// </summary>
    public bool ChecksAdmit { get; set; }

    public Task<ReserveOutcome> CheckAsync(LimitKey key, string callKey, Direction direction, int? perCallMax, string? tenant, CancellationToken cancellationToken)
    {
        Enter("check", key);
        return Task.FromResult(ChecksAdmit ? ReserveOutcome.Admit(null, 0) : Grain(key).Check(callKey, direction, perCallMax, tenant, _time.GetUtcNow()));
    }

    /// <summary>
    /// The next reservation on <paramref name="key"/> is on its way (forwarded to an activation that moved) until
    /// <paramref name="arrives"/> completes, and only then reaches the limit, which decides it even if the caller gave up
    /// meanwhile (a drop sent after it found nothing to drop), and the caller gets that answer, as a shard's grain call
    /// does. The returned task completes when it has been sent.
    /// </summary>
    public Task Delay(string key, Task arrives)
    {
        var sent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _delayed[LimitKey.Parse(key)] = (sent, arrives);
        return sent.Task;
    }

    public Task<ReserveOutcome> TryReserveAsync(LimitKey key, string callKey, Direction direction, TimeSpan lease, int? perCallMax, string? tenant, CancellationToken cancellationToken)
    {
        Enter("reserve", key);
        if (_delayed.Remove(key, out var delayed))
        {
            delayed.Sent.SetResult();
            return ArriveAsync(delayed.Arrives, key, callKey, direction, lease, perCallMax, tenant);
        }

        var outcome = Grain(key).TryReserve(callKey, direction, lease, perCallMax, tenant, _time.GetUtcNow(), out _);
        if (DieAfterReservations is { } n)
        {
            DieAfterReservations = n - 1;
            if (n - 1 <= 0)
            {
                DieAfterReservations = null;
                Dead = true;
            }
        }

        return Task.FromResult(outcome);
    }

    private async Task<ReserveOutcome> ArriveAsync(Task arrives, LimitKey key, string callKey, Direction direction, TimeSpan lease, int? perCallMax, string? tenant)
    {
        await arrives;
        _events.Add($"reserved:{key}");
        return Grain(key).TryReserve(callKey, direction, lease, perCallMax, tenant, _time.GetUtcNow(), out _);
    }

    public Task<bool> ConfirmAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken)
    {
        Enter("confirm", key);
        return Task.FromResult(Grain(key).Confirm(callKey, lease, _time.GetUtcNow()));
    }

    public Task<bool> RenewAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken)
    {
        Enter("renew", key);
        return Task.FromResult(Grain(key).Renew(callKey, lease, _time.GetUtcNow()));
    }

    public Task<bool> ReleaseAsync(LimitKey key, string callKey, CancellationToken cancellationToken)
    {
        Enter("release", key);
        return Task.FromResult(Grain(key).Release(callKey));
    }

    /// <summary>Nothing waits for a turn here (each reservation is decided as it comes): there is never anything to drop.</summary>
    public Task<int> DropAsync(LimitKey key, string callKey) => Task.FromResult(0);

    private void Enter(string operation, LimitKey key)
    {
        if (Dead)
        {
            throw new InvalidOperationException($"process died before {operation} on {key}");
        }

        if (_failing.Contains(key))
        {
            throw new TimeoutException($"limit {key} did not answer {operation}");
        }

        _events.Add($"{operation}:{key}");
    }
}
