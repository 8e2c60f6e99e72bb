namespace CallState.Grains;

/// <summary>
/// One token bucket: holds up to <c>burst</c> tokens, gains <c>rate</c> tokens per second, and a call takes one. It starts
/// full. Over any span of time it lets through at most <c>burst + rate x span</c> calls (docs/policies.md, "Call rates").
/// </summary>
public struct TokenBucket
{
    private double _tokens;
    private long _lastMs;
    private bool _started;

    /// <summary>The tokens held at <paramref name="nowMs"/> (refilled since the last look, at most <paramref name="burst"/>).</summary>
    public readonly double TokensAt(double rate, int burst, long nowMs)
    {
        if (!_started)
        {
            return burst;
        }

        // A clock that steps back gives nothing: the bucket never refills twice for one span.
        var elapsedMs = Math.Max(0, nowMs - _lastMs);
        return Math.Min(burst, _tokens + (elapsedMs * rate / 1000.0));
    }

    /// <summary>Takes one token if there is one; false (and no change) when empty.</summary>
    public bool TryTake(double rate, int burst, long nowMs)
    {
        var tokens = TokensAt(rate, burst, nowMs);
        if (tokens < 1)
        {
            return false;
        }

        _tokens = tokens - 1;
        _lastMs = _started ? Math.Max(_lastMs, nowMs) : nowMs;
        _started = true;
        return true;
    }

    /// <summary>How long until a token is there (zero when one is now).</summary>
    public readonly TimeSpan WaitAt(double rate, int burst, long nowMs)
    {
        var missing = 1 - TokensAt(rate, burst, nowMs);
        return missing <= 0 ? TimeSpan.Zero : TimeSpan.FromMilliseconds(Math.Ceiling(missing * 1000.0 / rate));
    }
}

/// <summary>
/// The call-rate buckets of one limit: total, inbound and outbound. They live in the limit's activation, in memory only:
/// a rate decision writes nothing of its own, and an activation that starts (after a crash, a move, an idle deactivation)
/// starts with full buckets, so a crash may let through at most one extra burst (docs/architecture.md, "Call rates").
/// </summary>
public sealed class RateBuckets
{
    private TokenBucket _total;
    private TokenBucket _inbound;
    private TokenBucket _outbound;

    /// <summary>Sets these buckets to <paramref name="other"/>'s (a turn decided again starts from where it started).</summary>
    public void CopyFrom(RateBuckets other)
    {
        ArgumentNullException.ThrowIfNull(other);
        (_total, _inbound, _outbound) = (other._total, other._inbound, other._outbound);
    }

    /// <summary>
    /// Whether a call in <paramref name="direction"/> may start now under <paramref name="limits"/>' rates; when it may and
    /// <paramref name="take"/>, it takes a token from the direction's bucket and the total's. A refusal takes nothing and
    /// says which rate refused and how long until a token is there.
    /// </summary>
    public RejectReason Decide(LimitKind kind, LimitSettings limits, Direction direction, DateTimeOffset now, bool take, out TimeSpan retryAfter)
    {
        ArgumentNullException.ThrowIfNull(limits);
        var nowMs = now.ToUnixTimeMilliseconds();
        retryAfter = TimeSpan.Zero;
        ref var directionBucket = ref direction == Direction.Inbound ? ref _inbound : ref _outbound;
        var directionRate = direction == Direction.Inbound ? limits.InboundRate : limits.OutboundRate;
        var directionBurst = direction == Direction.Inbound ? limits.InboundBurst : limits.OutboundBurst;

        if (directionRate is { } dr && directionBucket.TokensAt(dr, LimitSettings.BurstOf(dr, directionBurst), nowMs) < 1)
        {
            retryAfter = directionBucket.WaitAt(dr, LimitSettings.BurstOf(dr, directionBurst), nowMs);
            return RateReason(kind, direction, total: false);
        }

        if (limits.TotalRate is { } tr && _total.TokensAt(tr, LimitSettings.BurstOf(tr, limits.TotalBurst), nowMs) < 1)
        {
            retryAfter = _total.WaitAt(tr, LimitSettings.BurstOf(tr, limits.TotalBurst), nowMs);
            return RateReason(kind, direction, total: true);
        }

        if (take)
        {
            if (directionRate is { } r)
            {
                directionBucket.TryTake(r, LimitSettings.BurstOf(r, directionBurst), nowMs);
            }

            if (limits.TotalRate is { } t)
            {
                _total.TryTake(t, LimitSettings.BurstOf(t, limits.TotalBurst), nowMs);
            }
        }

        return RejectReason.None;
    }

    /// <summary>The reason of a rate refusal. A per-key limit has one rate (its total) and names the call's direction.</summary>
    public static RejectReason RateReason(LimitKind kind, Direction direction, bool total) => (kind, direction, total) switch
    {
        (LimitKind.Key, Direction.Inbound, _) => RejectReason.InPerKeyRateLimitReached,
        (LimitKind.Key, _, _) => RejectReason.OutPerKeyRateLimitReached,
        (LimitKind.User, _, true) => RejectReason.UserTotalRateLimitReached,
        (LimitKind.User, Direction.Inbound, _) => RejectReason.UserInRateLimitReached,
        (LimitKind.User, _, _) => RejectReason.UserOutRateLimitReached,
        (LimitKind.Tenant, _, true) => RejectReason.TenantTotalRateLimitReached,
        (LimitKind.Tenant, Direction.Inbound, _) => RejectReason.TenantInRateLimitReached,
        (LimitKind.Tenant, _, _) => RejectReason.TenantOutRateLimitReached,
        (_, _, true) => RejectReason.TrunkTotalRateLimitReached,
        (_, Direction.Inbound, _) => RejectReason.TrunkInRateLimitReached,
        _ => RejectReason.TrunkOutRateLimitReached,
    };
}
