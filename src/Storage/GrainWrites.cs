namespace CallState.Storage;

/// <summary>Rules and conversions shared by the storage providers.</summary>
internal static class GrainWrites
{
    /// <summary>
    /// Rejects a malformed write before it is queued: one bad statement would fail its whole batch, so it
    /// must not reach one and take other callers' writes down with it.
    /// </summary>
    public static void Validate(StateWrite write)
    {
        ArgumentNullException.ThrowIfNull(write);
        ValidateId(write.Id);
        if (write.ExpectedVersion < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(write), write.ExpectedVersion, "ExpectedVersion must be 0 (insert) or a stored version.");
        }

        if (write.ExpectedVersion == 0 && write.InsertVersion < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(write), write.InsertVersion, "InsertVersion must be 1 or more.");
        }

        if (write.RowUnchanged)
        {
            if (write.Data is not null || write.DueAt is not null || write.ExpectedVersion == 0 || write.Items is not { Count: > 0 })
            {
                throw new ArgumentException("An items-only write names a stored version and item changes, and no row data or due time.", nameof(write));
            }
        }
        else if (write.Data is null && write.ExpectedVersion == 0)
        {
            // A delete is conditional on the version the caller read; a row that was never written has none.
            throw new ArgumentException("A delete (Data null) must name the version it deletes; ExpectedVersion 0 means insert.", nameof(write));
        }

        if (write.Items is { Count: > 0 } items)
        {
            if (write.Data is null && !write.RowUnchanged)
            {
                throw new ArgumentException("A delete (Data null) removes every item of the grain; it cannot carry item changes.", nameof(write));
            }

            // One statement upserts all of a write's items; PostgreSQL refuses to touch one row twice in it.
            var seen = items.Count > 1 ? new HashSet<string>(items.Count, StringComparer.Ordinal) : null;
            foreach (var item in items)
            {
                ValidateText(item.ItemKey, "StateItemWrite.ItemKey");
                if (seen is not null && !seen.Add(item.ItemKey))
                {
                    throw new ArgumentException($"Item key '{item.ItemKey}' appears twice in one write.", nameof(write));
                }
            }
        }
    }

    public static void ValidateId(StateId id)
    {
        ValidateText(id.Type, "StateId.Type");
        ValidateText(id.Key, "StateId.Key");
    }

    public static void ValidateType(string type) => ValidateText(type, "type");

    /// <summary>Stored form of a due time: Unix milliseconds (an indexable integer in both databases).</summary>
    public static object ToDbDueAt(DateTimeOffset? dueAt) =>
        dueAt is { } value ? value.ToUnixTimeMilliseconds() : DBNull.Value;

    public static DateTimeOffset FromDbDueAt(long unixMilliseconds) => DateTimeOffset.FromUnixTimeMilliseconds(unixMilliseconds);

    private static void ValidateText(string? value, string what)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw new ArgumentException($"{what} must not be empty.", what);
        }

        // PostgreSQL text cannot hold NUL; keep both providers accepting the same keys.
        if (value.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException($"{what} must not contain NUL characters.", what);
        }
    }
}
