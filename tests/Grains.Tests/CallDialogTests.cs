using System.Text;
using CallState.Grains.Tests.Infrastructure;

namespace CallState.Grains.Tests;

/// <summary>
/// A call's attempt and dialog (docs/architecture.md, "Grains"): another INVITE with an admitted call's key is a duplicate
/// that neither counts nor frees anything, and the call keeps the tags and targets an edge checks in-dialog requests against.
/// </summary>
public sealed class CallDialogTests
{
    private static readonly CallLeg LegA = new("z9hG4bK-a", ["udp:192.0.2.1:5060"]);
    private static readonly CallLeg LegB = new("z9hG4bK-b", ["udp:198.51.100.7:5060"]);
    private static readonly CallAnswer Answer = new("callee-tag-1", ["tcp:203.0.113.5:5060", "udp:203.0.113.5:5060"]);

    private readonly List<string> _events = [];
    private readonly FakeTimeProvider _time = new();
    private readonly LeaseOptions _leases = new();
    private readonly InMemoryLimitClient _limits;

    public CallDialogTests() => _limits = new InMemoryLimitClient(_time, _events);

    private static LimitRequest[] Alice => [new("user/alice", Direction.Outbound), new("trunk/carrier", Direction.Outbound)];

    private CallAdmission NewCall(InMemoryGrainState<CallGrainState> state, string callKey = "call-1") => new(callKey, state, _limits, _leases, _time);

    private (CallAdmission Call, InMemoryGrainState<CallGrainState> State) NewCall(string callKey = "call-1")
    {
        var state = new InMemoryGrainState<CallGrainState>(events: _events);
        return (NewCall(state, callKey), state);
    }

    [Fact]
    public async Task A_second_attempt_at_an_admitted_call_is_a_duplicate_that_counts_and_writes_nothing_and_the_first_attempt_is_admitted_again()
    {
        _limits.Configure("user/alice", new LimitSettings(Total: 1));
        var (call, state) = NewCall();
        Assert.Equal(AdmitResult.Admitted(_leases.Early), await call.AdmitAsync(Alice, LegA, CancellationToken.None));
        Assert.Equal(1, _limits.Held("user/alice"));
        _events.Clear();

        Assert.Equal(AdmitResult.Duplicate(), await call.AdmitAsync(Alice, LegB, CancellationToken.None));

        Assert.Empty(_events);
        Assert.Single(state.Writes);
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.Equal(1, _limits.Held("trunk/carrier"));
        Assert.Equal(CallPhase.Admitted, call.Snapshot().Phase);
        Assert.Equal("z9hG4bK-a", state.Persisted!.Attempt);

        // The first attempt again (a retry): admitted, counted once.
        Assert.Equal(AdmitResult.Admitted(_leases.Early), await call.AdmitAsync(Alice, LegA, CancellationToken.None));
        Assert.Empty(_events);
        Assert.Equal(1, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task A_duplicate_never_frees_the_slots_of_the_call_it_duplicates_even_when_it_asks_for_other_limits()
    {
        _limits.Configure("user/alice", new LimitSettings(Total: 1));
        var (call, state) = NewCall();
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);

        // From another edge (a new activation over the stored record, Admitting until the 2xx), and asking for other limits.
        var elsewhere = NewCall(state.Reload());
        _events.Clear();
        var duplicate = await elsewhere.AdmitAsync([new LimitRequest("user/bob", Direction.Inbound)], LegB, CancellationToken.None);

        Assert.Equal(AdmitStatus.Duplicate, duplicate.Status);
        Assert.Empty(_events);
        Assert.Equal(0, _limits.Held("user/bob"));
        Assert.Equal(CallPhase.Admitting, elsewhere.Snapshot().Phase);
        Assert.Equal(["trunk/carrier", "user/alice"], elsewhere.Snapshot().Limits.Select(l => l.Key));

        // The call it duplicated still holds alice's only slot, and goes on to its answer.
        var other = await NewCall("call-2").Call.AdmitAsync(Alice, new CallLeg("z9hG4bK-c", []), CancellationToken.None);
        Assert.Equal(RejectReason.UserTotalLimitReached, other.Reason);
        Assert.True(await elsewhere.ConfirmAsync(Answer, CancellationToken.None));
        Assert.Equal(1, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task After_the_call_ends_its_key_is_a_new_call_and_is_counted_again()
    {
        var (call, state) = NewCall();
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);
        Assert.True(await call.EndAsync(CancellationToken.None));
        Assert.Equal(0, _limits.Held("user/alice"));

        // The record is gone: an activation that loads it finds nothing, and any attempt is a new call.
        var loaded = state.Reload();
        Assert.Equal(CallPhase.New, loaded.State.Phase);
        Assert.Equal(AdmitResult.Admitted(_leases.Early), await NewCall(loaded).AdmitAsync(Alice, LegB, CancellationToken.None));
        Assert.Equal(1, _limits.Held("user/alice"));
        Assert.Equal("z9hG4bK-b", loaded.Persisted!.Attempt);
    }

    [Fact]
    public async Task Without_a_leg_an_admission_is_never_a_duplicate_and_a_leg_after_one_admitted_without_is()
    {
        var (withLeg, _) = NewCall("with-leg");
        Assert.Equal(AdmitStatus.Admitted, (await withLeg.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);
        Assert.Equal(AdmitResult.Admitted(_leases.Early), await withLeg.AdmitAsync(Alice, CancellationToken.None));

        var (withoutLeg, state) = NewCall("without-leg");
        Assert.Equal(AdmitStatus.Admitted, (await withoutLeg.AdmitAsync(Alice, CancellationToken.None)).Status);
        Assert.Null(state.Persisted!.Attempt);
        Assert.Equal(AdmitResult.Admitted(_leases.Early), await withoutLeg.AdmitAsync(Alice, CancellationToken.None));
        // Admitted by someone who named no attempt (an admin tool): an INVITE cannot show it is that one.
        Assert.Equal(AdmitStatus.Duplicate, (await withoutLeg.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);
        // Two calls, each counted once.
        Assert.Equal(2, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task A_refused_call_answers_its_refusal_to_any_attempt()
    {
        _limits.Configure("user/alice", new LimitSettings(Total: 0));
        var (call, _) = NewCall();
        var refused = await call.AdmitAsync(Alice, LegA, CancellationToken.None);
        Assert.Equal(AdmitStatus.Rejected, refused.Status);

        Assert.Equal(refused, await call.AdmitAsync(Alice, LegB, CancellationToken.None));
        Assert.Null(call.Dialog());
    }

    [Fact]
    public async Task The_dialog_is_the_callers_targets_after_admission_and_the_answer_after_confirm_in_the_same_writes()
    {
        var (call, state) = NewCall();
        Assert.Null(call.Dialog());

        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);
        var admitted = call.Dialog()!;
        Assert.Null(admitted.CalleeTag);
        Assert.Equal(["udp:192.0.2.1:5060"], admitted.CallerTargets);
        Assert.Empty(admitted.CalleeTargets);
        Assert.False(admitted.Confirmed);
        var (first, _) = Assert.Single(state.Writes);
        Assert.Equal("z9hG4bK-a", first.Attempt);
        Assert.Equal(["udp:192.0.2.1:5060"], first.CallerTargets!);

        Assert.True(await call.ConfirmAsync(Answer, CancellationToken.None));
        var confirmed = call.Dialog()!;
        Assert.Equal("callee-tag-1", confirmed.CalleeTag);
        Assert.Equal(["udp:192.0.2.1:5060"], confirmed.CallerTargets);
        Assert.Equal(["tcp:203.0.113.5:5060", "udp:203.0.113.5:5060"], confirmed.CalleeTargets);
        Assert.True(confirmed.Confirmed);
        Assert.Equal(2, state.Writes.Count);
        Assert.Equal("callee-tag-1", state.Persisted!.CalleeTag);
        Assert.Equal("callee-tag-1", call.Snapshot().CalleeTag);

        // Another activation (another edge's shard after a move) loads the same dialog.
        var reloaded = NewCall(state.Reload()).Dialog()!;
        Assert.Equal(confirmed.CalleeTag, reloaded.CalleeTag);
        Assert.Equal(confirmed.CallerTargets, reloaded.CallerTargets);
        Assert.Equal(confirmed.CalleeTargets, reloaded.CalleeTargets);
        Assert.True(reloaded.Confirmed);

        Assert.True(await call.EndAsync(CancellationToken.None));
        Assert.Null(call.Dialog());
        Assert.Null(NewCall(state.Reload()).Dialog());
    }

    [Fact]
    public async Task An_admitted_unconfirmed_call_loaded_from_storage_has_its_dialog()
    {
        var (call, state) = NewCall();
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);

        var loaded = NewCall(state.Reload());

        Assert.Equal(CallPhase.Admitting, loaded.Snapshot().Phase);
        Assert.Equal(["udp:192.0.2.1:5060"], loaded.Dialog()!.CallerTargets);
        Assert.False(loaded.Dialog()!.Confirmed);
    }

    [Fact]
    public async Task The_first_answer_sets_the_dialog_and_a_later_one_from_another_fork_does_not_replace_it()
    {
        var (call, _) = NewCall();
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);
        Assert.True(await call.ConfirmAsync(CancellationToken.None));
        Assert.Null(call.Dialog()!.CalleeTag);

        Assert.True(await call.ConfirmAsync(Answer, CancellationToken.None));
        Assert.True(await call.ConfirmAsync(new CallAnswer("other-fork", ["udp:192.0.2.99:5060"]), CancellationToken.None));

        Assert.Equal("callee-tag-1", call.Dialog()!.CalleeTag);
        Assert.Equal(Answer.CalleeTargets, call.Dialog()!.CalleeTargets);
    }

    [Theory]
    [InlineData("", "udp:192.0.2.1:5060")]
    [InlineData("a", "")]
    [InlineData("a", "long")]
    [InlineData("long", "udp:192.0.2.1:5060")]
    public async Task A_leg_with_an_empty_or_over_long_attempt_or_target_is_invalid_and_reserves_and_writes_nothing(string attempt, string target)
    {
        var leg = new CallLeg(
            attempt == "long" ? new string('a', CallDialogs.MaxTagLength + 1) : attempt,
            [target == "long" ? "udp:" + new string('1', CallDialogs.MaxTargetLength) : target]);
        var (call, state) = NewCall();

        var result = await call.AdmitAsync(Alice, leg, CancellationToken.None);

        Assert.Equal(AdmitStatus.Invalid, result.Status);
        Assert.NotNull(result.Error);
        Assert.Empty(_events);
        Assert.Empty(state.Writes);
    }

    [Fact]
    public async Task Targets_past_the_fourth_are_ignored_and_the_longest_allowed_ones_are_kept()
    {
        var longest = "udp:" + new string('1', CallDialogs.MaxTargetLength - 4);
        string[] caller = [longest, "b", "c", "d", "e", "udp:" + new string('2', CallDialogs.MaxTargetLength)];
        var (call, state) = NewCall();

        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, new CallLeg("attempt", caller), CancellationToken.None)).Status);
        // The callee's: an over-long one among the first four is dropped (a confirm cannot be refused), later ones ignored.
        Assert.True(await call.ConfirmAsync(new CallAnswer("t", ["x", "udp:" + new string('3', CallDialogs.MaxTargetLength), "", "y", "z"]), CancellationToken.None));

        Assert.Equal([longest, "b", "c", "d"], call.Dialog()!.CallerTargets);
        Assert.Equal(["x", "y"], call.Dialog()!.CalleeTargets);
        Assert.Equal([longest, "b", "c", "d"], state.Persisted!.CallerTargets!);
    }

    [Fact]
    public async Task An_answer_with_an_over_long_tag_confirms_the_call_without_storing_a_dialog()
    {
        var (call, state) = NewCall();
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, LegA, CancellationToken.None)).Status);

        Assert.True(await call.ConfirmAsync(new CallAnswer(new string('t', CallDialogs.MaxTagLength + 1), ["udp:192.0.2.2:5060"]), CancellationToken.None));

        Assert.True(state.Persisted!.Confirmed);
        Assert.Null(call.Dialog()!.CalleeTag);
        Assert.Empty(call.Dialog()!.CalleeTargets);
        Assert.All(_limits.Grain("user/alice").Snapshot().Calls, c => Assert.Equal(HoldPhase.Confirmed, c.Phase));
    }

    [Fact]
    public void A_record_stored_by_the_previous_version_loads_and_one_without_a_leg_is_still_stored_the_same_way()
    {
        // What the version before attempts and dialogs wrote for an admitted, unconfirmed call.
        const string Previous = """{"Phase":1,"Limits":[{"Key":"user/alice","Direction":2}],"Confirmed":false,"Reason":0,"Current":0,"StartedMs":1700000000000,"LeaseEndMs":1700000180000}""";

        var loaded = StateSerializer.DeserializeCall(Encoding.UTF8.GetBytes(Previous));

        Assert.Equal(CallPhase.Admitting, loaded.Phase);
        Assert.Equal("user/alice", Assert.Single(loaded.Limits).Key);
        Assert.Null(loaded.Attempt);
        Assert.Null(loaded.CallerTargets);
        Assert.Null(loaded.CalleeTag);
        Assert.Null(loaded.CalleeTargets);
        Assert.Equal(Previous, Encoding.UTF8.GetString(StateSerializer.Serialize(loaded)));
    }

    [Fact]
    public void The_stored_record_round_trips_the_attempt_and_the_dialog()
    {
        var state = new CallGrainState
        {
            Phase = CallPhase.Admitted,
            Confirmed = true,
            Attempt = "z9hG4bK-a",
            CallerTargets = ["udp:192.0.2.1:5060"],
            CalleeTag = "callee-tag-1",
            CalleeTargets = ["tcp:203.0.113.5:5060", "udp:203.0.113.5:5060"],
        };

        var loaded = StateSerializer.DeserializeCall(StateSerializer.Serialize(state));

        Assert.Equal(state.Attempt, loaded.Attempt);
        Assert.Equal(state.CallerTargets, loaded.CallerTargets);
        Assert.Equal(state.CalleeTag, loaded.CalleeTag);
        Assert.Equal(state.CalleeTargets, loaded.CalleeTargets);
    }
}
