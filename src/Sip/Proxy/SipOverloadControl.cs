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
    /// Decisions are queueing: the fastest decision of the last interval took longer than
    /// <see cref="SipOverloadOptions.MaxDecisionDelay"/>, and more are pending than the decisions finished in that much
    /// time at the recent rate (Little's law), so a new one would wait past it.
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

    // The delay of decisions on requests outside a dialog (docs/architecture.md, "Overload control"): how many are
    // pending, and per interval of LagProbeInterval the shortest one and how many finished; at the end of each, the
    // shortest becomes _lastMinDelay and the count a rate. (In-dialog look-ups answer fast even when admissions queue.)
    private int _pendingOutside;
    private readonly long _maxDelayTicks;
    private readonly long _intervalTicks;
    private long _intervalStart;
    private long _intervalFinished;
    private long _intervalMinDelay = long.MaxValue;
    private long _lastMinDelay;
    private long _decisionsPerSecondBits;

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

    /// <summary>The shortest decision of the last whole interval (zero before any).</summary>
    public TimeSpan DecisionDelay => TimeSpan.FromSeconds((double)Volatile.Read(ref _lastMinDelay) / _time.TimestampFrequency);

    /// <summary>Decisions finished per second over the last whole interval.</summary>
    public double DecisionsPerSecond => BitConverter.Int64BitsToDouble(Volatile.Read(ref _decisionsPerSecondBits));

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
    /// interval's delay and rate.
    /// </summary>
    internal void ExitDecision(long started, bool outsideDialog = true)
    {
        Interlocked.Decrement(ref _pendingDecisions);
        if (!outsideDialog)
        {
            return;
        }
        Interlocked.Decrement(ref _pendingOutside);
        var now = _time.GetTimestamp();
        var delay = now - started;
        var min = Volatile.Read(ref _intervalMinDelay);
        while (delay < min)
        {
            var seen = Interlocked.CompareExchange(ref _intervalMinDelay, delay, min);
            if (seen == min)
            {
                break;
            }
            min = seen;
        }
        Interlocked.Increment(ref _intervalFinished);
        var start = Volatile.Read(ref _intervalStart);
        if (now - start >= _intervalTicks && Interlocked.CompareExchange(ref _intervalStart, now, start) == start)
        {
            // One thread closes the interval; a decision finishing meanwhile counts toward the next one.
            var finished = Interlocked.Exchange(ref _intervalFinished, 0);
            Volatile.Write(ref _lastMinDelay, Interlocked.Exchange(ref _intervalMinDelay, long.MaxValue));
            var rate = finished * (double)_time.TimestampFrequency / (now - start);
            Volatile.Write(ref _decisionsPerSecondBits, BitConverter.DoubleToInt64Bits(rate));
        }
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
        if (_maxDelayTicks > 0 && Volatile.Read(ref _lastMinDelay) >= _maxDelayTicks
            && Volatile.Read(ref _pendingOutside) >= Math.Max(Options.MinPendingDecisions, DecisionsPerSecond * _maxDelayTicks / _time.TimestampFrequency)
            && _time.GetTimestamp() - Volatile.Read(ref _intervalStart) < 2 * _intervalTicks)
        {
            // Even the fastest decision waited past the target (a standing queue, not a burst), and the decisions already
            // pending take that long to finish at the rate they finish: a new one would wait past it, and the later it
            // is decided the more likely its deadline passes first and its work is wasted. Shed until the queue is short.
            // (Only while the figures are fresh: an interval closed within the last two.)
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
