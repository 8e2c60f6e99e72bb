using System.Diagnostics.Metrics;

namespace CallState.Grains;

/// <summary>
/// Metrics of the grain runtime (meter <c>CallState.Silo</c>). No limit key ever becomes an attribute:
/// keys are unbounded; they belong in logs and the admin API.
/// </summary>
public sealed class GrainMetrics : IDisposable
{
    public const string MeterName = "CallState.Silo";

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly Counter<long> _admissions;
    private readonly Histogram<double> _admissionDuration;
    private readonly Counter<long> _reclaimed;
    private readonly Counter<long> _staleWrites;
    private readonly Counter<long> _idleRowsDeleted;

    /// <summary>Creates the instruments from <paramref name="meterFactory"/>, or on a private meter when null.</summary>
    public GrainMetrics(IMeterFactory? meterFactory)
    {
        _ownsMeter = meterFactory is null;
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _admissions = _meter.CreateCounter<long>("callstate.admissions", "{call}", "Admission decisions by result and reason.");
        _admissionDuration = _meter.CreateHistogram<double>(
            "callstate.admission.duration",
            "s",
            "Time from admission request to durable answer.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] });
        _reclaimed = _meter.CreateCounter<long>("callstate.slots.reclaimed", "{slot}", "Slots released because their lease ran out.");
        _staleWrites = _meter.CreateCounter<long>("callstate.storage.stale_writes", "{write}", "Compare-and-set writes lost to another activation of the same grain (a duplicate or stale activation), by grain type.");
        _idleRowsDeleted = _meter.CreateCounter<long>("callstate.limits.idle_rows_deleted", "{row}", "Stored rows of limits deleted because they held nothing and had nothing of their own to keep.");
    }

    internal void Admission(AdmitStatus status, RejectReason reason, TimeSpan duration)
    {
        var result = new KeyValuePair<string, object?>("callstate.result", status switch
        {
            AdmitStatus.Admitted => "admitted",
            AdmitStatus.Rejected => "rejected",
            AdmitStatus.Duplicate => "duplicate",
            _ => "invalid",
        });
        _admissions.Add(1, result, new KeyValuePair<string, object?>("callstate.reason", reason.ToCode()));
        if (status != AdmitStatus.Invalid)
        {
            _admissionDuration.Record(duration.TotalSeconds, result);
        }
    }

    internal void Reclaimed(LimitKind kind, int count) =>
        _reclaimed.Add(count, new KeyValuePair<string, object?>("callstate.limit.kind", LimitKey.Prefix(kind)));

    internal void StaleWrite(string grainType) => _staleWrites.Add(1, new KeyValuePair<string, object?>("callstate.grain.type", grainType));

    internal void IdleRowDeleted() => _idleRowsDeleted.Add(1);

    public void Dispose()
    {
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }
}
