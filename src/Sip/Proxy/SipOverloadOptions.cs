namespace CallState.Sip.Proxy;

/// <summary>
/// Overload control and per-source budgets (section <c>CallState:Sip:Overload</c>; docs/architecture.md, "Overload
/// control"). Past any of the load thresholds new INVITEs and other requests outside a dialog are answered 503 with
/// Retry-After at once; a source over its own budget has its new requests refused (the first few a second answered
/// 503, the rest dropped).
/// </summary>
public sealed class SipOverloadOptions
{
    public const string SectionName = SipProxyOptions.SectionName + ":Overload";

    /// <summary>Off: no shedding and no per-source budgets (only <see cref="SipProxyOptions.MaxTransactions"/> stays).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// Server transactions in progress (waiting for their final response: admissions, forwarded requests, ringing
    /// INVITEs) past which new INVITEs and requests outside a dialog are shed. Answered transactions that only linger
    /// to absorb retransmissions (Timers D, I, J, K: about 101 transaction-seconds a call) cost memory, not work, so
    /// they do not count here; <see cref="SipProxyOptions.MaxTransactions"/> bounds them. In-dialog requests, CANCEL and
    /// ACK still get transactions, so calls in progress can end. Must be below <see cref="SipProxyOptions.MaxTransactions"/>;
    /// unset: a quarter of it (50,000 by default).
    /// </summary>
    public int? MaxTransactions { get; set; }

    /// <summary><see cref="MaxTransactions"/>, or a quarter of <paramref name="maxTransactions"/> when unset.</summary>
    public int EffectiveMaxTransactions(int maxTransactions) => MaxTransactions ?? Math.Max(1, maxTransactions / 4);

    /// <summary>
    /// Open transactions of every state (lingering ones included) past which new INVITEs and requests outside a dialog
    /// are shed as well: the last 2% of <paramref name="maxTransactions"/> is kept for requests inside dialogs, so BYEs
    /// still get transactions rather than the 503 every request gets at the hard cap.
    /// </summary>
    public static int ReservedFrom(int maxTransactions) => Math.Max(1, maxTransactions - (maxTransactions / 50));

    /// <summary>Decisions awaiting the transaction user (admissions and dialog look-ups waiting for the grains) past which new INVITEs are shed.</summary>
    public int MaxPendingDecisions { get; set; } = 1_000;

    /// <summary>
    /// Lag of the thread pool that runs the receive loops and the grain calls (how late a work item queued by the probe
    /// runs) past which new INVITEs are shed: past it, admissions would miss their deadline anyway.
    /// </summary>
    public TimeSpan MaxLag { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// The target delay of decisions on requests outside a dialog: while more than a tenth of an interval's decisions take
    /// this long or longer, the limit on pending ones drops, and new INVITEs past it are shed
    /// (<see cref="SipShedReason.DecisionDelay"/>); null: no such limit. The edge sets it to half the admission deadline
    /// when it is not configured, so an admitted call is decided in time.
    /// </summary>
    public TimeSpan? MaxDecisionDelay { get; set; }

    /// <summary>The lowest the adaptive limit on pending decisions outside a dialog goes, whatever their delay (at most <see cref="MaxPendingDecisions"/>).</summary>
    public int MinPendingDecisions { get; set; } = 32;

    /// <summary>How often the lag probe runs; also the interval after which the limit on pending decisions moves.</summary>
    public TimeSpan LagProbeInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Budget of a source that is neither a trunk nor a trusted peer.</summary>
    public SipSourceBudgetOptions Default { get; set; } = new() { RequestsPerSecond = 500, Burst = 1_000, MaxTransactions = 1_000 };

    /// <summary>Budget of each trunk's source address (<c>CallState:Admission:Trunks:&lt;id&gt;:Sources</c>).</summary>
    public SipSourceBudgetOptions Trunks { get; set; } = new() { RequestsPerSecond = 20_000, Burst = 20_000, MaxTransactions = 50_000 };

    /// <summary>Budget of each trusted peer's source address (<c>CallState:Trust:Peers:&lt;id&gt;:Sources</c>).</summary>
    public SipSourceBudgetOptions Peers { get; set; } = new() { RequestsPerSecond = 20_000, Burst = 20_000, MaxTransactions = 50_000 };

    /// <summary>
    /// Refusals a source over its budget gets answered (503 + Retry-After) per second; past them its requests are
    /// dropped and counted, so a flood (with a forged source address, possibly someone else's) is not answered one
    /// for one.
    /// </summary>
    public int RefusalsPerSecond { get; set; } = 10;

    /// <summary>
    /// Sources tracked at most (about 150 bytes each). A new source that finds the table full of live ones shares one
    /// budget of its kind with every other such source until entries expire, so forged addresses cannot grow it.
    /// </summary>
    public int MaxSources { get; set; } = 100_000;

    /// <summary>A source with nothing in flight and no request for this long is forgotten (its bucket is full again anyway).</summary>
    public TimeSpan SourceIdleTime { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Shedding is reported to the host (and logged) at most once per reason per interval, with the count since.</summary>
    public TimeSpan ReportInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Every problem with these settings, each naming its field, added to <paramref name="errors"/>.</summary>
    public void Validate(string prefix, List<string> errors, int maxTransactions)
    {
        ArgumentNullException.ThrowIfNull(errors);
        if (MaxTransactions is { } max && (max < 1 || max >= maxTransactions))
        {
            errors.Add($"{prefix}{nameof(MaxTransactions)}: must be at least 1 and below {SipProxyOptions.SectionName}:{nameof(SipProxyOptions.MaxTransactions)} ({maxTransactions}), so calls in progress can still end (was {MaxTransactions})");
        }
        if (MaxPendingDecisions < 1)
        {
            errors.Add($"{prefix}{nameof(MaxPendingDecisions)}: must be at least 1 (was {MaxPendingDecisions})");
        }
        if (MaxDecisionDelay is { } delay && delay <= TimeSpan.Zero)
        {
            errors.Add($"{prefix}{nameof(MaxDecisionDelay)}: must be positive (was {delay})");
        }
        if (MinPendingDecisions < 1)
        {
            errors.Add($"{prefix}{nameof(MinPendingDecisions)}: must be at least 1 (was {MinPendingDecisions})");
        }
        if (MaxLag <= TimeSpan.Zero)
        {
            errors.Add($"{prefix}{nameof(MaxLag)}: must be positive");
        }
        if (LagProbeInterval < TimeSpan.FromMilliseconds(10) || LagProbeInterval > TimeSpan.FromSeconds(10))
        {
            errors.Add($"{prefix}{nameof(LagProbeInterval)}: must be between 00:00:00.010 and 00:00:10");
        }
        if (RefusalsPerSecond < 0)
        {
            errors.Add($"{prefix}{nameof(RefusalsPerSecond)}: must not be negative (0: every refusal is dropped)");
        }
        if (MaxSources < 1)
        {
            errors.Add($"{prefix}{nameof(MaxSources)}: must be at least 1");
        }
        if (SourceIdleTime <= TimeSpan.Zero)
        {
            errors.Add($"{prefix}{nameof(SourceIdleTime)}: must be positive");
        }
        if (ReportInterval <= TimeSpan.Zero)
        {
            errors.Add($"{prefix}{nameof(ReportInterval)}: must be positive");
        }
        ValidateBudget(prefix + nameof(Default), Default, errors);
        ValidateBudget(prefix + nameof(Trunks), Trunks, errors);
        ValidateBudget(prefix + nameof(Peers), Peers, errors);
    }

    private static void ValidateBudget(string path, SipSourceBudgetOptions? budget, List<string> errors)
    {
        if (budget is null)
        {
            errors.Add($"{path}: missing");
            return;
        }
        if (!(budget.RequestsPerSecond >= 1) || double.IsInfinity(budget.RequestsPerSecond))
        {
            errors.Add($"{path}:{nameof(SipSourceBudgetOptions.RequestsPerSecond)}: must be at least 1 (was {budget.RequestsPerSecond})");
        }
        if (budget.Burst < 1)
        {
            errors.Add($"{path}:{nameof(SipSourceBudgetOptions.Burst)}: must be at least 1 (was {budget.Burst})");
        }
        if (budget.MaxTransactions < 1)
        {
            errors.Add($"{path}:{nameof(SipSourceBudgetOptions.MaxTransactions)}: must be at least 1 (was {budget.MaxTransactions})");
        }
    }
}

/// <summary>One kind of source's budget: a token bucket of requests and a cap on its server transactions in flight.</summary>
public sealed class SipSourceBudgetOptions
{
    /// <summary>Requests a second the bucket refills with (ACKs and retransmissions absorbed by a transaction are free).</summary>
    public double RequestsPerSecond { get; set; }

    /// <summary>Requests the bucket holds: how many may come at once after a quiet spell.</summary>
    public int Burst { get; set; }

    /// <summary>Server transactions of this source waiting for their final response (a ringing INVITE included) at most.</summary>
    public int MaxTransactions { get; set; }
}
