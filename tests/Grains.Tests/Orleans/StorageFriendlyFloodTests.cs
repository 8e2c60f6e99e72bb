using CallState.Grains.Tests.Infrastructure;
using CallState.Storage.Tests.Infrastructure;

namespace CallState.Grains.Tests.Orleans;

/// <summary>
/// What floods cost storage (docs/architecture.md, "Refusals write nothing" and "Rows of idle limits"): a refused
/// admission writes nothing, and a limit that holds nothing and has nothing of its own to keep leaves no row behind. Real
/// silos (TestingHost) over real storage, with <see cref="InterceptedStateStore"/> counting what reaches it.
/// </summary>
public sealed class StorageFriendlyFloodTests
{
    private const int Refusals = 40;

    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Refused_admissions_write_nothing_and_the_counts_stay_exact(string kind)
    {
        // user/full is at its limit. Each refused call asks for it alone, or with a trunk that would admit it (the trunk
        // must not take and give back a slot), or with a fresh random user (whose row must not be created). The call that
        // filled it left no room, so no shard believes it has any (a shard that saw room a moment ago skips the check).
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(
            db,
            Settings(("CallState:Limits:Users:full:Total", "1"), ("CallState:Limits:DefaultUser:Total", "3")),
            services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("held-1").AdmitAsync([new("user/full", Direction.Inbound), new("trunk/carrier", Direction.Inbound)])).Status);
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("held-2").AdmitAsync([new("trunk/carrier", Direction.Inbound)])).Status);

        // An admitted call that a second INVITE copies (another attempt with its Call-ID and From tag): a duplicate.
        var leg = new CallLeg("attempt-1", ["udp:192.0.2.1:5060"]);
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("copied").AdmitAsync([new("trunk/carrier", Direction.Inbound)], leg)).Status);

        var limitWrites = store.Writes(GrainTypes.Limit);
        var callWrites = store.Writes(GrainTypes.Call);
        for (var i = 0; i < Refusals; i++)
        {
            LimitRequest[] limits = (i % 3) switch
            {
                0 => [new("user/full", Direction.Inbound)],
                1 => [new("user/full", Direction.Inbound), new("trunk/carrier", Direction.Inbound)],
                _ => [new("user/full", Direction.Inbound), new($"user/random-{i}", Direction.Outbound)],
            };
            var result = await cluster.Call($"refused-{i}").AdmitAsync(limits);
            Assert.Equal(new AdmitResult(AdmitStatus.Rejected, "user/full", RejectReason.UserTotalLimitReached, 1, 1, null), result);
            Assert.Equal(AdmitStatus.Duplicate, (await cluster.Call("copied").AdmitAsync([new("trunk/carrier", Direction.Inbound)], new CallLeg($"attempt-copy-{i}", []))).Status);
        }

        Assert.Equal(0, store.Writes(GrainTypes.Limit) - limitWrites);
        Assert.Equal(0, store.Writes(GrainTypes.Call) - callWrites);

        // Counted exactly, in the activations and in storage; no record or row of a refused call or random user.
        Assert.Equal(["held-1"], HeldCalls(await cluster.Limit("user/full").GetSnapshotAsync()));
        Assert.Equal(["copied", "held-1", "held-2"], HeldCalls(await cluster.Limit("trunk/carrier").GetSnapshotAsync()));
        Assert.Equal(["held-1"], HeldCalls(await StoredAsync(store, "user/full")));
        Assert.Equal(["copied", "held-1", "held-2"], HeldCalls(await StoredAsync(store, "trunk/carrier")));
        Assert.Equal(["copied", "held-1", "held-2"], await StoredCallsAsync(store));
        Assert.Null(await store.ReadAsync(LimitId("user/random-2"), CancellationToken.None));
        Assert.Equal(CallPhase.New, (await cluster.Call("refused-0").GetSnapshotAsync()).Phase);

        // The slots free up: the next call is admitted and written as ever.
        Assert.True(await cluster.Call("held-1").EndAsync());
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("after").AdmitAsync([new("user/full", Direction.Inbound)])).Status);
        Assert.Equal(["after"], HeldCalls(await StoredAsync(store, "user/full")));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Refusals_by_a_call_rate_write_nothing_even_right_after_an_admission(string kind)
    {
        // user/rita may start one call in 1,000 s, with a burst of 2: the third call is refused for its rate. The shard
        // that saw rita admitted must not believe she has room (it would skip the check and let the reservation refuse,
        // which writes the call's record and deletes it again): docs/architecture.md, "Call rates".
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(
            db,
            Settings(("CallState:Limits:Users:rita:OutboundRate", "0.001"), ("CallState:Limits:Users:rita:OutboundBurst", "2")),
            services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("rate-1").AdmitAsync([new("user/rita", Direction.Outbound)])).Status);
        Assert.True(await cluster.Call("rate-1").EndAsync());
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("rate-2").AdmitAsync([new("user/rita", Direction.Outbound)])).Status);

        var limitWrites = store.Writes(GrainTypes.Limit);
        var callWrites = store.Writes(GrainTypes.Call);
        // Calls of rate-2's shard, which saw rita admitted last.
        var sameShard = Enumerable.Range(0, 100_000).Select(i => $"rate-refused-{i}")
            .Where(key => CallShards.Of(key) == CallShards.Of("rate-2")).Take(Refusals).ToList();
        Assert.Equal(Refusals, sameShard.Count);
        foreach (var callKey in sameShard)
        {
            var result = await cluster.Call(callKey).AdmitAsync([new("user/rita", Direction.Outbound)]);
            Assert.Equal(AdmitStatus.Rejected, result.Status);
            Assert.Equal(RejectReason.UserOutRateLimitReached, result.Reason);
            Assert.Equal("user/rita", result.LimitKey);
            Assert.True(result.RetryAfter > TimeSpan.FromSeconds(900), $"retry after {result.RetryAfter}");
        }

        Assert.Equal(0, store.Writes(GrainTypes.Limit) - limitWrites);
        Assert.Equal(0, store.Writes(GrainTypes.Call) - callWrites);
        Assert.Equal(["rate-2"], HeldCalls(await cluster.Limit("user/rita").GetSnapshotAsync()));
        Assert.Equal(["rate-2"], HeldCalls(await StoredAsync(store, "user/rita")));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_new_activation_refusing_on_a_stored_row_reads_it_once_and_writes_nothing(string kind)
    {
        // Cluster A bars user/barred at run time (a stored override). Cluster B, on the same storage, activates the limit for
        // the first time to refuse calls: one read, and no fence or any other write until it has something to write.
        const string Key = "user/barred";
        await using var db = TestStorage.Create(kind);
        await using var a = await GrainTestCluster.StartAsync(db, clusterId: "barred-a-" + Guid.NewGuid().ToString("N")[..8]);
        await a.Limit(Key).SetLimitsAsync(new LimitSettings(Total: 0));

        await using var b = await GrainTestCluster.StartAsync(db, clusterId: "barred-b-" + Guid.NewGuid().ToString("N")[..8], services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)b.Service<IStateStore>();
        for (var i = 0; i < Refusals; i++)
        {
            var result = await b.Call($"barred-{i}").AdmitAsync([new(Key, Direction.Outbound)]);
            Assert.Equal(RejectReason.DirectionBarred, result.Reason);
        }

        Assert.Equal(1, store.Reads(LimitId(Key)));
        Assert.Equal(0, store.Writes(GrainTypes.Limit));
        Assert.Equal(0, store.Writes(GrainTypes.Call));

        // Lifting the bar from B is its first write: B takes the fence, and the override is stored (and stays: it is the
        // row's own, though the key holds nothing).
        await b.Limit(Key).SetLimitsAsync(new LimitSettings(Total: 1));
        Assert.Equal(AdmitStatus.Admitted, (await b.Call("allowed").AdmitAsync([new(Key, Direction.Outbound)])).Status);
        Assert.True(await b.Call("allowed").EndAsync());
        var stored = await StoredAsync(store, Key);
        Assert.Equal(new LimitSettings(Total: 1), stored.Limits);
        Assert.Empty(stored.Calls);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_random_users_row_goes_when_its_last_call_ends_and_a_configured_or_overridden_one_stays(string kind)
    {
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(
            db,
            Settings(("CallState:Limits:DefaultUser:Total", "2"), ("CallState:Limits:Users:alice:Total", "5"), ("CallState:Limits:Users:plain:Total", "2")),
            services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        await cluster.Limit("user/override").SetLimitsAsync(new LimitSettings(Total: 4));

        // Each call holds a user with default limits (a random caller), a per-key limit, a configured user, a user listed with
        // the default's own limits, and a user with a run-time override.
        string[] keys = ["key/+15550100", "user/alice", "user/override", "user/plain", "user/random-7"];
        LimitRequest[] limits = [.. keys.Select(k => new LimitRequest(k, Direction.Inbound, k.StartsWith("key/", StringComparison.Ordinal) ? 2 : null))];
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("first").AdmitAsync(limits)).Status);
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("second").AdmitAsync(limits)).Status);
        foreach (var key in keys)
        {
            Assert.Equal(["first", "second"], HeldCalls(await StoredAsync(store, key)));
        }

        // The first call ends: every row stays, holding the second.
        Assert.True(await cluster.Call("first").EndAsync());
        foreach (var key in keys)
        {
            Assert.Equal(["second"], HeldCalls(await StoredAsync(store, key)));
        }

        // The last call ends: the rows of keys with nothing of their own go; alice (configured) and the override stay.
        Assert.True(await cluster.Call("second").EndAsync());
        Assert.Null(await store.ReadAsync(LimitId("user/random-7"), CancellationToken.None));
        Assert.Null(await store.ReadAsync(LimitId("key/+15550100"), CancellationToken.None));
        Assert.Null(await store.ReadAsync(LimitId("user/plain"), CancellationToken.None));
        Assert.Empty((await StoredAsync(store, "user/alice")).Calls);
        var overridden = await StoredAsync(store, "user/override");
        Assert.Empty(overridden.Calls);
        Assert.Equal(new LimitSettings(Total: 4), overridden.Limits);
        Assert.Equal(["user/alice", "user/override"], (await store.ReadAllAsync(GrainTypes.Limit, CancellationToken.None)).Select(r => r.Key).Order(StringComparer.Ordinal));

        // The activations count on from zero, and a new call on a deleted row is admitted within its limit and stored again.
        Assert.Equal(0, (await cluster.Limit("user/random-7").GetSnapshotAsync()).Total);
        foreach (var call in new[] { "third", "fourth" })
        {
            Assert.Equal(AdmitStatus.Admitted, (await cluster.Call(call).AdmitAsync([new("user/random-7", Direction.Inbound)])).Status);
        }

        Assert.Equal(RejectReason.UserTotalLimitReached, (await cluster.Call("fifth").AdmitAsync([new("user/random-7", Direction.Inbound)])).Reason);
        Assert.Equal(["fourth", "third"], HeldCalls(await StoredAsync(store, "user/random-7")));

        // Clearing the override leaves that key nothing of its own: its row goes too.
        await cluster.Limit("user/override").SetLimitsAsync(null);
        Assert.Null(await store.ReadAsync(LimitId("user/override"), CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_release_queued_behind_the_holds_write_deletes_the_row_once_that_write_is_durable(string kind)
    {
        // The first hold of a random user must be durable before it is answered, even when its release is already waiting:
        // the release's turn comes after that write and deletes the row (the key keeps nothing of its own).
        const string Key = "user/random-42";
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(("CallState:Limits:DefaultUser:Total", "3")), services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        var limit = cluster.Limit(Key);

        using (var gate = store.HoldWrites(LimitId(Key)))
        {
            var first = limit.TryReserveAsync("first", Direction.Inbound, TimeSpan.FromMinutes(3), null);
            await gate.FirstHeld.WaitAsync(TimeSpan.FromSeconds(30));
            var release = limit.ReleaseAsync("first");
            Assert.False(first.IsCompleted);
            gate.Open();
            Assert.True((await first.WaitAsync(TimeSpan.FromSeconds(30))).Admitted);
            Assert.True(await release.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(2, gate.Held);
        }

        // Two writes: the hold's insert and the delete.
        Assert.Equal(2, store.Writes(GrainTypes.Limit));
        Assert.Null(await store.ReadAsync(LimitId(Key), CancellationToken.None));
        Assert.Equal(0, (await limit.GetSnapshotAsync()).Total);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_row_an_earlier_version_left_holding_nothing_is_deleted_when_its_limit_activates(string kind)
    {
        // Rows as earlier versions left them: a random user's and a per-key limit's holding nothing, and one with an override.
        await using var db = TestStorage.Create(kind);
        await using (var seed = db.Open())
        {
            await seed.InitializeAsync(CancellationToken.None);
            Assert.True(await seed.WriteAsync(new StateWrite(LimitId("user/left"), 0, """{"Reclaimed":3}"""u8.ToArray(), null), CancellationToken.None));
            Assert.True(await seed.WriteAsync(new StateWrite(LimitId("key/left"), 0, """{"LastPerCallMax":4}"""u8.ToArray(), null), CancellationToken.None));
            Assert.True(await seed.WriteAsync(new StateWrite(LimitId("user/kept"), 0, """{"Override":{"Total":2}}"""u8.ToArray(), null), CancellationToken.None));
        }

        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(("CallState:Limits:DefaultUser:Total", "3")), services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();

        // Looking at a limit activates it; its first turn finds nothing worth keeping and deletes the row.
        Assert.Equal(3, (await cluster.Limit("user/left").GetSnapshotAsync()).Reclaimed);
        Assert.Equal(0, (await cluster.Limit("key/left").GetSnapshotAsync()).Total);
        Assert.Equal(new LimitSettings(Total: 2), (await cluster.Limit("user/kept").GetSnapshotAsync()).Limits);
        Assert.Null(await store.ReadAsync(LimitId("user/left"), CancellationToken.None));
        Assert.Null(await store.ReadAsync(LimitId("key/left"), CancellationToken.None));
        Assert.Equal(["user/kept"], (await store.ReadAllAsync(GrainTypes.Limit, CancellationToken.None)).Select(r => r.Key));
    }

    private static Dictionary<string, string?> Settings(params (string Key, string Value)[] settings) =>
        settings.ToDictionary(s => s.Key, s => (string?)s.Value);

    private static StateId LimitId(string key) => new(GrainTypes.Limit, key);

    private static string[] HeldCalls(LimitSnapshot limit) => [.. limit.Calls.Select(c => c.CallKey).Order(StringComparer.Ordinal)];

    /// <summary>The limit as committed to storage (not any activation's memory); fails when it has no row.</summary>
    private static async Task<LimitSnapshot> StoredAsync(InterceptedStateStore store, string key)
    {
        var stored = await store.ReadAsync(LimitId(key), CancellationToken.None);
        Assert.True(stored is not null, $"{key} has no stored row");
        var limitKey = LimitKey.Parse(key);
        return new LimitLedger(limitKey, StateSerializer.DeserializeLimit(stored, out _), LimitSettings.Unlimited).Snapshot();
    }

    private static async Task<string[]> StoredCallsAsync(InterceptedStateStore store) =>
        [.. (await store.ReadAllAsync(GrainTypes.Call, CancellationToken.None)).Select(r => r.Key).Order(StringComparer.Ordinal)];
}
