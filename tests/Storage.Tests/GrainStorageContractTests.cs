namespace CallState.Storage.Tests.Storage;

/// <summary>
/// The behaviour every <see cref="IStateStore"/> must have, run against each real provider by a
/// subclass (SQLite file, PostgreSQL schema).
/// </summary>
public abstract class GrainStorageContractTests : IAsyncLifetime
{
    private readonly List<IStateStore> _opened = [];
    private IStateStore? _storage;

    /// <summary>No deadline here: scripts/test.sh runs dotnet test with --blame-hang-timeout, which catches a hung test.</summary>
    protected static CancellationToken Ct => CancellationToken.None;

    protected IStateStore Storage => _storage ?? throw new InvalidOperationException("Not initialized.");

    /// <summary>A new, not yet initialized, storage instance over this test's database.</summary>
    protected abstract IStateStore CreateStorage();

    /// <summary>The audit trail in the same database (its table comes with the store's schema).</summary>
    protected abstract IAuditLog CreateAuditLog();

    /// <summary>Removes the rows other tests of the same class may have left (runs after initialization).</summary>
    protected virtual Task ResetAsync() => Task.CompletedTask;

    protected virtual Task CleanupAsync() => Task.CompletedTask;

    /// <summary>
    /// Holds a lock, from outside the storage instance, that stops a write of <paramref name="blocker"/> (an
    /// existing row) from committing until disposed, so that writes queued meanwhile gather into one batch.
    /// </summary>
    protected abstract Task<IAsyncDisposable> BlockWritesAsync(StateId blocker);

    public async Task InitializeAsync()
    {
        _storage = await OpenAsync();
        await ResetAsync();
    }

    public async Task DisposeAsync()
    {
        foreach (var storage in _opened)
        {
            await storage.DisposeAsync();
        }

        await CleanupAsync();
    }

    /// <summary>
    /// Opens <paramref name="storage"/> on a schema that version 2 left with limit <c>trunk/old</c> (version 4, data
    /// "old"): the migration keeps the row as it was, without items, and its next write takes items.
    /// </summary>
    protected static async Task AssertVersion2RowKeptAndTakesItemsAsync(IStateStore storage)
    {
        ArgumentNullException.ThrowIfNull(storage);
        await storage.InitializeAsync(Ct);
        var id = new StateId("limit", "trunk/old");
        var old = await storage.ReadAsync(id, Ct);
        Assert.NotNull(old);
        Assert.Equal(4, old.Version);
        Assert.Equal("old"u8.ToArray(), old.Data);
        Assert.Empty(old.Items);

        Assert.True(await storage.WriteAsync(new StateWrite(id, 4, [5], null, [new StateItemWrite("call", [6])]), Ct));
        var updated = await storage.ReadAsync(id, Ct);
        Assert.Equal(["call"], updated!.Items.Select(i => i.Key));
        Assert.Equal(new byte[] { 6 }, updated.Items[0].Data);
    }

    /// <summary>Opens and initializes another instance over the same database (another process, a restart).</summary>
    protected async Task<IStateStore> OpenAsync()
    {
        var storage = CreateStorage();
        _opened.Add(storage);
        await storage.InitializeAsync(Ct);
        return storage;
    }

    private static GroupCommitter CommitterOf(IStateStore storage) =>
        (storage as IGroupCommitStore)?.GroupCommit ?? throw new InvalidOperationException($"{storage.GetType()} has no group commit");

    /// <summary>Every due grain: no time bound and no limit.</summary>
    private static Task<IReadOnlyList<DueState>> AllDueAsync(IStateStore storage) =>
        storage.ReadDueAsync(DateTimeOffset.MaxValue, int.MaxValue, Ct);

    private static byte[] Bytes(string text) => System.Text.Encoding.UTF8.GetBytes(text);

    private static readonly DateTimeOffset Due1 = new(2030, 1, 2, 3, 4, 5, 678, TimeSpan.Zero);
    private static readonly DateTimeOffset Due2 = new(2030, 1, 2, 3, 4, 9, 1, TimeSpan.Zero);

    private static StateId Limit(string key) => new("limit", key);

    [Fact]
    public async Task Read_of_a_grain_never_written_returns_null()
    {
        Assert.Null(await Storage.ReadAsync(Limit("user/nobody"), Ct));
    }

    [Fact]
    public async Task Insert_then_read_returns_the_data_at_version_1()
    {
        var id = Limit("user/alice");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("one"), Due1), Ct));

        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(Bytes("one"), stored.Data);
        Assert.Equal(1, stored.Version);
        Assert.Equal(Due1, stored.DueAt);
    }

    [Fact]
    public async Task Compare_and_set_with_the_stored_version_succeeds_and_increments_the_version()
    {
        var id = Limit("user/bob");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("v1"), null), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("v2"), null), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 2, Bytes("v3"), null), Ct));

        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(3, stored.Version);
        Assert.Equal(Bytes("v3"), stored.Data);
    }

    [Fact]
    public async Task A_stale_version_returns_false_and_leaves_the_row_untouched()
    {
        var id = Limit("user/carol");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("v1"), Due1), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("v2"), Due1), Ct));

        Assert.False(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("stale"), Due2), Ct));
        Assert.False(await Storage.WriteAsync(new StateWrite(id, 7, Bytes("future"), null), Ct));

        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(2, stored.Version);
        Assert.Equal(Bytes("v2"), stored.Data);
        Assert.Equal(Due1, stored.DueAt);
    }

    [Fact]
    public async Task Update_of_a_missing_row_returns_false_and_creates_nothing()
    {
        var id = Limit("user/ghost");
        Assert.False(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("x"), null), Ct));
        Assert.Null(await Storage.ReadAsync(id, Ct));
    }

    [Fact]
    public async Task Insert_of_an_existing_row_returns_false_and_leaves_it_untouched()
    {
        var id = Limit("user/dave");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("first"), null), Ct));

        Assert.False(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("second"), Due1), Ct));

        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(1, stored.Version);
        Assert.Equal(Bytes("first"), stored.Data);
        Assert.Null(stored.DueAt);
    }

    [Fact]
    public async Task Delete_needs_the_stored_version_and_then_the_key_can_be_inserted_again()
    {
        var id = Limit("user/erin");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("v1"), Due1), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("v2"), Due1), Ct));

        Assert.False(await Storage.WriteAsync(new StateWrite(id, 1, null, null), Ct));
        Assert.NotNull(await Storage.ReadAsync(id, Ct));

        Assert.True(await Storage.WriteAsync(new StateWrite(id, 2, null, null), Ct));
        Assert.Null(await Storage.ReadAsync(id, Ct));
        Assert.DoesNotContain(await AllDueAsync(Storage), due => due.Id == id);
        Assert.False(await Storage.WriteAsync(new StateWrite(id, 2, null, null), Ct));

        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("again"), null), Ct));
        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(1, stored.Version);
        Assert.Equal(Bytes("again"), stored.Data);
    }

    [Fact]
    public async Task A_row_inserted_again_at_a_version_of_its_own_refuses_the_writes_of_a_writer_of_the_deleted_row()
    {
        // A limit's idle row is deleted and inserted again later (docs/architecture.md, "Rows of idle limits"). A writer
        // that still holds version 1 of the deleted row must not match the new one: its insert names a version of its own.
        var id = Limit("user/idle");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("first"), null, [Put("a", "A")]), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, null, null), Ct));
        const long Chosen = 5_000_000_123;
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("again"), null, [Put("b", "B")]) { InsertVersion = Chosen }, Ct));
        Assert.Equal(Chosen, await Storage.ReadVersionAsync(id, Ct));

        // The old writer's items and row writes fail; the new row's own version works and counts on from it.
        Assert.False(await Storage.WriteAsync(StateWrite.ItemsOnly(id, 1, [Put("c", "C")]), Ct));
        Assert.False(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("stale"), null), Ct));
        Assert.True(await Storage.WriteAsync(StateWrite.ItemsOnly(id, Chosen, [Put("d", "D")]), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, Chosen, Bytes("moved"), null), Ct));
        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(Chosen + 1, stored.Version);
        Assert.Equal(new Dictionary<string, string> { ["b"] = "B", ["d"] = "D" }, await ItemsAsync(Storage, id));

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Storage.WriteAsync(new StateWrite(Limit("user/zero"), 0, Bytes("x"), null) { InsertVersion = 0 }, Ct));
    }

    [Fact]
    public async Task A_delete_without_a_version_is_rejected_before_it_reaches_a_batch()
    {
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(Limit("user/x"), 0, null, null), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(new StateId("limit", ""), 0, [1], null), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(new StateId("limit", "a\0b"), 0, [1], null), Ct));
    }

    [Fact]
    public async Task Due_time_is_stored_changed_cleared_and_listed_by_ReadDueAsync()
    {
        var a = Limit("user/due-a");
        var b = new StateId("call", "call-1;tag");
        var never = Limit("user/never-due");
        Assert.True(await Storage.WriteAsync(new StateWrite(a, 0, Bytes("a"), Due2), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(b, 0, Bytes("b"), Due1), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(never, 0, Bytes("n"), null), Ct));

        Assert.Equal([new DueState(b, Due1), new DueState(a, Due2)], await AllDueAsync(Storage));

        var later = Due2.AddHours(1);
        Assert.True(await Storage.WriteAsync(new StateWrite(b, 1, Bytes("b2"), later), Ct));
        Assert.Equal([new DueState(a, Due2), new DueState(b, later)], await AllDueAsync(Storage));

        Assert.True(await Storage.WriteAsync(new StateWrite(a, 1, Bytes("a2"), null), Ct));
        Assert.Equal([new DueState(b, later)], await AllDueAsync(Storage));
        var cleared = await Storage.ReadAsync(a, Ct);
        Assert.NotNull(cleared);
        Assert.Null(cleared.DueAt);
    }

    [Fact]
    public async Task ReadDueAsync_returns_only_grains_due_by_until_earliest_first_and_at_most_limit()
    {
        var first = Limit("user/due-first");
        var second = new StateId("call", "due-second");
        var third = Limit("user/due-third");
        var later = Limit("user/due-later");
        var never = Limit("user/due-never");
        Assert.True(await Storage.WriteAsync(new StateWrite(third, 0, Bytes("3"), Due1.AddMilliseconds(2)), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(later, 0, Bytes("l"), Due2), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(first, 0, Bytes("1"), Due1), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(never, 0, Bytes("n"), null), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(second, 0, Bytes("2"), Due1.AddMilliseconds(1)), Ct));

        // until is inclusive, to the millisecond the due time is stored with.
        Assert.Empty(await Storage.ReadDueAsync(Due1.AddMilliseconds(-1), 100, Ct));
        Assert.Equal([new DueState(first, Due1)], await Storage.ReadDueAsync(Due1, 100, Ct));
        Assert.Equal(
            [new DueState(first, Due1), new DueState(second, Due1.AddMilliseconds(1)), new DueState(third, Due1.AddMilliseconds(2))],
            await Storage.ReadDueAsync(Due2.AddMilliseconds(-1), 100, Ct));

        // limit keeps the earliest ones.
        Assert.Equal(
            [new DueState(first, Due1), new DueState(second, Due1.AddMilliseconds(1))],
            await Storage.ReadDueAsync(Due2, 2, Ct));
        Assert.Equal([new DueState(first, Due1)], await Storage.ReadDueAsync(Due2, 1, Ct));
        Assert.Equal(4, (await Storage.ReadDueAsync(Due2, 100, Ct)).Count);
        Assert.Equal(new DueState(later, Due2), (await Storage.ReadDueAsync(Due2, 4, Ct))[^1]);

        // A grain moved past until drops out; one moved before it comes in.
        Assert.True(await Storage.WriteAsync(new StateWrite(first, 1, Bytes("1b"), Due2.AddDays(1)), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(later, 1, Bytes("lb"), Due1.AddMilliseconds(-5)), Ct));
        Assert.Equal(
            [new DueState(later, Due1.AddMilliseconds(-5)), new DueState(second, Due1.AddMilliseconds(1))],
            await Storage.ReadDueAsync(Due2, 2, Ct));
    }

    [Fact]
    public async Task ReadAllAsync_lists_every_grain_of_one_type_and_no_other()
    {
        Assert.True(await Storage.WriteAsync(new StateWrite(Limit("trunk/2"), 0, Bytes("t2"), null), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(Limit("trunk/1"), 0, Bytes("t1"), Due1), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(Limit("trunk/1"), 1, Bytes("t1b"), Due1), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(new StateId("call", "c1"), 0, Bytes("c"), null), Ct));

        var limits = await Storage.ReadAllAsync("limit", Ct);

        Assert.Equal(["trunk/1", "trunk/2"], limits.Select(l => l.Key).Order(StringComparer.Ordinal));
        var trunk1 = limits.Single(l => l.Key == "trunk/1").Grain;
        Assert.Equal(2, trunk1.Version);
        Assert.Equal(Bytes("t1b"), trunk1.Data);
        Assert.Equal(Due1, trunk1.DueAt);
        Assert.Equal(["c1"], (await Storage.ReadAllAsync("call", Ct)).Select(c => c.Key));
        Assert.Empty(await Storage.ReadAllAsync("nothing", Ct));
    }

    [Fact]
    public async Task Two_hundred_concurrent_writes_to_distinct_keys_all_succeed_in_fewer_batches_than_writes()
    {
        const int Writes = 200;
        var committer = CommitterOf(Storage);
        var batchesBefore = committer.BatchCount;

        var results = await Task.WhenAll(Enumerable.Range(0, Writes).Select(i =>
            Task.Run(() => Storage.WriteAsync(new StateWrite(Limit($"user/u{i:D3}"), 0, Bytes($"d{i}"), null), Ct))));

        Assert.All(results, Assert.True);
        var batches = committer.BatchCount - batchesBefore;
        Assert.InRange(batches, 1, Writes - 1);
        var all = await Storage.ReadAllAsync("limit", Ct);
        Assert.Equal(Writes, all.Count);
        Assert.All(all, row =>
        {
            Assert.Equal(1, row.Grain.Version);
            Assert.Equal(Bytes("d" + int.Parse(row.Key["user/u".Length..], System.Globalization.CultureInfo.InvariantCulture)), row.Grain.Data);
        });
    }

    [Fact]
    public async Task Two_writers_with_the_same_expected_version_through_one_instance_exactly_one_wins()
    {
        var id = Limit("user/race-one");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("base"), null), Ct));

        var first = Task.Run(() => Storage.WriteAsync(new StateWrite(id, 1, Bytes("first"), null), Ct));
        var second = Task.Run(() => Storage.WriteAsync(new StateWrite(id, 1, Bytes("second"), null), Ct));
        var results = await Task.WhenAll(first, second);

        await AssertExactlyOneWonAsync(Storage, id, results, expectedVersion: 2);
    }

    [Fact]
    public async Task Two_instances_racing_on_the_same_rows_never_both_win()
    {
        // Two instances over one database behave like two silos that both believe they own the keys.
        var other = await OpenAsync();
        const int Keys = 20;
        for (var k = 0; k < Keys; k++)
        {
            Assert.True(await Storage.WriteAsync(new StateWrite(Limit($"user/shared{k}"), 0, Bytes("base"), null), Ct));
        }

        var races = Enumerable.Range(0, Keys).Select(async k =>
        {
            var id = Limit($"user/shared{k}");
            var insertId = Limit($"user/fresh{k}");
            var results = await Task.WhenAll(
                Task.Run(() => Storage.WriteAsync(new StateWrite(id, 1, Bytes("first"), null), Ct)),
                Task.Run(() => other.WriteAsync(new StateWrite(id, 1, Bytes("second"), null), Ct)));
            var inserts = await Task.WhenAll(
                Task.Run(() => Storage.WriteAsync(new StateWrite(insertId, 0, Bytes("first"), null), Ct)),
                Task.Run(() => other.WriteAsync(new StateWrite(insertId, 0, Bytes("second"), null), Ct)));
            await AssertExactlyOneWonAsync(other, id, results, expectedVersion: 2);
            await AssertExactlyOneWonAsync(Storage, insertId, inserts, expectedVersion: 1);
        });

        await Task.WhenAll(races);
    }

    [Fact]
    public async Task A_write_survives_disposing_the_instance_and_opening_a_new_one()
    {
        var id = Limit("user/durable");
        var writer = await OpenAsync();
        Assert.True(await writer.WriteAsync(new StateWrite(id, 0, Bytes("v1"), null), Ct));
        Assert.True(await writer.WriteAsync(new StateWrite(id, 1, Bytes("v2"), Due1), Ct));
        await writer.DisposeAsync();

        var reopened = await OpenAsync();
        var stored = await reopened.ReadAsync(id, Ct);

        Assert.NotNull(stored);
        Assert.Equal(2, stored.Version);
        Assert.Equal(Bytes("v2"), stored.Data);
        Assert.Equal([new DueState(id, Due1)], await AllDueAsync(reopened));
        Assert.True(await reopened.WriteAsync(new StateWrite(id, 2, Bytes("v3"), null), Ct));
    }

    [Fact]
    public async Task Initializing_again_keeps_the_data()
    {
        var id = Limit("user/migrated");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("kept"), null), Ct));

        await Storage.InitializeAsync(Ct);
        var second = await OpenAsync();

        Assert.Equal(Bytes("kept"), (await second.ReadAsync(id, Ct))?.Data);
    }

    [Fact]
    public async Task Writes_after_dispose_fail_with_ObjectDisposedException()
    {
        var storage = await OpenAsync();
        await storage.DisposeAsync();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => storage.WriteAsync(new StateWrite(Limit("user/late"), 0, [1], null), Ct));
    }

    private static StateItemWrite Put(string key, string data) => new(key, Bytes(data));

    private static StateItemWrite Remove(string key) => new(key, null);

    private static async Task<Dictionary<string, string>> ItemsAsync(IStateStore storage, StateId id)
    {
        var stored = await storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        return stored.Items.ToDictionary(i => i.Key, i => System.Text.Encoding.UTF8.GetString(i.Data), StringComparer.Ordinal);
    }

    [Fact]
    public async Task Items_written_with_a_successful_compare_and_set_are_read_back_with_the_row()
    {
        var id = Limit("trunk/items");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("row1"), Due1, [Put("b-call", "B1"), Put("a-call", "A1")]), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("row2"), Due2, [Put("b-call", "B2"), Put("c-call", "C1")]), Ct));

        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(2, stored.Version);
        Assert.Equal(Bytes("row2"), stored.Data);
        Assert.Equal(Due2, stored.DueAt);
        Assert.Equal(["a-call", "b-call", "c-call"], stored.Items.Select(i => i.Key));
        Assert.Equal(["A1", "B2", "C1"], stored.Items.Select(i => System.Text.Encoding.UTF8.GetString(i.Data)));

        // A write without item changes keeps the items.
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 2, Bytes("row3"), null), Ct));
        Assert.Equal(3, (await ItemsAsync(Storage, id)).Count);
    }

    [Fact]
    public async Task An_items_only_write_applies_its_items_when_the_version_holds_and_leaves_the_row_as_it_was()
    {
        var id = Limit("trunk/fenced");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("row"), Due1, [Put("a", "A1")]), Ct));

        Assert.True(await Storage.WriteAsync(StateWrite.ItemsOnly(id, 1, [Put("b", "B1"), Remove("a")]), Ct));
        Assert.True(await Storage.WriteAsync(StateWrite.ItemsOnly(id, 1, [Put("b", "B2")]), Ct));

        var stored = await Storage.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(1, stored.Version);
        Assert.Equal(Bytes("row"), stored.Data);
        Assert.Equal(Due1, stored.DueAt);
        Assert.Equal(new Dictionary<string, string> { ["b"] = "B2" }, await ItemsAsync(Storage, id));
    }

    [Fact]
    public async Task An_items_only_write_on_another_version_or_a_missing_row_changes_nothing()
    {
        var id = Limit("trunk/fence-lost");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("row"), null, [Put("a", "A1")]), Ct));

        // Another writer took the grain over: its row write moved the version on, so the older writer's items are refused.
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("taken"), null), Ct));
        Assert.False(await Storage.WriteAsync(StateWrite.ItemsOnly(id, 1, [Put("b", "B1"), Remove("a")]), Ct));
        Assert.Equal(new Dictionary<string, string> { ["a"] = "A1" }, await ItemsAsync(Storage, id));
        Assert.Equal(2, (await Storage.ReadAsync(id, Ct))!.Version);
        Assert.Equal(2, await Storage.ReadVersionAsync(id, Ct));
        Assert.Equal(0, await Storage.ReadVersionAsync(Limit("trunk/never"), Ct));

        Assert.False(await Storage.WriteAsync(StateWrite.ItemsOnly(Limit("trunk/never"), 1, [Put("b", "B1")]), Ct));
        Assert.Null(await Storage.ReadAsync(Limit("trunk/never"), Ct));
    }

    [Fact]
    public async Task An_items_only_write_without_items_or_with_row_data_is_rejected_before_it_reaches_a_batch()
    {
        var id = Limit("trunk/bad-fence");
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(id, 1, Bytes("row"), null, [Put("a", "A")]) { RowUnchanged = true }, Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(StateWrite.ItemsOnly(id, 0, [Put("a", "A")]), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(StateWrite.ItemsOnly(id, 1, []), Ct));
    }

    [Fact]
    public async Task ReadAllAsync_gives_each_grain_its_own_items()
    {
        Assert.True(await Storage.WriteAsync(new StateWrite(Limit("trunk/2"), 0, Bytes("t2"), null, [Put("x", "2x")]), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(Limit("trunk/1"), 0, Bytes("t1"), null, [Put("y", "1y"), Put("x", "1x")]), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(Limit("trunk/3"), 0, Bytes("t3"), null), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(new StateId("call", "trunk/1"), 0, Bytes("c"), null, [Put("z", "call")]), Ct));

        var limits = (await Storage.ReadAllAsync("limit", Ct)).ToDictionary(l => l.Key, l => l.Grain);

        Assert.Equal(3, limits.Count);
        Assert.Equal(Bytes("t1"), limits["trunk/1"].Data);
        Assert.Equal(["x", "y"], limits["trunk/1"].Items.Select(i => i.Key));
        Assert.Equal(Bytes("1y"), limits["trunk/1"].Items[1].Data);
        Assert.Equal(["x"], limits["trunk/2"].Items.Select(i => i.Key));
        Assert.Equal(Bytes("2x"), limits["trunk/2"].Items[0].Data);
        Assert.Empty(limits["trunk/3"].Items);
    }

    [Fact]
    public async Task Items_of_a_failed_compare_and_set_are_not_applied()
    {
        var id = Limit("trunk/stale-items");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("v1"), null, [Put("kept", "1"), Put("doomed", "1")]), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("v2"), null), Ct));

        Assert.False(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("stale"), null, [Put("kept", "stale"), Put("new", "stale"), Remove("doomed")]), Ct));
        Assert.False(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("insert"), null, [Put("kept", "insert"), Put("new", "insert")]), Ct));
        Assert.False(await Storage.WriteAsync(new StateWrite(Limit("trunk/missing"), 4, Bytes("x"), null, [Put("a", "a")]), Ct));

        Assert.Equal(new Dictionary<string, string> { ["kept"] = "1", ["doomed"] = "1" }, await ItemsAsync(Storage, id));
        Assert.Null(await Storage.ReadAsync(Limit("trunk/missing"), Ct));
    }

    [Fact]
    public async Task An_item_is_deleted_by_a_null_data_change_and_the_others_stay()
    {
        var id = Limit("trunk/delete-item");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("v1"), null, [Put("a", "1"), Put("b", "1"), Put("c", "1")]), Ct));

        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, Bytes("v2"), null, [Remove("b"), Put("c", "2"), Remove("never-there")]), Ct));

        Assert.Equal(new Dictionary<string, string> { ["a"] = "1", ["c"] = "2" }, await ItemsAsync(Storage, id));
    }

    [Fact]
    public async Task Deleting_the_grain_removes_its_items_and_only_its_items()
    {
        var id = Limit("trunk/gone");
        var neighbour = Limit("trunk/gone2");
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("v1"), null, [Put("a", "1"), Put("b", "1")]), Ct));
        Assert.True(await Storage.WriteAsync(new StateWrite(neighbour, 0, Bytes("n"), null, [Put("a", "n")]), Ct));

        Assert.False(await Storage.WriteAsync(new StateWrite(id, 5, null, null), Ct));
        Assert.Equal(2, (await ItemsAsync(Storage, id)).Count);

        Assert.True(await Storage.WriteAsync(new StateWrite(id, 1, null, null), Ct));
        Assert.Null(await Storage.ReadAsync(id, Ct));

        // Inserted again, the grain starts without the old items.
        Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("again"), null), Ct));
        Assert.Empty(await ItemsAsync(Storage, id));
        Assert.Equal(new Dictionary<string, string> { ["a"] = "n" }, await ItemsAsync(Storage, neighbour));
    }

    [Fact]
    public async Task In_one_batch_only_the_writes_whose_compare_and_set_held_apply_their_items()
    {
        var blocker = Limit("trunk/blocker");
        var a = Limit("trunk/batch-a");
        var b = Limit("trunk/batch-b");
        var c = Limit("trunk/batch-c");
        Assert.True(await Storage.WriteAsync(new StateWrite(blocker, 0, Bytes("blocker"), null), Ct));
        foreach (var id in new[] { a, b, c })
        {
            Assert.True(await Storage.WriteAsync(new StateWrite(id, 0, Bytes("v1"), null, [Put("old", "1")]), Ct));
        }

        var committer = CommitterOf(Storage);
        Task<bool>[] writes;
        long batches;
        await using (await BlockWritesAsync(blocker))
        {
            var before = committer.BatchCount;
            var blocked = Storage.WriteAsync(new StateWrite(blocker, 1, Bytes("blocker2"), null), Ct);

            // The committer has taken the blocked write into a batch of its own (it now waits on the lock).
            var taken = DateTime.UtcNow.AddSeconds(20);
            while (committer.BatchCount == before && DateTime.UtcNow < taken)
            {
                await Task.Delay(10);
            }

            batches = committer.BatchCount;
            Assert.Equal(before + 1, batches);
            writes =
            [
                blocked,
                Storage.WriteAsync(new StateWrite(a, 1, Bytes("a2"), null, [Put("new", "a"), Remove("old")]), Ct),
                Storage.WriteAsync(new StateWrite(b, 7, Bytes("b-stale"), null, [Put("new", "b"), Remove("old")]), Ct),
                Storage.WriteAsync(new StateWrite(b, 0, Bytes("b-insert"), null, [Put("inserted", "b")]), Ct),
                Storage.WriteAsync(new StateWrite(c, 1, Bytes("c2"), null, [Put("new", "c")]), Ct),
            ];
        }

        var results = await Task.WhenAll(writes);
        Assert.Equal([true, true, false, false, true], results);

        // The four writes queued behind the blocked one shared one batch.
        Assert.Equal(batches + 1, committer.BatchCount);
        Assert.Equal(new Dictionary<string, string> { ["new"] = "a" }, await ItemsAsync(Storage, a));
        Assert.Equal(new Dictionary<string, string> { ["old"] = "1" }, await ItemsAsync(Storage, b));
        Assert.Equal(Bytes("v1"), (await Storage.ReadAsync(b, Ct))!.Data);
        Assert.Equal(new Dictionary<string, string> { ["old"] = "1", ["new"] = "c" }, await ItemsAsync(Storage, c));
    }

    [Fact]
    public async Task Malformed_item_changes_are_rejected_before_they_reach_a_batch()
    {
        var id = Limit("trunk/bad-items");
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(id, 0, [1], null, [Put("a", "1"), Put("a", "2")]), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(id, 0, [1], null, [Put("", "1")]), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(id, 0, [1], null, [Put("a\0", "1"), Put("a\0b", "1")]), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => Storage.WriteAsync(new StateWrite(id, 3, null, null, [Remove("a")]), Ct));
        Assert.Null(await Storage.ReadAsync(id, Ct));
    }

    private static async Task AssertExactlyOneWonAsync(IStateStore reader, StateId id, bool[] results, long expectedVersion)
    {
        Assert.Single(results, won => won);
        var stored = await reader.ReadAsync(id, Ct);
        Assert.NotNull(stored);
        Assert.Equal(expectedVersion, stored.Version);
        Assert.Equal(Bytes(results[0] ? "first" : "second"), stored.Data);
    }

    [Fact]
    public async Task The_audit_keeps_each_change_and_reads_newest_first_by_target_and_by_page()
    {
        var audit = CreateAuditLog();
        try
        {
            var at = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_000);
            var first = await audit.AppendAsync(new AuditEntry(0, at, "ops", "limits.change", "user/bob", """{"total":2}""", """{"total":3}"""), Ct);
            var second = await audit.AppendAsync(new AuditEntry(0, at.AddSeconds(1), "ops", "calls.end", "c1", null, null), Ct);
            var third = await audit.AppendAsync(new AuditEntry(0, at.AddSeconds(2), "noc", "limits.clear", "user/bob", """{"total":3}""", """{"total":2}"""), Ct);
            Assert.True(first < second && second < third);

            var all = await audit.ReadAsync(new AuditQuery(10), Ct);
            Assert.Equal([third, second, first], all.Select(e => e.Id));
            Assert.Equal(new AuditEntry(first, at, "ops", "limits.change", "user/bob", """{"total":2}""", """{"total":3}"""), all[2]);
            Assert.Null(all[1].Before);

            var bob = await audit.ReadAsync(new AuditQuery(10, Target: "user/bob"), Ct);
            Assert.Equal([third, first], bob.Select(e => e.Id));
            var page = await audit.ReadAsync(new AuditQuery(1, BeforeId: third), Ct);
            Assert.Equal(second, page.Single().Id);
        }
        finally
        {
            if (audit is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync();
            }
        }
    }
}
