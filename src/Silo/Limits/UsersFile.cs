using System.Globalization;
using CallState.Grains;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace CallState.Silo.Limits;

/// <summary>
/// Reads users and their limits from a CSV file (<see cref="LimitsOptions.UsersFile"/>): one user a line,
/// <c>name,total,outbound,inbound</c>, an empty or missing field meaning unlimited. Blank lines and lines
/// starting with <c>#</c> are skipped; a first line <c>name,total,outbound,inbound</c> is a header. Fields are
/// not quoted (SIP user parts with a comma are not supported).
/// </summary>
public static class UsersFile
{
    /// <summary>Errors reported for one file at most; a file in the wrong format would otherwise print one per line.</summary>
    public const int MaxErrors = 50;

    private const int FieldCount = 4;

    private static readonly string[] HeaderFields = ["name", "total", "outbound", "inbound"];

    /// <summary>
    /// Reads <paramref name="path"/>. Every valid line is returned; each error names the file and line
    /// (<c>users.csv:12: ...</c>). A missing or unreadable file is one error.
    /// </summary>
    public static Dictionary<string, LimitValues> Read(string path, out IReadOnlyList<string> errors)
    {
        var users = new Dictionary<string, LimitValues>(StringComparer.Ordinal);
        var lines = new Dictionary<string, int>(StringComparer.Ordinal);
        var list = new List<string>();
        var suppressed = 0;
        void Error(string message)
        {
            if (list.Count < MaxErrors)
            {
                list.Add(message);
            }
            else
            {
                suppressed++;
            }
        }

        try
        {
            var number = 0;
            var seenData = false;
            Span<Range> ranges = stackalloc Range[FieldCount + 1];
            foreach (var raw in File.ReadLines(path))
            {
                number++;
                var line = raw.AsSpan().Trim();
                if (line.IsEmpty || line[0] == '#')
                {
                    continue;
                }

                var where = $"{path}:{number}";
                var count = line.Split(ranges, ',');
                if (count > FieldCount)
                {
                    Error($"{where}: more than {FieldCount} fields (expected name,total,outbound,inbound)");
                    continue;
                }

                if (!seenData)
                {
                    seenData = true;
                    if (line[ranges[0]].Trim().Equals("name", StringComparison.OrdinalIgnoreCase))
                    {
                        if (!IsHeader(line, ranges[..count]))
                        {
                            Error($"{where}: header must be name,total,outbound,inbound");
                        }

                        continue;
                    }
                }

                var name = line[ranges[0]].Trim().ToString();
                if (NameError(name) is { } nameError)
                {
                    Error($"{where}: {nameError}");
                    continue;
                }

                var values = new LimitValues();
                var ok = true;
                for (var i = 1; i < count; i++)
                {
                    var field = line[ranges[i]].Trim();
                    if (field.IsEmpty)
                    {
                        continue;
                    }

                    if (!int.TryParse(field, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
                    {
                        Error($"{where}: {HeaderFields[i]} '{field}' is not a whole number (leave it empty for unlimited)");
                        ok = false;
                        continue;
                    }

                    switch (i)
                    {
                        case 1:
                            values.Total = value;
                            break;
                        case 2:
                            values.Outbound = value;
                            break;
                        default:
                            values.Inbound = value;
                            break;
                    }
                }

                foreach (var error in values.ToSettings().Validate(LimitKind.User, $"{where}:{name}"))
                {
                    Error(error);
                    ok = false;
                }

                if (lines.TryGetValue(name, out var first))
                {
                    Error($"{where}: user '{name}' is already defined on line {first}");
                    continue;
                }

                lines[name] = number;
                if (ok)
                {
                    users[name] = values;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            list.Add(ex is FileNotFoundException or DirectoryNotFoundException
                ? $"{path}: file not found (working directory {Environment.CurrentDirectory})"
                : $"{path}: cannot be read: {ex.Message}");
        }

        if (suppressed > 0)
        {
            list.Add($"{path}: {suppressed} more error(s) not shown");
        }

        errors = list;
        return users;
    }

    /// <summary>Why a user name cannot be a limit key (<c>user/&lt;name&gt;</c>); null when it can.</summary>
    private static string? NameError(string name)
    {
        if (name.Length == 0)
        {
            return "the user name is empty";
        }

        if (name.Length > LimitKey.MaxValueLength)
        {
            return $"the user name is longer than {LimitKey.MaxValueLength} characters";
        }

        foreach (var c in name)
        {
            if (char.IsWhiteSpace(c) || char.IsControl(c))
            {
                return $"the user name '{name}' contains white space or a control character";
            }
        }

        return null;
    }

    private static bool IsHeader(ReadOnlySpan<char> line, ReadOnlySpan<Range> ranges)
    {
        for (var i = 0; i < ranges.Length; i++)
        {
            if (!line[ranges[i]].Trim().Equals(HeaderFields[i], StringComparison.OrdinalIgnoreCase))
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>Loads <see cref="LimitsOptions.UsersFile"/> each time the options are built (start and every reload).</summary>
public sealed class LimitsUsersFilePostConfigure : IPostConfigureOptions<LimitsOptions>
{
    public void PostConfigure(string? name, LimitsOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.LoadUsersFile();
    }
}

/// <summary>Turns <see cref="LimitsOptions.Validate"/> (which loads the users file) into options validation.</summary>
public sealed class LimitsOptionsValidator : IValidateOptions<LimitsOptions>
{
    public ValidateOptionsResult Validate(string? name, LimitsOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

public static class LimitsServiceCollectionExtensions
{
    /// <summary>
    /// Loads <see cref="LimitsOptions.UsersFile"/> into <see cref="LimitsOptions.Users"/> when the options are built.
    /// Safe to call more than once (standalone mode registers both the silo and the edge).
    /// </summary>
    public static IServiceCollection AddLimitsUsersFile(this IServiceCollection services)
    {
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<LimitsOptions>, LimitsUsersFilePostConfigure>());
        return services;
    }
}
