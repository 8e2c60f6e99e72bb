using Polly;
using Polly.Retry;

namespace CallState.SipEdge.Admission;

/// <summary>
/// How the edge retries a call's confirm, renew and end while the grains cannot be reached (docs/architecture.md,
/// "Leases that fit SIP"): exponential backoff with jitter (so the calls of a silo outage do not all come back in the
/// same instant), for as long as the caller's window allows; the window, not a count, bounds the attempts.
/// </summary>
internal static class LifecycleRetry
{
    /// <summary>The first retry's delay (before jitter).</summary>
    public static readonly TimeSpan FirstDelay = TimeSpan.FromMilliseconds(500);

    /// <summary>The longest delay between two attempts.</summary>
    public static readonly TimeSpan MaxDelay = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The longest an operation is retried: an end or a confirmed call's renewal (whose lease may be hours) is given up
    /// after it and left to the lease, so an outage cannot keep an unbounded number of calls waiting in memory.
    /// </summary>
    public static readonly TimeSpan LongestRetry = TimeSpan.FromMinutes(10);

    /// <summary>The operation (<c>confirm</c>, <c>renew</c>, <c>end</c>), for the retry's log line and counter.</summary>
    public static readonly ResiliencePropertyKey<string> Operation = new("callstate.operation");

    /// <summary>The call key, for the retry's log line.</summary>
    public static readonly ResiliencePropertyKey<string> CallKey = new("callstate.call_key");

    /// <summary>
    /// The pipeline: every failure is retried except cancellation (the window ended, or the call did) and an argument
    /// the grains refuse (a call key no call can have), which no retry would change.
    /// </summary>
    public static ResiliencePipeline Build(TimeProvider time, Action<ResilienceContext, Exception?, TimeSpan> onRetry) =>
        new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = static args => ValueTask.FromResult(args.Outcome.Exception is { } error && error is not (OperationCanceledException or ArgumentException)),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = FirstDelay,
                MaxDelay = MaxDelay,
                MaxRetryAttempts = int.MaxValue,
                OnRetry = args =>
                {
                    onRetry(args.Context, args.Outcome.Exception, args.RetryDelay);
                    return default;
                },
            })
            .Build();
}
