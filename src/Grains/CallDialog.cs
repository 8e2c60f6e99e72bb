namespace CallState.Grains;

/// <summary>Who asks for an admission: the INVITE transaction (its id) and where requests toward the caller may go.</summary>
[GenerateSerializer, Immutable]
public sealed record CallLeg([property: Id(0)] string Attempt, [property: Id(1)] IReadOnlyList<string> CallerTargets);

/// <summary>What the 2xx taught: the callee's tag and where requests toward the callee may go.</summary>
[GenerateSerializer, Immutable]
public sealed record CallAnswer([property: Id(0)] string CalleeTag, [property: Id(1)] IReadOnlyList<string> CalleeTargets);

/// <summary>An admitted call's dialog as any edge checks in-dialog requests against it.</summary>
[GenerateSerializer, Immutable]
public sealed record CallDialog([property: Id(0)] string? CalleeTag, [property: Id(1)] IReadOnlyList<string> CallerTargets,
    [property: Id(2)] IReadOnlyList<string> CalleeTargets, [property: Id(3)] bool Confirmed);

/// <summary>
/// What a call keeps of its dialog, and how much. The grains treat an attempt, a tag and a target as opaque strings (the
/// edge writes a target as <c>udp:192.0.2.1:5060</c>); the bounds keep a call's record small whatever an INVITE carries.
/// </summary>
public static class CallDialogs
{
    /// <summary>Targets kept per direction; later ones are ignored (not checked, not stored).</summary>
    public const int MaxTargets = 4;

    /// <summary>Longest target kept: a transport, an address and a port with room to spare.</summary>
    public const int MaxTargetLength = 200;

    /// <summary>Longest attempt id and callee tag kept; RFC 3261 bounds neither, a call's record does.</summary>
    public const int MaxTagLength = 256;

    /// <summary>Why a leg is unusable (the admission is then invalid), or null.</summary>
    public static string? Validate(CallLeg leg)
    {
        ArgumentNullException.ThrowIfNull(leg);
        if (string.IsNullOrEmpty(leg.Attempt))
        {
            return "the admission's attempt id is empty";
        }

        if (leg.Attempt.Length > MaxTagLength)
        {
            return $"the admission's attempt id is longer than {MaxTagLength} characters";
        }

        var targets = leg.CallerTargets ?? [];
        for (var i = 0; i < Math.Min(targets.Count, MaxTargets); i++)
        {
            if (string.IsNullOrEmpty(targets[i]))
            {
                return $"caller target {i + 1} is empty";
            }

            if (targets[i].Length > MaxTargetLength)
            {
                return $"caller target {i + 1} is longer than {MaxTargetLength} characters";
            }
        }

        return null;
    }

    /// <summary>The targets a call stores: the first <see cref="MaxTargets"/>, without the empty or over-long ones; null when none.</summary>
    public static List<string>? Keep(IReadOnlyList<string>? targets)
    {
        if (targets is null || targets.Count == 0)
        {
            return null;
        }

        var kept = new List<string>(Math.Min(targets.Count, MaxTargets));
        for (var i = 0; i < Math.Min(targets.Count, MaxTargets); i++)
        {
            if (targets[i] is { Length: > 0 and <= MaxTargetLength } target)
            {
                kept.Add(target);
            }
        }

        return kept.Count == 0 ? null : kept;
    }

    /// <summary>Whether a callee tag can be stored: not empty and not longer than <see cref="MaxTagLength"/>.</summary>
    public static bool IsStorableTag(string? tag) => tag is { Length: > 0 and <= MaxTagLength };
}
