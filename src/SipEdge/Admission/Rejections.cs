using CallState.Grains;

namespace CallState.SipEdge.Admission;

/// <summary>The kinds of rejection of the rejection table (docs/architecture.md, "Admission at the edge"), each with its own configurable response.</summary>
public enum RejectionCategory
{
    /// <summary>A user's total, inbound or outbound limit: <c>486 Busy Here</c>, cause 17.</summary>
    UserLimit = 0,

    /// <summary>A trunk's limit: <c>480 Temporarily Unavailable</c> + Retry-After, cause 34.</summary>
    TrunkLimit = 1,

    /// <summary>A per-key (<c>cac</c>) limit: <c>480 Temporarily Unavailable</c> + Retry-After, cause 34.</summary>
    PerKeyLimit = 2,

    /// <summary>A limit of 0 on an outgoing call: <c>403 Forbidden</c>, cause 52 (outgoing calls barred).</summary>
    OutgoingBarred = 3,

    /// <summary>A limit of 0 on an incoming call: <c>403 Forbidden</c>, cause 54 (incoming calls barred).</summary>
    IncomingBarred = 4,

    /// <summary>The silo tier did not answer in time and the edge fails closed: <c>503</c> + Retry-After, cause 42.</summary>
    Unavailable = 5,

    /// <summary>
    /// A call rate (docs/policies.md, "Call rates"): <c>480 Temporarily Unavailable</c>, cause 34, + Retry-After when the
    /// limit's bucket holds a token again. Never 503, which would make the sender avoid the whole edge (RFC 3261 21.5.4).
    /// </summary>
    RateLimit = 6,
}

/// <summary>
/// The response the edge sends for a rejected INVITE. <see cref="Q850Cause"/> 0 means no <c>Reason</c> header;
/// with <see cref="RetryAfter"/> the response carries <c>Retry-After: <see cref="AdmissionOptions.RetryAfterSeconds"/></c>.
/// </summary>
public readonly record struct SipRejection(int Status, string ReasonPhrase, int Q850Cause, bool RetryAfter)
{
    /// <summary>The <c>Reason</c> header value (RFC 3326), for example <c>Q.850;cause=17</c>; null when none is sent.</summary>
    public string? ReasonHeader => Q850Cause == 0 ? null : "Q.850;cause=" + Q850Cause.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The the rejection table (docs/architecture.md, "Admission at the edge") response of a category.</summary>
    public static SipRejection Default(RejectionCategory category) => category switch
    {
        RejectionCategory.UserLimit => new(486, "Busy Here", 17, false),
        RejectionCategory.TrunkLimit => new(480, "Temporarily Unavailable", 34, true),
        RejectionCategory.PerKeyLimit => new(480, "Temporarily Unavailable", 34, true),
        RejectionCategory.OutgoingBarred => new(403, "Forbidden", 52, false),
        RejectionCategory.IncomingBarred => new(403, "Forbidden", 54, false),
        RejectionCategory.Unavailable => new(503, "Service Unavailable", 42, true),
        RejectionCategory.RateLimit => new(480, "Temporarily Unavailable", 34, true),
        _ => throw new ArgumentOutOfRangeException(nameof(category)),
    };

    /// <summary>The category of a limit's refusal; <paramref name="direction"/> is the refused limit's direction (for a barred direction).</summary>
    public static RejectionCategory CategoryOf(RejectReason reason, Direction direction) => reason switch
    {
        RejectReason.UserTotalLimitReached or RejectReason.UserInLimitReached or RejectReason.UserOutLimitReached => RejectionCategory.UserLimit,
        RejectReason.TrunkTotalLimitReached or RejectReason.TrunkInLimitReached or RejectReason.TrunkOutLimitReached => RejectionCategory.TrunkLimit,

        // A tenant's pool and a shared trunk's reservations are group limits like a trunk's (docs/policies.md, "Tenants").
        RejectReason.TenantTotalLimitReached or RejectReason.TenantInLimitReached or RejectReason.TenantOutLimitReached
            or RejectReason.TrunkTenantMaxReached or RejectReason.TrunkReservedForOtherTenants => RejectionCategory.TrunkLimit,
        RejectReason.InPerKeyCacLimitReached or RejectReason.OutPerKeyCacLimitReached => RejectionCategory.PerKeyLimit,
        _ when reason.IsRate() => RejectionCategory.RateLimit,
        RejectReason.DirectionBarred => direction == Direction.Inbound ? RejectionCategory.IncomingBarred : RejectionCategory.OutgoingBarred,
        _ => throw new ArgumentOutOfRangeException(nameof(reason), reason, "not a refusal"),
    };

    /// <summary>RFC 3261 section 21 reason phrases (and RFC 3265/3329/4028 ones likely to be configured).</summary>
    public static string StandardPhrase(int status) => status switch
    {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        >= 400 and < 500 => "Request Failure",
        >= 500 and < 600 => "Server Failure",
        _ => "Global Failure",
    };
}

/// <summary>A configured override of one rejection response; unset fields fall back to the next level.</summary>
public sealed class RejectionOptions
{
    /// <summary>SIP status, 400-699; never 487 (reserved for CANCEL) and never 503 for user or per-key limits.</summary>
    public int? Status { get; set; }

    /// <summary>Reason phrase; defaults to the standard phrase of <see cref="Status"/>.</summary>
    public string? ReasonPhrase { get; set; }

    /// <summary>Q.850 cause in the <c>Reason</c> header, 1-127; 0 sends no <c>Reason</c> header.</summary>
    public int? Q850Cause { get; set; }

    /// <summary>Whether the response carries <c>Retry-After</c>.</summary>
    public bool? RetryAfter { get; set; }

    internal void Validate(string path, RejectionCategory category, List<string> errors)
    {
        if (Status is { } status)
        {
            if (status is < 400 or > 699)
            {
                errors.Add($"{path}:{nameof(Status)}: {status} is not a rejection status (400-699)");
            }
            else if (status == 487)
            {
                errors.Add($"{path}:{nameof(Status)}: 487 answers a CANCEL (RFC 3261 9.2), never a refused call");
            }
            else if (status == 503 && category is RejectionCategory.UserLimit or RejectionCategory.PerKeyLimit or RejectionCategory.RateLimit)
            {
                var limit = category == RejectionCategory.RateLimit ? "a rate limit" : "a user or per-key limit";
                errors.Add($"{path}:{nameof(Status)}: 503 would make the caller avoid this whole edge for Retry-After (RFC 3261 21.5.4); {limit} must not use it");
            }
        }

        if (Q850Cause is < 0 or > 127)
        {
            errors.Add($"{path}:{nameof(Q850Cause)}: {Q850Cause} is not a Q.850 cause (1-127, or 0 for no Reason header)");
        }

        if (ReasonPhrase is { } phrase)
        {
            if (phrase.Length > 128)
            {
                errors.Add($"{path}:{nameof(ReasonPhrase)}: longer than 128 characters");
            }
            else if (phrase.Any(char.IsControl))
            {
                errors.Add($"{path}:{nameof(ReasonPhrase)}: contains a control character");
            }
        }
    }
}

/// <summary>Rejection response overrides, one per <see cref="RejectionCategory"/>.</summary>
public sealed class RejectCodesOptions
{
    public RejectionOptions? UserLimit { get; set; }

    public RejectionOptions? TrunkLimit { get; set; }

    public RejectionOptions? PerKeyLimit { get; set; }

    public RejectionOptions? OutgoingBarred { get; set; }

    public RejectionOptions? IncomingBarred { get; set; }

    public RejectionOptions? Unavailable { get; set; }

    /// <summary>A call rate's refusal (docs/policies.md, "Call rates").</summary>
    public RejectionOptions? RateLimit { get; set; }

    public RejectionOptions? Get(RejectionCategory category) => category switch
    {
        RejectionCategory.UserLimit => UserLimit,
        RejectionCategory.TrunkLimit => TrunkLimit,
        RejectionCategory.PerKeyLimit => PerKeyLimit,
        RejectionCategory.OutgoingBarred => OutgoingBarred,
        RejectionCategory.IncomingBarred => IncomingBarred,
        RejectionCategory.Unavailable => Unavailable,
        RejectionCategory.RateLimit => RateLimit,
        _ => null,
    };

    internal void Validate(string path, List<string> errors)
    {
        foreach (var category in Enum.GetValues<RejectionCategory>())
        {
            Get(category)?.Validate($"{path}:{category}", category, errors);
        }
    }

    /// <summary>
    /// Merges field by field: the first level (most specific first) that sets a field wins, then the DESIGN default.
    /// A reason phrase is taken only from the level that set the status or a more specific one, so an
    /// overridden status never keeps another status's phrase.
    /// </summary>
    public static SipRejection Resolve(RejectionCategory category, params ReadOnlySpan<RejectCodesOptions?> levels)
    {
        var fallback = SipRejection.Default(category);
        int? status = null;
        string? phrase = null;
        int? cause = null;
        bool? retryAfter = null;
        foreach (var level in levels)
        {
            if (level?.Get(category) is not { } o)
            {
                continue;
            }

            if (status is null && !string.IsNullOrEmpty(o.ReasonPhrase))
            {
                phrase ??= o.ReasonPhrase;
            }

            status ??= o.Status;
            cause ??= o.Q850Cause;
            retryAfter ??= o.RetryAfter;
        }

        return status is { } s
            ? new SipRejection(s, phrase ?? SipRejection.StandardPhrase(s), cause ?? fallback.Q850Cause, retryAfter ?? fallback.RetryAfter)
            : new SipRejection(fallback.Status, phrase ?? fallback.ReasonPhrase, cause ?? fallback.Q850Cause, retryAfter ?? fallback.RetryAfter);
    }
}
