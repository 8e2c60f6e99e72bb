using CallState.Grains.Tests.Infrastructure;
using CallState.Storage.Tests.Infrastructure;

namespace CallState.Grains.Tests.Orleans;

/// <summary>
/// Tenants' pools and a shared trunk's guaranteed reservations (docs/policies.md, "Tenants", "Guaranteed reservations") on
/// real Orleans silos over real storage.
/// </summary>
public sealed class TenantClusterTests
{
    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    private static Dictionary<string, string?> Settings(params (string Key, string Value)[] settings) =>
        settings.ToDictionary(s => s.Key, s => (string?)s.Value);

    private static readonly Dictionary<string, string?> SharedTrunk = Settings(
        ("CallState:Limits:Tenants:a:Domains:0", "a.example"),
        ("CallState:Limits:Tenants:b:Domains:0", "b.example"),
        ("CallState:Limits:Trunks:shared:Total", "10"),
        ("CallState:Limits:Trunks:shared:Reservations:a:Guaranteed", "4"),
        ("CallState:Limits:Trunks:shared:Reservations:b:Guaranteed", "4"));

    private static LimitRequest[] CallOf(string tenant) =>
        [new LimitRequest("trunk/shared", Direction.Outbound, Tenant: tenant), new LimitRequest("tenant/" + tenant, Direction.Outbound)];

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_tenant_borrows_free_slots_of_a_shared_trunk_but_never_another_tenants_guarantee(string kind)
    {
        await using var db = TestStorage.Create(kind);
        await using (var cluster = await GrainTestCluster.StartAsync(db, SharedTrunk))
        {
            // Tenant a offers 10 calls at once while b has none: a holds its 4 and borrows the 2 nobody is guaranteed.
            var offered = await Task.WhenAll(Enumerable.Range(0, 10).Select(i => Task.Run(() => cluster.Call($"a{i}").AdmitAsync(CallOf("a")))));
            Assert.Equal(6, offered.Count(r => r.Status == AdmitStatus.Admitted));
            Assert.All(offered.Where(r => r.Status != AdmitStatus.Admitted), r =>
            {
                Assert.Equal(AdmitStatus.Rejected, r.Status);
                Assert.Equal("trunk/shared", r.LimitKey);
                Assert.Equal(RejectReason.TrunkReservedForOtherTenants, r.Reason);
            });

            // b's four are all admitted.
            var b = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => Task.Run(() => cluster.Call($"b{i}").AdmitAsync(CallOf("b")))));
            Assert.All(b, r => Assert.Equal(AdmitStatus.Admitted, r.Status));

            var trunk = await cluster.Limit("trunk/shared").GetSnapshotAsync();
            Assert.Equal(10, trunk.Total);
            Assert.Equal(6, trunk.TenantCalls!["a"]);
            Assert.Equal(4, trunk.TenantCalls!["b"]);
            Assert.Equal(6, (await cluster.Limit("tenant/a").GetSnapshotAsync()).Total);
        }

        // A new cluster on the same storage knows whose calls the trunk holds.
        await using var second = await GrainTestCluster.StartAsync(db, SharedTrunk);
        var reloaded = await second.Limit("trunk/shared").GetSnapshotAsync();
        Assert.Equal(6, reloaded.TenantCalls!["a"]);
        Assert.Equal(4, reloaded.TenantCalls!["b"]);
        Assert.Equal(RejectReason.TrunkTotalLimitReached, (await second.Call("b4").AdmitAsync(CallOf("b"))).Reason);

        // a ends its calls: b may borrow the 2 slots nobody is guaranteed, never a's 4, which a is not using.
        foreach (var call in new[] { "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9" })
        {
            await second.Call(call).EndAsync();
        }

        Assert.Equal(AdmitStatus.Admitted, (await second.Call("b5").AdmitAsync(CallOf("b"))).Status);
        Assert.Equal(AdmitStatus.Admitted, (await second.Call("b6").AdmitAsync(CallOf("b"))).Status);
        var refused = await second.Call("b7").AdmitAsync(CallOf("b"));
        Assert.Equal(RejectReason.TrunkReservedForOtherTenants, refused.Reason);
        Assert.Equal(6, (await second.Limit("trunk/shared").GetSnapshotAsync()).TenantCalls!["b"]);
        Assert.Equal(0, (await second.Limit("tenant/a").GetSnapshotAsync()).Total);
    }

    [Fact]
    public async Task Run_time_reservations_are_checked_by_field_persisted_and_put_back_to_configuration()
    {
        await using var db = TestStorage.Sqlite();
        await using (var first = await GrainTestCluster.StartAsync(db, SharedTrunk))
        {
            var trunk = LimitKey.Trunk("shared");
            var unknown = await Assert.ThrowsAsync<ArgumentException>(() => first.Access().SetReservationsAsync(
                trunk, new TrunkReservations(new() { ["c"] = new TenantReservation(1) })));
            Assert.Contains("trunk/shared:Reservations:c: no tenant 'c'", unknown.Message, StringComparison.Ordinal);
            var over = await Assert.ThrowsAsync<ArgumentException>(() => first.Access().SetReservationsAsync(
                trunk, new TrunkReservations(new() { ["a"] = new TenantReservation(8), ["b"] = new TenantReservation(3) })));
            Assert.Contains("the guarantees add up to 11, more than the trunk's Total (10)", over.Message, StringComparison.Ordinal);

            // a: at most 2 calls; b: 8 guaranteed.
            var set = await first.Access().SetReservationsAsync(
                trunk, new TrunkReservations(new() { ["a"] = new TenantReservation(0, 2), ["b"] = new TenantReservation(8) }));
            Assert.True(set.After.ReservationsOverridden);
            Assert.Equal(4, set.Before.Reservations!.Tenants["a"].Guaranteed);
        }

        // Stored: a new cluster on the same storage decides with them.
        await using var second = await GrainTestCluster.StartAsync(db, SharedTrunk);
        Assert.Equal(AdmitStatus.Admitted, (await second.Call("a0").AdmitAsync(CallOf("a"))).Status);
        Assert.Equal(AdmitStatus.Admitted, (await second.Call("a1").AdmitAsync(CallOf("a"))).Status);
        var third = await second.Call("a2").AdmitAsync(CallOf("a"));
        Assert.Equal(RejectReason.TrunkTenantMaxReached, third.Reason);
        Assert.Equal(2, third.Limit);

        // Back to configuration: a's guarantee of 4 again.
        var cleared = await second.Access().SetReservationsAsync(LimitKey.Trunk("shared"), null);
        Assert.False(cleared.After.ReservationsOverridden);
        Assert.Equal(AdmitStatus.Admitted, (await second.Call("a3").AdmitAsync(CallOf("a"))).Status);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_tenants_pool_is_shared_by_its_users_and_refused_all_or_nothing(string kind)
    {
        await using var db = TestStorage.Create(kind);
        await using var cluster = await GrainTestCluster.StartAsync(db, Settings(
            ("CallState:Limits:Tenants:acme:Domains:0", "acme.example"),
            ("CallState:Limits:Tenants:acme:Total", "3"),
            ("CallState:Limits:Users:alice@acme.example:Total", "2")));

        LimitRequest[] From(string user) => [new LimitRequest("user/" + user + "@acme.example", Direction.Outbound), new LimitRequest("tenant/acme", Direction.Outbound)];

        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("al1").AdmitAsync(From("alice"))).Status);
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("bo1").AdmitAsync(From("bob"))).Status);
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("bo2").AdmitAsync(From("bob"))).Status);

        // The pool of 3 is full: alice, below her own 2, is refused by the tenant and holds nothing for the attempt.
        var refused = await cluster.Call("al2").AdmitAsync(From("alice"));
        Assert.Equal(AdmitStatus.Rejected, refused.Status);
        Assert.Equal("tenant/acme", refused.LimitKey);
        Assert.Equal(RejectReason.TenantTotalLimitReached, refused.Reason);
        Assert.Equal(1, (await cluster.Limit("user/alice@acme.example").GetSnapshotAsync()).Total);

        // The users are counted apart: alice@acme.example is not alice.
        Assert.Equal(0, (await cluster.Limit("user/alice").GetSnapshotAsync()).Total);

        Assert.True(await cluster.Call("bo1").EndAsync());
        Assert.Equal(AdmitStatus.Admitted, (await cluster.Call("al3").AdmitAsync(From("alice"))).Status);
        Assert.Equal(3, (await cluster.Limit("tenant/acme").GetSnapshotAsync()).Outbound);
    }
}
