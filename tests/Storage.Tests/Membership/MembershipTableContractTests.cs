using System.Net;
using CallState.Storage.Membership;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Configuration;

namespace CallState.Storage.Tests.Membership;

/// <summary>
/// What Orleans needs from <see cref="StorageMembershipTable"/>, run against each real provider by a subclass (a SQLite
/// file, a PostgreSQL schema of its own per test).
/// </summary>
public abstract class MembershipTableContractTests : IAsyncLifetime
{
    /// <summary>Millisecond resolution: the table stores times as Unix milliseconds.</summary>
    protected static readonly DateTime Now = new(2026, 3, 1, 12, 0, 0, 250, DateTimeKind.Utc);

    private static int _generation;
    private readonly List<StorageMembershipTable> _opened = [];
    private StorageMembershipTable? _table;

    protected static CancellationToken Ct => CancellationToken.None;

    /// <summary>This test's database.</summary>
    protected abstract StorageOptions Options { get; }

    /// <summary>The table of this test's first cluster id, initialized.</summary>
    protected StorageMembershipTable Table => _table ?? throw new InvalidOperationException("Not initialized.");

    public async Task InitializeAsync() => _table = await OpenAsync(NewClusterId());

    public async Task DisposeAsync()
    {
        foreach (var table in _opened)
        {
            await table.DisposeAsync();
        }

        await CleanupAsync();
    }

    protected virtual Task CleanupAsync() => Task.CompletedTask;

    protected static string NewClusterId() => "cluster-" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>Another instance over this test's database (another silo), for <paramref name="clusterId"/>.</summary>
    protected async Task<StorageMembershipTable> OpenAsync(string clusterId, bool initialize = true)
    {
        var table = new StorageMembershipTable(
            Microsoft.Extensions.Options.Options.Create(Options),
            Microsoft.Extensions.Options.Options.Create(new ClusterOptions { ClusterId = clusterId }),
            NullLogger<StorageMembershipTable>.Instance);
        _opened.Add(table);
        if (initialize)
        {
            await table.InitializeMembershipTableAsync(tryInitTableVersion: true, Ct);
        }

        return table;
    }

    /// <summary>An entry as a silo inserts it when it starts, for a silo address no other test uses.</summary>
    protected static MembershipEntry NewEntry(SiloStatus status = SiloStatus.Joining, DateTime? aliveAt = null, IPAddress? address = null)
    {
        var generation = Interlocked.Increment(ref _generation);
        return new MembershipEntry
        {
            SiloAddress = SiloAddress.New(new IPEndPoint(address ?? IPAddress.Loopback, 11111), generation),
            Status = status,
            ProxyPort = 30000,
            HostName = "host-" + generation,
            SiloName = "silo-" + generation,
            RoleName = "callstate",
            UpdateZone = 2,
            FaultZone = 3,
            StartTime = (aliveAt ?? Now).AddMinutes(-5),
            IAmAliveTime = aliveAt ?? Now,
            SuspectTimes = [],
        };
    }

    private static MembershipEntry Copy(MembershipEntry entry, SiloStatus? status = null) => new()
    {
        SiloAddress = entry.SiloAddress,
        Status = status ?? entry.Status,
        ProxyPort = entry.ProxyPort,
        HostName = entry.HostName,
        SiloName = entry.SiloName,
        RoleName = entry.RoleName,
        UpdateZone = entry.UpdateZone,
        FaultZone = entry.FaultZone,
        StartTime = entry.StartTime,
        IAmAliveTime = entry.IAmAliveTime,
        SuspectTimes = [.. entry.SuspectTimes ?? []],
    };

    private static void AssertSameEntry(MembershipEntry expected, MembershipEntry actual)
    {
        Assert.Equal(expected.SiloAddress, actual.SiloAddress);
        Assert.Equal(expected.Status, actual.Status);
        Assert.Equal(expected.ProxyPort, actual.ProxyPort);
        Assert.Equal(expected.HostName, actual.HostName);
        Assert.Equal(expected.SiloName, actual.SiloName);
        Assert.Equal(expected.RoleName, actual.RoleName);
        Assert.Equal(expected.UpdateZone, actual.UpdateZone);
        Assert.Equal(expected.FaultZone, actual.FaultZone);
        Assert.Equal(expected.StartTime, actual.StartTime);
        Assert.Equal(expected.IAmAliveTime, actual.IAmAliveTime);
        Assert.Equal(DateTimeKind.Utc, actual.IAmAliveTime.Kind);
        Assert.Equal((expected.SuspectTimes ?? []).Select(v => (v.Item1, v.Item2)), (actual.SuspectTimes ?? []).Select(v => (v.Item1, v.Item2)));
    }

    private static (MembershipEntry Entry, string Etag) Row(MembershipTableData data, MembershipEntry of)
    {
        var row = data.TryGet(of.SiloAddress);
        Assert.NotNull(row);
        return (row.Item1, row.Item2);
    }

    [Fact]
    public async Task Initializing_again_and_from_another_instance_keeps_the_version_and_the_rows()
    {
        var fresh = await Table.ReadAllAsync(Ct);
        Assert.Equal(0, fresh.Version.Version);
        Assert.False(string.IsNullOrEmpty(fresh.Version.VersionEtag));
        Assert.Empty(fresh.Members);

        await Table.InitializeMembershipTableAsync(true, Ct);
        var second = await OpenAsync(Table.ClusterId);
        Assert.Equal(fresh.Version, (await second.ReadAllAsync(Ct)).Version);

        var entry = NewEntry();
        Assert.True(await Table.InsertRowAsync(entry, fresh.Version.Next(), Ct));
        var inserted = await Table.ReadAllAsync(Ct);
        await second.InitializeMembershipTableAsync(true, Ct);
        await (await OpenAsync(Table.ClusterId)).InitializeMembershipTableAsync(false, Ct);

        var after = await second.ReadAllAsync(Ct);
        Assert.Equal(inserted.Version, after.Version);
        AssertSameEntry(entry, Assert.Single(after.Members).Item1);
    }

    [Fact]
    public async Task Operations_before_initialization_are_refused()
    {
        var table = await OpenAsync(NewClusterId(), initialize: false);

        await Assert.ThrowsAsync<InvalidOperationException>(() => table.ReadAllAsync(Ct));
        await Assert.ThrowsAsync<InvalidOperationException>(() => table.InsertRowAsync(NewEntry(), new TableVersion(1, "x"), Ct));
    }

    [Fact]
    public async Task Insert_with_the_next_table_version_stores_every_field_and_moves_the_version_and_its_etag()
    {
        var read = await Table.ReadAllAsync(Ct);
        var entry = NewEntry(SiloStatus.Active);
        entry.SuspectTimes = [Tuple.Create(NewEntry().SiloAddress, Now.AddSeconds(-3)), Tuple.Create(NewEntry().SiloAddress, Now.AddSeconds(-1))];

        Assert.True(await Table.InsertRowAsync(entry, read.Version.Next(), Ct));

        var after = await Table.ReadAllAsync(Ct);
        Assert.Equal(1, after.Version.Version);
        Assert.NotEqual(read.Version.VersionEtag, after.Version.VersionEtag);
        var (stored, etag) = Row(after, entry);
        AssertSameEntry(entry, stored);
        Assert.False(string.IsNullOrEmpty(etag));

        // An IPv6 silo without host, silo or role name comes back as it went in.
        var bare = NewEntry(address: IPAddress.IPv6Loopback);
        bare.HostName = null!;
        bare.SiloName = null!;
        bare.RoleName = null!;
        Assert.True(await Table.InsertRowAsync(bare, after.Version.Next(), Ct));
        AssertSameEntry(bare, Row(await Table.ReadRowAsync(bare.SiloAddress, Ct), bare).Entry);
    }

    [Fact]
    public async Task Insert_with_a_stale_table_version_returns_false_and_changes_nothing()
    {
        var read = await Table.ReadAllAsync(Ct);
        Assert.True(await Table.InsertRowAsync(NewEntry(), read.Version.Next(), Ct));
        var current = await Table.ReadAllAsync(Ct);
        var late = NewEntry();

        // The etag read before the first insert is gone.
        Assert.False(await Table.InsertRowAsync(late, read.Version.Next(), Ct));

        // The current etag, but a version that does not move on, or an etag never issued.
        Assert.False(await Table.InsertRowAsync(late, current.Version, Ct));
        Assert.False(await Table.InsertRowAsync(late, new TableVersion(current.Version.Version + 1, "not-an-etag"), Ct));

        var after = await Table.ReadAllAsync(Ct);
        Assert.Equal(current.Version, after.Version);
        Assert.Single(after.Members);
        Assert.Empty((await Table.ReadRowAsync(late.SiloAddress, Ct)).Members);
    }

    [Fact]
    public async Task Insert_of_a_silo_already_in_the_table_returns_false_even_at_the_current_version()
    {
        var entry = NewEntry();
        Assert.True(await Table.InsertRowAsync(entry, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));
        var current = await Table.ReadAllAsync(Ct);

        Assert.False(await Table.InsertRowAsync(Copy(entry, SiloStatus.Active), current.Version.Next(), Ct));

        var after = await Table.ReadAllAsync(Ct);
        Assert.Equal(current.Version, after.Version);
        Assert.Equal(SiloStatus.Joining, Assert.Single(after.Members).Item1.Status);
    }

    [Fact]
    public async Task Concurrent_inserts_at_one_table_version_from_two_instances_exactly_one_wins()
    {
        var other = await OpenAsync(Table.ClusterId);
        var version = (await Table.ReadAllAsync(Ct)).Version.Next();
        var entries = Enumerable.Range(0, 8).Select(_ => NewEntry()).ToArray();

        var results = await Task.WhenAll(entries.Select((entry, i) =>
            Task.Run(() => (i % 2 == 0 ? Table : other).InsertRowAsync(entry, version, Ct))));

        var winner = Assert.Single(Enumerable.Range(0, entries.Length), i => results[i]);
        var after = await other.ReadAllAsync(Ct);
        Assert.Equal(1, after.Version.Version);
        Assert.Equal(entries[winner].SiloAddress, Assert.Single(after.Members).Item1.SiloAddress);

        // The same silo inserted by many callers at once: one row, one winner.
        var same = NewEntry();
        var next = after.Version.Next();
        var sameResults = await Task.WhenAll(Enumerable.Range(0, 8).Select(i =>
            Task.Run(() => (i % 2 == 0 ? Table : other).InsertRowAsync(Copy(same), next, Ct))));
        Assert.Single(sameResults, won => won);
        var final = await Table.ReadAllAsync(Ct);
        Assert.Equal(2, final.Version.Version);
        Assert.Equal(2, final.Members.Count);
    }

    [Fact]
    public async Task Concurrent_updates_at_one_table_version_from_two_instances_exactly_one_wins()
    {
        var other = await OpenAsync(Table.ClusterId);
        var entry = NewEntry();
        Assert.True(await Table.InsertRowAsync(entry, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));
        var read = await Table.ReadAllAsync(Ct);
        var (stored, etag) = Row(read, entry);
        var updates = Enumerable.Range(0, 8).Select(i =>
        {
            var update = Copy(stored, SiloStatus.Active);
            update.ProxyPort = 40000 + i;
            return update;
        }).ToArray();

        var results = await Task.WhenAll(updates.Select((update, i) =>
            Task.Run(() => (i % 2 == 0 ? Table : other).UpdateRowAsync(update, etag, read.Version.Next(), Ct))));

        var winner = Assert.Single(Enumerable.Range(0, updates.Length), i => results[i]);
        var after = await other.ReadAllAsync(Ct);
        Assert.Equal(read.Version.Version + 1, after.Version.Version);
        AssertSameEntry(updates[winner], Row(after, entry).Entry);
    }

    [Fact]
    public async Task Update_with_a_stale_row_etag_or_a_stale_table_version_returns_false_and_changes_nothing()
    {
        var a = NewEntry();
        Assert.True(await Table.InsertRowAsync(a, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));
        var first = await Table.ReadAllAsync(Ct);
        var etagBefore = Row(first, a).Etag;
        Assert.True(await Table.UpdateRowAsync(Copy(a, SiloStatus.Active), etagBefore, first.Version.Next(), Ct));
        var second = await Table.ReadAllAsync(Ct);
        var etagAfter = Row(second, a).Etag;
        Assert.NotEqual(etagBefore, etagAfter);

        // The row's etag from before the update, with the current table version.
        Assert.False(await Table.UpdateRowAsync(Copy(a, SiloStatus.ShuttingDown), etagBefore, second.Version.Next(), Ct));

        // The current row etag, with the table version from before another silo's insert.
        Assert.True(await Table.InsertRowAsync(NewEntry(), second.Version.Next(), Ct));
        Assert.False(await Table.UpdateRowAsync(Copy(a, SiloStatus.ShuttingDown), etagAfter, second.Version.Next(), Ct));

        var after = await Table.ReadAllAsync(Ct);
        Assert.Equal(3, after.Version.Version);
        var (stored, etag) = Row(after, a);
        Assert.Equal(SiloStatus.Active, stored.Status);
        Assert.Equal(etagAfter, etag);
    }

    [Fact]
    public async Task Update_of_a_silo_not_in_the_table_returns_false_and_leaves_the_version()
    {
        var read = await Table.ReadAllAsync(Ct);

        Assert.False(await Table.UpdateRowAsync(NewEntry(SiloStatus.Active), "no-such-etag", read.Version.Next(), Ct));

        var after = await Table.ReadAllAsync(Ct);
        Assert.Equal(read.Version, after.Version);
        Assert.Empty(after.Members);
    }

    [Fact]
    public async Task ReadAll_returns_every_row_and_the_current_version_and_ReadRow_one_row_with_it()
    {
        var entries = new[] { NewEntry(SiloStatus.Active), NewEntry(SiloStatus.Joining, address: IPAddress.IPv6Loopback), NewEntry(SiloStatus.Dead) };
        foreach (var entry in entries)
        {
            Assert.True(await Table.InsertRowAsync(entry, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));
        }

        var all = await Table.ReadAllAsync(Ct);
        Assert.Equal(3, all.Version.Version);
        Assert.Equal(3, all.Members.Count);
        foreach (var entry in entries)
        {
            AssertSameEntry(entry, Row(all, entry).Entry);
        }

        var one = await Table.ReadRowAsync(entries[1].SiloAddress, Ct);
        Assert.Equal(all.Version, one.Version);
        var (stored, etag) = Assert.Single(one.Members);
        AssertSameEntry(entries[1], stored);
        Assert.Equal(Row(all, entries[1]).Etag, etag);

        var none = await Table.ReadRowAsync(NewEntry().SiloAddress, Ct);
        Assert.Equal(all.Version, none.Version);
        Assert.Empty(none.Members);
    }

    [Fact]
    public async Task UpdateIAmAlive_changes_only_the_IAmAlive_time()
    {
        var entry = NewEntry(SiloStatus.Active);
        entry.SuspectTimes = [Tuple.Create(NewEntry().SiloAddress, Now.AddSeconds(-7))];
        Assert.True(await Table.InsertRowAsync(entry, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));
        var before = await Table.ReadAllAsync(Ct);
        var (stored, etag) = Row(before, entry);

        // Orleans' heartbeat passes an entry holding only the address and the time.
        var alive = Now.AddMinutes(1).AddMilliseconds(17);
        await Table.UpdateIAmAliveAsync(new MembershipEntry { SiloAddress = entry.SiloAddress, IAmAliveTime = alive }, Ct);

        var after = await Table.ReadAllAsync(Ct);
        Assert.Equal(before.Version, after.Version);
        var (heartbeat, etagAfter) = Row(after, entry);
        Assert.Equal(etag, etagAfter);
        var expected = Copy(stored);
        expected.IAmAliveTime = alive;
        AssertSameEntry(expected, heartbeat);

        // What was read before the heartbeat is still good for an update.
        Assert.True(await Table.UpdateRowAsync(Copy(stored, SiloStatus.ShuttingDown), etag, before.Version.Next(), Ct));

        // A heartbeat of a silo without a row creates none.
        await Table.UpdateIAmAliveAsync(new MembershipEntry { SiloAddress = NewEntry().SiloAddress, IAmAliveTime = alive }, Ct);
        Assert.Single((await Table.ReadAllAsync(Ct)).Members);
    }

    [Fact]
    public async Task CleanupDefunctSiloEntries_removes_only_dead_rows_last_updated_before_the_date_in_its_own_cluster()
    {
        var deadOld = NewEntry(SiloStatus.Dead, Now.AddDays(-10));
        var deadRecent = NewEntry(SiloStatus.Dead, Now.AddHours(-1));
        var activeOld = NewEntry(SiloStatus.Active, Now.AddDays(-10));

        // Declared dead recently (a vote) although its own last heartbeat is old: kept.
        var deadOldVotedRecently = NewEntry(SiloStatus.Dead, Now.AddDays(-10));
        deadOldVotedRecently.SuspectTimes = [Tuple.Create(activeOld.SiloAddress, Now.AddHours(-2))];
        foreach (var entry in new[] { deadOld, deadRecent, activeOld, deadOldVotedRecently })
        {
            Assert.True(await Table.InsertRowAsync(entry, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));
        }

        var other = await OpenAsync(NewClusterId());
        Assert.True(await other.InsertRowAsync(Copy(deadOld), (await other.ReadAllAsync(Ct)).Version.Next(), Ct));

        await Table.CleanupDefunctSiloEntriesAsync(new DateTimeOffset(Now.AddDays(-3)), Ct);

        var remaining = (await Table.ReadAllAsync(Ct)).Members.Select(m => m.Item1.SiloAddress).ToHashSet();
        Assert.Equal(new[] { deadRecent.SiloAddress, activeOld.SiloAddress, deadOldVotedRecently.SiloAddress }.ToHashSet(), remaining);
        Assert.Single((await other.ReadAllAsync(Ct)).Members);
    }

    [Fact]
    public async Task DeleteMembershipTableEntries_removes_that_cluster_only_and_initializing_starts_it_over()
    {
        var other = await OpenAsync(NewClusterId());
        var oldVersion = (await Table.ReadAllAsync(Ct)).Version;
        Assert.True(await Table.InsertRowAsync(NewEntry(), oldVersion.Next(), Ct));
        var kept = NewEntry();
        Assert.True(await other.InsertRowAsync(kept, (await other.ReadAllAsync(Ct)).Version.Next(), Ct));

        await Table.DeleteMembershipTableEntriesAsync(Table.ClusterId, Ct);

        var gone = await Table.ReadAllAsync(Ct);
        Assert.Empty(gone.Members);
        Assert.False(await Table.InsertRowAsync(NewEntry(), gone.Version.Next(), Ct));
        Assert.False(await Table.InsertRowAsync(NewEntry(), oldVersion.Next(), Ct));
        var otherData = await other.ReadAllAsync(Ct);
        Assert.Equal(1, otherData.Version.Version);
        AssertSameEntry(kept, Assert.Single(otherData.Members).Item1);

        await Table.InitializeMembershipTableAsync(true, Ct);
        var restarted = await Table.ReadAllAsync(Ct);
        Assert.Equal(0, restarted.Version.Version);
        Assert.NotEqual(oldVersion.VersionEtag, restarted.Version.VersionEtag);
        Assert.True(await Table.InsertRowAsync(NewEntry(), restarted.Version.Next(), Ct));
    }

    [Fact]
    public async Task Two_cluster_ids_in_one_database_do_not_see_each_other()
    {
        var other = await OpenAsync(NewClusterId());
        var entry = NewEntry();
        Assert.True(await Table.InsertRowAsync(entry, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));

        // The same silo address may be in both.
        Assert.True(await other.InsertRowAsync(Copy(entry, SiloStatus.Active), (await other.ReadAllAsync(Ct)).Version.Next(), Ct));
        var mine = await Table.ReadAllAsync(Ct);
        var theirs = await other.ReadAllAsync(Ct);
        Assert.Equal(SiloStatus.Joining, Assert.Single(mine.Members).Item1.Status);
        Assert.Equal(SiloStatus.Active, Assert.Single(theirs.Members).Item1.Status);
        Assert.NotEqual(mine.Version.VersionEtag, theirs.Version.VersionEtag);

        // One cluster's version is no good in the other.
        Assert.False(await other.InsertRowAsync(NewEntry(), mine.Version.Next(), Ct));

        Assert.True(await Table.UpdateRowAsync(Copy(entry, SiloStatus.Dead), Row(mine, entry).Etag, mine.Version.Next(), Ct));
        await Table.UpdateIAmAliveAsync(new MembershipEntry { SiloAddress = entry.SiloAddress, IAmAliveTime = Now.AddHours(1) }, Ct);
        var theirsAfter = await other.ReadAllAsync(Ct);
        Assert.Equal(theirs.Version, theirsAfter.Version);
        var (stored, etag) = Assert.Single(theirsAfter.Members);
        AssertSameEntry(Copy(entry, SiloStatus.Active), stored);
        Assert.Equal(Row(theirs, entry).Etag, etag);
    }

    [Fact]
    public async Task The_table_lives_in_the_state_store_database_beside_the_grain_tables()
    {
        var store = StateStoreFactory.Create(Options, NullLoggerFactory.Instance);
        await using (store)
        {
            await store.InitializeAsync(Ct);
            var id = new StateId("limit", "trunk/membership");
            Assert.True(await store.WriteAsync(new StateWrite(id, 0, [1], null), Ct));

            var entry = NewEntry();
            Assert.True(await Table.InsertRowAsync(entry, (await Table.ReadAllAsync(Ct)).Version.Next(), Ct));

            // A silo starting after the state store migrated finds the membership rows, and the grain is untouched.
            var later = await OpenAsync(Table.ClusterId);
            AssertSameEntry(entry, Assert.Single((await later.ReadAllAsync(Ct)).Members).Item1);
            Assert.Equal(1, (await store.ReadAsync(id, Ct))?.Version);
        }
    }
}
