namespace CallState.Grains;

/// <summary>Where a limit grain finds its configured limits.</summary>
public interface ILimitSettingsSource
{
    LimitSettings GetLimits(LimitKey key);
}
