namespace CallState.Grains;

/// <summary>
/// Concurrent-call limits of one user or trunk. Each is optional: null means unlimited, 0 means
/// that direction (or, for <see cref="Total"/>, every call) is barred. The call rates (calls per second, each with a
/// burst: docs/policies.md, "Call rates") are optional too: null means no rate limit; a burst without its rate is an
/// error, a rate without its burst gets <see cref="BurstOf"/>. <see cref="Shadow"/> true puts the limit in shadow mode: its
/// would-be refusals are counted, logged and exported, and the call goes through (docs/policies.md, "Shadow mode"); null
/// or false enforces it.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record LimitSettings(
    [property: Id(0)] int? Total = null,
    [property: Id(1)] int? Inbound = null,
    [property: Id(2)] int? Outbound = null,
    [property: Id(3)] double? TotalRate = null,
    [property: Id(4)] int? TotalBurst = null,
    [property: Id(5)] double? InboundRate = null,
    [property: Id(6)] int? InboundBurst = null,
    [property: Id(7)] double? OutboundRate = null,
    [property: Id(8)] int? OutboundBurst = null,
    [property: Id(16)] bool? Shadow = null)
{
    public static readonly LimitSettings Unlimited = new();

    /// <summary>The upper bound of a rate, calls per second.</summary>
    public const double MaxRate = 1_000_000;

    /// <summary>The burst in force for <paramref name="rate"/>: the configured one, else one second's worth (at least 1).</summary>
    public static int BurstOf(double rate, int? burst) => burst ?? (int)Math.Max(1, Math.Ceiling(rate));

    /// <summary>Whether any call rate is set.</summary>
    public bool HasRates => TotalRate is not null || InboundRate is not null || OutboundRate is not null;

    /// <summary>
    /// Configuration errors, each naming the field under <paramref name="path"/>
    /// (for example <c>CallState:Limits:Users:alice</c>). Empty when valid.
    /// </summary>
    public IEnumerable<string> Validate(LimitKind kind, string path)
    {
        if (Total < 0)
        {
            yield return $"{path}:Total must be 0 or more (was {Total}).";
        }

        if (Inbound < 0)
        {
            yield return $"{path}:Inbound must be 0 or more (was {Inbound}).";
        }

        if (Outbound < 0)
        {
            yield return $"{path}:Outbound must be 0 or more (was {Outbound}).";
        }

        foreach (var error in ValidateRate(path, nameof(TotalRate), TotalRate, nameof(TotalBurst), TotalBurst)
            .Concat(ValidateRate(path, nameof(InboundRate), InboundRate, nameof(InboundBurst), InboundBurst))
            .Concat(ValidateRate(path, nameof(OutboundRate), OutboundRate, nameof(OutboundBurst), OutboundBurst)))
        {
            yield return error;
        }

        // miniSIPServer: "maximum concurrent outgoing calls" must not exceed "maximum concurrent
        // calls", which counts both directions. Trunk limits are independent by design.
        if (kind == LimitKind.User && Total is { } total)
        {
            if (Outbound > total)
            {
                yield return $"{path}:Outbound ({Outbound}) must not exceed {path}:Total ({total}).";
            }

            if (Inbound > total)
            {
                yield return $"{path}:Inbound ({Inbound}) must not exceed {path}:Total ({total}).";
            }
        }
    }

    private static IEnumerable<string> ValidateRate(string path, string rateName, double? rate, string burstName, int? burst)
    {
        if (rate is { } r && (!double.IsFinite(r) || r <= 0 || r > MaxRate))
        {
            yield return $"{path}:{rateName} must be more than 0 and at most {MaxRate} calls per second (was {r}); leave it out for no rate limit, or set a concurrent limit of 0 to bar calls.";
        }

        if (burst is { } b)
        {
            if (b < 1)
            {
                yield return $"{path}:{burstName} must be 1 or more (was {b}).";
            }

            if (rate is null)
            {
                yield return $"{path}:{burstName} is set without {path}:{rateName}.";
            }
        }
    }
}

/// <summary>Fields of <see cref="LimitSettings"/>: which ones a run-time change sets, or a limit has overridden.</summary>
[Flags]
[GenerateSerializer]
public enum LimitFields : ushort
{
    None = 0,
    Total = 1,
    Inbound = 2,
    Outbound = 4,

    /// <summary><see cref="LimitSettings.TotalRate"/> with its burst.</summary>
    TotalRate = 8,

    /// <summary><see cref="LimitSettings.InboundRate"/> with its burst.</summary>
    InboundRate = 16,

    /// <summary><see cref="LimitSettings.OutboundRate"/> with its burst.</summary>
    OutboundRate = 32,

    /// <summary><see cref="LimitSettings.Shadow"/> (docs/policies.md, "Shadow mode").</summary>
    Shadow = 256,
    Maxima = Total | Inbound | Outbound,
    Rates = TotalRate | InboundRate | OutboundRate,
    All = Maxima | Rates | Shadow,
}

/// <summary>
/// A run-time change to a limit's maxima (the admin API's <c>PATCH</c>): fields in <see cref="Set"/> take their value
/// from <see cref="Values"/> (null there means unlimited), fields in <see cref="Revert"/> go back to configuration, and
/// every other field keeps what it had.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record LimitChange([property: Id(0)] LimitSettings Values, [property: Id(1)] LimitFields Set, [property: Id(2)] LimitFields Revert)
{
    /// <summary>Replace every field (the admin API's <c>PUT</c>).</summary>
    public static LimitChange Replace(LimitSettings values) => new(values, LimitFields.All, LimitFields.None);

    /// <summary>
    /// The admin API's <c>PUT</c>: every maximum (one not sent becomes unlimited), and the rates and the shadow mode that
    /// were sent; one not sent keeps what it had, so a client that knows only maxima does not clear rates
    /// (docs/policies.md, "Call rates") or take a limit out of shadow mode.
    /// </summary>
    public static LimitChange Replace(LimitSettings values, LimitFields sent) => new(values, LimitFields.Maxima | (sent & (LimitFields.Rates | LimitFields.Shadow)), LimitFields.None);

    /// <summary>Back to configuration for every field (the admin API's <c>DELETE</c>).</summary>
    public static LimitChange Clear { get; } = new(LimitSettings.Unlimited, LimitFields.None, LimitFields.All);
}

/// <summary>A limit before and after a <see cref="LimitChange"/> (without its calls): what the audit records.</summary>
[GenerateSerializer, Immutable]
public sealed record LimitChangeResult([property: Id(0)] LimitSnapshot Before, [property: Id(1)] LimitSnapshot After);
