namespace CallState.Grains;

/// <summary>Settings of the limit and call-shard grains (configuration section <c>CallState:Grains</c>).</summary>
public sealed class GrainOptions
{
    public const string SectionName = "CallState:Grains";

    /// <summary>
    /// Operations waiting on one limit before callers are told it is overloaded: a bound so that a hot
    /// key cannot grow memory without limit; the edge answers 503 with Retry-After.
    /// </summary>
    public int QueueCapacity { get; set; } = 8192;

    /// <summary>Most queued operations one limit decides before one durable write.</summary>
    public int MaxTurnBatch { get; set; } = 256;

    /// <summary>How many times a limit re-decides after losing a compare-and-set before giving up.</summary>
    public int MaxStaleRetries { get; set; } = 8;

    /// <summary>
    /// How often the silo looks in storage for grains whose due time has passed (leases that ended, admissions a crash
    /// cut, ended calls whose record is kept no longer) and wakes them. The precision of lease expiry.
    /// </summary>
    public TimeSpan DueScanInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Most grains one due scan wakes; the rest wait for the next scan.</summary>
    public int DueScanBatch { get; set; } = 10_000;

    /// <summary>
    /// How long after an admission a silo that finds it unfinished in storage (its activation lost with a crashed silo)
    /// finishes or undoes it. Live admissions are stored with this due time, so it must exceed the longest admission.
    /// </summary>
    public TimeSpan RecoveryDelay { get; set; } = TimeSpan.FromSeconds(30);

    public LeaseOptions Leases { get; set; } = new();

    public IEnumerable<string> Validate(string path = SectionName)
    {
        if (QueueCapacity < 1)
        {
            yield return $"{path}:QueueCapacity must be at least 1 (was {QueueCapacity}).";
        }

        if (MaxTurnBatch < 1)
        {
            yield return $"{path}:MaxTurnBatch must be at least 1 (was {MaxTurnBatch}).";
        }

        if (MaxStaleRetries < 1)
        {
            yield return $"{path}:MaxStaleRetries must be at least 1 (was {MaxStaleRetries}).";
        }

        if (DueScanInterval <= TimeSpan.Zero)
        {
            yield return $"{path}:DueScanInterval must be positive (was {DueScanInterval}).";
        }

        if (DueScanBatch < 1)
        {
            yield return $"{path}:DueScanBatch must be at least 1 (was {DueScanBatch}).";
        }

        if (RecoveryDelay <= TimeSpan.Zero)
        {
            yield return $"{path}:RecoveryDelay must be positive (was {RecoveryDelay}).";
        }

        foreach (var error in Leases.Validate(path + ":Leases"))
        {
            yield return error;
        }
    }
}

/// <summary>A limit has too many operations waiting: the caller should back off (the edge answers 503 + Retry-After).</summary>
[GenerateSerializer]
public sealed class GrainOverloadedException : Exception
{
    public GrainOverloadedException()
        : base("grain is overloaded")
    {
    }

    public GrainOverloadedException(string message)
        : base(message)
    {
    }

    public GrainOverloadedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
