using System.Globalization;
using Microsoft.Extensions.Options;

namespace CallState.Silo.Limits;

/// <summary>
/// Checks the configured limits as written, before binding: the binder leaves a maximum it cannot convert (for example
/// <c>--CallState:Limits:Users:bob:Outbound=x</c>) unset, which would give bob the defaults without a word. Each value
/// that is not a whole number stops start-up naming its field.
/// </summary>
public sealed class LimitsConfigurationValidator(IConfiguration configuration) : IValidateOptions<LimitsOptions>
{
    private static readonly string[] Fields =
    [
        nameof(LimitValues.Total), nameof(LimitValues.Inbound), nameof(LimitValues.Outbound),
        nameof(LimitValues.TotalBurst), nameof(LimitValues.InboundBurst), nameof(LimitValues.OutboundBurst),
        nameof(ReservationValues.Guaranteed), nameof(ReservationValues.Maximum),
    ];

    private static readonly string[] RateFields = [nameof(LimitValues.TotalRate), nameof(LimitValues.InboundRate), nameof(LimitValues.OutboundRate)];

    public ValidateOptionsResult Validate(string? name, LimitsOptions options)
    {
        var errors = Find(configuration).ToList();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>One message per maximum under <c>CallState:Limits</c> that is not empty and not a whole number.</summary>
    public static IEnumerable<string> Find(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var section = configuration.GetSection(LimitsOptions.SectionName);
        if (NotBoolean(section.GetSection(nameof(LimitsOptions.Shadow))) is { } globalShadow)
        {
            yield return globalShadow;
        }

        var entries = new List<IConfigurationSection> { section.GetSection(nameof(LimitsOptions.DefaultUser)) };
        entries.AddRange(section.GetSection(nameof(LimitsOptions.Users)).GetChildren());
        entries.AddRange(section.GetSection(nameof(LimitsOptions.Trunks)).GetChildren());
        entries.AddRange(section.GetSection(nameof(LimitsOptions.Tenants)).GetChildren());
        entries.AddRange(section.GetSection(nameof(LimitsOptions.Trunks)).GetChildren()
            .SelectMany(static trunk => trunk.GetSection(nameof(LimitValues.Reservations)).GetChildren()));
        foreach (var entry in entries)
        {
            foreach (var child in entry.GetChildren())
            {
                if (string.IsNullOrEmpty(child.Value))
                {
                    continue;
                }

                if (string.Equals(child.Key, nameof(LimitValues.Shadow), StringComparison.OrdinalIgnoreCase))
                {
                    if (NotBoolean(child) is { } shadow)
                    {
                        yield return shadow;
                    }

                    continue;
                }

                if (RateFields.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
                {
                    if (!double.TryParse(child.Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out _))
                    {
                        yield return $"{child.Path}: '{child.Value}' is not a number of calls per second (leave it out for no rate limit)";
                    }

                    continue;
                }

                if (!Fields.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
                {
                    continue;
                }

                if (!int.TryParse(child.Value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
                {
                    yield return $"{child.Path}: '{child.Value}' is not a whole number (leave it out for unlimited)";
                }
            }
        }
    }

    /// <summary>A message when a shadow switch is set to something other than true or false.</summary>
    private static string? NotBoolean(IConfigurationSection section) =>
        string.IsNullOrEmpty(section.Value) || bool.TryParse(section.Value, out _)
            ? null
            : $"{section.Path}: '{section.Value}' is not true or false (shadow mode: docs/policies.md)";
}
