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
