using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Orleans.Configuration;

namespace CallState.Storage.Membership;

/// <summary>
/// Orleans cluster membership kept in the grain-state database (<see cref="StorageOptions"/>: a SQLite file or a
/// PostgreSQL schema), beside the grain tables. Inserts and updates are compare-and-set on the cluster's table version
/// and commit together with it; a conflict returns false and changes nothing.
/// </summary>
public sealed class StorageMembershipTable : IMembershipTable, IAsyncDisposable
{
    private readonly MembershipDatabase _database;
    private readonly string _clusterId;
    private readonly ILogger _logger;
    private volatile bool _initialized;

    /// <exception cref="ArgumentException">The storage options are invalid; the message names each field to fix.</exception>
    public StorageMembershipTable(
        IOptions<StorageOptions> storageOptions, IOptions<ClusterOptions> clusterOptions, ILogger<StorageMembershipTable>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(storageOptions);
        ArgumentNullException.ThrowIfNull(clusterOptions);
        var options = storageOptions.Value;
        var errors = StorageOptionsValidator.Validate(options);
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", errors), nameof(storageOptions));
        }

        _clusterId = clusterOptions.Value.ClusterId;
        if (string.IsNullOrEmpty(_clusterId))
        {
            throw new ArgumentException("ClusterOptions.ClusterId must be set: it keys this cluster's rows.", nameof(clusterOptions));
        }

        _logger = logger ?? NullLogger<StorageMembershipTable>.Instance;
        _database = options.Provider == StorageProvider.PostgreSql
            ? new PostgresMembershipDatabase(options)
            : new SqliteMembershipDatabase(options);
    }

    /// <summary>The cluster id whose rows this instance reads and writes.</summary>
    public string ClusterId => _clusterId;

    /// <inheritdoc />
    public async Task InitializeMembershipTableAsync(bool tryInitTableVersion, CancellationToken cancellationToken = default)
    {
        await _database.CreateSchemaAsync(cancellationToken).ConfigureAwait(false);
        _initialized = true;
        if (tryInitTableVersion && await _database.CreateVersionAsync(_clusterId, cancellationToken).ConfigureAwait(false))
        {
            Log.TableVersionCreated(_logger, _clusterId);
        }

        Log.MembershipTableReady(_logger, _database.Provider, _database.Target, _clusterId);
    }

    /// <inheritdoc />
    public async Task DeleteMembershipTableEntriesAsync(string clusterId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(clusterId);
        EnsureInitialized();
        var silos = await _database.DeleteClusterAsync(clusterId, cancellationToken).ConfigureAwait(false);
        Log.ClusterEntriesDeleted(_logger, clusterId, silos);
    }

    /// <inheritdoc />
    public async Task CleanupDefunctSiloEntriesAsync(DateTimeOffset beforeDate, CancellationToken cancellationToken = default)
    {
        EnsureInitialized();
        var removed = await _database.CleanupAsync(_clusterId, beforeDate, cancellationToken).ConfigureAwait(false);
        if (removed > 0)
        {
            Log.DefunctEntriesRemoved(_logger, removed, _clusterId, beforeDate);
        }
    }

    /// <inheritdoc />
    public Task<MembershipTableData> ReadRowAsync(SiloAddress key, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        EnsureInitialized();
        return _database.ReadAsync(_clusterId, key, cancellationToken);
    }

    /// <inheritdoc />
    public Task<MembershipTableData> ReadAllAsync(CancellationToken cancellationToken = default)
    {
        EnsureInitialized();
        return _database.ReadAsync(_clusterId, silo: null, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> InsertRowAsync(MembershipEntry entry, TableVersion tableVersion, CancellationToken cancellationToken = default)
    {
        ValidateEntry(entry);
        ArgumentNullException.ThrowIfNull(tableVersion);
        EnsureInitialized();
        var outcome = await _database.InsertAsync(_clusterId, entry, tableVersion, cancellationToken).ConfigureAwait(false);
        return Report("insert", entry, tableVersion, outcome);
    }

    /// <inheritdoc />
    public async Task<bool> UpdateRowAsync(MembershipEntry entry, string etag, TableVersion tableVersion, CancellationToken cancellationToken = default)
    {
        ValidateEntry(entry);
        ArgumentNullException.ThrowIfNull(etag);
        ArgumentNullException.ThrowIfNull(tableVersion);
        EnsureInitialized();
        var outcome = await _database.UpdateAsync(_clusterId, entry, etag, tableVersion, cancellationToken).ConfigureAwait(false);
        return Report("update", entry, tableVersion, outcome);
    }

    /// <inheritdoc />
    public async Task UpdateIAmAliveAsync(MembershipEntry entry, CancellationToken cancellationToken = default)
    {
        ValidateEntry(entry);
        EnsureInitialized();
        if (!await _database.UpdateIAmAliveAsync(_clusterId, entry.SiloAddress, entry.IAmAliveTime, cancellationToken).ConfigureAwait(false))
        {
            Log.IAmAliveWithoutRow(_logger, entry.SiloAddress, _clusterId);
        }
    }

    // Orleans 10 calls the Async methods above; these older forms are still abstract in IMembershipTable.

    /// <inheritdoc />
    [Obsolete("Use InitializeMembershipTableAsync instead.")]
    public Task InitializeMembershipTable(bool tryInitTableVersion) => InitializeMembershipTableAsync(tryInitTableVersion, CancellationToken.None);

    /// <inheritdoc />
    [Obsolete("Use DeleteMembershipTableEntriesAsync instead.")]
    public Task DeleteMembershipTableEntries(string clusterId) => DeleteMembershipTableEntriesAsync(clusterId, CancellationToken.None);

    /// <inheritdoc />
    [Obsolete("Use CleanupDefunctSiloEntriesAsync instead.")]
    public Task CleanupDefunctSiloEntries(DateTimeOffset beforeDate) => CleanupDefunctSiloEntriesAsync(beforeDate, CancellationToken.None);

    /// <inheritdoc />
    [Obsolete("Use ReadRowAsync instead.")]
    public Task<MembershipTableData> ReadRow(SiloAddress key) => ReadRowAsync(key, CancellationToken.None);

    /// <inheritdoc />
    [Obsolete("Use ReadAllAsync instead.")]
    public Task<MembershipTableData> ReadAll() => ReadAllAsync(CancellationToken.None);

    /// <inheritdoc />
    [Obsolete("Use InsertRowAsync instead.")]
    public Task<bool> InsertRow(MembershipEntry entry, TableVersion tableVersion) => InsertRowAsync(entry, tableVersion, CancellationToken.None);

    /// <inheritdoc />
    [Obsolete("Use UpdateRowAsync instead.")]
    public Task<bool> UpdateRow(MembershipEntry entry, string etag, TableVersion tableVersion) =>
        UpdateRowAsync(entry, etag, tableVersion, CancellationToken.None);

    /// <inheritdoc />
    [Obsolete("Use UpdateIAmAliveAsync instead.")]
    public Task UpdateIAmAlive(MembershipEntry entry) => UpdateIAmAliveAsync(entry, CancellationToken.None);

    /// <summary>Closes the connection pool.</summary>
    public ValueTask DisposeAsync() => _database.DisposeAsync();

    private static void ValidateEntry(MembershipEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (entry.SiloAddress is null)
        {
            throw new ArgumentException("MembershipEntry.SiloAddress must be set.", nameof(entry));
        }
    }

    private void EnsureInitialized()
    {
        if (!_initialized)
        {
            throw new InvalidOperationException($"{nameof(StorageMembershipTable)}.{nameof(InitializeMembershipTableAsync)} must complete before it is used.");
        }
    }

    private bool Report(string operation, MembershipEntry entry, TableVersion tableVersion, MembershipWrite outcome)
    {
        if (outcome == MembershipWrite.Written)
        {
            Log.RowWritten(_logger, operation, entry.SiloAddress, _clusterId, entry.Status, tableVersion.Version);
            return true;
        }

        // Refusals are part of the protocol (another silo wrote first); Orleans reads the table again and retries.
        Log.WriteRefused(_logger, operation, entry.SiloAddress, _clusterId, outcome);
        return false;
    }
}
