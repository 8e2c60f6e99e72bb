using CallState.Grains;

namespace CallState.Silo;

/// <summary>What an end asked for by the admin API did.</summary>
public enum CallEndOutcome
{
    /// <summary>The call was answered: an edge sent a BYE to each party, then its slots were released.</summary>
    ByeSent,

    /// <summary>The call was not answered yet: its slots were released; no CANCEL is sent (a later answer finds it uncounted and the edge ends it).</summary>
    Released,

    /// <summary>The call was answered but its record holds no BYEs (answered before they were stored, or too long to store): its slots were released only.</summary>
    ReleasedWithoutBye,

    /// <summary>No call by that key is being admitted or up.</summary>
    Unknown,

    /// <summary>No edge could send the BYEs (none registered, or each one failed): nothing was changed.</summary>
    NoEdge,
}

/// <summary>The outcome of an end and the edge that sent its BYEs.</summary>
public sealed record CallEndResult(CallEndOutcome Outcome, string? Edge = null);

/// <summary>
/// Ends a call for the admin API like Kamailio's <c>dlg.end_dlg</c> (docs/architecture.md, "Ending a call from the admin
/// API"): an answered call's stored BYEs are sent by an edge first, then its slots are released, so the slot is free only
/// once the parties have been told. A standalone edge shares the process and is called directly
/// (<see cref="IEdgeObserver"/> from the services); a silo of a cluster has no SIP stack and asks the
/// <see cref="IEdgeRegistryGrain"/> to have a live edge send them.
/// </summary>
public sealed partial class CallEnding(IGrainFactory grains, IServiceProvider services, ILogger<CallEnding> logger)
{
    /// <summary>The edge name reported when the edge of this process (standalone) sent the BYEs.</summary>
    public const string LocalEdge = "local";

    public async Task<CallEndResult> EndAsync(string callKey)
    {
        if (GrainTypes.ValidateCallKey(callKey) is not null)
        {
            return new(CallEndOutcome.Unknown);
        }

        var call = grains.GetCall(callKey);
        var info = await call.GetTeardownAsync().ConfigureAwait(false);
        if (!info.IsLive)
        {
            return new(CallEndOutcome.Unknown);
        }

        if (info.Teardown is { } teardown)
        {
            var edge = await SendAsync(callKey, teardown).ConfigureAwait(false);
            if (edge is null)
            {
                return new(CallEndOutcome.NoEdge);
            }

            // The parties have been told: release (an end that raced this one finds nothing more to release).
            await call.EndAsync().ConfigureAwait(false);
            return new(CallEndOutcome.ByeSent, edge);
        }

        return await call.EndAsync().ConfigureAwait(false)
            ? new(info.Confirmed ? CallEndOutcome.ReleasedWithoutBye : CallEndOutcome.Released)
            : new(CallEndOutcome.Unknown);
    }

    /// <summary>The edges that can send BYEs now: <see cref="LocalEdge"/> in standalone mode, else those registered with the registry.</summary>
    public async Task<IReadOnlyList<string>> EdgesAsync() => services.GetService<IEdgeObserver>() is not null
        ? [LocalEdge]
        : await grains.GetGrain<IEdgeRegistryGrain>(EdgeRegistry.Key).GetEdgesAsync().ConfigureAwait(false);

    private async Task<string?> SendAsync(string callKey, DialogTeardown teardown)
    {
        if (services.GetService<IEdgeObserver>() is not { } local)
        {
            return await grains.GetGrain<IEdgeRegistryGrain>(EdgeRegistry.Key).SendTeardownAsync(callKey, teardown).ConfigureAwait(false);
        }

        try
        {
            await local.SendTeardownAsync(callKey, teardown).ConfigureAwait(false);
            return LocalEdge;
        }
#pragma warning disable CA1031 // the local edge cannot send (its listeners are down, a target it cannot read): no edge
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogLocalFailed(logger, callKey, ex.Message);
            return null;
        }
    }

    [LoggerMessage(EventId = 2120, Level = LogLevel.Warning, Message = "The edge of this process could not send the BYEs of call {CallKey}: {Error}")]
    private static partial void LogLocalFailed(ILogger logger, string callKey, string error);
}
