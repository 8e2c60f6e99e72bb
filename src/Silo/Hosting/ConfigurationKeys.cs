using System.Collections;
using System.Reflection;

namespace CallState.Silo.Hosting;

/// <summary>
/// Finds keys under <c>CallState</c> that no options class reads: a misspelt key, or one from an older version, would
/// otherwise be ignored without a word and the process would run on defaults. Each known section is matched against
/// its options type (properties, dictionary entries, list items), case-insensitively like the configuration binder.
/// </summary>
public static class ConfigurationKeys
{
    public const string Root = "CallState";

    /// <summary>Sections that existed in earlier versions, and what replaced them.</summary>
    private static readonly (string Prefix, string Replacement)[] Removed =
    [
        ("CallState:Runtime", "CallState:Grains (Leases, QueueCapacity, MaxTurnBatch, MaxStaleRetries, DueScanInterval)"),
        ("CallState:Cluster", "CallState:Orleans (Clustering, ClusterId, AdvertisedAddress, SiloPort, GatewayPort; edges: Gateways)"),
        ("CallState:Grains:Leases:EndedRetention", "nothing: a call's record is deleted as soon as the call ends or is refused"),
        ("CallState:Admission:SiloUrl", "CallState:Orleans:Gateways (edges are Orleans clients of the silos' gateways)"),
        ("CallState:Admission:EmergencyPrefixes", "CallState:Admission:EmergencyNumbers (exact numbers: a prefix made 1123 an emergency call)"),
    ];

    /// <summary>
    /// One message per key under <see cref="Root"/> that <paramref name="sections"/> (section name under
    /// <c>CallState</c> to options type) does not read, naming the key and, for a removed one, what replaced it.
    /// </summary>
    public static IReadOnlyList<string> FindUnknown(IConfiguration configuration, IReadOnlyDictionary<string, Type> sections)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        ArgumentNullException.ThrowIfNull(sections);
        var errors = new List<string>();
        foreach (var child in configuration.GetSection(Root).GetChildren())
        {
            var type = sections.FirstOrDefault(s => string.Equals(s.Key, child.Key, StringComparison.OrdinalIgnoreCase)).Value;
            if (type is null)
            {
                Report(child, errors);
                continue;
            }

            Check(child, type, errors);
        }

        return errors;
    }

    private static void Check(IConfigurationSection section, Type type, List<string> errors)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (IsScalar(type))
        {
            foreach (var child in section.GetChildren())
            {
                Report(child, errors);
            }

            return;
        }

        if (ElementType(type) is { } element)
        {
            // A dictionary's keys and a list's indices are data, not settings: check what is under each.
            foreach (var child in section.GetChildren())
            {
                Check(child, element, errors);
            }

            return;
        }

        foreach (var child in section.GetChildren())
        {
            var property = type.GetProperty(child.Key, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
            if (property is null || property.GetIndexParameters().Length > 0 || (property.SetMethod?.IsPublic != true && ElementType(property.PropertyType) is null))
            {
                Report(child, errors);
                continue;
            }

            Check(child, property.PropertyType, errors);
        }
    }

    private static void Report(IConfigurationSection section, List<string> errors)
    {
        foreach (var (prefix, replacement) in Removed)
        {
            if (section.Path.Equals(prefix, StringComparison.OrdinalIgnoreCase) || section.Path.StartsWith(prefix + ":", StringComparison.OrdinalIgnoreCase))
            {
                errors.Add($"{section.Path} is no longer read; use {replacement}.");
                return;
            }
        }

        errors.Add($"{section.Path} is not a known setting (check its spelling and its section).");
    }

    private static bool IsScalar(Type type) =>
        type.IsPrimitive || type.IsEnum || type == typeof(string) || type == typeof(decimal) || type == typeof(TimeSpan)
        || type == typeof(DateTimeOffset) || type == typeof(DateTime) || type == typeof(Uri) || type == typeof(Guid);

    /// <summary>The value type of a dictionary with string keys or the item type of a list or array; null otherwise.</summary>
    private static Type? ElementType(Type type)
    {
        if (type.IsArray)
        {
            return type.GetElementType();
        }

        if (!type.IsGenericType || !typeof(IEnumerable).IsAssignableFrom(type))
        {
            return null;
        }

        var arguments = type.GetGenericArguments();
        return arguments.Length switch
        {
            1 => arguments[0],
            2 when arguments[0] == typeof(string) => arguments[1],
            _ => null,
        };
    }
}
