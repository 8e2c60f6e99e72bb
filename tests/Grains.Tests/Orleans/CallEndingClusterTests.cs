using System.Collections.Concurrent;
using System.Text;
using CallState.Grains.Tests.Infrastructure;
using CallState.Silo;
using CallState.Storage.Tests.Infrastructure;

namespace CallState.Grains.Tests.Orleans;

/// <summary>
/// An operator's end on a real silo (docs/architecture.md, "Ending a call from the admin API"): an answered call's stored
/// BYEs go to an edge registered as an observer with the edge registry (the next one when one fails), and only then
/// are its slots released; with no edge nothing changes; an unanswered call is released; an unknown call is reported.
/// </summary>
public sealed class CallEndingClusterTests
{
    private static readonly CallLeg Leg = new("z9hG4bK-a", ["udp:192.0.2.1:5060"]);
    private static readonly LimitRequest[] Alice = [new("user/alice", Direction.Outbound)];

    private static readonly DialogTeardown Teardown = new(
        new StoredBye("udp:203.0.113.5:5060", Encoding.ASCII.GetBytes("BYE sip:bob@203.0.113.5 SIP/2.0\r\n"), Encoding.ASCII.GetBytes("CSeq: 100001 BYE\r\n")),
        new StoredBye("udp:192.0.2.1:5060", Encoding.ASCII.GetBytes("BYE sip:alice@192.0.2.1 SIP/2.0\r\n"), Encoding.ASCII.GetBytes("CSeq: 2147483647 BYE\r\n")));

    [Fact]
    public async Task An_answered_call_is_ended_by_a_registered_edge_then_released_and_a_failing_edge_is_passed_over()
    {
        await using var db = TestStorage.Create("sqlite");
        await using var cluster = await GrainTestCluster.StartAsync(db);
        var ending = cluster.Service<CallEnding>();
        var call = cluster.Call("call-1");
        Assert.Equal(AdmitStatus.Admitted, (await call.AdmitAsync(Alice, Leg)).Status);
        Assert.True(await call.ConfirmAsync(new CallAnswer("callee-1", ["udp:203.0.113.5:5060"], Teardown)));

        // No edge registered: nothing is sent and nothing released (the call is still up and must stay counted).
        Assert.Empty(await ending.EdgesAsync());
        Assert.Equal(new CallEndResult(CallEndOutcome.NoEdge), await ending.EndAsync("call-1"));
        Assert.Equal(1, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        var broken = new RecordingEdge(fails: true);
        var working = new RecordingEdge(fails: false);
        var registry = cluster.Client.GetGrain<IEdgeRegistryGrain>(EdgeRegistry.Key);
        await registry.RegisterAsync("edge-a", cluster.Client.CreateObjectReference<IEdgeObserver>(broken));
        await registry.RegisterAsync("edge-b", cluster.Client.CreateObjectReference<IEdgeObserver>(working));
        Assert.Equal(["edge-a", "edge-b"], await registry.GetEdgesAsync());
        Assert.Equal(["edge-a", "edge-b"], await ending.EdgesAsync());

        // edge-a is tried first (round robin from the first name), fails and is forgotten; edge-b sends.
        var result = await ending.EndAsync("call-1");
        Assert.Equal(new CallEndResult(CallEndOutcome.ByeSent, "edge-b"), result);
        Assert.Single(broken.Asked);
        var (callKey, sent) = Assert.Single(working.Asked);
        Assert.Equal("call-1", callKey);
        Assert.Equal(Teardown.TowardCallee.Rest, sent.TowardCallee.Rest);
        Assert.Equal(Teardown.TowardCaller.Target, sent.TowardCaller.Target);
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);
        Assert.Equal(["edge-b"], await registry.GetEdgesAsync());

        // Ended: a second end finds nothing, and no BYE goes out again.
        Assert.Equal(new CallEndResult(CallEndOutcome.Unknown), await ending.EndAsync("call-1"));
        Assert.Single(working.Asked);
    }

    [Fact]
    public async Task An_unanswered_call_or_one_without_stored_BYEs_is_released_without_an_edge_and_an_unknown_one_is_reported()
    {
        await using var db = TestStorage.Create("sqlite");
        await using var cluster = await GrainTestCluster.StartAsync(db);
        var ending = cluster.Service<CallEnding>();

        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("ringing").AdmitAsync(Alice, Leg)).Status);
        Assert.Equal(new CallEndResult(CallEndOutcome.Released), await ending.EndAsync("ringing"));
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("old").AdmitAsync(Alice, Leg)).Status);
        Assert.True(await cluster.Call("old").ConfirmAsync(new CallAnswer("callee-1", [])));
        Assert.Equal(new CallEndResult(CallEndOutcome.ReleasedWithoutBye), await ending.EndAsync("old"));
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        Assert.Equal(new CallEndResult(CallEndOutcome.Unknown), await ending.EndAsync("never-was"));
        Assert.Equal(new CallEndResult(CallEndOutcome.Unknown), await ending.EndAsync(""));
    }

    private sealed class RecordingEdge(bool fails) : IEdgeObserver
    {
        public ConcurrentQueue<(string CallKey, DialogTeardown Teardown)> Asked { get; } = new();

        public Task SendTeardownAsync(string callKey, DialogTeardown teardown)
        {
            Asked.Enqueue((callKey, teardown));
            return fails ? Task.FromException(new InvalidOperationException("this edge's SIP listeners are not running")) : Task.CompletedTask;
        }
    }
}
