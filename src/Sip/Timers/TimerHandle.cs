namespace CallState.Sip.Timers;

/// <summary>
/// A scheduled timer of a <see cref="TimerWheel"/>. A value type carrying the entry's version, so a handle kept
/// after its timer fired or was cancelled stays harmless even when the wheel has reused the entry.
/// </summary>
public readonly struct TimerHandle : IEquatable<TimerHandle>
{
    private readonly TimerWheel? _wheel;
    private readonly TimerWheel.Entry? _entry;
    private readonly int _version;

    internal TimerHandle(TimerWheel wheel, TimerWheel.Entry entry, int version)
    {
        _wheel = wheel;
        _entry = entry;
        _version = version;
    }

    /// <summary>True while the timer has neither fired nor been cancelled.</summary>
    public bool IsPending => _wheel is not null && _wheel.IsPending(_entry!, _version);

    /// <summary>Stops the timer in O(1). False if it already fired (or is firing), was cancelled, or the handle is default.</summary>
    public bool Cancel() => _wheel is not null && _wheel.Cancel(_entry!, _version);

    public bool Equals(TimerHandle other) => ReferenceEquals(_entry, other._entry) && _version == other._version;

    public override bool Equals(object? obj) => obj is TimerHandle other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(_entry, _version);

    public static bool operator ==(TimerHandle left, TimerHandle right) => left.Equals(right);

    public static bool operator !=(TimerHandle left, TimerHandle right) => !left.Equals(right);
}
