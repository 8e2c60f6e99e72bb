using System.Text;
using CallState.Grains.Tests.Infrastructure;
using CallState.Storage.Tests.Infrastructure;

namespace CallState.Grains.Tests.Orleans;

/// <summary>
/// A call's attempt and dialog through the call-shard grains on real silos (TestingHost) over real storage: duplicates,
/// the dialog an edge reads, and both surviving new activations and records written before they existed.
/// </summary>
public sealed class CallDialogClusterTests
{
    /// <summary>How long a test waits for something that must happen; reaching it fails the test, it never decides it.</summary>
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private static readonly CallLeg LegA = new("z9hG4bK-a", ["udp:192.0.2.1:5060"]);
    private static readonly CallLeg LegB = new("z9hG4bK-b", ["udp:198.51.100.7:5060"]);
    private static readonly CallAnswer Answer = new("callee-tag-1", ["tcp:203.0.113.5:5060"]);

    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_duplicate_attempt_counts_nothing_frees_nothing_and_after_the_end_the_key_is_counted_again(string kind)
    {
        LimitRequest[] alice = [new("user/alice", Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(("CallState:Limits:Users:alice:Total", "1")));
        var call = cluster.Call("call-1");

        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(alice, LegA)).Status);
        Assert.Equal(AdmitResult.Duplicate(), await call.AdmitAsync(alice, LegB));

        // Alice's only slot is still the first attempt's: another call is refused, the call is up and answers its retry.
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal(RejectReason.UserTotalLimitReached, (await cluster.Call("call-2").AdmitAsync(alice, new CallLeg("z9hG4bK-c", []))).Reason);
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(alice, LegA)).Status);
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal(["call-1"], (await cluster.Limit("user/alice").GetSnapshotAsync()).Calls.Select(c => c.CallKey));

        Assert.True(await call.EndAsync());
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(alice, LegB)).Status);
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal("z9hG4bK-b", await StoredAttemptAsync(db, "call-1"));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task An_admission_queued_behind_the_calls_end_is_a_new_call_not_an_ended_one(string kind)
    {
        // Found by the fuzz run (docs/testing.md, "Fuzzing"): an INVITE reusing a call's Call-ID and From tag reached the
        // shard while that call's end was still being written, found it Ended in memory and was refused as invalid (the
        // edge answered 500); a moment later the same INVITE is a new call. It is now a new call either way.
        LimitRequest[] alice = [new("user/alice", Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(("CallState:Limits:Users:alice:Total", "1")),
            services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        var call = cluster.Call("reused");
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(alice, LegA)).Status);

        // The end's delete of the record is held, so the next admission is queued behind it on the call.
        using var gate = store.HoldWrites(new StateId(GrainTypes.Call, "reused"));
        var ended = call.EndAsync();
        await Within(gate.FirstHeld, "the call's end to reach its write");
        var again = call.AdmitAsync(alice, LegB);
        Assert.False(again.IsCompleted);
        gate.Open();

        Assert.True(await ended.WaitAsync(Deadline));
        Assert.Equal(AdmitStatus.Admitted, (await again.WaitAsync(Deadline)).Status);
        Assert.Equal(["reused"], (await cluster.Limit("user/alice").GetSnapshotAsync()).Calls.Select(c => c.CallKey));
        Assert.Equal("z9hG4bK-b", await StoredAttemptAsync(db, "reused"));

        // It is the new attempt's call: its end frees the slot.
        Assert.True(await call.EndAsync());
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task An_admission_that_arrives_after_its_own_abandon_is_refused_and_holds_nothing(string kind)
    {
        // Under overload the edge's deadline can pass while its admission is still on its way to the shard, and the
        // abandon it then sends can be run first (found by the past-capacity benchmark): the admission must not hold
        // slots afterwards that no edge will end.
        LimitRequest[] alice = [new("user/alice", Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db);
        var call = cluster.Call("overtaken");
        Assert.False(await call.AbandonAsync(LegA.Attempt));

        var late = await call.AdmitAsync(alice, LegA);
        Assert.Equal(AdmitStatus.Invalid, late.Status);
        Assert.Contains("abandoned", late.Error, StringComparison.Ordinal);
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        // Another attempt on the same Call-ID and From tag (a new INVITE) is a call like any other.
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(alice, LegB)).Status);
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.True(await call.EndAsync());
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task Abandoning_an_attempt_ends_the_call_only_when_that_attempt_admitted_it(string kind)
    {
        LimitRequest[] alice = [new("user/alice", Direction.Outbound)];
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db);
        var call = cluster.Call("abandoned");
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(alice, LegA)).Status);

        // A duplicate whose edge gave up waiting abandons its own attempt: the call it copied keeps its slot.
        Assert.Equal(AdmitStatus.Duplicate, (await call.AdmitAsync(alice, LegB)).Status);
        Assert.False(await call.AbandonAsync(LegB.Attempt));
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        Assert.True(await call.AbandonAsync(LegA.Attempt));
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Null(await call.GetDialogAsync());
        Assert.False(await cluster.Call("never-admitted").AbandonAsync(LegA.Attempt));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task The_dialog_and_the_attempt_survive_a_new_cluster_on_the_same_storage(string kind)
    {
        await using var db = TestStorage.Create(kind);
        await using (var first = await GrainTestCluster.StartAsync(db))
        {
            Assert.Null(await first.Call("answered").GetDialogAsync());
            Assert.Equal(AdmitStatus.Admitted, (await first.Call("answered").AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], LegA)).Status);
            Assert.True(await first.Call("answered").ConfirmAsync(Answer));
            Assert.Equal(AdmitStatus.Admitted, (await first.Call("ringing").AdmitAsync([new LimitRequest("user/bob", Direction.Inbound)], LegB)).Status);
        }

        await using var second = await GrainTestCluster.StartAsync(db, services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)second.Service<IStateStore>();

        // Neither call is in memory: an admission takes it for new, finds its record and runs again on it (the re-ask).
        // Another attempt is a duplicate and what it took on a limit the call does not hold is given back; the same
        // attempt is admitted without counting it twice.
        Assert.Equal(AdmitStatus.Duplicate, (await second.Call("ringing").AdmitAsync([new LimitRequest("user/bob", Direction.Inbound), new LimitRequest("user/carol", Direction.Inbound)], LegA)).Status);
        Assert.Equal(1, store.Reads(new StateId(GrainTypes.Call, "ringing")));
        Assert.Equal(AdmitStatus.Admitted, (await second.Call("answered").AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], LegA)).Status);
        Assert.Equal(1, store.Reads(new StateId(GrainTypes.Call, "answered")));
        Assert.Equal(1, (await second.Limit("user/bob").GetSnapshotAsync()).Total);
        Assert.Equal(0, (await second.Limit("user/carol").GetSnapshotAsync()).Total);
        Assert.Equal(1, (await second.Limit("user/alice").GetSnapshotAsync()).Total);

        var answered = await second.Call("answered").GetDialogAsync();
        Assert.NotNull(answered);
        Assert.Equal("callee-tag-1", answered.CalleeTag);
        Assert.Equal(LegA.CallerTargets, answered.CallerTargets);
        Assert.Equal(Answer.CalleeTargets, answered.CalleeTargets);
        Assert.True(answered.Confirmed);
        Assert.Equal("callee-tag-1", (await second.Call("answered").GetSnapshotAsync()).CalleeTag);

        var ringing = await second.Call("ringing").GetDialogAsync();
        Assert.NotNull(ringing);
        Assert.Null(ringing.CalleeTag);
        Assert.Equal(LegB.CallerTargets, ringing.CallerTargets);
        Assert.Empty(ringing.CalleeTargets);
        Assert.False(ringing.Confirmed);
        Assert.Equal("z9hG4bK-b", await StoredAttemptAsync(db, "ringing"));

        Assert.True(await second.Call("answered").EndAsync());
        Assert.True(await second.Call("ringing").EndAsync());
        Assert.Null(await second.Call("answered").GetDialogAsync());
        Assert.Null(await second.Call("ringing").GetDialogAsync());
        Assert.Equal(0, (await second.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal(0, (await second.Limit("user/bob").GetSnapshotAsync()).Total);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_dialog_asked_for_while_a_confirm_is_being_written_answers_after_it(string kind)
    {
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        var call = cluster.Call("call-1");
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], LegA)).Status);

        // Opened below, and at the latest when the test ends (a failing test must not leave the call stuck).
        using var gate = store.HoldWrites(new StateId(GrainTypes.Call, "call-1"));
        var confirm = call.ConfirmAsync(Answer);
        await Within(gate.FirstHeld, "the confirm to reach its write");
        var dialog = call.GetDialogAsync();

        // A call of the same shard, asked after the dialog, is answered while call-1 waits (the shard is reentrant): by
        // then the dialog request has reached the shard, and it must still be waiting behind the confirm.
        Assert.Equal(CallPhase.New, (await cluster.Call(SameShardAs("call-1")).GetSnapshotAsync().WaitAsync(Deadline)).Phase);
        Assert.False(dialog.IsCompleted, "a dialog was answered before the confirm ahead of it was durable");

        gate.Open();
        Assert.True(await confirm.WaitAsync(Deadline));
        var seen = await dialog.WaitAsync(Deadline);
        Assert.NotNull(seen);
        Assert.True(seen.Confirmed);
        Assert.Equal("callee-tag-1", seen.CalleeTag);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_dialog_asked_for_while_the_call_is_ending_is_none(string kind)
    {
        // An edge checks a request against the dialog right after a BYE ended the call elsewhere: the end releases the
        // limits first and the call is still up in memory meanwhile, so only a dialog answered in the call's order is none.
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, services: InterceptedStateStore.Install);
        var store = (InterceptedStateStore)cluster.Service<IStateStore>();
        var call = cluster.Call("call-1");
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], LegA)).Status);
        Assert.True(await call.ConfirmAsync(Answer));

        using var gate = store.HoldWrites(new StateId(GrainTypes.Limit, "user/alice"));
        var end = call.EndAsync();
        await Within(gate.FirstHeld, "the end to reach the limit's release");
        var dialog = call.GetDialogAsync();
        // Asked after the dialog and answered at once: the dialog request has reached the shard before the gate opens.
        Assert.Equal(CallPhase.New, (await cluster.Call(SameShardAs("call-1")).GetSnapshotAsync().WaitAsync(Deadline)).Phase);

        gate.Open();
        Assert.True(await end.WaitAsync(Deadline));
        Assert.Null(await dialog.WaitAsync(Deadline));
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_call_stored_by_the_previous_version_loads_with_an_empty_dialog_and_learns_its_answer(string kind)
    {
        await using var db = TestStorage.Create(kind);
        var now = DateTimeOffset.UtcNow;
        await WritePreviousVersionCallAsync(db, "old-call", now);
        await using var cluster = await GrainTestCluster.StartAsync(db);
        var call = cluster.Call("old-call");

        var before = await call.GetDialogAsync();
        Assert.NotNull(before);
        Assert.Null(before.CalleeTag);
        Assert.Empty(before.CallerTargets);
        Assert.Empty(before.CalleeTargets);
        Assert.False(before.Confirmed);

        // It names no attempt, so no INVITE can show it is the one that admitted it.
        Assert.Equal(AdmitStatus.Duplicate, (await call.AdmitAsync([new LimitRequest("user/alice", Direction.Outbound)], LegA)).Status);
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        Assert.True(await call.ConfirmAsync(Answer));
        var after = await call.GetDialogAsync();
        Assert.NotNull(after);
        Assert.Equal("callee-tag-1", after.CalleeTag);
        Assert.True(after.Confirmed);
        await using (var store = db.Open())
        {
            await store.InitializeAsync(CancellationToken.None);
            var stored = StateSerializer.DeserializeCall((await store.ReadAsync(new StateId(GrainTypes.Call, "old-call"), CancellationToken.None))!.Data);
            Assert.Equal("callee-tag-1", stored.CalleeTag);
            Assert.Equal(Answer.CalleeTargets, stored.CalleeTargets);
            Assert.Null(stored.Attempt);
        }

        Assert.True(await call.EndAsync());
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
    }

    /// <summary>
    /// An admitted, unconfirmed call and its slot on <c>user/alice</c> as the version before attempts and dialogs stored
    /// them: the call's row is that version's JSON, written as bytes (not through today's serializer).
    /// </summary>
    private static async Task WritePreviousVersionCallAsync(TestStorage db, string callKey, DateTimeOffset now)
    {
        var leaseEnd = now.AddMinutes(3);
        var record = $$"""{"Phase":1,"Limits":[{"Key":"user/alice","Direction":2}],"Confirmed":false,"Reason":0,"Current":0,"StartedMs":{{now.ToUnixTimeMilliseconds()}},"LeaseEndMs":{{leaseEnd.ToUnixTimeMilliseconds()}}}""";
        var held = new HeldCall { Direction = Direction.Outbound, Phase = HoldPhase.Early, SinceMs = now.ToUnixTimeMilliseconds(), LeaseEndMs = leaseEnd.ToUnixTimeMilliseconds() };
        await using var store = db.Open();
        await store.InitializeAsync(CancellationToken.None);
        // Due after the test: the due scan does not finish it while the test runs.
        Assert.True(await store.WriteAsync(new StateWrite(new StateId(GrainTypes.Call, callKey), 0, Encoding.UTF8.GetBytes(record), now.AddHours(1)), CancellationToken.None));
        Assert.True(await store.WriteAsync(
            new StateWrite(
                new StateId(GrainTypes.Limit, "user/alice"),
                0,
                StateSerializer.SerializeLimitRow(new LimitGrainState()),
                leaseEnd,
                [new StateItemWrite(callKey, StateSerializer.SerializeHeldCall(held))]),
            CancellationToken.None));
    }

    private static async Task<string?> StoredAttemptAsync(TestStorage db, string callKey)
    {
        await using var store = db.Open();
        await store.InitializeAsync(CancellationToken.None);
        var stored = await store.ReadAsync(new StateId(GrainTypes.Call, callKey), CancellationToken.None);
        return stored is null ? null : StateSerializer.DeserializeCall(stored.Data).Attempt;
    }

    /// <summary>Another call key held by the same shard grain as <paramref name="callKey"/>.</summary>
    private static string SameShardAs(string callKey)
    {
        for (var i = 0; ; i++)
        {
            var other = "neighbour-" + i;
            if (CallShards.Of(other) == CallShards.Of(callKey))
            {
                return other;
            }
        }
    }

    private static async Task Within(Task task, string what)
    {
        try
        {
            await task.WaitAsync(Deadline);
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"waited {Deadline} for {what}", e);
        }
    }

    private static Dictionary<string, string?> Settings(params (string Key, string Value)[] settings) =>
        settings.ToDictionary(s => s.Key, s => (string?)s.Value);
}
