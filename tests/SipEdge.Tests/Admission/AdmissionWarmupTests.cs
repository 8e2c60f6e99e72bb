using CallState.Grains;
using CallState.SipEdge.Admission;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace CallState.SipEdge.Tests.Admission;

/// <summary>The edge's readiness: unready until an admission round trip succeeded, then ready whatever the grains do.</summary>
public sealed class AdmissionWarmupTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private readonly FakeTimeProvider _time = new();
    private readonly CancellationTokenSource _stop = new();

    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
    }

    [Fact]
    public async Task Unready_before_the_warm_up_and_ready_after_one_round_trip_that_admitted_the_call_and_ended_it()
    {
        var client = new WarmupClient(_time);
        using var warmup = Create(client);
        Assert.False(await IsHealthyAsync(warmup));

        await warmup.RunAsync(_stop.Token).WaitAsync(Bound);

        Assert.True(await IsHealthyAsync(warmup));
        Assert.Equal(["admit", "dialog", "end"], client.Calls.Select(c => c.Operation));
        Assert.Single(client.Calls.Select(c => c.CallKey).Distinct());
        Assert.StartsWith(AdmissionWarmup.CallKeyPrefix, client.Calls[0].CallKey, StringComparison.Ordinal);
        Assert.Empty(client.Calls[0].Limits);
    }

    [Fact]
    public async Task Unready_while_the_grains_throw_then_ready_once_they_answer_and_still_ready_when_they_fail_again()
    {
        var client = new WarmupClient(_time) { Failure = new TimeoutException("no gateway") };
        using var warmup = Create(client);
        var run = warmup.RunAsync(_stop.Token);

        // Several failed attempts, each followed by a wait on the clock: not ready meanwhile.
        await AdvanceUntilAsync(() => client.Count("admit") >= 4);
        Assert.False(run.IsCompleted);
        Assert.False(await IsHealthyAsync(warmup));

        client.Failure = null;
        await AdvanceUntilAsync(() => run.IsCompleted);
        await run;
        Assert.True(await IsHealthyAsync(warmup));
        Assert.Equal(1, client.Count("end"));

        // The silos go away later: readiness does not follow them (the edge answers 503 itself), and nothing asks again.
        client.Failure = new TimeoutException("silos gone");
        var calls = client.Calls.Count;
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(await IsHealthyAsync(warmup));
        Assert.Equal(calls, client.Calls.Count);
    }

    [Fact]
    public async Task A_refused_warm_up_admission_is_a_failed_attempt()
    {
        var client = new WarmupClient(_time) { Answer = AdmitResult.Invalid("no") };
        using var warmup = Create(client);
        var run = warmup.RunAsync(_stop.Token);

        await AdvanceUntilAsync(() => client.Count("admit") >= 2);
        Assert.False(await IsHealthyAsync(warmup));
        Assert.Equal(0, client.Count("end"));

        client.Answer = AdmitResult.Admitted();
        await AdvanceUntilAsync(() => run.IsCompleted);
        Assert.True(await IsHealthyAsync(warmup));
    }

    [Fact]
    public async Task Round_trips_slower_than_the_deadline_repeat_until_one_is_within_it()
    {
        // Cold paths: the first two admissions take 300 ms of the 200 ms deadline, the third 5 ms.
        var client = new WarmupClient(_time) { AdmitTakes = new Queue<TimeSpan>([TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(5)]) };
        using var warmup = Create(client);

        await warmup.RunAsync(_stop.Token).WaitAsync(Bound);

        Assert.True(await IsHealthyAsync(warmup));
        Assert.Equal(3, client.Count("admit"));
        Assert.Equal(3, client.Count("end"));
        Assert.Equal(3, client.Calls.Select(c => c.CallKey).Distinct().Count());
    }

    [Fact]
    public async Task Round_trips_that_stay_slow_make_the_edge_ready_after_the_set_number_of_rounds()
    {
        var client = new WarmupClient(_time) { AdmitTakes = new Queue<TimeSpan>(Enumerable.Repeat(TimeSpan.FromSeconds(1), 10)) };
        using var warmup = Create(client);

        await warmup.RunAsync(_stop.Token).WaitAsync(Bound);

        Assert.True(await IsHealthyAsync(warmup));
        Assert.Equal(AdmissionWarmup.Rounds, client.Count("admit"));
    }

    [Fact]
    public async Task Stopping_before_any_success_ends_the_warm_up_unready()
    {
        var client = new WarmupClient(_time) { Failure = new TimeoutException("no gateway") };
        using var warmup = Create(client);
        var run = warmup.RunAsync(_stop.Token);
        await AdvanceUntilAsync(() => client.Count("admit") >= 2);

        await _stop.CancelAsync();
        await run.WaitAsync(Bound);

        Assert.False(await IsHealthyAsync(warmup));
    }

    private AdmissionWarmup Create(IAdmissionClient client) =>
        new(client, Options.Create(new AdmissionOptions { Deadline = TimeSpan.FromMilliseconds(200) }), _time, NullLogger<AdmissionWarmup>.Instance);

    private static async Task<bool> IsHealthyAsync(AdmissionWarmup warmup) =>
        (await warmup.CheckHealthAsync(new HealthCheckContext())).Status == HealthStatus.Healthy;

    /// <summary>Moves the fake clock on in backoff-sized steps until <paramref name="condition"/> holds (bounded in real time).</summary>
    private async Task AdvanceUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the warm-up never got there");
            _time.Advance(AdmissionWarmup.FirstBackoff);
            await Task.Delay(1);
        }
    }

    private sealed record Call(string Operation, string CallKey, IReadOnlyList<LimitRequest> Limits);

    /// <summary>The grains as the warm-up sees them: answering, throwing, or taking fake time to admit.</summary>
    private sealed class WarmupClient(FakeTimeProvider time) : IAdmissionClient
    {
        private readonly Lock _gate = new();
        private readonly List<Call> _calls = [];

        public Exception? Failure { get; set; }

        public AdmitResult Answer { get; set; } = AdmitResult.Admitted();

        public Queue<TimeSpan> AdmitTakes { get; init; } = new();

        public IReadOnlyList<Call> Calls
        {
            get
            {
                lock (_gate)
                {
                    return [.. _calls];
                }
            }
        }

        public int Count(string operation) => Calls.Count(c => c.Operation == operation);

        public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CallLeg? leg, CancellationToken cancellationToken)
        {
            Record("admit", callKey, limits);
            if (Failure is { } failure)
            {
                return Task.FromException<AdmitResult>(failure);
            }

            if (AdmitTakes.TryDequeue(out var takes))
            {
                time.Advance(takes);
            }

            return Task.FromResult(Answer);
        }

        public Task<bool> ConfirmAsync(string callKey, CallAnswer? answer, CancellationToken cancellationToken) => Task.FromResult(true);

        public Task<bool> RenewAsync(string callKey, CancellationToken cancellationToken) => Task.FromResult(true);

        public Task EndAsync(string callKey, CancellationToken cancellationToken)
        {
            Record("end", callKey, []);
            return Task.CompletedTask;
        }

        public Task AbandonAsync(string callKey, string attempt, CancellationToken cancellationToken) => Task.CompletedTask;

        public Task<CallDialog?> GetDialogAsync(string callKey, CancellationToken cancellationToken)
        {
            Record("dialog", callKey, []);
            return Task.FromResult<CallDialog?>(null);
        }

        private void Record(string operation, string callKey, IReadOnlyList<LimitRequest> limits)
        {
            lock (_gate)
            {
                _calls.Add(new Call(operation, callKey, limits));
            }
        }
    }
}
