using CallState.Grains;

namespace CallState.Silo.Limits;

/// <summary>One user's or trunk's limits as written in configuration; absent values are unlimited.</summary>
public class LimitValues
{
    public int? Total { get; set; }

    public int? Inbound { get; set; }

    public int? Outbound { get; set; }

    /// <summary>Calls per second in both directions together (docs/policies.md, "Call rates"); none when absent.</summary>
    public double? TotalRate { get; set; }

    /// <summary>Calls that may come at once under <see cref="TotalRate"/>; one second's worth when absent.</summary>
    public int? TotalBurst { get; set; }

    public double? InboundRate { get; set; }

    public int? InboundBurst { get; set; }

    public double? OutboundRate { get; set; }

    public int? OutboundBurst { get; set; }

    /// <summary>
    /// True: shadow mode, the limit counts, logs and exports its would-be refusals and lets the calls through; false:
    /// enforced even when <see cref="LimitsOptions.Shadow"/> is set; absent: as <see cref="LimitsOptions.Shadow"/> says
    /// (docs/policies.md, "Shadow mode").
    /// </summary>
    public bool? Shadow { get; set; }

    /// <summary>
    /// A trunk's capacity (<see cref="Total"/>) divided among tenants, by tenant name (docs/policies.md, "Guaranteed
    /// reservations"); only a trunk has them.
    /// </summary>
    public Dictionary<string, ReservationValues>? Reservations { get; set; }

    private TrunkReservations? _reservations;

    public LimitSettings ToSettings() => new(Total, Inbound, Outbound, TotalRate, TotalBurst, InboundRate, InboundBurst, OutboundRate, OutboundBurst, Shadow);

    /// <summary><see cref="Reservations"/> as the trunk's grain decides with them (built once); null when none.</summary>
    public TrunkReservations? ToReservations()
    {
        if (Reservations is not { Count: > 0 } configured)
        {
            return null;
        }

        if (_reservations is { } built && built.Tenants.Count == configured.Count)
        {
            return built;
        }

        var tenants = new Dictionary<string, TenantReservation>(StringComparer.Ordinal);
        foreach (var (tenant, values) in configured)
        {
            tenants[tenant] = new TenantReservation(values?.Guaranteed ?? 0, values?.Maximum);
        }

        return _reservations = new TrunkReservations(tenants);
    }
}

/// <summary>One tenant's share of a trunk in configuration (docs/policies.md, "Guaranteed reservations").</summary>
public sealed class ReservationValues
{
    /// <summary>Slots the tenant always gets on the trunk; 0 when absent.</summary>
    public int? Guaranteed { get; set; }

    /// <summary>The most calls the tenant may hold on the trunk; up to the trunk's total when absent.</summary>
    public int? Maximum { get; set; }
}

/// <summary>
/// A tenant (<c>CallState:Limits:Tenants:&lt;name&gt;</c>, docs/policies.md, "Tenants"): the domains and trunks it owns,
/// and its own limits, a pool shared by all its users and trunks.
/// </summary>
public sealed class TenantValues : LimitValues
{
    /// <summary>SIP domains (hosts of request-URIs and From URIs) whose users are this tenant's.</summary>
    public List<string> Domains { get; set; } = [];

    /// <summary>Trunks whose calls are this tenant's.</summary>
    public List<string> Trunks { get; set; } = [];
}

/// <summary>Configured limits (section <c>CallState:Limits</c>): users, trunks and their defaults.</summary>
public sealed class LimitsOptions
{
    public const string SectionName = "CallState:Limits";

    /// <summary>
    /// Every limit (users, trunks, the default user, per-key limits) in shadow mode unless its own <c>Shadow</c> says
    /// otherwise (docs/policies.md, "Shadow mode").
    /// </summary>
    public bool Shadow { get; set; }

    /// <summary>Limits of a user not listed in <see cref="Users"/>; unlimited when absent.</summary>
    public LimitValues? DefaultUser { get; set; }

    public Dictionary<string, LimitValues> Users { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Whether <c>Alice</c> and <c>alice</c> are one user (<see cref="UserName"/>); one user by default.</summary>
    public UserNameMatching UserNames { get; set; } = UserNameMatching.CaseInsensitive;

    public Dictionary<string, LimitValues> Trunks { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Tenants by name (docs/policies.md, "Tenants").</summary>
    public Dictionary<string, TenantValues> Tenants { get; set; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Optional CSV of users (<c>name,total,outbound,inbound</c>, see <see cref="Limits.UsersFile"/>), relative to
    /// the working directory. Its users are added to <see cref="Users"/>; a user also listed in <see cref="Users"/> keeps
    /// the configured entry.
    /// </summary>
    public string? UsersFile { get; set; }

    private Dictionary<string, LimitValues>? _usersByName;
    private Dictionary<string, string>? _tenantsByDomain;
    private Dictionary<string, string>? _tenantsByTrunk;
    private int _tenantsIndexed = -1;
    private string? _loadedUsersFile;
    private IReadOnlyList<string> _usersFileErrors = [];

    /// <summary>
    /// Adds the users of <see cref="UsersFile"/> to <see cref="Users"/> (once per file name) and returns the
    /// file's errors, each naming file and line. Called when the options are built and by <see cref="Validate"/>.
    /// </summary>
    public IReadOnlyList<string> LoadUsersFile()
    {
        if (string.IsNullOrWhiteSpace(UsersFile) || string.Equals(_loadedUsersFile, UsersFile, StringComparison.Ordinal))
        {
            return _usersFileErrors;
        }

        var users = Limits.UsersFile.Read(UsersFile, out var errors);
        foreach (var (name, values) in users)
        {
            Users.TryAdd(name, values);
        }

        _loadedUsersFile = UsersFile;
        _usersFileErrors = errors;
        return errors;
    }

    /// <summary>The user name in the form limits are keyed by (<see cref="UserName.Normalize"/> with <see cref="UserNames"/>).</summary>
    public string? Normalize(string? name) => UserName.Normalize(name, UserNames);

    /// <summary>
    /// A configured user name in its one form: the user part normalized (<see cref="Normalize"/>) and, for a tenant's user
    /// written <c>alice@a.com</c>, the domain in lower case.
    /// </summary>
    public string? NormalizeConfigured(string? name)
    {
        var at = name?.LastIndexOf('@') ?? -1;
        return at <= 0 ? Normalize(name) : Normalize(name![..at]) + "@" + name[(at + 1)..].ToLowerInvariant();
    }

    /// <summary>The name a tenant's user is keyed by: <c>alice@a.com</c> (<paramref name="user"/> already normalized).</summary>
    public static string Qualify(string user, string domain) => user + "@" + domain.ToLowerInvariant();

    /// <summary>The tenant that owns <paramref name="domain"/> (compared without case); null when none does.</summary>
    public string? TenantOfDomain(string? domain)
    {
        if (string.IsNullOrEmpty(domain) || Tenants.Count == 0)
        {
            return null;
        }

        IndexTenants();
        return _tenantsByDomain!.GetValueOrDefault(domain);
    }

    /// <summary>The tenant that owns trunk <paramref name="trunk"/>; null when none does.</summary>
    public string? TenantOfTrunk(string? trunk)
    {
        if (string.IsNullOrEmpty(trunk) || Tenants.Count == 0)
        {
            return null;
        }

        IndexTenants();
        return _tenantsByTrunk!.GetValueOrDefault(trunk);
    }

    private void IndexTenants()
    {
        if (_tenantsByDomain is not null && _tenantsIndexed == Tenants.Count)
        {
            return;
        }

        var byDomain = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var byTrunk = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, tenant) in Tenants)
        {
            foreach (var domain in tenant?.Domains ?? [])
            {
                byDomain.TryAdd(domain, name);
            }

            foreach (var trunk in tenant?.Trunks ?? [])
            {
                byTrunk.TryAdd(trunk, name);
            }
        }

        (_tenantsByDomain, _tenantsByTrunk, _tenantsIndexed) = (byDomain, byTrunk, Tenants.Count);
    }

    /// <summary>
    /// The configured limits of user <paramref name="name"/> (already normalized: <see cref="Normalize"/>), whatever form
    /// its entry in <see cref="Users"/> or the users file is written in; null when not listed.
    /// </summary>
    public LimitValues? FindUser(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var byName = _usersByName;
        if (byName is null || byName.Count != Users.Count)
        {
            byName = new Dictionary<string, LimitValues>(StringComparer.Ordinal);
            foreach (var (configured, values) in Users)
            {
                byName.TryAdd(NormalizeConfigured(configured)!, values ?? new());
            }

            _usersByName = byName;
        }

        return byName.GetValueOrDefault(name);
    }

    /// <summary>Every configuration error, each naming its field. Loads <see cref="UsersFile"/> first if not yet loaded.</summary>
    public IEnumerable<string> Validate(string path = SectionName)
    {
        var fileErrors = LoadUsersFile();
        return fileErrors.Select(e => $"{path}:UsersFile: {e}").Concat(ValidateValues(path));
    }

    private IEnumerable<string> ValidateValues(string path)
    {
        if (DefaultUser is not null)
        {
            foreach (var error in DefaultUser.ToSettings().Validate(LimitKind.User, path + ":DefaultUser").Concat(NoReservations(DefaultUser, path + ":DefaultUser")))
            {
                yield return error;
            }
        }

        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, values) in Users)
        {
            foreach (var error in (values ?? new()).ToSettings().Validate(LimitKind.User, $"{path}:Users:{name}").Concat(NoReservations(values, $"{path}:Users:{name}")))
            {
                yield return error;
            }

            var normalized = NormalizeConfigured(name)!;
            if (!seen.TryAdd(normalized, name))
            {
                yield return $"{path}:Users:{name}: the same user as {path}:Users:{seen[normalized]} ('{normalized}' with {path}:UserNames={UserNames}); keep one";
            }
        }

        foreach (var (id, values) in Trunks)
        {
            foreach (var error in (values ?? new()).ToSettings().Validate(LimitKind.Trunk, $"{path}:Trunks:{id}"))
            {
                yield return error;
            }

            if (values?.ToReservations() is { } reservations)
            {
                foreach (var error in reservations.Validate($"{path}:Trunks:{id}:Reservations", values.Total, Tenants.Keys))
                {
                    yield return error;
                }
            }
        }

        var domains = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var trunks = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, tenant) in Tenants)
        {
            var field = $"{path}:Tenants:{name}";
            if (name.Length > LimitKey.MaxValueLength || name.Contains('/', StringComparison.Ordinal))
            {
                yield return $"{field}: a tenant name must have at most {LimitKey.MaxValueLength} characters and no '/'.";
            }

            foreach (var error in (tenant ?? new()).ToSettings().Validate(LimitKind.Tenant, field).Concat(NoReservations(tenant, field)))
            {
                yield return error;
            }

            // A name listed twice by one tenant is harmless (binding the section twice appends to the list).
            var domainList = tenant?.Domains ?? [];
            for (var i = 0; i < domainList.Count; i++)
            {
                var domain = domainList[i];
                if (string.IsNullOrWhiteSpace(domain) || domain.Contains('@', StringComparison.Ordinal) || domain.Contains('/', StringComparison.Ordinal))
                {
                    yield return $"{field}:Domains:{i}: '{domain}' is not a domain name.";
                }
                else if (!domains.TryAdd(domain, name) && !string.Equals(domains[domain], name, StringComparison.Ordinal))
                {
                    yield return $"{field}:Domains:{i}: domain '{domain}' is already tenant '{domains[domain]}''s; a domain has one tenant.";
                }
            }

            var trunkList = tenant?.Trunks ?? [];
            for (var i = 0; i < trunkList.Count; i++)
            {
                var trunk = trunkList[i];
                if (string.IsNullOrWhiteSpace(trunk))
                {
                    yield return $"{field}:Trunks:{i}: a trunk id is empty.";
                }
                else if (!trunks.TryAdd(trunk, name) && !string.Equals(trunks[trunk], name, StringComparison.Ordinal))
                {
                    yield return $"{field}:Trunks:{i}: trunk '{trunk}' is already tenant '{trunks[trunk]}''s; a trunk shared by tenants is divided with {path}:Trunks:{trunk}:Reservations.";
                }
            }
        }
    }

    private static IEnumerable<string> NoReservations(LimitValues? values, string path)
    {
        if (values?.Reservations is { Count: > 0 })
        {
            yield return $"{path}:Reservations: only a trunk has reservations ({path} is not one).";
        }
    }
}


/// <summary>Limits from <see cref="LimitsOptions"/>; per-key limits have none (they come with each call).</summary>
public sealed class ConfiguredLimits : ILimitSettingsSource
{
    private readonly Func<LimitsOptions> _options;

    public ConfiguredLimits(LimitsOptions options)
        : this(() => options)
    {
    }

    /// <summary>Reads the options on every activation, so reloaded configuration applies to new activations.</summary>
    public ConfiguredLimits(Func<LimitsOptions> options) => _options = options;

    public LimitSettings GetLimits(LimitKey key)
    {
        var options = _options();
        var settings = key.Kind switch
        {
            LimitKind.User => options.FindUser(key.Value) is { } user
                ? user.ToSettings()
                : options.DefaultUser?.ToSettings() ?? LimitSettings.Unlimited,
            LimitKind.Trunk => options.Trunks.TryGetValue(key.Value, out var trunk) && trunk is not null
                ? trunk.ToSettings()
                : LimitSettings.Unlimited,
            LimitKind.Tenant => options.Tenants.TryGetValue(key.Value, out var tenant) && tenant is not null
                ? tenant.ToSettings()
                : LimitSettings.Unlimited,
            _ => LimitSettings.Unlimited,
        };

        // CallState:Limits:Shadow for every limit that does not say (docs/policies.md, "Shadow mode").
        return options.Shadow && settings.Shadow is null ? settings with { Shadow = true } : settings;
    }

    /// <summary>A trunk's configured reservations (docs/policies.md, "Guaranteed reservations").</summary>
    public TrunkReservations? GetReservations(LimitKey key) =>
        key.Kind == LimitKind.Trunk && _options().Trunks.TryGetValue(key.Value, out var trunk) ? trunk?.ToReservations() : null;

    /// <summary>A user or trunk listed with limits other than the default's (a per-key limit never is).</summary>
    public bool HasOwnLimits(LimitKey key)
    {
        var options = _options();
        return key.Kind switch
        {
            LimitKind.User => options.FindUser(key.Value) is { } user
                && user.ToSettings() != (options.DefaultUser?.ToSettings() ?? LimitSettings.Unlimited),
            LimitKind.Trunk => options.Trunks.TryGetValue(key.Value, out var trunk) && trunk is not null
                && (trunk.ToSettings() != LimitSettings.Unlimited || trunk.ToReservations() is not null),
            LimitKind.Tenant => options.Tenants.TryGetValue(key.Value, out var tenant) && tenant is not null
                && tenant.ToSettings() != LimitSettings.Unlimited,
            _ => false,
        };
    }
}
