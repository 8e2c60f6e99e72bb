using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace CallState.Storage;

/// <summary>
/// The storage's meter and activity source, <c>CallState.Storage</c> (docs/operations.md, "Metrics"): group-commit
/// durations, batch sizes and failures, and a span per write from the grain call that asked for it to its commit.
/// One per process: a process runs one store (tests that run several see their sum).
/// </summary>
public static class StorageTelemetry
{
    public const string Name = "CallState.Storage";

    /// <summary>
    /// Buckets of the storage histograms, in seconds, from 0.05 ms to 1 s in steps of at most 25% (an fsync or a round
    /// trip is a fraction of a millisecond to tens of them; the benchmarks read p50 and p99 from these).
    /// </summary>
    private static readonly IReadOnlyList<double> Buckets =
        [
            0.00005, 0.00006, 0.00008, 0.0001, 0.000125, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004, 0.0005, 0.0006,
            0.0008, 0.001, 0.00125, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.0125, 0.015,
            0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1,
        ];

    internal static readonly ActivitySource Source = new(Name);

    private static readonly Meter Meter = new(Name);

    internal static readonly Histogram<double> CommitDuration = Meter.CreateHistogram<double>("callstate.storage.commit.duration", "s",
        "Time one batch of writes took the storage to commit (one transaction: statements, commit, fsync or round trip), by outcome.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = Buckets });

    internal static readonly Histogram<double> QueueDuration = Meter.CreateHistogram<double>("callstate.storage.queue.duration", "s",
        "Time a write waited in the group-commit queue before a batch took it.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = Buckets });

    internal static readonly Counter<long> Writes = Meter.CreateCounter<long>("callstate.storage.writes", "{write}",
        "Writes handed to the storage in batches, by outcome (committed, failed).");

    internal static readonly KeyValuePair<string, object?> Committed = new("callstate.outcome", "committed");

    internal static readonly KeyValuePair<string, object?> Failed = new("callstate.outcome", "failed");
}
