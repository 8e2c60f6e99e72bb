using CallState.Runtime.Cluster;
using CallState.Runtime.Storage;
using CallState.Runtime.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Runtime.Tests.Cluster;

/// <summary>The membership table on a real SQLite file and a real PostgreSQL schema.</summary>
public sealed class MembershipTableTests
{
    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    private static readonly DateTimeOffset T0 = DateTimeOffset.FromUnixTimeMilliseconds(1_800_000_000_000);

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_silo_declared_dead_cannot_heartbeat_its_old_epoch_and_joins_again_with_a_new_one(string kind)
    {
        await using var storage = TestStorage.Create(kind);
        await using (var grains = GrainStorageFactory.Create(storage.Options, NullLoggerFactory.Instance))
        {
            await grains.InitializeAsync(CancellationToken.None);
        }

        await using var table = MembershipTable.Create(storage.Options);
        var ct = CancellationToken.None;
        Assert.Equal(1, await table.JoinAsync("a", "127.0.0.1:1", T0, ct));
        Assert.Equal(1, await table.JoinAsync("b", "127.0.0.1:2", T0, ct));
        Assert.True(await table.HeartbeatAsync("a", 1, T0.AddSeconds(1), ct));

        // b's heartbeat (T0) is older than the cutoff; a's (T0 + 1 s) is not.
        Assert.False(await table.DeclareDeadAsync("a", 1, T0.AddSeconds(0.5), ct));
        Assert.True(await table.DeclareDeadAsync("b", 1, T0.AddSeconds(0.5), ct));
        Assert.False(await table.DeclareDeadAsync("b", 1, T0.AddSeconds(0.5), ct));

        Assert.False(await table.HeartbeatAsync("b", 1, T0.AddSeconds(2), ct));
        Assert.Equal(2, await table.JoinAsync("b", "127.0.0.1:3", T0.AddSeconds(2), ct));
        Assert.True(await table.HeartbeatAsync("b", 2, T0.AddSeconds(3), ct));
        Assert.False(await table.HeartbeatAsync("b", 1, T0.AddSeconds(3), ct));

        await table.LeaveAsync("a", 1, ct);
        var rows = (await table.ReadAllAsync(ct)).ToDictionary(r => r.SiloId);
        Assert.Equal(SiloStatus.Left, rows["a"].Status);
        Assert.Equal(new SiloEntry("b", "127.0.0.1:3", 2, SiloStatus.Active, T0.AddSeconds(3)), rows["b"]);
        Assert.Equal(["b"], ClusterView.FromEntries(rows.Values, T0.AddSeconds(4), TimeSpan.FromSeconds(5)).Members.Select(m => m.SiloId));
    }
}
