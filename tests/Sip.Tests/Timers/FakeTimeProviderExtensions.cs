namespace CallState.Sip.Tests.Timers;

/// <summary>How the SIP tests drive <see cref="FakeTimeProvider"/>.</summary>
internal static class FakeTimeProviderExtensions
{
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(1);

    /// <summary>Time the clock has moved since the provider was created.</summary>
    public static TimeSpan Elapsed(this FakeTimeProvider time) => time.GetUtcNow() - time.Start;

    /// <summary>Moves the clock forward by <paramref name="by"/>, one millisecond per <see cref="FakeTimeProvider.Advance"/>.</summary>
    /// <remarks>
    /// One <see cref="FakeTimeProvider.Advance"/> sets the clock to its end first and then runs every timer that became
    /// due, each seeing the end time, and a periodic timer's missed periods back to back: what a process stalled for the
    /// whole span sees. Stepping runs each timer with the clock at its due time (to the millisecond), as on a process
    /// that keeps running, so a callback that reads the clock or schedules the next timer sees the time it was due at.
    /// </remarks>
    public static void AdvanceInSteps(this FakeTimeProvider time, TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        for (; by >= Step; by -= Step)
        {
            time.Advance(Step);
        }
        if (by > TimeSpan.Zero)
        {
            time.Advance(by);
        }
    }
}
