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

    /// <summary>Buckets of the storage histograms, in seconds: an fsync or a round trip is a fraction of a millisecond to tens of them.</summary>
    private static readonly IReadOnlyList<double> Buckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

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
