using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CallState.Storage;

/// <summary>Checks <see cref="StorageOptions"/>; every message names the configuration key to fix.</summary>
public sealed partial class StorageOptionsValidator : IValidateOptions<StorageOptions>
{
    /// <summary>Upper bound for <see cref="StorageOptions.MaxBatchSize"/>: keeps one transaction, and the locks it holds, short.</summary>
    public const int MaxAllowedBatchSize = 10_000;

    private const string Prefix = StorageOptions.SectionName + ":";

    /// <summary>Returns every problem found, or an empty list when the options are usable.</summary>
    public static IReadOnlyList<string> Validate(StorageOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        switch (options.Provider)
        {
            case StorageProvider.Sqlite:
                ValidateSqlite(options, errors);
                break;
            case StorageProvider.PostgreSql:
                ValidatePostgres(options, errors);
                break;
            default:
                errors.Add($"{Prefix}Provider must be Sqlite or PostgreSql (was {(int)options.Provider})");
                break;
        }

        if (options.MaxBatchSize is < 1 or > MaxAllowedBatchSize)
        {
            errors.Add($"{Prefix}MaxBatchSize must be between 1 and {MaxAllowedBatchSize} (was {options.MaxBatchSize})");
        }

        if (options.QueueCapacity < options.MaxBatchSize)
        {
            errors.Add($"{Prefix}QueueCapacity must be at least MaxBatchSize ({options.MaxBatchSize}) so a full batch can form (was {options.QueueCapacity})");
        }

        return errors;
    }

    /// <inheritdoc />
    ValidateOptionsResult IValidateOptions<StorageOptions>.Validate(string? name, StorageOptions options)
    {
        var errors = Validate(options);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void ValidateSqlite(StorageOptions options, List<string> errors)
    {
        if (!Enum.IsDefined(options.SqliteSynchronous))
        {
            errors.Add($"{Prefix}SqliteSynchronous must be Off, Normal, Full or Extra (was {(int)options.SqliteSynchronous})");
        }

        SqliteConnectionStringBuilder builder;
        try
        {
            builder = new SqliteConnectionStringBuilder(options.EffectiveConnectionString);
        }
        catch (ArgumentException ex)
        {
            errors.Add($"{Prefix}ConnectionString is not a valid SQLite connection string: {ex.Message}");
            return;
        }

        // WAL, which lets readers run beside the committer, needs a file; an in-memory database would also
        // lose every admission at exit.
        if (string.IsNullOrWhiteSpace(builder.DataSource)
            || builder.DataSource.Equals(":memory:", StringComparison.OrdinalIgnoreCase)
            || builder.Mode == SqliteOpenMode.Memory)
        {
            errors.Add($"{Prefix}ConnectionString must name a database file (Data Source=path) when Provider is Sqlite");
        }
        else if (builder.Mode == SqliteOpenMode.ReadOnly)
        {
            errors.Add($"{Prefix}ConnectionString must not use Mode=ReadOnly: grain storage writes");
        }
    }

    private static void ValidatePostgres(StorageOptions options, List<string> errors)
    {
        if (string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            errors.Add($"{Prefix}ConnectionString is required when Provider is PostgreSql");
        }
        else
        {
            try
            {
                var builder = new NpgsqlConnectionStringBuilder(options.ConnectionString);
                if (string.IsNullOrWhiteSpace(builder.Host))
                {
                    errors.Add($"{Prefix}ConnectionString must name a Host when Provider is PostgreSql");
                }
            }
            catch (ArgumentException ex)
            {
                // The message names the offending keyword, never the password's value.
                errors.Add($"{Prefix}ConnectionString is not a valid PostgreSQL connection string: {ex.Message}");
            }
        }

        if (string.IsNullOrEmpty(options.Schema) || !SchemaName().IsMatch(options.Schema))
        {
            errors.Add($"{Prefix}Schema must be a lower-case SQL identifier of at most 63 characters (letters, digits, _; not starting with a digit), was '{options.Schema}'");
        }
    }

    /// <summary>
    /// Lower-case unquoted identifiers only: the schema name is spliced into DDL and queries (parameters
    /// cannot name a schema), and PostgreSQL folds unquoted names to lower case (63 = NAMEDATALEN - 1).
    /// </summary>
    [GeneratedRegex("^[a-z_][a-z0-9_]{0,62}$", RegexOptions.CultureInvariant)]
    internal static partial Regex SchemaName();
}
