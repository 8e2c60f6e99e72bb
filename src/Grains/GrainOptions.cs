
namespace CallState.Grains;

/// <summary>Settings of the grain runtime (configuration section <c>CallState:Runtime</c>).</summary>
public sealed class GrainOptions
{
    public const string SectionName = "CallState:Runtime";

    /// <summary>An activation with no work for this long is deactivated (its state stays in storage).</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Messages queued on one activation before callers are told it is overloaded: a bound so that a hot
    /// key cannot grow memory without limit; the edge answers 503 with Retry-After.
    /// </summary>
    public int InboxCapacity { get; set; } = 8192;

    /// <summary>Most queued operations one limit activation decides before one durable write.</summary>
    public int MaxTurnBatch { get; set; } = 256;

    /// <summary>How many times a limit re-decides after losing a compare-and-set before giving up.</summary>
    public int MaxStaleRetries { get; set; } = 8;

    public LeaseOptions Leases { get; set; } = new();

    public IEnumerable<string> Validate(string path = SectionName)
    {
        if (IdleTimeout <= TimeSpan.Zero)
        {
            yield return $"{path}:IdleTimeout must be positive (was {IdleTimeout}).";
        }

        if (InboxCapacity < 1)
        {
            yield return $"{path}:InboxCapacity must be at least 1 (was {InboxCapacity}).";
        }

        if (MaxTurnBatch < 1)
        {
            yield return $"{path}:MaxTurnBatch must be at least 1 (was {MaxTurnBatch}).";
        }

        if (MaxStaleRetries < 1)
        {
            yield return $"{path}:MaxStaleRetries must be at least 1 (was {MaxStaleRetries}).";
        }

        foreach (var error in Leases.Validate(path + ":Leases"))
        {
            yield return error;
        }
    }
}

/// <summary>The activation's inbox is full: the caller should back off (the edge answers 503 + Retry-After).</summary>
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
