using System.Data.Common;

namespace CallState.Storage.Membership;

/// <summary>What a conditional membership write did.</summary>
internal enum MembershipWrite
{
    /// <summary>The row and the table version were written together.</summary>
    Written = 0,

    /// <summary>The cluster's table version is no longer the one the caller read (or the cluster has none): nothing changed.</summary>
    TableVersionChanged = 1,

    /// <summary>An insert found the silo's row already there: nothing changed.</summary>
    RowExists = 2,

    /// <summary>An update found no row for the silo with the caller's row etag: nothing changed.</summary>
    RowChanged = 3,
}

/// <summary>
/// The membership table's statements over one ADO.NET provider. Two tables: one row per cluster id with the table
/// version and its etag, and one row per silo (see <see cref="MembershipRows"/>) with an etag of its own. Every insert
/// and update first moves the cluster's version row from the etag the caller read to a new one, then changes the silo
/// row, in one transaction: both happen, or neither.
/// </summary>
internal abstract class MembershipDatabase : IAsyncDisposable
{
    /// <summary>
    /// The version a cluster without a version row reads as: its empty etag matches no stored one, so every write is
    /// refused until <see cref="CreateVersionAsync"/> has made the row.
    /// </summary>
    private static readonly TableVersion MissingVersion = new(0, string.Empty);

    private readonly string _readAllSql;
    private readonly string _readRowSql;
    private readonly string _createVersionSql;
    private readonly string _bumpVersionSql;
    private readonly string _insertRowSql;
    private readonly string _updateRowSql;
    private readonly string _iAmAliveSql;
    private readonly string _cleanupSql;
    private readonly string _deleteVersionSql;
    private readonly string _deleteSilosSql;

    /// <param name="versions">The (schema-qualified where needed) table of cluster versions.</param>
    /// <param name="silos">The (schema-qualified where needed) table of silo rows.</param>
    protected MembershipDatabase(string versions, string silos)
    {
        // One statement reads the version and the rows, so they come from one snapshot (IMembershipTable.ReadAll must
        // read them atomically). The LEFT JOIN returns the version even when the cluster has no silo (row).
        var read = $"""
            SELECT v.version, v.etag, {MembershipRows.SiloColumns}
            FROM {versions} v LEFT JOIN {silos} s ON s.cluster_id = v.cluster_id
            """;
        _readAllSql = $"{read} WHERE v.cluster_id = @c ORDER BY s.address, s.port, s.generation";
        _readRowSql = $"{read} AND s.address = @address AND s.port = @port AND s.generation = @generation WHERE v.cluster_id = @c";
        _createVersionSql = $"INSERT INTO {versions} (cluster_id, version, etag) VALUES (@c, 0, @etag) ON CONFLICT (cluster_id) DO NOTHING";

        // The compare-and-set of the whole table: the etag the caller read must still be the stored one. The version
        // must also grow, so a caller that passes the version it read instead of the next one changes nothing.
        _bumpVersionSql = $"UPDATE {versions} SET version = @version, etag = @new_etag WHERE cluster_id = @c AND etag = @etag AND version < @version";
        _insertRowSql = $"""
            INSERT INTO {silos} (cluster_id, address, port, generation, {MembershipRows.EntryColumns}, etag)
            VALUES (@c, @address, @port, @generation, {MembershipRows.EntryParameters}, @new_row_etag)
            ON CONFLICT (cluster_id, address, port, generation) DO NOTHING
            """;
        _updateRowSql = $"""
            UPDATE {silos} SET ({MembershipRows.EntryColumns}, etag) = ({MembershipRows.EntryParameters}, @new_row_etag)
            WHERE cluster_id = @c AND address = @address AND port = @port AND generation = @generation AND etag = @row_etag
            """;

        // A heartbeat changes neither the row etag nor the table version: Orleans requires that the row and table etags
        // read before it still be accepted after it (IMembershipTable.UpdateIAmAlive).
        _iAmAliveSql = $"""
            UPDATE {silos} SET i_am_alive_at = @alive, last_update_at = CASE WHEN last_update_at > @alive THEN last_update_at ELSE @alive END
            WHERE cluster_id = @c AND address = @address AND port = @port AND generation = @generation
            """;
        _cleanupSql = $"DELETE FROM {silos} WHERE cluster_id = @c AND status = @dead AND last_update_at < @before";
        _deleteVersionSql = $"DELETE FROM {versions} WHERE cluster_id = @c";
        _deleteSilosSql = $"DELETE FROM {silos} WHERE cluster_id = @c";
    }

    public abstract StorageProvider Provider { get; }

    /// <summary>Where the tables are, for logs (never a password).</summary>
    public abstract string Target { get; }

    /// <summary>Creates the tables when missing; safe to run from several silos at once.</summary>
    public abstract Task CreateSchemaAsync(CancellationToken cancellationToken);

    public abstract ValueTask DisposeAsync();

    protected abstract Task<DbConnection> OpenAsync(CancellationToken cancellationToken);

    /// <summary>A transaction that holds the database's write lock (SQLite) or takes row locks as it goes (PostgreSQL).</summary>
    protected abstract Task<DbTransaction> BeginWriteAsync(DbConnection connection, CancellationToken cancellationToken);

    /// <summary>Creates the cluster's version row (version 0) unless it exists; true when this call created it.</summary>
    public async Task<bool> CreateVersionAsync(string clusterId, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = Command(connection, null, _createVersionSql);
            await using (command.ConfigureAwait(false))
            {
                MembershipRows.Add(command, "@c", clusterId);
                MembershipRows.Add(command, "@etag", NewEtag());
                return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
            }
        }
    }

    /// <summary>The cluster's version with every silo row, or with <paramref name="silo"/>'s row only when given.</summary>
    public async Task<MembershipTableData> ReadAsync(string clusterId, SiloAddress? silo, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = Command(connection, null, silo is null ? _readAllSql : _readRowSql);
            await using (command.ConfigureAwait(false))
            {
                if (silo is null)
                {
                    MembershipRows.Add(command, "@c", clusterId);
                }
                else
                {
                    MembershipRows.AddKey(command, clusterId, silo);
                }

                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    TableVersion? version = null;
                    var members = new List<Tuple<MembershipEntry, string>>();
                    while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        version ??= new TableVersion(reader.GetInt32(0), reader.GetString(1));
                        if (!reader.IsDBNull(2))
                        {
                            members.Add(MembershipRows.ReadEntry(reader, 2));
                        }
                    }

                    return new MembershipTableData(members, version ?? MissingVersion);
                }
            }
        }
    }

    public Task<MembershipWrite> InsertAsync(string clusterId, MembershipEntry entry, TableVersion version, CancellationToken cancellationToken) =>
        WriteAsync(clusterId, version, _insertRowSql, entry, rowEtag: null, MembershipWrite.RowExists, cancellationToken);

    public Task<MembershipWrite> UpdateAsync(string clusterId, MembershipEntry entry, string rowEtag, TableVersion version, CancellationToken cancellationToken) =>
        WriteAsync(clusterId, version, _updateRowSql, entry, rowEtag, MembershipWrite.RowChanged, cancellationToken);

    /// <summary>Sets the silo's IAmAlive time; false when it has no row.</summary>
    public async Task<bool> UpdateIAmAliveAsync(string clusterId, SiloAddress silo, DateTime alive, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = Command(connection, null, _iAmAliveSql);
            await using (command.ConfigureAwait(false))
            {
                MembershipRows.AddKey(command, clusterId, silo);
                MembershipRows.Add(command, "@alive", MembershipRows.ToUnixMilliseconds(alive));
                return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0;
            }
        }
    }

    /// <summary>Deletes the cluster's dead silo rows last updated before <paramref name="before"/>; returns how many.</summary>
    public async Task<int> CleanupAsync(string clusterId, DateTimeOffset before, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = Command(connection, null, _cleanupSql);
            await using (command.ConfigureAwait(false))
            {
                MembershipRows.Add(command, "@c", clusterId);
                MembershipRows.Add(command, "@dead", (int)SiloStatus.Dead);
                MembershipRows.Add(command, "@before", before.ToUnixTimeMilliseconds());
                return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Deletes the cluster's version row and silo rows together; returns how many silo rows there were.</summary>
    public async Task<int> DeleteClusterAsync(string clusterId, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                // The version row first, in the order every writer locks rows (version, then silo), so this cannot deadlock with them.
                await ExecuteAsync(connection, transaction, _deleteVersionSql, clusterId, cancellationToken).ConfigureAwait(false);
                var silos = await ExecuteAsync(connection, transaction, _deleteSilosSql, clusterId, cancellationToken).ConfigureAwait(false);
                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                return silos;
            }
        }
    }

    /// <summary>A fresh etag: random, so an etag read before a cluster's rows were deleted never matches the ones made after.</summary>
    private static string NewEtag() => Guid.NewGuid().ToString("N");

    private async Task<MembershipWrite> WriteAsync(
        string clusterId, TableVersion version, string rowSql, MembershipEntry entry, string? rowEtag, MembershipWrite rowConflict, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                // The version row first: on PostgreSQL its row lock makes concurrent writers of the cluster wait here, and
                // each one that waited then finds the etag changed and stops (exactly one of them wins). SQLite's write
                // lock, taken at BEGIN, serializes them the same way.
                var bump = Command(connection, transaction, _bumpVersionSql);
                await using (bump.ConfigureAwait(false))
                {
                    MembershipRows.Add(bump, "@c", clusterId);
                    MembershipRows.Add(bump, "@version", version.Version);
                    MembershipRows.Add(bump, "@etag", version.VersionEtag);
                    MembershipRows.Add(bump, "@new_etag", NewEtag());
                    if (await bump.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
                    {
                        await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
                        return MembershipWrite.TableVersionChanged;
                    }
                }

                var row = Command(connection, transaction, rowSql);
                await using (row.ConfigureAwait(false))
                {
                    MembershipRows.AddEntry(row, clusterId, entry);
                    MembershipRows.Add(row, "@new_row_etag", NewEtag());
                    if (rowEtag is not null)
                    {
                        MembershipRows.Add(row, "@row_etag", rowEtag);
                    }

                    // Both statements are conditional (ON CONFLICT DO NOTHING, WHERE etag = ...): a conflict changes no
                    // row, and rolling back undoes the version bump, so a refused write leaves nothing behind.
                    if (await row.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
                    {
                        await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
                        return rowConflict;
                    }
                }

                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                return MembershipWrite.Written;
            }
        }
    }

    private static DbCommand Command(DbConnection connection, DbTransaction? transaction, string sql)
    {
        var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        return command;
    }

    private static async Task<int> ExecuteAsync(DbConnection connection, DbTransaction transaction, string sql, string clusterId, CancellationToken cancellationToken)
    {
        var command = Command(connection, transaction, sql);
        await using (command.ConfigureAwait(false))
        {
            MembershipRows.Add(command, "@c", clusterId);
            return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }
}
