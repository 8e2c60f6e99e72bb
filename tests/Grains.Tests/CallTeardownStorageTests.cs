using System.Text;
using CallState.Grains.Tests.Infrastructure;

namespace CallState.Grains.Tests;

/// <summary>
/// What an operator's end needs of a call (docs/architecture.md, "Ending a call from the admin API"): the BYEs an edge
/// built from the 2xx are stored with the answer, kept from the first answer, survive a reload, and are shown only for an
/// answered call that is up; and the roster of edges the registry tries them on.
/// </summary>
public sealed class CallTeardownStorageTests
{
    private static readonly CallLeg Leg = new("z9hG4bK-a", ["udp:192.0.2.1:5060"]);

    private readonly FakeTimeProvider _time = new();
    private readonly LeaseOptions _leases = new();
    private readonly InMemoryLimitClient _limits;

    public CallTeardownStorageTests() => _limits = new InMemoryLimitClient(_time, []);

    private static LimitRequest[] Alice => [new("user/alice", Direction.Outbound)];

    private static DialogTeardown Teardown(string callId, int restLength = 40) => new(
        new StoredBye("udp:203.0.113.5:5060", Encoding.ASCII.GetBytes("BYE sip:bob@203.0.113.5 SIP/2.0\r\n"), Encoding.ASCII.GetBytes("Call-ID: " + callId + "\r\n" + new string('x', restLength) + "\r\n")),
        new StoredBye("udp:192.0.2.1:5060", Encoding.ASCII.GetBytes("BYE sip:alice@192.0.2.1 SIP/2.0\r\n"), Encoding.ASCII.GetBytes("Call-ID: " + callId + "\r\n")));

    private CallAdmission NewCall(InMemoryGrainState<CallGrainState> state) => new("call-1", state, _limits, _leases, _time);

    [Fact]
    public async Task The_BYEs_of_the_first_answer_are_stored_survive_a_reload_and_are_shown_only_while_the_answered_call_is_up()
    {
        var state = new InMemoryGrainState<CallGrainState>();
        var call = NewCall(state);
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, Leg, CancellationToken.None)).Status);

        // Before the answer: live, not confirmed, nothing to send.
        var early = call.TeardownInfo();
        Assert.True(early.IsLive);
        Assert.False(early.Confirmed);
        Assert.Null(early.Teardown);

        var first = Teardown("first");
        Assert.True(await call.ConfirmAsync(new CallAnswer("callee-1", ["udp:203.0.113.5:5060"], first), CancellationToken.None));
        Assert.True(await call.ConfirmAsync(new CallAnswer("callee-2", ["udp:203.0.113.6:5060"], Teardown("second")), CancellationToken.None));

        // Read back from what was persisted (JSON), as another activation would; the stored row's form keeps it too.
        var row = StateSerializer.DeserializeCall(StateSerializer.Serialize(state.Persisted!));
        Assert.Equal(first.TowardCaller.Rest, row.Teardown!.TowardCaller.Rest);
        var reloaded = NewCall(state.Reload());
        var info = reloaded.TeardownInfo();
        Assert.True(info.IsLive);
        Assert.True(info.Confirmed);
        Assert.NotNull(info.Teardown);
        Assert.Equal("udp:203.0.113.5:5060", info.Teardown.TowardCallee.Target);
        Assert.Equal(first.TowardCallee.Rest, info.Teardown.TowardCallee.Rest);
        Assert.Equal(first.TowardCaller.RequestLine, info.Teardown.TowardCaller.RequestLine);

        Assert.True(await reloaded.EndAsync(CancellationToken.None));
        var ended = reloaded.TeardownInfo();
        Assert.False(ended.IsLive);
        Assert.Null(ended.Teardown);
        Assert.Equal(0, _limits.Held("user/alice"));
    }

    [Fact]
    public async Task A_teardown_longer_than_a_record_keeps_is_not_stored_and_the_call_is_confirmed_all_the_same()
    {
        var state = new InMemoryGrainState<CallGrainState>();
        var call = NewCall(state);
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, Leg, CancellationToken.None)).Status);

        Assert.True(await call.ConfirmAsync(new CallAnswer("callee-1", [], Teardown("long", CallDialogs.MaxByeLength)), CancellationToken.None));

        var info = NewCall(state.Reload()).TeardownInfo();
        Assert.True(info.Confirmed);
        Assert.Null(info.Teardown);
        Assert.Equal("callee-1", state.Persisted!.CalleeTag);
    }

    [Theory]
    [InlineData("", false)]
    [InlineData("udp:203.0.113.5:5060", true)]
    public void A_teardown_is_storable_only_with_targets_and_request_lines(string target, bool storable)
    {
        var bye = new StoredBye(target, Encoding.ASCII.GetBytes("BYE sip:b@h SIP/2.0\r\n"), []);
        Assert.Equal(storable, CallDialogs.IsStorable(new DialogTeardown(bye, bye)));
        Assert.False(CallDialogs.IsStorable(new DialogTeardown(bye with { RequestLine = [] }, bye)));
        Assert.False(CallDialogs.IsStorable(null));
    }

    [Fact]
    public void The_roster_tries_live_edges_in_turn_forgets_those_not_heard_of_and_keeps_a_newer_registration_on_failure()
    {
        var roster = new EdgeRoster<object>(_time, TimeSpan.FromSeconds(95));
        Assert.Empty(roster.Candidates());
        object a = new(), b = new(), c = new();
        roster.Register("c", c);
        roster.Register("a", a);
        roster.Register("b", b);
        Assert.Equal(["a", "b", "c"], roster.Names());

        // Round robin: each end starts one edge further, and every live edge is a fallback.
        Assert.Equal(["a", "b", "c"], roster.Candidates().Select(x => x.Name));
        Assert.Equal(["b", "c", "a"], roster.Candidates().Select(x => x.Name));
        Assert.Equal(["c", "a", "b"], roster.Candidates().Select(x => x.Name));

        // b refreshes; a and c go quiet past the expiry.
        _time.Advance(TimeSpan.FromSeconds(60));
        roster.Register("b", b);
        _time.Advance(TimeSpan.FromSeconds(40));
        Assert.Equal(["b"], roster.Candidates().Select(x => x.Name));
        Assert.Equal(["b"], roster.Candidates().Select(x => x.Name));

        // A failure of an old reference does not drop the edge registered again since; its own does.
        object b2 = new();
        roster.Register("b", b2);
        Assert.False(roster.Remove("b", b));
        Assert.Same(b2, Assert.Single(roster.Candidates()).Edge);
        Assert.True(roster.Remove("b", b2));
        Assert.Empty(roster.Candidates());
    }
}
