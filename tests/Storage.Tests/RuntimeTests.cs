using CallState.Grains;
using CallState.Storage;
using CallState.Storage.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Storage.Tests;

/// <summary>The grain runtime over real storage (a SQLite file, a PostgreSQL schema).</summary>
public sealed class RuntimeTests
{
    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    private static GrainRuntime NewRuntime(IStateStore storage, LimitsOptions limits, TimeProvider? time = null, GrainOptions? options = null) =>
        new(storage, options ?? new GrainOptions(), new ConfiguredLimits(limits), time ?? TimeProvider.System, NullLoggerFactory.Instance);

    private static LimitsOptions UserLimit(string user, int total) => new()
    {
        Users = { [user] = new LimitValues { Total = total } },
    };

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Sixty_four_parallel_callers_never_exceed_the_limit_and_counts_return_to_zero(string kind)
    {
        const int Limit = 5;
        await using var db = TestStorage.Create(kind);
        await using var runtime = NewRuntime(db.Open(), UserLimit("hot", Limit));
        await runtime.StartAsync(CancellationToken.None);

        var oracle = new HeldOracle(Limit);
        var admitted = 0;
        var rejected = 0;
        var workers = Enumerable.Range(0, 64).Select(worker => Task.Run(async () =>
        {
            for (var i = 0; i < 12; i++)
            {
                var callKey = $"w{worker}-c{i}";
                var result = await runtime.AdmitAsync(callKey, [new LimitRequest("user/hot", Direction.Outbound)], CancellationToken.None);
                if (result.Status == AdmitStatus.Admitted)
                {
                    Interlocked.Increment(ref admitted);
                    oracle.Admitted();
                    await Task.Yield();
                    oracle.Releasing();
                    Assert.True(await runtime.EndCallAsync(callKey, CancellationToken.None));
                }
                else
                {
                    Assert.Equal(RejectReason.UserTotalLimitReached, result.Reason);
                    Assert.Equal("user/hot", result.LimitKey);
                    Interlocked.Increment(ref rejected);
                }
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.True(oracle.MaxSeen <= Limit, $"oracle saw {oracle.MaxSeen} calls held at once, limit {Limit}");
        Assert.True(admitted > 0);
        Assert.Equal(64 * 12, admitted + rejected);
        var snapshot = await runtime.GetLimitAsync(LimitKey.User("hot"), CancellationToken.None);
        Assert.Equal(0, snapshot.Total);
        Assert.Empty(snapshot.Calls);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Acknowledged_reservations_survive_a_new_runtime_on_the_same_storage(string kind)
    {
        await using var db = TestStorage.Create(kind);
        var limits = new LimitsOptions { Trunks = { ["carrier"] = new LimitValues { Inbound = 3, Outbound = 2, Total = 4 } } };
        await using (var first = NewRuntime(db.Open(), limits))
        {
            await first.StartAsync(CancellationToken.None);
            for (var i = 0; i < 3; i++)
            {
                var r = await first.AdmitAsync($"in-{i}", [new LimitRequest("trunk/carrier", Direction.Inbound), new LimitRequest("user/bob", Direction.Inbound)], CancellationToken.None);
                Assert.Equal(AdmitStatus.Admitted, r.Status);
            }
        }

        await using var second = NewRuntime(db.Open(), limits);
        await second.StartAsync(CancellationToken.None);
        var trunk = await second.GetLimitAsync(LimitKey.Trunk("carrier"), CancellationToken.None);
        Assert.Equal(3, trunk.Inbound);
        Assert.Equal(["in-0", "in-1", "in-2"], trunk.Calls.Select(c => c.CallKey));
        var fourth = await second.AdmitAsync("in-3", [new LimitRequest("trunk/carrier", Direction.Inbound)], CancellationToken.None);
        Assert.Equal(AdmitStatus.Rejected, fourth.Status);
        Assert.Equal(RejectReason.TrunkInLimitReached, fourth.Reason);

        // Ending through the new runtime releases what the old one admitted.
        Assert.True(await second.EndCallAsync("in-0", CancellationToken.None));
        Assert.Equal(2, (await second.GetLimitAsync(LimitKey.Trunk("carrier"), CancellationToken.None)).Inbound);
        Assert.Equal(2, (await second.GetLimitAsync(LimitKey.User("bob"), CancellationToken.None)).Inbound);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_call_cut_mid_admission_is_released_when_its_early_lease_ends_after_a_restart(string kind)
    {
        await using var db = TestStorage.Create(kind);

        // What a process killed between the first and the second reservation leaves in storage: the call's record
        // (Admitting, due at its early lease's end, which passed while nothing ran) and one limit holding the call.
        var now = DateTimeOffset.UtcNow;
        await using (var storage = db.Open())
        {
            await storage.InitializeAsync(CancellationToken.None);
            var call = new CallGrainState
            {
                Phase = CallPhase.Admitting,
                Limits = [new CallLimit { Key = "trunk/carrier", Direction = Direction.Inbound }, new CallLimit { Key = "user/alice", Direction = Direction.Inbound }],
                StartedMs = now.AddMinutes(-4).ToUnixTimeMilliseconds(),
                LeaseEndMs = now.AddMinutes(-1).ToUnixTimeMilliseconds(),
            };
            var held = new HeldCall { Direction = Direction.Inbound, Phase = HoldPhase.Early, SinceMs = now.ToUnixTimeMilliseconds(), LeaseEndMs = now.AddMinutes(3).ToUnixTimeMilliseconds() };
            Assert.True(await storage.WriteAsync(new StateWrite(new StateId("call", "cut-1"), 0, StateSerializer.Serialize(call), now), CancellationToken.None));
            Assert.True(await storage.WriteAsync(
                new StateWrite(
                    new StateId("limit", "trunk/carrier"),
                    0,
                    StateSerializer.SerializeLimitRow(new LimitGrainState()),
                    now.AddMinutes(3),
                    [new StateItemWrite("cut-1", StateSerializer.SerializeHeldCall(held))]),
                CancellationToken.None));
        }

        await using var runtime = NewRuntime(db.Open(), new LimitsOptions());
        await runtime.StartAsync(CancellationToken.None);

        // The persisted due time wakes the call grain, which releases every limit it may hold.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        LimitSnapshot trunkNow;
        do
        {
            await Task.Delay(50);
            trunkNow = await runtime.GetLimitAsync(LimitKey.Trunk("carrier"), CancellationToken.None);
        }
        while (trunkNow.Total > 0 && DateTime.UtcNow < deadline);

        Assert.Equal(0, trunkNow.Total);
        Assert.Equal(0, (await runtime.GetLimitAsync(LimitKey.User("alice"), CancellationToken.None)).Total);
        var snapshot = await runtime.GetCallAsync("cut-1", CancellationToken.None);
        Assert.Equal(CallPhase.Ended, snapshot.Phase);
    }

    [Fact]
    public async Task Two_runtimes_on_one_postgres_never_admit_past_the_limit()
    {
        const int Limit = 4;
        await using var db = TestStorage.Postgres();
        var limits = UserLimit("shared", Limit);
        await using var a = NewRuntime(db.Open(), limits);
        await using var b = NewRuntime(db.Open(), limits);
        await a.StartAsync(CancellationToken.None);
        await b.StartAsync(CancellationToken.None);

        // Both runtimes activate the same key: each believes it owns it.
        await a.GetLimitAsync(LimitKey.User("shared"), CancellationToken.None);
        await b.GetLimitAsync(LimitKey.User("shared"), CancellationToken.None);

        var oracle = new HeldOracle(Limit);
        var admitted = 0;
        var workers = Enumerable.Range(0, 32).Select(worker => Task.Run(async () =>
        {
            var runtime = worker % 2 == 0 ? a : b;
            for (var i = 0; i < 10; i++)
            {
                var callKey = $"s{worker}-{i}";
                AdmitResult result;
                try
                {
                    result = await runtime.AdmitAsync(callKey, [new LimitRequest("user/shared", Direction.Inbound)], CancellationToken.None);
                }
                catch (StaleGrainStateException)
                {
                    // Lost too many compare-and-set rounds in a row: not admitted, and undone by recovery.
                    continue;
                }

                if (result.Status == AdmitStatus.Admitted)
                {
                    Interlocked.Increment(ref admitted);
                    oracle.Admitted();
                    await Task.Delay(2);
                    oracle.Releasing();
                    await runtime.EndCallAsync(callKey, CancellationToken.None);
                }
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.True(oracle.MaxSeen <= Limit, $"oracle saw {oracle.MaxSeen} calls held at once, limit {Limit}");
        Assert.True(admitted > 0);

        // Whatever the interleaving, every slot comes back.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        int held;
        do
        {
            await using var fresh = NewRuntime(db.Open(), limits);
            await fresh.StartAsync(CancellationToken.None);
            held = (await fresh.GetLimitAsync(LimitKey.User("shared"), CancellationToken.None)).Total;
            if (held > 0)
            {
                await Task.Delay(100);
            }
        }
        while (held > 0 && DateTime.UtcNow < deadline);

        Assert.Equal(0, held);
    }

    [Fact]
    public async Task An_early_lease_that_runs_out_is_reclaimed_by_the_timer()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var db = TestStorage.Sqlite();
        var options = new GrainOptions { Leases = new LeaseOptions { Early = TimeSpan.FromSeconds(180) } };
        await using var runtime = NewRuntime(db.Open(), UserLimit("carol", 1), time, options);
        await runtime.StartAsync(CancellationToken.None);

        Assert.Equal(AdmitStatus.Admitted, (await runtime.AdmitAsync("early-1", [new LimitRequest("user/carol", Direction.Outbound)], CancellationToken.None)).Status);
        Assert.Equal(AdmitStatus.Rejected, (await runtime.AdmitAsync("early-2", [new LimitRequest("user/carol", Direction.Outbound)], CancellationToken.None)).Status);

        time.Advance(TimeSpan.FromSeconds(181));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        LimitSnapshot snapshot;
        do
        {
            await Task.Delay(20);
            snapshot = await runtime.GetLimitAsync(LimitKey.User("carol"), CancellationToken.None);
        }
        while (snapshot.Total > 0 && DateTime.UtcNow < deadline);

        Assert.Equal(0, snapshot.Total);
        Assert.Equal(1, snapshot.Reclaimed);
        Assert.Equal(AdmitStatus.Admitted, (await runtime.AdmitAsync("early-3", [new LimitRequest("user/carol", Direction.Outbound)], CancellationToken.None)).Status);
    }

    [Fact]
    public async Task A_confirmed_call_keeps_its_slot_past_the_early_lease()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var db = TestStorage.Sqlite();
        await using var runtime = NewRuntime(db.Open(), UserLimit("dave", 1), time);
        await runtime.StartAsync(CancellationToken.None);

        Assert.Equal(AdmitStatus.Admitted, (await runtime.AdmitAsync("conf-1", [new LimitRequest("user/dave", Direction.Inbound)], CancellationToken.None)).Status);
        Assert.True(await runtime.ConfirmCallAsync("conf-1", CancellationToken.None));
        time.Advance(TimeSpan.FromMinutes(30));
        await Task.Delay(100);
        var snapshot = await runtime.GetLimitAsync(LimitKey.User("dave"), CancellationToken.None);
        Assert.Equal(1, snapshot.Total);
        Assert.Equal(HoldPhase.Confirmed, Assert.Single(snapshot.Calls).Phase);
        Assert.True(await runtime.EndCallAsync("conf-1", CancellationToken.None));
        Assert.False(await runtime.EndCallAsync("conf-1", CancellationToken.None));
        Assert.Equal(0, (await runtime.GetLimitAsync(LimitKey.User("dave"), CancellationToken.None)).Total);
    }

    [Fact]
    public async Task An_unknown_limit_prefix_is_an_error_result_and_the_runtime_keeps_serving()
    {
        await using var db = TestStorage.Sqlite();
        await using var runtime = NewRuntime(db.Open(), new LimitsOptions());
        await runtime.StartAsync(CancellationToken.None);

        var bad = await runtime.AdmitAsync("bad-1", [new LimitRequest("group/sales", Direction.Inbound)], CancellationToken.None);
        Assert.Equal(AdmitStatus.Invalid, bad.Status);
        Assert.Contains("unknown limit key prefix 'group'", bad.Error, StringComparison.Ordinal);
        Assert.Equal(AdmitStatus.Invalid, (await runtime.AdmitAsync("", [new LimitRequest("user/a", Direction.Inbound)], CancellationToken.None)).Status);

        var good = await runtime.AdmitAsync("good-1", [new LimitRequest("user/erin", Direction.Inbound)], CancellationToken.None);
        Assert.Equal(AdmitStatus.Admitted, good.Status);
    }

    [Fact]
    public async Task A_settled_call_leaves_memory_at_once_and_its_record_still_answers()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var db = TestStorage.Sqlite();
        await using var runtime = NewRuntime(db.Open(), UserLimit("gina", 1), time);
        await runtime.StartAsync(CancellationToken.None);
        var gina = new LimitRequest("user/gina", Direction.Outbound);

        // In progress: the call's activation stays (with the limit's).
        Assert.Equal(AdmitStatus.Admitted, (await runtime.AdmitAsync("settle-1", [gina], CancellationToken.None)).Status);
        Assert.True(await runtime.ConfirmCallAsync("settle-1", CancellationToken.None));
        Assert.Equal(2, runtime.ActivationCount);

        // Refused and ended calls are durable, so their activations go without waiting for the idle timeout; the
        // clock never moves here.
        var refused = await runtime.AdmitAsync("settle-2", [gina], CancellationToken.None);
        Assert.Equal(AdmitStatus.Rejected, refused.Status);
        Assert.True(await runtime.EndCallAsync("settle-1", CancellationToken.None));
        await WaitForActivationsAsync(runtime, 1);

        // Loaded again from storage, they give the same answers (and leave again).
        var again = await runtime.AdmitAsync("settle-2", [gina], CancellationToken.None);
        Assert.Equal((AdmitStatus.Rejected, refused.Reason), (again.Status, again.Reason));
        Assert.False(await runtime.EndCallAsync("settle-1", CancellationToken.None));
        Assert.Equal(CallPhase.Ended, (await runtime.GetCallAsync("settle-1", CancellationToken.None)).Phase);
        Assert.False(await runtime.ConfirmCallAsync("never-seen", CancellationToken.None));
        await WaitForActivationsAsync(runtime, 1);
        Assert.Equal(0, (await runtime.GetLimitAsync(LimitKey.User("gina"), CancellationToken.None)).Total);
    }

    /// <summary>An activation closes itself just after its turn completed its caller: waits (bounded) for that.</summary>
    private static async Task WaitForActivationsAsync(GrainRuntime runtime, int expected)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (runtime.ActivationCount != expected && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5);
        }

        Assert.Equal(expected, runtime.ActivationCount);
    }

    [Fact]
    public async Task Idle_activations_are_deactivated_and_state_comes_back_from_storage()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var db = TestStorage.Sqlite();
        var options = new GrainOptions { IdleTimeout = TimeSpan.FromMinutes(1) };
        await using var runtime = NewRuntime(db.Open(), UserLimit("frank", 2), time, options);
        await runtime.StartAsync(CancellationToken.None);

        Assert.Equal(AdmitStatus.Admitted, (await runtime.AdmitAsync("idle-1", [new LimitRequest("user/frank", Direction.Inbound)], CancellationToken.None)).Status);
        Assert.True(await runtime.ConfirmCallAsync("idle-1", CancellationToken.None));
        Assert.True(runtime.ActivationCount >= 2);

        // The admission's own wake-up (due at once) runs first; an activation with work queued or running is not
        // idle, so the clock moves on a minute at a time (each a sweep) until both are gone. 200 minutes stay far
        // inside the confirmed lease.
        time.Advance(TimeSpan.FromSeconds(1));
        for (var minute = 0; minute < 200 && runtime.ActivationCount > 0; minute++)
        {
            time.Advance(TimeSpan.FromMinutes(1));
            await Task.Delay(minute < 3 ? 0 : 50);
        }

        Assert.Equal(0, runtime.ActivationCount);

        var snapshot = await runtime.GetLimitAsync(LimitKey.User("frank"), CancellationToken.None);
        Assert.Equal(1, snapshot.Inbound);
        Assert.True(await runtime.EndCallAsync("idle-1", CancellationToken.None));
    }

    [Fact]
    public async Task Run_time_limits_are_persisted_and_override_configuration()
    {
        await using var db = TestStorage.Sqlite();
        await using (var runtime = NewRuntime(db.Open(), UserLimit("gina", 5)))
        {
            await runtime.StartAsync(CancellationToken.None);
            var snapshot = await runtime.SetLimitsAsync(LimitKey.User("gina"), new LimitSettings(Total: 1), CancellationToken.None);
            Assert.Equal(1, snapshot.Limits.Total);
            await Assert.ThrowsAsync<ArgumentException>(() => runtime.SetLimitsAsync(LimitKey.User("gina"), new LimitSettings(Total: 1, Outbound: 2), CancellationToken.None));
        }

        await using var restarted = NewRuntime(db.Open(), UserLimit("gina", 5));
        await restarted.StartAsync(CancellationToken.None);
        Assert.Equal(AdmitStatus.Admitted, (await restarted.AdmitAsync("g1", [new LimitRequest("user/gina", Direction.Inbound)], CancellationToken.None)).Status);
        var second = await restarted.AdmitAsync("g2", [new LimitRequest("user/gina", Direction.Inbound)], CancellationToken.None);
        Assert.Equal(RejectReason.UserTotalLimitReached, second.Reason);
        Assert.Equal(1, second.Limit);

        var listed = await restarted.ListLimitsAsync(LimitKind.User, CancellationToken.None);
        Assert.Contains(listed, l => l.Key == "user/gina" && l.Total == 1 && l.Limits.Total == 1);
    }
}

/// <summary>
/// An external count of calls held: incremented after an admission is acknowledged, decremented
/// before the release is sent, so it never over-counts what the limit holds.
/// </summary>
internal sealed class HeldOracle(int limit)
{
    private int _held;
    private int _max;

    public int MaxSeen => Volatile.Read(ref _max);

    public void Admitted()
    {
        var held = Interlocked.Increment(ref _held);
        int max;
        while (held > (max = Volatile.Read(ref _max)) && Interlocked.CompareExchange(ref _max, held, max) != max)
        {
        }

        Assert.True(held <= limit, $"{held} calls held at once, limit {limit}");
    }

    public void Releasing() => Interlocked.Decrement(ref _held);
}
