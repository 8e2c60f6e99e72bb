namespace CallState.Grains;

/// <summary>
/// Concurrent-call limits of one user or trunk. Each is optional: null means unlimited, 0 means
/// that direction (or, for <see cref="Total"/>, every call) is barred.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record LimitSettings([property: Id(0)] int? Total = null, [property: Id(1)] int? Inbound = null, [property: Id(2)] int? Outbound = null)
{
    public static readonly LimitSettings Unlimited = new();

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
}

/// <summary>Fields of <see cref="LimitSettings"/>: which ones a run-time change sets, or a limit has overridden.</summary>
[Flags]
[GenerateSerializer]
public enum LimitFields : byte
{
    None = 0,
    Total = 1,
    Inbound = 2,
    Outbound = 4,
    All = Total | Inbound | Outbound,
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

    /// <summary>Back to configuration for every field (the admin API's <c>DELETE</c>).</summary>
    public static LimitChange Clear { get; } = new(LimitSettings.Unlimited, LimitFields.None, LimitFields.All);
}

/// <summary>A limit before and after a <see cref="LimitChange"/> (without its calls): what the audit records.</summary>
[GenerateSerializer, Immutable]
public sealed record LimitChangeResult([property: Id(0)] LimitSnapshot Before, [property: Id(1)] LimitSnapshot After);
