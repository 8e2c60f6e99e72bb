using System.Diagnostics.CodeAnalysis;

namespace CallState.Grains;

/// <summary>Who asks for an admission: the INVITE transaction (its id) and where requests toward the caller may go.</summary>
[GenerateSerializer, Immutable]
public sealed record CallLeg([property: Id(0)] string Attempt, [property: Id(1)] IReadOnlyList<string> CallerTargets);

/// <summary>
/// What the 2xx taught: the callee's tag, where requests toward the callee may go and, for a counted call, the two BYEs
/// that end it (<see cref="Teardown"/>), so that any edge can end it when an operator asks (docs/architecture.md,
/// "Ending a call from the admin API").
/// </summary>
[GenerateSerializer, Immutable]
public sealed record CallAnswer([property: Id(0)] string CalleeTag, [property: Id(1)] IReadOnlyList<string> CalleeTargets,
    [property: Id(2)] DialogTeardown? Teardown = null);

/// <summary>
/// One BYE of a call's teardown as the edge that saw its 2xx built it: where it goes (a target as
/// <see cref="CallLeg.CallerTargets"/> spells one), its request line and the header fields that follow its Via (the edge
/// that sends it writes the Via). Opaque bytes to the grains.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record StoredBye([property: Id(0)] string Target, [property: Id(1)] byte[] RequestLine, [property: Id(2)] byte[] Rest);

/// <summary>The BYE toward the callee and the BYE toward the caller that end an answered call.</summary>
[GenerateSerializer, Immutable]
public sealed record DialogTeardown([property: Id(0)] StoredBye TowardCallee, [property: Id(1)] StoredBye TowardCaller);

/// <summary>What an operator's end finds of a call: its phase, whether it was answered, and its stored BYEs if any.</summary>
[GenerateSerializer, Immutable]
public sealed record CallTeardownInfo([property: Id(0)] CallPhase Phase, [property: Id(1)] bool Confirmed, [property: Id(2)] DialogTeardown? Teardown)
{
    /// <summary>Being admitted or up: something an end can release.</summary>
    public bool IsLive => Phase is CallPhase.Admitting or CallPhase.Admitted;
}

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

    /// <summary>
    /// Longest stored BYE (request line and header fields together): Route entries, From, To and Call-ID copied from
    /// the dialog; past it the call keeps no teardown and an operator's end only releases it.
    /// </summary>
    public const int MaxByeLength = 4096;

    /// <summary>Whether a teardown can be stored: both BYEs have a target of at most <see cref="MaxTargetLength"/> and at most <see cref="MaxByeLength"/> bytes.</summary>
    public static bool IsStorable([NotNullWhen(true)] DialogTeardown? teardown) =>
        teardown is { TowardCallee: { } callee, TowardCaller: { } caller } && IsStorable(callee) && IsStorable(caller);

    private static bool IsStorable(StoredBye bye) =>
        bye.Target is { Length: > 0 and <= MaxTargetLength } && bye.RequestLine is { Length: > 0 } line && bye.Rest is { } rest
        && line.Length + rest.Length <= MaxByeLength;

    /// <summary>Whether a callee tag can be stored: not empty and not longer than <see cref="MaxTagLength"/>.</summary>
    public static bool IsStorableTag(string? tag) => tag is { Length: > 0 and <= MaxTagLength };
}
