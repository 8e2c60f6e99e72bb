using CallState.Grains;
using CallState.Runtime.Cluster;
using FsCheck;
using FsCheck.Fluent;

namespace CallState.Runtime.Tests.Cluster;

/// <summary>Rendezvous placement over a view, and the request and reply bodies of the cluster RPC.</summary>
public sealed class PlacementAndProtocolTests
{
    private static readonly string[] Keys = Enumerable.Range(0, 10_000).Select(i => $"limit:user/u{i}").ToArray();

    private static ClusterView View(params string[] ids) => new(ids.Select(id => new SiloMember(id, $"127.0.0.1:{20000 + id[^1]}", 1)));

    [Fact]
    public void Every_process_with_the_same_view_names_the_same_owner_whatever_the_order_it_learned_the_silos_in()
    {
        var a = View("silo0", "silo1", "silo2");
        var b = View("silo2", "silo0", "silo1");
        Assert.All(Keys, k => Assert.Equal(a.OwnerOf(k)!.SiloId, b.OwnerOf(k)!.SiloId));
        Assert.Equal(a.Signature, b.Signature);
    }

    [Fact]
    public void Keys_spread_evenly_and_a_silo_leaving_moves_only_its_own_keys_to_their_second_choice()
    {
        var three = View("silo0", "silo1", "silo2");
        var counts = Keys.GroupBy(k => three.OwnerOf(k)!.SiloId).ToDictionary(g => g.Key, g => g.Count());
        Assert.All(counts.Values, c => Assert.InRange(c, 2_900, 3_800));

        var two = View("silo0", "silo2");
        foreach (var key in Keys)
        {
            var before = three.OwnerOf(key)!.SiloId;
            var after = two.OwnerOf(key)!.SiloId;
            if (before == "silo1")
            {
                Assert.Equal(three.Ranked(key, 1)!.SiloId, after);
            }
            else
            {
                Assert.Equal(before, after);
            }
        }
    }

    [Fact]
    public void Live_silos_are_the_active_rows_with_a_heartbeat_within_the_failure_timeout()
    {
        var now = DateTimeOffset.UnixEpoch.AddDays(1);
        var view = ClusterView.FromEntries(
        [
            new SiloEntry("fresh", "127.0.0.1:1", 3, SiloStatus.Active, now.AddSeconds(-2)),
            new SiloEntry("stale", "127.0.0.1:2", 1, SiloStatus.Active, now.AddSeconds(-11)),
            new SiloEntry("dead", "127.0.0.1:3", 1, SiloStatus.Dead, now),
            new SiloEntry("left", "127.0.0.1:4", 1, SiloStatus.Left, now),
            new SiloEntry("garbage", "not an address", 1, SiloStatus.Active, now),
        ], now, TimeSpan.FromSeconds(10));
        Assert.Equal(["fresh"], view.Members.Select(m => m.SiloId));
        Assert.Equal(3, view.Members[0].Epoch);
        Assert.Null(ClusterView.Empty.OwnerOf("call:x"));
    }

    [Theory]
    [InlineData("10.0.0.1:11111", true)]
    [InlineData("[::1]:11111", true)]
    [InlineData("silo-headless.callstate.svc:11111", true)]
    [InlineData("silo:0", false)]
    [InlineData("silo", false)]
    [InlineData(":11111", false)]
    [InlineData("bad host:1", false)]
    public void Silo_addresses_are_host_and_port(string text, bool valid) => Assert.Equal(valid, SiloAddress.TryParse(text, out _));

    [Fact]
    public void Bodies_round_trip()
    {
        var limits = new[] { new LimitRequest("user/alice", Direction.Outbound), new LimitRequest("key/+123", Direction.Inbound, 3) };
        var writer = new System.Buffers.ArrayBufferWriter<byte>();
        ClusterProtocol.WriteAdmit(writer, ClusterRouting.NoRedirect, "call-1;tag-ä", limits);
        var (flags, callKey, read) = ClusterProtocol.ReadAdmit(writer.WrittenSpan);
        Assert.Equal(ClusterRouting.NoRedirect, flags);
        Assert.Equal("call-1;tag-ä", callKey);
        Assert.Equal(limits, read);

        writer.Clear();
        var result = new AdmitResult(AdmitStatus.Rejected, "user/alice", RejectReason.UserTotalLimitReached, 10, 10, null);
        ClusterProtocol.WriteAdmitResult(writer, result);
        Assert.Equal(result, ClusterProtocol.ReadAdmitResult(writer.WrittenSpan));

        writer.Clear();
        var op = new LimitOpRequest("trunk/carrier", "c;t", Direction.Inbound, TimeSpan.FromSeconds(180), null);
        ClusterProtocol.WriteLimitOp(writer, ClusterRouting.None, op);
        Assert.Equal((ClusterRouting.None, op), ClusterProtocol.ReadLimitOp(writer.WrittenSpan));

        writer.Clear();
        ClusterProtocol.WriteLimitSet(writer, ClusterRouting.None, "user/bob", new LimitSettings(5, null, 2));
        Assert.Equal((ClusterRouting.None, "user/bob", new LimitSettings(5, null, 2)), ClusterProtocol.ReadLimitSet(writer.WrittenSpan));

        writer.Clear();
        var view = View("a", "b");
        ClusterProtocol.WriteView(writer, view);
        Assert.Equal(view.Signature, ClusterProtocol.ReadView(writer.WrittenSpan).Signature);
    }

    [Fact]
    public void Every_truncation_of_a_body_and_any_trailing_byte_is_a_format_error()
    {
        var writer = new System.Buffers.ArrayBufferWriter<byte>();
        ClusterProtocol.WriteAdmit(writer, ClusterRouting.None, "call-1;t", [new LimitRequest("user/alice", Direction.Outbound, 4)]);
        var body = writer.WrittenSpan.ToArray();
        for (var length = 0; length < body.Length; length++)
        {
            var cut = body[..length];
            Assert.Throws<FormatException>(() => ClusterProtocol.ReadAdmit(cut));
        }

        Assert.Throws<FormatException>(() => ClusterProtocol.ReadAdmit([.. body, 0]));
    }

    [Fact]
    public void Random_bytes_never_throw_anything_but_a_format_error()
    {
        Check.One(Config.Quick.WithMaxTest(2_000), Prop.ForAll<byte[]>(bytes =>
        {
            foreach (var read in new Action<byte[]>[]
            {
                b => ClusterProtocol.ReadAdmit(b),
                b => ClusterProtocol.ReadAdmitResult(b),
                b => ClusterProtocol.ReadLimitOp(b),
                b => ClusterProtocol.ReadLimitSet(b),
                b => ClusterProtocol.ReadView(b),
                b => ClusterProtocol.ReadCallKey(b),
            })
            {
                try
                {
                    read(bytes ?? []);
                }
                catch (FormatException)
                {
                }
            }
        }));
    }
}
