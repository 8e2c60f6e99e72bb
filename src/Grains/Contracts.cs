namespace CallState.Grains;

/// <summary>How long slots are held without news of the call (DESIGN 3).</summary>
public sealed class LeaseOptions
{
    /// <summary>
    /// Reserved, no final response yet. Must exceed the edges' Timer C plus 64*T1 (RFC 3261 16.6 step 11, 16.7 step 2:
    /// Timer C restarts at every provisional, and a 2xx may still come while the CANCEL it sent waits 64*T1): 3 min + 32 s
    /// with the RFC's timers. The edges renew it while the call rings (docs/architecture.md, "Leases that fit SIP").
    /// </summary>
    public TimeSpan Early { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>After the 2xx: the maximum call duration unless refreshed.</summary>
    public TimeSpan Confirmed { get; set; } = TimeSpan.FromHours(12);

    public IEnumerable<string> Validate(string path)
    {
        if (Early <= TimeSpan.Zero)
        {
            yield return $"{path}:Early must be positive (was {Early}).";
        }

        if (Confirmed <= TimeSpan.Zero)
        {
            yield return $"{path}:Confirmed must be positive (was {Confirmed}).";
        }
    }
}

/// <summary>The limits a call's admission talks to. The hosting runtime routes each call to the limit's activation.</summary>
public interface ILimitGrainClient
{
    Task<ReserveOutcome> TryReserveAsync(LimitKey key, string callKey, Direction direction, TimeSpan lease, int? perCallMax, string? tenant, CancellationToken cancellationToken);

    /// <summary>What <see cref="TryReserveAsync"/> would answer now, writing nothing (<see cref="ILimitGrain.CheckAsync"/>).</summary>
    Task<ReserveOutcome> CheckAsync(LimitKey key, string callKey, Direction direction, int? perCallMax, string? tenant, CancellationToken cancellationToken);

    Task<bool> ConfirmAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken);

    Task<bool> RenewAsync(LimitKey key, string callKey, TimeSpan lease, CancellationToken cancellationToken);

    Task<bool> ReleaseAsync(LimitKey key, string callKey, CancellationToken cancellationToken);

    /// <summary>The call's admission was given up: its reservations still waiting at the limit are dropped (<see cref="ILimitGrain.DropAsync"/>).</summary>
    Task<int> DropAsync(LimitKey key, string callKey);
}

/// <summary>A grain's persisted state, as the runtime hands it to grain code (Orleans' IPersistentState).</summary>
public interface IDurableState<out T>
{
    T State { get; }

    /// <summary>
    /// Writes the state durably, conditional on the version loaded; <paramref name="dueAt"/> asks the runtime
    /// to wake the grain then (surviving restarts). Throws <see cref="StaleGrainStateException"/> when
    /// another activation wrote first.
    /// </summary>
    Task WriteAsync(DateTimeOffset? dueAt, CancellationToken cancellationToken) => WriteAsync(dueAt, dueAt, cancellationToken);

    /// <summary>
    /// Like <see cref="WriteAsync(DateTimeOffset?, CancellationToken)"/>, with a different wake-up after a restart:
    /// this activation is woken at <paramref name="dueAt"/>, while a runtime that loads the state from storage (after
    /// a crash, or at a new owner) wakes the grain at <paramref name="recoverAt"/>.
    /// </summary>
    Task WriteAsync(DateTimeOffset? dueAt, DateTimeOffset? recoverAt, CancellationToken cancellationToken);

    /// <summary>Deletes the state (conditionally, like a write).</summary>
    Task ClearAsync(CancellationToken cancellationToken);
}

/// <summary>The stored state changed under this activation: it must reload and decide again.</summary>
public sealed class StaleGrainStateException : Exception
{
    public StaleGrainStateException()
        : base("grain state was written by another activation")
    {
    }

    public StaleGrainStateException(string message)
        : base(message)
    {
    }

    public StaleGrainStateException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// A failure below a grain (the state store, a driver) as its callers receive it. Driver exceptions do not travel between
/// silos and clients (Orleans has no codec for them), so the grain reports the failure's type and message in this one.
/// </summary>
public sealed class GrainStorageException : Exception
{
    public GrainStorageException()
        : base("grain storage failed")
    {
    }

    public GrainStorageException(string message)
        : base(message)
    {
    }

    public GrainStorageException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>
    /// What a grain's caller gets for <paramref name="failure"/>: ours and the runtime's own exceptions as they are,
    /// anything else (a storage driver's) as a <see cref="GrainStorageException"/> naming it.
    /// </summary>
    public static Exception ForCaller(Exception failure) => failure switch
    {
        StaleGrainStateException or GrainOverloadedException or GrainStorageException or OperationCanceledException
            or ArgumentException or InvalidOperationException or TimeoutException => failure,
        _ => new GrainStorageException($"{failure.GetType().Name}: {failure.Message}"),
    };
}
