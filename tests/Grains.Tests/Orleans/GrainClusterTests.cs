using System.Diagnostics.Metrics;
using CallState.Grains.Tests.Infrastructure;
using CallState.Storage.Tests.Infrastructure;

namespace CallState.Grains.Tests.Orleans;

/// <summary>The limit and call-shard grains on real Orleans silos (TestingHost) over real storage (a SQLite file, a PostgreSQL schema).</summary>
public sealed class GrainClusterTests
{
    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    private static Dictionary<string, string?> Settings(params (string Key, string Value)[] settings) =>
        settings.ToDictionary(s => s.Key, s => (string?)s.Value);

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Sixty_four_parallel_callers_on_one_key_never_exceed_the_limit_and_counts_return_to_zero(string kind)
    {
        const int Limit = 5;
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(("CallState:Limits:Users:hot:Total", "5")));

        var oracle = new LimitOracle(Limit);
        var admitted = 0;
        var rejected = 0;
        var workers = Enumerable.Range(0, 64).Select(worker => Task.Run(async () =>
        {
            for (var i = 0; i < 12; i++)
            {
                var callKey = $"w{worker}-c{i}";
                var result = await cluster.Call(callKey).AdmitAsync([new LimitRequest("user/hot", Direction.Outbound)]);
                if (result.Status == AdmitStatus.Admitted)
                {
                    Interlocked.Increment(ref admitted);
                    oracle.Admitted();
                    await Task.Yield();
                    oracle.Releasing();
                    Assert.True(await cluster.Call(callKey).EndAsync());
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

        Assert.True(admitted > 0);
        Assert.True(rejected > 0, "64 callers on a limit of 5 must see refusals");
        Assert.Equal(64 * 12, admitted + rejected);
        var snapshot = await cluster.Limit("user/hot").GetSnapshotAsync();
        Assert.Equal(0, snapshot.Total);
        Assert.Empty(snapshot.Calls);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Calls_racing_for_the_last_slots_of_two_shared_limits_admit_exactly_the_limit(string kind)
    {
        // One caller (limit 2) places many calls at once to one callee (limit 2): reserving in parallel, two calls can
        // each take one of the last slots and refuse each other; the retry in key order admits exactly two.
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(
            ("CallState:Limits:Users:caller:Total", "2"),
            ("CallState:Limits:Users:callee:Total", "2")));

        for (var round = 0; round < 5; round++)
        {
            var keys = Enumerable.Range(0, 6).Select(i => $"r{round}-c{i}").ToArray();
            var results = await Task.WhenAll(keys.Select(key => Task.Run(() => cluster.Call(key).AdmitAsync(
                [new LimitRequest("user/caller", Direction.Outbound), new LimitRequest("user/callee", Direction.Inbound)]))));

            Assert.Equal(2, results.Count(r => r.Status == AdmitStatus.Admitted));
            Assert.Equal(2, (await cluster.Limit("user/caller").GetSnapshotAsync()).Total);
            Assert.Equal(2, (await cluster.Limit("user/callee").GetSnapshotAsync()).Total);
            foreach (var key in keys)
            {
                await cluster.Call(key).EndAsync();
            }

            Assert.Equal(0, (await cluster.Limit("user/caller").GetSnapshotAsync()).Total);
            Assert.Equal(0, (await cluster.Limit("user/callee").GetSnapshotAsync()).Total);
        }
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Acknowledged_reservations_survive_a_new_cluster_on_the_same_storage(string kind)
    {
        await using var db = TestStorage.Create(kind);
        var limits = Settings(("CallState:Limits:Trunks:carrier:Inbound", "3"), ("CallState:Limits:Trunks:carrier:Total", "4"));
        await using (var first = await GrainTestCluster.StartAsync(db, limits))
        {
            for (var i = 0; i < 3; i++)
            {
                var r = await first.Call($"in-{i}").AdmitAsync([new LimitRequest("trunk/carrier", Direction.Inbound), new LimitRequest("user/bob", Direction.Inbound)]);
                Assert.Equal(AdmitStatus.Admitted, r.Status);
            }
        }

        await using var second = await GrainTestCluster.StartAsync(db, limits);
        var trunk = await second.Limit("trunk/carrier").GetSnapshotAsync();
        Assert.Equal(3, trunk.Inbound);
        Assert.Equal(["in-0", "in-1", "in-2"], trunk.Calls.Select(c => c.CallKey));
        var fourth = await second.Call("in-3").AdmitAsync([new LimitRequest("trunk/carrier", Direction.Inbound)]);
        Assert.Equal(AdmitStatus.Rejected, fourth.Status);
        Assert.Equal(RejectReason.TrunkInLimitReached, fourth.Reason);

        // Ending through the new cluster releases what the old one admitted.
        Assert.True(await second.Call("in-0").EndAsync());
        Assert.Equal(2, (await second.Limit("trunk/carrier").GetSnapshotAsync()).Inbound);
        Assert.Equal(2, (await second.Limit("user/bob").GetSnapshotAsync()).Inbound);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task An_admission_cut_by_a_crash_is_finished_by_the_due_scan_of_a_new_cluster(string kind)
    {
        // What a silo killed between the first and the second reservation leaves in storage: the call's record
        // (Admitting, due for recovery, its early lease still running) and one of its two limits holding the call.
        await using var db = TestStorage.Create(kind);
        var now = DateTimeOffset.UtcNow;
        await WriteCutAdmissionAsync(db, "cut-1", now, leaseEnd: now.AddMinutes(2));

        // The silo's first due scan runs at start; one more here in case the test got there first.
        await using var cluster = await GrainTestCluster.StartAsync(db);
        await cluster.ScanAsync();

        // No traffic to these keys: the scan alone finished it, holding both limits, admitted.
        Assert.Equal(CallPhase.Admitted, (await cluster.Call("cut-1").GetSnapshotAsync()).Phase);
        Assert.Equal(1, (await cluster.Limit("trunk/carrier").GetSnapshotAsync()).Total);
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task An_admission_cut_by_a_crash_whose_lease_ended_is_undone_by_the_due_scan(string kind)
    {
        await using var db = TestStorage.Create(kind);
        var now = DateTimeOffset.UtcNow;
        await WriteCutAdmissionAsync(db, "cut-2", now, leaseEnd: now.AddMinutes(-1));

        await using var cluster = await GrainTestCluster.StartAsync(db);
        await cluster.ScanAsync();

        Assert.Equal(0, (await cluster.Limit("trunk/carrier").GetSnapshotAsync()).Total);
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        // Ended: its record is deleted, so a later look finds no call.
        await using (var store = db.Open())
        {
            await store.InitializeAsync(CancellationToken.None);
            Assert.Null(await store.ReadAsync(new StateId(GrainTypes.Call, "cut-2"), CancellationToken.None));
        }
    }

    [Fact]
    public async Task An_early_lease_that_runs_out_is_reclaimed_by_the_due_scan_without_traffic()
    {
        await using var db = TestStorage.Sqlite();
        // carol has limits of her own, so her row stays (with its reclaimed count) once it holds nothing.
        var settings = Settings(("CallState:Grains:Leases:Early", "00:00:01"), ("CallState:Limits:Users:carol:Total", "5"));
        await using (var first = await GrainTestCluster.StartAsync(db, settings))
        {
            Assert.Equal(AdmitStatus.Admitted, (await first.Call("silent").AdmitAsync([new LimitRequest("user/carol", Direction.Outbound)])).Status);
        }

        // Every silo gone; a new one starts after the lease ended and nothing asks for this key.
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        await using var second = await GrainTestCluster.StartAsync(db, settings);
        await second.ScanAsync();

        // The limit reclaims the slot at its lease end, or the call record (due a second later) ends the call first when
        // both are due by the time the scan runs (the real clock decides which): either way the slot is free, once.
        var stored = (await second.Access().ListLimitsAsync(LimitKind.User, CancellationToken.None)).Single(l => l.Key == "user/carol");
        Assert.Equal(0, stored.Total);
        Assert.InRange(stored.Reclaimed, 0, 1);
    }

    [Fact]
    public async Task A_confirmed_call_keeps_its_slot_past_the_early_lease()
    {
        await using var db = TestStorage.Sqlite();
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(("CallState:Grains:Leases:Early", "00:00:01")));
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("answered").AdmitAsync([new LimitRequest("user/dave", Direction.Outbound)])).Status);
        Assert.True(await cluster.Call("answered").ConfirmAsync());

        await Task.Delay(TimeSpan.FromSeconds(1.5));
        await cluster.ScanAsync();

        Assert.Equal(1, (await cluster.Limit("user/dave").GetSnapshotAsync()).Total);
        Assert.Equal(CallPhase.Admitted, (await cluster.Call("answered").GetSnapshotAsync()).Phase);
    }

    [Fact]
    public async Task An_unknown_limit_prefix_is_an_invalid_result_and_the_grains_keep_serving()
    {
        await using var db = TestStorage.Sqlite();
        await using var cluster = await GrainTestCluster.StartAsync(db);

        var invalid = await cluster.Call("bad").AdmitAsync([new LimitRequest("group/x", Direction.Inbound)]);
        Assert.Equal(AdmitStatus.Invalid, invalid.Status);
        Assert.Contains("group/x", invalid.Error, StringComparison.Ordinal);
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("good").AdmitAsync([new LimitRequest("user/erin", Direction.Inbound)])).Status);
    }

    [Fact]
    public async Task Run_time_limits_are_persisted_and_override_configuration()
    {
        await using var db = TestStorage.Sqlite();
        var settings = Settings(("CallState:Limits:Users:frank:Total", "5"));
        await using (var first = await GrainTestCluster.StartAsync(db, settings))
        {
            var set = await first.Access().SetLimitsAsync(LimitKey.User("frank"), new LimitSettings(Total: 1));
            Assert.Equal(1, set.Limits.Total);
            await Assert.ThrowsAsync<ArgumentException>(() => first.Access().SetLimitsAsync(LimitKey.PerKey("k"), new LimitSettings(Inbound: 1)));
        }

        await using var second = await GrainTestCluster.StartAsync(db, settings);
        Assert.Equal(AdmitStatus.Admitted, (await second.Call("f1").AdmitAsync([new LimitRequest("user/frank", Direction.Outbound)])).Status);
        var refused = await second.Call("f2").AdmitAsync([new LimitRequest("user/frank", Direction.Outbound)]);
        Assert.Equal(RejectReason.UserTotalLimitReached, refused.Reason);
        Assert.Equal(1, refused.Limit);

        // Clearing the override brings back the configured limit.
        Assert.Equal(5, (await second.Access().SetLimitsAsync(LimitKey.User("frank"), null)).Limits.Total);
        Assert.Equal(AdmitStatus.Admitted, (await second.Call("f3").AdmitAsync([new LimitRequest("user/frank", Direction.Outbound)])).Status);
    }

    [Fact]
    public async Task Two_silos_share_the_limits_and_every_slot_comes_back()
    {
        const int Limit = 3;
        await using var db = TestStorage.Sqlite();
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(("CallState:Limits:Users:pair:Total", "3")), silos: 2);

        var oracle = new LimitOracle(Limit);
        var workers = Enumerable.Range(0, 16).Select(worker => Task.Run(async () =>
        {
            for (var i = 0; i < 10; i++)
            {
                var callKey = $"p{worker}-{i}";
                var result = await cluster.Call(callKey).AdmitAsync([new LimitRequest("user/pair", Direction.Inbound), new LimitRequest($"user/u{worker}", Direction.Outbound)]);
                if (result.Status == AdmitStatus.Admitted)
                {
                    oracle.Admitted();
                    await Task.Delay(1);
                    oracle.Releasing();
                    await cluster.Call(callKey).EndAsync();
                }
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.True(oracle.MaxSeen is > 0 and <= Limit);
        Assert.Equal(0, (await cluster.Limit("user/pair").GetSnapshotAsync()).Total);
    }

    [Fact]
    public async Task Two_clusters_on_one_storage_never_admit_past_the_limit_and_the_losing_writes_are_counted()
    {
        // Two clusters with different ClusterIds on the same rows: each activates its own copy of the limit, as two
        // silos do for a moment during a membership change. Only compare-and-set keeps the limit.
        const int Limit = 4;
        await using var db = TestStorage.Postgres();
        var settings = Settings(("CallState:Limits:Users:shared:Total", "4"));
        await using var a = await GrainTestCluster.StartAsync(db, settings, clusterId: "dup-a-" + Guid.NewGuid().ToString("N")[..8]);
        await using var b = await GrainTestCluster.StartAsync(db, settings, clusterId: "dup-b-" + Guid.NewGuid().ToString("N")[..8]);
        await a.Limit("user/shared").GetSnapshotAsync();
        await b.Limit("user/shared").GetSnapshotAsync();

        var staleWrites = 0L;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Name == "callstate.storage.stale_writes")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref staleWrites, value));
        listener.Start();

        var oracle = new LimitOracle(Limit);
        var admitted = 0;
        var workers = Enumerable.Range(0, 32).Select(worker => Task.Run(async () =>
        {
            var cluster = worker % 2 == 0 ? a : b;
            for (var i = 0; i < 10; i++)
            {
                var callKey = $"s{worker}-{i}";
                AdmitResult result;
                try
                {
                    result = await cluster.Call(callKey).AdmitAsync([new LimitRequest("user/shared", Direction.Inbound)]);
                }
                catch (StaleGrainStateException)
                {
                    // Lost every compare-and-set round of its turn: not admitted (its call ends below).
                    await cluster.Call(callKey).EndAsync();
                    continue;
                }

                if (result.Status == AdmitStatus.Admitted)
                {
                    Interlocked.Increment(ref admitted);
                    oracle.Admitted();
                    await Task.Delay(2);
                    oracle.Releasing();
                    await cluster.Call(callKey).EndAsync();
                }
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.True(admitted > 0);
        Assert.True(Interlocked.Read(ref staleWrites) > 0, "two activations writing one row must lose compare-and-set writes");

        // Whatever the interleaving, every slot comes back (read from storage, as committed).
        var stored = (await a.Access().ListLimitsAsync(LimitKind.User, CancellationToken.None)).Single(l => l.Key == "user/shared");
        Assert.Equal(0, stored.Total);
    }

    [Theory]
    [InlineData("sqlite", true)]
    [InlineData("sqlite", false)]
    [InlineData("postgres", true)]
    public async Task An_admission_of_a_call_whose_record_exists_but_is_not_in_memory_counts_it_once(string kind, bool sameLimits)
    {
        // A call the shard does not have in memory is taken to be new (no read); here its record exists (a crash cut
        // its admission, the due scan has not come yet): the insert fails, the record is read and the admission runs
        // on it. Nothing is counted twice, and a limit the call no longer asks for is given back.
        await using var db = TestStorage.Create(kind);
        var now = DateTimeOffset.UtcNow;
        await WriteCutAdmissionAsync(db, "cut-3", now, leaseEnd: now.AddMinutes(2), recordDue: now.AddHours(1));

        await using var cluster = await GrainTestCluster.StartAsync(db);
        LimitRequest[] limits = sameLimits
            ? [new("user/alice", Direction.Inbound), new("trunk/carrier", Direction.Inbound)]
            : [new("user/alice", Direction.Inbound)];
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("cut-3").AdmitAsync(limits)).Status);

        Assert.Equal(sameLimits ? 1 : 0, (await cluster.Limit("trunk/carrier").GetSnapshotAsync()).Total);
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal(CallPhase.Admitted, (await cluster.Call("cut-3").GetSnapshotAsync()).Phase);

        Assert.True(await cluster.Call("cut-3").EndAsync());
        Assert.Equal(0, (await cluster.Limit("trunk/carrier").GetSnapshotAsync()).Total);
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
    }

    private static async Task WriteCutAdmissionAsync(TestStorage db, string callKey, DateTimeOffset now, DateTimeOffset leaseEnd, DateTimeOffset? recordDue = null)
    {
        await using var store = db.Open();
        await store.InitializeAsync(CancellationToken.None);
        var call = new CallGrainState
        {
            Phase = CallPhase.Admitting,
            Limits = [new CallLimit { Key = "trunk/carrier", Direction = Direction.Inbound }, new CallLimit { Key = "user/alice", Direction = Direction.Inbound }],
            StartedMs = now.AddSeconds(-10).ToUnixTimeMilliseconds(),
            LeaseEndMs = leaseEnd.ToUnixTimeMilliseconds(),
        };
        var held = new HeldCall { Direction = Direction.Inbound, Phase = HoldPhase.Early, SinceMs = now.ToUnixTimeMilliseconds(), LeaseEndMs = now.AddMinutes(3).ToUnixTimeMilliseconds() };
        Assert.True(await store.WriteAsync(new StateWrite(new StateId(GrainTypes.Call, callKey), 0, StateSerializer.Serialize(call), recordDue ?? now.AddSeconds(-1)), CancellationToken.None));
        Assert.True(await store.WriteAsync(
            new StateWrite(
                new StateId(GrainTypes.Limit, "trunk/carrier"),
                0,
                StateSerializer.SerializeLimitRow(new LimitGrainState()),
                now.AddMinutes(3),
                [new StateItemWrite(callKey, StateSerializer.SerializeHeldCall(held))]),
            CancellationToken.None));
    }
}
