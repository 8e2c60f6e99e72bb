namespace CallState.Grains;

/// <summary>Where a limit grain finds its configured limits.</summary>
public interface ILimitSettingsSource
{
    LimitSettings GetLimits(LimitKey key);

    /// <summary>
    /// Whether <paramref name="key"/> has limits of its own in configuration, other than what any unlisted user or trunk
    /// gets: its stored row is then kept while it holds nothing (a listing shows it); the row of any other key is deleted
    /// once it holds nothing and has no run-time override (docs/architecture.md, "Rows of idle limits").
    /// </summary>
    bool HasOwnLimits(LimitKey key) => true;

    /// <summary>A trunk's configured reservations (docs/policies.md, "Guaranteed reservations"); null for none.</summary>
    TrunkReservations? GetReservations(LimitKey key) => null;
}
