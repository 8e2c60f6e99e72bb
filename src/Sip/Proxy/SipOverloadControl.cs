using System.Net;

namespace CallState.Sip.Proxy;

/// <summary>Why a request was shed (the <c>reason</c> attribute of <c>callstate.sip.overload.shed</c>).</summary>
public enum SipShedReason : byte
{
    /// <summary>
    /// Server transactions in progress past <see cref="SipOverloadOptions.MaxTransactions"/> (unset: a quarter of
    /// <see cref="SipProxyOptions.MaxTransactions"/>), or open transactions of any state in the last 2% below that hard cap.
    /// </summary>
    Transactions = 0,

    /// <summary>Decisions awaiting the transaction user past <see cref="SipOverloadOptions.MaxPendingDecisions"/>.</summary>
    PendingDecisions = 1,

    /// <summary>Thread-pool lag past <see cref="SipOverloadOptions.MaxLag"/>.</summary>
    Lag = 2,

    /// <summary>The source is over its request rate.</summary>
    SourceRate = 3,

    /// <summary>The source has its maximum of server transactions in flight.</summary>
    SourceTransactions = 4,

    /// <summary>
    /// Decisions are queueing: as many are pending as the adaptive limit allows (<see cref="SipOverloadControl.DecisionLimit"/>,
    /// lowered while more than a tenth of the decisions take <see cref="SipOverloadOptions.MaxDecisionDelay"/> or longer),
    /// so a new one would wait past it.
    /// </summary>
    DecisionDelay = 5,
}

/// <summary>
/// What was shed for one reason since the last report: at most one a <see cref="SipOverloadOptions.ReportInterval"/> per
/// reason, so a flood makes a log line every few seconds, not one per message. <paramref name="Source"/> is the source of
/// the request that triggered the report.
/// </summary>
public readonly record struct SipShedReport(SipShedReason Reason, long Count, IPEndPoint? Source);

/// <summary>
/// The edge's overload state (docs/architecture.md, "Overload control"): the per-source budgets, the decisions pending
/// with the transaction user, the thread-pool lag, and the rate-limited reports of what was shed. One per proxy.
/// </summary>
public sealed class SipOverloadControl : IDisposable
{
    private static readonly string[] ReasonNames = ["transactions", "pending_decisions", "lag", "source_rate", "source_transactions", "decision_delay"];

    private readonly TimeProvider _time;
    private readonly Action<SipShedReport>? _report;
    private readonly LagProbe? _lag;
    private readonly long _reportTicks;
    private readonly long _maxLagTicks;
    private readonly long[] _sinceReport = new long[ReasonNames.Length];
    private readonly long[] _nextReport = new long[ReasonNames.Length];
    private readonly long[] _totals = new long[ReasonNames.Length];
    private readonly int _maxInProgress;
    private readonly int _maxOpen;
    private int _pendingDecisions;

    // The adaptive limit on decisions on requests outside a dialog (docs/architecture.md, "Overload control"): how many
    // are pending, and per interval of LagProbeInterval how many finished, how many of those took MaxDecisionDelay or
    // longer, and whether the limit shed a call; at the end of each the limit moves. (In-dialog look-ups answer fast even
    // when admissions queue, and are not limited by it.)
    private int _pendingOutside;
    private readonly long _maxDelayTicks;
    private readonly long _intervalTicks;
    private long _intervalStart;
    private long _intervalFinished;
    private long _intervalSlow;
    private int _intervalLimited;
    private int _decisionLimit;
    private long _droppedAt;

    /// <summary>
    /// <paramref name="classify"/> tells trunks' and trusted peers' addresses; <paramref name="report"/> hears what was
    /// shed (rate-limited; the host logs it). <paramref name="probeLag"/> false: no lag probe (tests set <see cref="LagProbe"/> values themselves).
    /// </summary>
    public SipOverloadControl(SipOverloadOptions options, TimeProvider? time = null, Func<IPAddress, SipSourceKind>? classify = null,
        Action<SipShedReport>? report = null, bool probeLag = true, int maxTransactions = 200_000)
    {
        ArgumentNullException.ThrowIfNull(options);
        Options = options;
        _maxInProgress = options.EffectiveMaxTransactions(maxTransactions);
        _maxOpen = SipOverloadOptions.ReservedFrom(maxTransactions);
        _time = time ?? TimeProvider.System;
        _report = report;
        Budgets = new SipSourceBudgets(options, _time, classify);
        _reportTicks = (long)(options.ReportInterval.TotalSeconds * _time.TimestampFrequency);
        _maxLagTicks = (long)(options.MaxLag.TotalSeconds * _time.TimestampFrequency);
        if (probeLag)
        {
            _lag = new LagProbe(_time, options.LagProbeInterval);
        }
        _maxDelayTicks = options.MaxDecisionDelay is { } delay ? (long)(delay.TotalSeconds * _time.TimestampFrequency) : 0;
        _intervalTicks = (long)(options.LagProbeInterval.TotalSeconds * _time.TimestampFrequency);
        _intervalStart = _time.GetTimestamp();
        _decisionLimit = options.MaxPendingDecisions;
    }

    public SipOverloadOptions Options { get; }

    public SipSourceBudgets Budgets { get; }

    /// <summary>Decisions (admissions, dialog look-ups) the proxy is waiting for now.</summary>
    public int PendingDecisions => Volatile.Read(ref _pendingDecisions);

    /// <summary>The last thread-pool lag the probe measured.</summary>
    public TimeSpan Lag => _lag is null ? _testLag : TimeSpan.FromSeconds((double)_lag.LagTicks / _time.TimestampFrequency);

    private TimeSpan _testLag;

    /// <summary>Sets the lag a control without a probe reports (tests).</summary>
    internal void SetLag(TimeSpan lag) => _testLag = lag;

    /// <summary>Requests shed for <paramref name="reason"/> since start.</summary>
    public long Shed(SipShedReason reason) => Interlocked.Read(ref _totals[(int)reason]);

    internal static string NameOf(SipShedReason reason) => ReasonNames[(int)reason];

    /// <summary>The budgets' clock now.</summary>
    internal long Now => _time.GetTimestamp();

    /// <summary>
    /// How many decisions on requests outside a dialog may be pending now (<see cref="SipShedReason.DecisionDelay"/>):
    /// between <see cref="SipOverloadOptions.MinPendingDecisions"/> and <see cref="SipOverloadOptions.MaxPendingDecisions"/>.
    /// </summary>
    public int DecisionLimit => Volatile.Read(ref _decisionLimit);

    /// <summary>
    /// A decision starts; <paramref name="outsideDialog"/>: on a request outside a dialog (a new call), whose delay is
    /// measured. Returns the timestamp to give <see cref="ExitDecision"/>.
    /// </summary>
    internal long EnterDecision(bool outsideDialog = true)
    {
        Interlocked.Increment(ref _pendingDecisions);
        if (outsideDialog)
        {
            Interlocked.Increment(ref _pendingOutside);
        }
        return _time.GetTimestamp();
    }

    /// <summary>
    /// The decision started at <paramref name="started"/> is done; one on a request outside a dialog counts toward the
    /// interval's figures, and the first to finish past the interval's end moves the limit.
    /// </summary>
    internal void ExitDecision(long started, bool outsideDialog = true)
    {
        Interlocked.Decrement(ref _pendingDecisions);
        if (!outsideDialog)
        {
            return;
        }
        Interlocked.Decrement(ref _pendingOutside);
        if (_maxDelayTicks == 0)
        {
            return;
        }
        var now = _time.GetTimestamp();
        // Only decisions let in under the limit as it is count: those from before its last drop were slow already.
        if (started >= Volatile.Read(ref _droppedAt))
        {
            if (now - started >= _maxDelayTicks)
            {
                Interlocked.Increment(ref _intervalSlow);
            }
            Interlocked.Increment(ref _intervalFinished);
        }
        var start = Volatile.Read(ref _intervalStart);
        if (now - start >= _intervalTicks && Interlocked.CompareExchange(ref _intervalStart, now, start) == start)
        {
            // One thread closes the interval; a decision finishing meanwhile counts toward the next one.
            MoveLimit(Interlocked.Exchange(ref _intervalFinished, 0), Interlocked.Exchange(ref _intervalSlow, 0),
                Interlocked.Exchange(ref _intervalLimited, 0) != 0, now);
        }
    }

    /// <summary>
    /// Moves the limit at the end of an interval in which <paramref name="finished"/> decisions let in since its last drop
    /// finished, <paramref name="slow"/> of them no sooner than <see cref="SipOverloadOptions.MaxDecisionDelay"/>: more
    /// than a tenth slow, and the decisions are queueing somewhere (the grains answer slower than calls come), so the
    /// limit drops to four fifths of what is pending (or of itself, if less); none slow while the limit shed calls, and it
    /// grows by a tenth. Past capacity
    /// the pending count settles where decisions finish within the target: the calls let in are decided in time, and
    /// the rest get 503 at once instead of all waiting and most missing their deadline after the grains did their work.
    /// </summary>
    private void MoveLimit(long finished, long slow, bool limited, long now)
    {
        var limit = Volatile.Read(ref _decisionLimit);
        if (finished == 0)
        {
            return;
        }
        if (slow * 10 > finished)
        {
            limit = (int)(Math.Min(limit, Volatile.Read(ref _pendingOutside)) * 0.8);
            Volatile.Write(ref _droppedAt, now);
        }
        else if (slow == 0 && limited)
        {
            limit += Math.Max(1, limit / 10);
        }
        else
        {
            return;
        }
        Volatile.Write(ref _decisionLimit, Math.Clamp(limit, Math.Min(Options.MinPendingDecisions, Options.MaxPendingDecisions), Options.MaxPendingDecisions));
    }

    /// <summary>
    /// The reason to shed a new INVITE (or other request outside a dialog) now, if any, given the server transactions
    /// in progress and the open transactions of every state.
    /// </summary>
    internal SipShedReason? Overloaded(int inProgress, int open)
    {
        if (inProgress >= _maxInProgress || open >= _maxOpen)
        {
            return SipShedReason.Transactions;
        }
        if (Volatile.Read(ref _pendingDecisions) >= Options.MaxPendingDecisions)
        {
            return SipShedReason.PendingDecisions;
        }
        if (_maxDelayTicks > 0 && Volatile.Read(ref _pendingOutside) >= Volatile.Read(ref _decisionLimit))
        {
            // As many decisions pending as finish within the target delay (MoveLimit): a new one would wait past it, and
            // the later it is decided the more likely its deadline passes first and its work is wasted.
            Volatile.Write(ref _intervalLimited, 1);
            return SipShedReason.DecisionDelay;
        }
        var lagTicks = _lag?.LagTicks ?? (long)(_testLag.TotalSeconds * _time.TimestampFrequency);
        return lagTicks >= _maxLagTicks ? SipShedReason.Lag : null;
    }

    /// <summary>Counts a shed request and reports the count since the last report once the report interval has passed.</summary>
    internal void Count(SipShedReason reason, in SipTarget source)
    {
        var r = (int)reason;
        Interlocked.Increment(ref _totals[r]);
        Interlocked.Increment(ref _sinceReport[r]);
        if (_report is null)
        {
            return;
        }
        var now = _time.GetTimestamp();
        var next = Interlocked.Read(ref _nextReport[r]);
        if (now < next || Interlocked.CompareExchange(ref _nextReport[r], now + _reportTicks, next) != next)
        {
            return;
        }
        var count = Interlocked.Exchange(ref _sinceReport[r], 0);
        try
        {
            _report(new SipShedReport(reason, count, source.EndPoint));
        }
#pragma warning disable CA1031 // The host's logger failing must not stop the receive loop.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    public void Dispose() => _lag?.Dispose();
}

/// <summary>
/// Measures how late the thread pool runs work: every interval it queues an item and records how long the item waited
/// (an item still waiting at the next tick counts as late up to then, so a stalled pool shows at once). The lag it
/// reports is the smaller of the last two samples: a lag must last a whole interval to count, so one collector pause or
/// a moment off the CPU does not shed calls.
/// </summary>
internal sealed class LagProbe : IDisposable
{
    private readonly TimeProvider _time;
    private readonly ITimer _timer;
    private readonly Action<object?> _run;
    private long _queuedAt;
    private int _queued;
    private long _ranLag;
    private long _sample;
    private long _previous;

    private readonly Action<Action<object?>> _dispatch;

    /// <summary><paramref name="dispatch"/> queues the probe's item (tests run it themselves); default: the thread pool.</summary>
    public LagProbe(TimeProvider time, TimeSpan interval, Action<Action<object?>>? dispatch = null)
    {
        _time = time;
        _dispatch = dispatch ?? (run => ThreadPool.UnsafeQueueUserWorkItem(run, null, preferLocal: false));
        _run = _ => Ran();
        _timer = time.CreateTimer(_ => Tick(), null, interval, interval);
    }

    public long LagTicks => Math.Min(Interlocked.Read(ref _sample), Interlocked.Read(ref _previous));

    private void Tick()
    {
        var now = _time.GetTimestamp();
        var stillQueued = Volatile.Read(ref _queued) == 1;
        var sample = stillQueued ? now - Interlocked.Read(ref _queuedAt) : Interlocked.Read(ref _ranLag);
        Interlocked.Exchange(ref _previous, Interlocked.Read(ref _sample));
        Interlocked.Exchange(ref _sample, sample);
        if (stillQueued)
        {
            return;
        }
        Interlocked.Exchange(ref _queuedAt, now);
        Volatile.Write(ref _queued, 1);
        _dispatch(_run);
    }

    private void Ran()
    {
        Interlocked.Exchange(ref _ranLag, _time.GetTimestamp() - Interlocked.Read(ref _queuedAt));
        Volatile.Write(ref _queued, 0);
    }

    public void Dispose() => _timer.Dispose();
}
