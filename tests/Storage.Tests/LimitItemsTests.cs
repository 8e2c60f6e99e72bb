using System.Text;
using CallState.Grains;
using CallState.Storage;
using CallState.Storage.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;

namespace CallState.Storage.Tests;

/// <summary>
/// A limit stores its held calls as items of its row: a turn writes what it changed, whatever the number of
/// calls held, and a new activation rebuilds the same state from the row and its items.
/// </summary>
public sealed class LimitItemsTests
{
    private static readonly TimeSpan Lease = TimeSpan.FromMinutes(3);
    private static readonly LimitKey Trunk = LimitKey.Trunk("carrier");
    private static readonly StateId TrunkId = new(GrainRuntime.LimitGrainType, "trunk/carrier");

    public static TheoryData<string> Storages => new() { "sqlite", "postgres" };

    private static LimitsOptions Limits => new() { Trunks = { ["carrier"] = new LimitValues { Total = 100_000 } } };

    private static GrainRuntime NewRuntime(IStateStore storage, TimeProvider time) =>
        new(storage, new GrainOptions(), new ConfiguredLimits(Limits), time, NullLoggerFactory.Instance);

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task One_more_reservation_writes_the_same_bytes_whether_the_limit_holds_no_call_or_five_hundred(string kind)
    {
        await using var db = TestStorage.Create(kind);
        var storage = new CountingStorage(db.Open());
        var time = new ManualTimeProvider();
        await using var runtime = NewRuntime(storage, time);
        await runtime.StartAsync(CancellationToken.None);
        var limits = runtime.LocalLimits;

        Assert.True((await limits.TryReserveAsync(Trunk, "call-00000", Direction.Inbound, Lease, null, CancellationToken.None)).Admitted);
        var alone = storage.LastWriteOf(TrunkId);

        var many = await Task.WhenAll(Enumerable.Range(1, 500).Select(i =>
            limits.TryReserveAsync(Trunk, $"call-{i:D5}", Direction.Inbound, Lease, null, CancellationToken.None)));
        Assert.All(many, outcome => Assert.True(outcome.Admitted));

        Assert.True((await limits.TryReserveAsync(Trunk, "call-00501", Direction.Inbound, Lease, null, CancellationToken.None)).Admitted);
        var crowded = storage.LastWriteOf(TrunkId);

        Assert.Equal(1, alone.Items);
        Assert.Equal(1, crowded.Items);
        Assert.Equal(alone.RowBytes, crowded.RowBytes);
        Assert.Equal(alone.ItemBytes, crowded.ItemBytes);
        Assert.True(crowded.RowBytes + crowded.ItemBytes < 100, $"one reservation wrote {crowded.RowBytes} + {crowded.ItemBytes} bytes");

        // Release and confirm also write one item each (a delete has no data).
        Assert.True(await limits.ReleaseAsync(Trunk, "call-00007", CancellationToken.None));
        var release = storage.LastWriteOf(TrunkId);
        Assert.Equal((1, 0), (release.Items, release.ItemBytes));
        Assert.True(await limits.ConfirmAsync(Trunk, "call-00008", TimeSpan.FromHours(12), CancellationToken.None));
        Assert.Equal((1, StateSerializer.HeldCallSize), (storage.LastWriteOf(TrunkId).Items, storage.LastWriteOf(TrunkId).ItemBytes));

        var stored = await storage.ReadAsync(TrunkId, CancellationToken.None);
        Assert.NotNull(stored);
        Assert.Equal(501, stored.Items.Count);
        Assert.DoesNotContain("Calls", Encoding.UTF8.GetString(stored.Data), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_new_runtime_rebuilds_the_same_counts_calls_and_leases_from_the_items(string kind)
    {
        await using var db = TestStorage.Create(kind);
        var time = new ManualTimeProvider();
        LimitSnapshot before;
        await using (var first = NewRuntime(db.Open(), time))
        {
            await first.StartAsync(CancellationToken.None);
            var limits = first.LocalLimits;
            for (var i = 0; i < 40; i++)
            {
                var direction = i % 3 == 0 ? Direction.Outbound : Direction.Inbound;
                Assert.True((await limits.TryReserveAsync(Trunk, $"c{i:D2}", direction, Lease, null, CancellationToken.None)).Admitted);
                time.Advance(TimeSpan.FromMilliseconds(10));
            }

            for (var i = 0; i < 40; i += 4)
            {
                Assert.True(await limits.ConfirmAsync(Trunk, $"c{i:D2}", TimeSpan.FromHours(12), CancellationToken.None));
            }

            for (var i = 1; i < 40; i += 5)
            {
                Assert.True(await limits.ReleaseAsync(Trunk, $"c{i:D2}", CancellationToken.None));
            }

            Assert.True(await limits.RenewAsync(Trunk, "c02", TimeSpan.FromMinutes(30), CancellationToken.None));
            before = await first.GetLimitAsync(Trunk, CancellationToken.None);
        }

        Assert.Equal(32, before.Total);
        await using var second = NewRuntime(db.Open(), time);
        await second.StartAsync(CancellationToken.None);
        var after = await second.GetLimitAsync(Trunk, CancellationToken.None);
        var listed = Assert.Single(await second.ListLimitsAsync(LimitKind.Trunk, CancellationToken.None));

        foreach (var snapshot in new[] { after, listed })
        {
            Assert.Equal((before.Inbound, before.Outbound, before.Total, before.Reclaimed), (snapshot.Inbound, snapshot.Outbound, snapshot.Total, snapshot.Reclaimed));
            Assert.Equal(before.Calls, snapshot.Calls);
        }

        // The rebuilt lease order still drives expiry: the early leases end, the confirmed and renewed ones stay.
        time.Advance(Lease);
        Assert.False(await second.LocalLimits.ConfirmAsync(Trunk, "c05", TimeSpan.FromHours(12), CancellationToken.None));
        var expired = await second.GetLimitAsync(Trunk, CancellationToken.None);
        Assert.Equal(before.Calls.Count(c => c.Phase == HoldPhase.Confirmed) + 1, expired.Total);
        Assert.Contains(expired.Calls, c => c.CallKey == "c02");
    }

    [Theory]
    [MemberData(nameof(Storages))]
    public async Task A_limit_row_from_before_items_loads_and_its_calls_move_into_items(string kind)
    {
        await using var db = TestStorage.Create(kind);
        var time = new ManualTimeProvider();
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();

        // What the previous build wrote: every held call inside the row's JSON.
        var legacy = $$$"""
            {"Calls":{"old-in":{"Direction":1,"Phase":2,"SinceMs":{{{now - 5000}}},"LeaseEndMs":{{{now + 3_600_000}}}},"old-out":{"Direction":2,"Phase":1,"SinceMs":{{{now - 1000}}},"LeaseEndMs":{{{now + 60_000}}}}},"Reclaimed":3}
            """;
        await using (var storage = db.Open())
        {
            await storage.InitializeAsync(CancellationToken.None);
            Assert.True(await storage.WriteAsync(new StateWrite(TrunkId, 0, Encoding.UTF8.GetBytes(legacy), null), CancellationToken.None));
        }

        await using (var runtime = NewRuntime(db.Open(), time))
        {
            await runtime.StartAsync(CancellationToken.None);
            var loaded = await runtime.GetLimitAsync(Trunk, CancellationToken.None);
            Assert.Equal((1, 1, 3L), (loaded.Inbound, loaded.Outbound, loaded.Reclaimed));
            Assert.Equal(HoldPhase.Confirmed, loaded.Calls.Single(c => c.CallKey == "old-in").Phase);
            Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(now + 60_000), loaded.Calls.Single(c => c.CallKey == "old-out").LeaseEnd);

            Assert.True((await runtime.LocalLimits.TryReserveAsync(Trunk, "new-1", Direction.Inbound, Lease, null, CancellationToken.None)).Admitted);
        }

        // The runtime disposed its storage; read the rows through a new instance.
        StoredState? stored;
        await using (var reader = db.Open())
        {
            await reader.InitializeAsync(CancellationToken.None);
            stored = await reader.ReadAsync(TrunkId, CancellationToken.None);
        }

        Assert.NotNull(stored);
        Assert.DoesNotContain("Calls", Encoding.UTF8.GetString(stored.Data), StringComparison.Ordinal);
        Assert.Equal(["new-1", "old-in", "old-out"], stored.Items.Select(i => i.Key));

        await using var again = NewRuntime(db.Open(), time);
        await again.StartAsync(CancellationToken.None);
        var reloaded = await again.GetLimitAsync(Trunk, CancellationToken.None);
        Assert.Equal((2, 1, 3L), (reloaded.Inbound, reloaded.Outbound, reloaded.Reclaimed));
    }

    [Fact]
    public void A_held_call_item_round_trips_and_a_damaged_one_is_refused()
    {
        var call = new HeldCall { Direction = Direction.Outbound, Phase = HoldPhase.Confirmed, SinceMs = 1_767_225_600_123, LeaseEndMs = long.MaxValue - 1 };
        var data = StateSerializer.SerializeHeldCall(call);

        Assert.Equal(StateSerializer.HeldCallSize, data.Length);
        var back = StateSerializer.DeserializeHeldCall(data);
        Assert.Equal((call.Direction, call.Phase, call.SinceMs, call.LeaseEndMs), (back.Direction, back.Phase, back.SinceMs, back.LeaseEndMs));

        Assert.Throws<InvalidDataException>(() => StateSerializer.DeserializeHeldCall(data.AsSpan(0, 18)));
        data[1] = 9;
        Assert.Throws<InvalidDataException>(() => StateSerializer.DeserializeHeldCall(data));
    }

    /// <summary>Real storage underneath; remembers the size of each write.</summary>
    private sealed class CountingStorage(IStateStore inner) : IStateStore
    {
        private readonly Lock _lock = new();
        private readonly List<(StateId Id, WriteSize Size)> _writes = [];

        public WriteSize LastWriteOf(StateId id)
        {
            lock (_lock)
            {
                return _writes.Last(w => w.Id == id).Size;
            }
        }

        public Task InitializeAsync(CancellationToken cancellationToken) => inner.InitializeAsync(cancellationToken);

        public Task<StoredState?> ReadAsync(StateId id, CancellationToken cancellationToken) => inner.ReadAsync(id, cancellationToken);

        public async Task<bool> WriteAsync(StateWrite write, CancellationToken cancellationToken)
        {
            var written = await inner.WriteAsync(write, cancellationToken);
            if (written)
            {
                var items = write.Items ?? [];
                lock (_lock)
                {
                    _writes.Add((write.Id, new WriteSize(write.Data?.Length ?? 0, items.Count, items.Sum(i => i.Data?.Length ?? 0))));
                }
            }

            return written;
        }

        public Task<IReadOnlyList<(string Key, StoredState Grain)>> ReadAllAsync(string type, CancellationToken cancellationToken) =>
            inner.ReadAllAsync(type, cancellationToken);

        public Task<IReadOnlyList<DueState>> ReadDueAsync(CancellationToken cancellationToken) => inner.ReadDueAsync(cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    private readonly record struct WriteSize(int RowBytes, int Items, int ItemBytes);
}
