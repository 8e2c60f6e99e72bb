namespace CallState.Storage;

/// <summary>Which database holds grain state.</summary>
public enum StorageProvider
{
    /// <summary>An embedded file database; the single-node default.</summary>
    Sqlite = 0,

    /// <summary>A PostgreSQL server shared by every silo of a cluster.</summary>
    PostgreSql = 1,
}

/// <summary>SQLite's <c>PRAGMA synchronous</c> level for the write connection.</summary>
public enum SqliteSynchronous
{
    /// <summary>No fsync: a power loss can lose or corrupt committed data. For throwaway data only.</summary>
    Off = 0,

    /// <summary>In WAL mode, fsync only at checkpoints: a power loss can lose the latest commits.</summary>
    Normal = 1,

    /// <summary>In WAL mode, fsync of the log at every commit: a commit survives a power loss.</summary>
    Full = 2,

    /// <summary>Like <see cref="Full"/>, and also syncs the directory after the WAL is reset.</summary>
    Extra = 3,
}

/// <summary>Grain storage settings, bound from the configuration section <c>CallState:Storage</c>.</summary>
public sealed class StorageOptions
{
    /// <summary>The configuration section these options are bound from.</summary>
    public const string SectionName = "CallState:Storage";

    /// <summary>The SQLite database used when no connection string is given.</summary>
    public const string DefaultSqliteConnectionString = "Data Source=data/callstate.db";

    public const string DefaultSchema = "callstate";

    public StorageProvider Provider { get; set; } = StorageProvider.Sqlite;

    /// <summary>
    /// For SQLite, a Microsoft.Data.Sqlite connection string (default <see cref="DefaultSqliteConnectionString"/>);
    /// for PostgreSQL, an Npgsql connection string (required).
    /// </summary>
    public string? ConnectionString { get; set; }

    /// <summary>PostgreSQL schema holding the tables; created when missing.</summary>
    public string Schema { get; set; } = DefaultSchema;

    /// <summary>
    /// SQLite durability. <see cref="SqliteSynchronous.Full"/> by default because an admission that was
    /// acknowledged must survive a power loss (docs/architecture.md, "Storage").
    /// </summary>
    public SqliteSynchronous SqliteSynchronous { get; set; } = SqliteSynchronous.Full;

    /// <summary>Largest number of writes committed in one transaction.</summary>
    public int MaxBatchSize { get; set; } = GroupCommitter.DefaultMaxBatchSize;

    /// <summary>Writes that may wait for the committer before writers are held back.</summary>
    public int QueueCapacity { get; set; } = GroupCommitter.DefaultQueueCapacity;

    /// <summary>The connection string in effect: the configured one, or the SQLite default.</summary>
    public string EffectiveConnectionString =>
        string.IsNullOrWhiteSpace(ConnectionString) && Provider == StorageProvider.Sqlite
            ? DefaultSqliteConnectionString
            : ConnectionString ?? "";
}
