using System.Diagnostics.Metrics;
using CallState.Grains.Tests.Infrastructure;
using CallState.Storage.Tests.Infrastructure;

namespace CallState.Grains.Tests.Orleans;

/// <summary>
/// Edges of the limit grain's turn (docs/architecture.md, "Grains"): its bounded inbox while a write is in flight, and an
/// operation on a call that another activation of the same row admitted. Real silos (TestingHost) over real storage, with
/// <see cref="InterceptedStateStore"/> between the grains and the store to hold writes and count reads.
/// </summary>
public sealed class LimitGrainEdgeCaseTests
{
    /// <summary>How long a test waits for something that must happen; reaching it fails the test, it never decides it.</summary>
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task An_admission_past_a_full_limit_inbox_is_refused_as_overloaded_holds_nothing_and_the_queued_ones_are_admitted(string kind)
    {
        // QueueCapacity 2: while a turn of the limit is stuck in its write, two operations may wait for the next turn; a
        // third is turned away (the edge answers 503) instead of growing the queue.
        const string Key = "user/busy";
        LimitRequest[] busy = [new(Key, Direction.Inbound)];
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(
            db,
            Settings(("CallState:Grains:QueueCapacity", "2"), ("CallState:Limits:Users:busy:Total", "10")),
            services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();

        // Loaded, fenced and holding one call before the gate: every write held below is a turn's own.
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("before").AdmitAsync(busy)).Status);
        // Opened below, and at the latest when the test ends (a failing test must not leave the limit's turn stuck).
        using var gate = store.HoldWrites(LimitId(Key));
        var stuck = cluster.Call("stuck").AdmitAsync(busy);
        await Within(gate.FirstHeld, "the limit's turn to reach its write");

        // Three more admissions, as an edge sends them (GrainAdmissionClient: the call handle). Nothing can be admitted
        // while the write is held, so the first to finish is the one that found the inbox full, whichever order they came in.
        var waiting = new[] { "q-1", "q-2", "q-3" }.ToDictionary(key => key, key => cluster.Call(key).AdmitAsync(busy));
        var first = await Within(Task.WhenAny(waiting.Values), "a refusal while three admissions wait behind a held write");
        await Assert.ThrowsAsync<GrainOverloadedException>(() => first);
        var refused = waiting.Single(w => w.Value == first).Key;
        var queued = waiting.Keys.Where(key => key != refused).Order(StringComparer.Ordinal).ToArray();
        Assert.False(stuck.IsCompleted);
        Assert.All(queued, key => Assert.False(waiting[key].IsCompleted));

        // The limit itself, asked directly while its inbox is still full: the same refusal, and no cleanup follows it.
        await Assert.ThrowsAsync<GrainOverloadedException>(() => cluster.Limit(Key).TryReserveAsync("direct", Direction.Inbound, TimeSpan.FromMinutes(3), null));
        Assert.Equal(1, gate.Held);

        gate.Open();
        Assert.Equal(AdmitStatus.Admitted, (await stuck.WaitAsync(Deadline)).Status);
        foreach (var key in queued)
        {
            Assert.Equal(AdmitStatus.Admitted, (await waiting[key].WaitAsync(Deadline)).Status);
        }

        // Counted exactly: the calls admitted, not the refused ones, in the activation and in storage.
        var admitted = new[] { "before", "stuck" }.Concat(queued).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(admitted, HeldCalls(await cluster.Limit(Key).GetSnapshotAsync()));
        Assert.Equal(admitted, HeldCalls(await StoredAsync(cluster, Key)));

        // What the edge does after an admission that failed (AdmissionPolicy): it ends the call. Its record goes, and
        // ending it takes no slot from a call that holds one.
        await cluster.Call(refused).EndAsync();
        Assert.Null(await store.ReadAsync(new StateId(GrainTypes.Call, refused), CancellationToken.None));
        Assert.Equal(admitted, HeldCalls(await StoredAsync(cluster, Key)));
        Assert.Equal(admitted.Length, (await cluster.Limit(Key).GetSnapshotAsync()).Total);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task An_admission_given_up_while_its_reservation_waits_for_the_limits_turn_reserves_and_writes_nothing(string kind)
    {
        // Past capacity an edge gives up on an admission at its deadline (AdmissionPolicy cancels the grain call) while the
        // hot limit's queue still holds the reservation. Orleans carries the cancellation to the shard, which tells the
        // limit (DropAsync): the reservation leaves the queue undecided, so no slot for a call already refused, no write
        // for it, and no release to send (docs/architecture.md, "Overload control").
        const string Key = "user/hot";
        LimitRequest[] hot = [new(Key, Direction.Inbound)];
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(
            db,
            Settings(("CallState:Limits:Users:hot:Total", "10")),
            services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        using var dropped = new DroppedReservations(cluster.Service<IMeterFactory>());

        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("before").AdmitAsync(hot)).Status);
        using var gate = store.HoldWrites(LimitId(Key));
        var stuck = cluster.Call("stuck").AdmitAsync(hot);
        await Within(gate.FirstHeld, "the limit's turn to reach its write");
        var writesBefore = store.Writes(GrainTypes.Limit);

        // The admission's own record is written beside its reservation (CallAdmission): once the record is stored, the
        // reservation has been sent to the limit, where it waits behind the held turn.
        using var deadline = new CancellationTokenSource();
        var givenUp = cluster.Call("given-up").AdmitAsync(hot, deadline.Token);
        await Within(WaitForAsync(async () => await store.ReadAsync(new StateId(GrainTypes.Call, "given-up"), CancellationToken.None) is not null), "the given-up call's record");
        await deadline.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => givenUp.WaitAsync(Deadline));
        // The shard tells the limit, which drops the waiting reservation at once.
        await Within(WaitForAsync(() => Task.FromResult(dropped.Count == 1)), "the limit to drop the given-up reservation");

        gate.Open();
        Assert.Equal(AdmitStatus.Admitted, (await stuck.WaitAsync(Deadline)).Status);
        // What the edge does next (AdmissionPolicy): it ends the call. Its operations run after the admission's own, so
        // once the end is answered the admission has finished too.
        await cluster.Call("given-up").EndAsync().WaitAsync(Deadline);

        string[] admitted = ["before", "stuck"];
        Assert.Equal(admitted, HeldCalls(await cluster.Limit(Key).GetSnapshotAsync()));
        Assert.Equal(admitted, HeldCalls(await StoredAsync(cluster, Key)));
        // The held turn's write and nothing else: the dropped reservation wrote nothing and needed no release.
        Assert.Equal(writesBefore + 1, store.Writes(GrainTypes.Limit));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_release_sent_to_a_stale_activation_reloads_and_frees_the_slot_another_activation_took(string kind)
    {
        // Two clusters (different ClusterIds) on one storage: each activates its own copy of the limit, as two silos do for
        // a moment during a membership change. A loads the limit first; B then takes the fence and admits calls A has
        // never seen. A call's end can reach either (any edge ends a call knowing only its key).
        const string Key = "user/shared";
        LimitRequest[] shared = [new(Key, Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        var settings = Settings(("CallState:Limits:Users:shared:Total", "5"));
        await using var a = await GrainTestCluster.StartAsync(db, settings, clusterId: "stale-a-" + Guid.NewGuid().ToString("N")[..8], services: InterceptedStateStore.Install);
        await using var b = await GrainTestCluster.StartAsync(db, settings, clusterId: "stale-b-" + Guid.NewGuid().ToString("N")[..8]);
        var store = (InterceptedStateStore)a.Service<IStateStore>();
        var id = LimitId(Key);

        Assert.Equal(AdmitStatus.Admitted, (await a.Call("a-1").AdmitAsync(shared)).Status);
        Assert.Equal(AdmitStatus.Admitted, (await b.Call("x").AdmitAsync(shared)).Status);
        Assert.Equal(AdmitStatus.Admitted, (await b.Call("y").AdmitAsync(shared)).Status);
        Assert.Equal(["a-1"], HeldCalls(await a.Limit(Key).GetSnapshotAsync()));

        // The end of x reaches A, whose activation does not hold x: it must not answer "not held" from its stale state
        // (x's slot would stay taken in storage until its lease ran out). The row's version moved, so A reloads first.
        var readsBefore = store.Reads(id);
        Assert.True(await a.Call("x").EndAsync());
        Assert.Equal(["a-1", "y"], HeldCalls(await StoredAsync(a, Key)));
        Assert.Equal(["a-1", "y"], HeldCalls(await a.Limit(Key).GetSnapshotAsync()));
        Assert.True(store.Reads(id) > readsBefore, "the activation must have reloaded the limit");

        // Nobody has written since that reload: a release of a call A does not hold costs one version check, no reload.
        readsBefore = store.Reads(id);
        var checksBefore = store.VersionReads(id);
        Assert.False(await a.Limit(Key).ReleaseAsync("never-held"));
        Assert.Equal(checksBefore + 1, store.VersionReads(id));
        Assert.Equal(readsBefore, store.Reads(id));
        Assert.Equal(["a-1", "y"], HeldCalls(await StoredAsync(a, Key)));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_load_whose_fence_another_activation_takes_before_the_read_back_takes_it_again_so_only_one_admits_the_last_slot(string kind)
    {
        // A loads the limit: it rewrites the row (its fence) and reads it back. C, another cluster's activation of the same
        // row, takes the fence in between, as when a silo resumed from a pause loads a grain another silo is activating.
        // A must not keep the version it reads back (C's): both would then write their items under one version, each
        // blind to the other's holds, and both would admit the last slot (the chaos soak saw a caller at 4 of 3).
        const string Key = "user/fenced";
        LimitRequest[] fenced = [new(Key, Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        var settings = Settings(("CallState:Limits:Users:fenced:Total", "1"));
        await using (var seed = await GrainTestCluster.StartAsync(db, settings, clusterId: "fence-s-" + Guid.NewGuid().ToString("N")[..8]))
        {
            // The row exists, so a load has a fence to take.
            Assert.Equal(AdmitStatus.Admitted, (await seed.Call("s-0").AdmitAsync(fenced)).Status);
            Assert.True(await seed.Call("s-0").EndAsync());
        }

        await using var a = await GrainTestCluster.StartAsync(db, settings, clusterId: "fence-a-" + Guid.NewGuid().ToString("N")[..8], services: InterceptedStateStore.Install);
        await using var c = await GrainTestCluster.StartAsync(db, settings, clusterId: "fence-c-" + Guid.NewGuid().ToString("N")[..8]);
        var store = (InterceptedStateStore)a.Service<IStateStore>();
        var cLoaded = false;
        store.AfterNextWrite(LimitId(Key), async () =>
        {
            await c.Limit(Key).GetSnapshotAsync();
            cLoaded = true;
        });

        Assert.Equal(AdmitStatus.Admitted, (await a.Call("a-1").AdmitAsync(fenced)).Status);
        Assert.True(cLoaded, "C's activation should have loaded between A's fence and A's read back");

        // C's activation is the stale one now: its write fails, it reloads, finds a-1 and refuses.
        Assert.Equal(AdmitStatus.Rejected, (await c.Call("c-1").AdmitAsync(fenced)).Status);
        Assert.Equal(["a-1"], HeldCalls(await StoredAsync(a, Key)));
        Assert.Equal(["a-1"], HeldCalls(await a.Limit(Key).GetSnapshotAsync()));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_stale_activation_woken_by_the_due_scan_reloads_and_reclaims_what_another_activation_left(string kind)
    {
        // A paused silo resumed before it learns it is dead: its activation B writes reservations behind the back of the live
        // activation A, then goes. A holds nothing in memory and writes nothing, so only the due scan can make it look: the
        // row's due time passing must make A reload and reclaim, not answer from its memory and leave the slots for ever.
        const string Key = "user/orphan";
        LimitRequest[] orphan = [new(Key, Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        var settings = Settings(("CallState:Limits:Users:orphan:Total", "5"));
        await using var a = await GrainTestCluster.StartAsync(db, settings, clusterId: "orphan-a-" + Guid.NewGuid().ToString("N")[..8]);
        Assert.Equal(AdmitStatus.Admitted, (await a.Call("a-1").AdmitAsync(orphan)).Status);
        Assert.True(await a.Call("a-1").EndAsync());
        Assert.Empty((await a.Limit(Key).GetSnapshotAsync()).Calls);

        // B reserves x on the limit and is gone before any call record of x exists (its shard's write was lost with it):
        // nothing but the limit row itself remembers x.
        await using (var b = await GrainTestCluster.StartAsync(db, settings, clusterId: "orphan-b-" + Guid.NewGuid().ToString("N")[..8]))
        {
            Assert.True((await b.Limit(Key).TryReserveAsync("x", Direction.Outbound, TimeSpan.FromSeconds(1), null)).Admitted);
        }

        var stored = await StoredAsync(a, Key);
        Assert.Equal(["x"], HeldCalls(stored));
        var leaseEnd = stored.Calls.Single().LeaseEnd;
        await Within(WaitUntilPastAsync(leaseEnd), "x's early lease to end");

        await a.ScanAsync();
        stored = await StoredAsync(a, Key);
        Assert.Empty(stored.Calls);
        Assert.Equal(1, stored.Reclaimed);
        Assert.Empty((await a.Limit(Key).GetSnapshotAsync()).Calls);
    }

    /// <summary>Completes once the system clock (the silos') is past <paramref name="time"/>.</summary>
    private static async Task WaitUntilPastAsync(DateTimeOffset time)
    {
        while (DateTimeOffset.UtcNow <= time)
        {
            await Task.Delay(50);
        }
    }

    /// <summary>What the silo's <c>callstate.limits.reservations_dropped</c> counter has counted since the test began.</summary>
    private sealed class DroppedReservations : IDisposable
    {
        private readonly MeterListener _listener = new();
        private long _count;

        public DroppedReservations(IMeterFactory silo)
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Name == "callstate.limits.reservations_dropped" && ReferenceEquals(instrument.Meter.Scope, silo))
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref _count, value));
            _listener.Start();
        }

        public long Count => Interlocked.Read(ref _count);

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>Completes once <paramref name="condition"/> holds, asking it every 20 ms (<see cref="Within"/> bounds the wait).</summary>
    private static async Task WaitForAsync(Func<Task<bool>> condition)
    {
        while (!await condition())
        {
            await Task.Delay(20);
        }
    }

    /// <summary>Waits for <paramref name="task"/> up to <see cref="Deadline"/>; past it, fails naming what did not happen.</summary>
    private static async Task<T> Within<T>(Task<T> task, string what)
    {
        await Within((Task)task, what);
        return await task;
    }

    private static async Task Within(Task task, string what)
    {
        try
        {
            await task.WaitAsync(Deadline);
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"waited {Deadline.TotalSeconds} s for {what}", e);
        }
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_turn_decided_again_after_a_lost_write_takes_its_call_rate_tokens_once(string kind)
    {
        // C's activation of user/rita loads while there is no row; A's then inserts one, so C's first write (an insert) loses
        // and C decides its turn again (reload, fence, decide). The call's tokens are taken once: with a burst of 2, C admits
        // two calls and refuses the third for its rate (docs/architecture.md, "Call rates").
        const string Key = "user/rita";
        LimitRequest[] rita = [new(Key, Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        var settings = Settings(("CallState:Limits:Users:rita:OutboundRate", "0.001"), ("CallState:Limits:Users:rita:OutboundBurst", "2"));
        await using var a = await GrainTestCluster.StartAsync(db, settings, clusterId: "rate-a-" + Guid.NewGuid().ToString("N")[..8]);
        await using var c = await GrainTestCluster.StartAsync(db, settings, clusterId: "rate-c-" + Guid.NewGuid().ToString("N")[..8], services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)c.Service<IStateStore>();
        await c.Limit(Key).GetSnapshotAsync();
        Assert.Equal(AdmitStatus.Admitted, (await a.Call("a-1").AdmitAsync(rita)).Status);

        var writes = store.Writes(GrainTypes.Limit);
        Assert.Equal(AdmitStatus.Admitted, (await c.Call("c-1").AdmitAsync(rita)).Status);
        Assert.True(store.Writes(GrainTypes.Limit) - writes >= 2, "C's first write should have lost and been made again");
        Assert.Equal(AdmitStatus.Admitted, (await c.Call("c-2").AdmitAsync(rita)).Status);
        var refused = await c.Call("c-3").AdmitAsync(rita);
        Assert.Equal(RejectReason.UserOutRateLimitReached, refused.Reason);
        Assert.Equal(["a-1", "c-1", "c-2"], HeldCalls(await StoredAsync(c, Key)));
    }

    private static Dictionary<string, string?> Settings(params (string Key, string Value)[] settings) =>
        settings.ToDictionary(s => s.Key, s => (string?)s.Value);

    private static StateId LimitId(string key) => new(GrainTypes.Limit, key);

    private static string[] HeldCalls(LimitSnapshot limit) => [.. limit.Calls.Select(c => c.CallKey).Order(StringComparer.Ordinal)];

    /// <summary>The limit as committed to storage (not any activation's memory).</summary>
    private static async Task<LimitSnapshot> StoredAsync(GrainTestCluster cluster, string key) =>
        (await cluster.Access().ListLimitsAsync(LimitKey.Parse(key).Kind, CancellationToken.None)).Single(l => l.Key == key);
}
