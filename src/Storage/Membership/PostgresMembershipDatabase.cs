using System.Data.Common;
using Npgsql;

namespace CallState.Storage.Membership;

/// <summary>The membership tables in the grain-state PostgreSQL schema (<see cref="StorageOptions.Schema"/>).</summary>
internal sealed class PostgresMembershipDatabase : MembershipDatabase
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly string _schema;
    private readonly string _target;

    public PostgresMembershipDatabase(StorageOptions options)
        : base(Versions(options.Schema), Silos(options.Schema))
    {
        var builder = new NpgsqlDataSourceBuilder(options.ConnectionString);
        if (string.IsNullOrEmpty(builder.ConnectionStringBuilder.ApplicationName))
        {
            builder.ConnectionStringBuilder.ApplicationName = "callstate-membership";
        }

        _schema = options.Schema;
        _target = $"{builder.ConnectionStringBuilder.Host}:{builder.ConnectionStringBuilder.Port}/{builder.ConnectionStringBuilder.Database}, schema {options.Schema}";
        _dataSource = builder.Build();
    }

    public override StorageProvider Provider => StorageProvider.PostgreSql;

    public override string Target => _target;

    public override async Task CreateSchemaAsync(CancellationToken cancellationToken)
    {
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                // Concurrent CREATE ... IF NOT EXISTS of one name can still fail with a unique violation, so silos starting
                // together take turns. The key is the one the state store's migration takes, which also creates the schema.
                var lockCommand = new NpgsqlCommand("SELECT pg_advisory_xact_lock(hashtext($1))", connection, transaction);
                await using (lockCommand.ConfigureAwait(false))
                {
                    lockCommand.Parameters.Add(new NpgsqlParameter<string> { TypedValue = "callstate.schema." + _schema });
                    await lockCommand.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                var create = new NpgsqlCommand(
                    $"""
                    CREATE SCHEMA IF NOT EXISTS {_schema};
                    CREATE TABLE IF NOT EXISTS {Versions(_schema)} (
                        cluster_id text NOT NULL PRIMARY KEY,
                        version integer NOT NULL,
                        etag text NOT NULL
                    );
                    CREATE TABLE IF NOT EXISTS {Silos(_schema)} (
                        cluster_id text NOT NULL,
                        address text NOT NULL,
                        port integer NOT NULL,
                        generation integer NOT NULL,
                        status integer NOT NULL,
                        proxy_port integer NOT NULL,
                        host_name text NULL,
                        silo_name text NULL,
                        role_name text NULL,
                        update_zone integer NOT NULL,
                        fault_zone integer NOT NULL,
                        start_at bigint NOT NULL,
                        i_am_alive_at bigint NOT NULL,
                        last_update_at bigint NOT NULL,
                        suspect_times text NOT NULL,
                        etag text NOT NULL,
                        PRIMARY KEY (cluster_id, address, port, generation)
                    );
                    """,
                    connection,
                    transaction);
                await using (create.ConfigureAwait(false))
                {
                    await create.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    public override ValueTask DisposeAsync() => _dataSource.DisposeAsync();

    protected override async Task<DbConnection> OpenAsync(CancellationToken cancellationToken) =>
        await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);

    /// <summary>Read committed: the version row's lock, taken by the first statement, is what serializes writers.</summary>
    protected override async Task<DbTransaction> BeginWriteAsync(DbConnection connection, CancellationToken cancellationToken) =>
        await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);

    // The schema name was checked against a lower-case identifier pattern by StorageOptionsValidator: safe to splice.
    private static string Versions(string schema) => $"{schema}.callstate_membership_versions";

    private static string Silos(string schema) => $"{schema}.callstate_membership_silos";
}
