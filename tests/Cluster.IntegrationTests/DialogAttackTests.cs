using System.Net;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Xunit.Abstractions;
using static CallState.Cluster.IntegrationTests.Infrastructure.SipText;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// Attacks on what the edge forwards, against a running standalone edge (the sample configuration) over real UDP and
/// TCP, with hand-written requests from a raw socket and a real sipp callee: nothing reaches an address no
/// configuration names (a UDP and a TCP listener there count what arrives), no slot is taken or freed wrongly (the admin
/// API's counts), and each attack gets its answer (docs/security.md).
/// </summary>
[Collection(LoadTests.Name)]
public sealed class DialogAttackTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new("callstate-attacks-");

    private string Data => _temp.Path;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Requests_naming_an_unconfigured_address_are_refused_and_nothing_reaches_it()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        using var victim = new CountingListener(IPAddress.Parse("127.0.0.9"), SipEdgeProcess.FreeUdpAndTcpPort());
        using var caller = new RawSipCaller(IPAddress.Loopback, edge.SipPort);
        var at = $"127.0.0.9:{victim.Port}";

        var attempts = new (string Request, int Expected)[]
        {
            (caller.Request("MESSAGE", $"sip:bob@{at}", "relay1", toTag: null), 403),
            (caller.Request("OPTIONS", $"sip:bob@{at}", "relay2", toTag: null), 403),
            (caller.Request("REGISTER", $"sip:{at}", "relay3", toTag: null), 403),
            (caller.Request("SUBSCRIBE", $"sip:bob@{at};transport=tcp", "relay4", toTag: null), 403),
            (caller.Request("MESSAGE", "sip:bob@example.com", "relay5", toTag: null, route: $"<sip:{at};lr;transport=tcp>"), 403),
            (caller.Request("BYE", $"sip:bob@{at}", "relay6", toTag: "t1"), 481),
            (caller.Request("INFO", $"sip:bob@{at};transport=tcp", "relay7", toTag: "t1"), 481),
            (caller.Request("INVITE", $"sip:bob@{at}", "relay8", toTag: "t1"), 481),
        };
        foreach (var (request, expected) in attempts)
        {
            var answer = await caller.SendAsync(request, final: true);
            output.WriteLine($"{FirstLine(request)} -> {FirstLine(answer)}");
            Assert.Equal(expected, Status(answer));
        }

        // Long enough for every retransmission a forwarded request would have had over UDP (T1 doubling past 4 s).
        await Task.Delay(TimeSpan.FromSeconds(5));
        Assert.Equal(0, victim.Datagrams);
        Assert.Equal(0, victim.Connections);
        await AssertNothingHeldAsync(edge);
    }

    [Fact]
    public async Task A_forged_or_copied_dialog_neither_takes_nor_frees_a_slot_and_a_bye_to_a_dead_address_keeps_the_call()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-m", "1"]);
        await using var edge = await StandaloneEdge.StartAsync(Data, uasPort);
        using var dead = new CountingListener(IPAddress.Parse("127.0.0.9"), SipEdgeProcess.FreeUdpAndTcpPort());
        using var caller = new RawSipCaller(IPAddress.Loopback, edge.SipPort);

        // A real call: alice -> bob, answered by sipp through the edge.
        var invite = caller.Request("INVITE", $"sip:bob@127.0.0.1:{edge.SipPort}", "call1", toTag: null, sdp: true);
        var ok = await caller.SendAsync(invite, final: true);
        Assert.Equal(200, Status(ok));
        var calleeTag = ToTag(ok);
        var route = RecordRoute(ok);
        var contact = ContactUri(ok);
        await caller.SendOnlyAsync(caller.Request("ACK", contact, "call1", calleeTag, route: route, cseq: 1));
        await WaitForCountAsync(edge, "user/alice", 1);

        // The same Call-ID and From tag in a new transaction: refused, counted nowhere, and the call keeps its slot.
        var copy = caller.Request("INVITE", $"sip:carol@127.0.0.1:{edge.SipPort}", "call1", toTag: null, branch: "z9hG4bKcopy", sdp: true);
        Assert.Equal(482, Status(await caller.SendAsync(copy, final: true)));
        await caller.SendOnlyAsync(caller.Request("ACK", $"sip:carol@127.0.0.1:{edge.SipPort}", "call1", toTag: null, branch: "z9hG4bKcopy", cseq: 1));

        // The right tags, a wrong one, and an address the dialog never recorded.
        Assert.Equal(481, Status(await caller.SendAsync(caller.Request("BYE", contact, "call1", "forged", route: route, cseq: 2), final: true)));
        var deadBye = caller.Request("BYE", $"sip:bob@127.0.0.9:{dead.Port}", "call1", calleeTag, route: route, cseq: 3);
        Assert.Equal(403, Status(await caller.SendAsync(deadBye, final: true)));
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.Equal(0, dead.Datagrams);
        var alice = Assert.Single(await LimitsAsync(edge, "user"), l => l.GetProperty("key").GetString() == "user/alice");
        Assert.Equal(1, alice.GetProperty("total").GetInt32());

        // The real BYE, to the callee's Contact: the callee answers and the slot comes back.
        var bye = await caller.SendAsync(caller.Request("BYE", contact, "call1", calleeTag, route: route, cseq: 4), final: true);
        Assert.Equal(200, Status(bye));
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the BYE");
        await uas.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, dead.Datagrams);
    }
}
