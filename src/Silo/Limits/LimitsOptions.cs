using CallState.Grains;

namespace CallState.Silo.Limits;

/// <summary>One user's or trunk's limits as written in configuration; absent values are unlimited.</summary>
public sealed class LimitValues
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

    public LimitSettings ToSettings() => new(Total, Inbound, Outbound, TotalRate, TotalBurst, InboundRate, InboundBurst, OutboundRate, OutboundBurst, Shadow);
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

    /// <summary>
    /// Optional CSV of users (<c>name,total,outbound,inbound</c>, see <see cref="Limits.UsersFile"/>), relative to
    /// the working directory. Its users are added to <see cref="Users"/>; a user also listed in <see cref="Users"/> keeps
    /// the configured entry.
    /// </summary>
    public string? UsersFile { get; set; }

    private Dictionary<string, LimitValues>? _usersByName;
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
                byName.TryAdd(Normalize(configured)!, values ?? new());
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
            foreach (var error in DefaultUser.ToSettings().Validate(LimitKind.User, path + ":DefaultUser"))
            {
                yield return error;
            }
        }

        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, values) in Users)
        {
            foreach (var error in (values ?? new()).ToSettings().Validate(LimitKind.User, $"{path}:Users:{name}"))
            {
                yield return error;
            }

            var normalized = Normalize(name)!;
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
            _ => LimitSettings.Unlimited,
        };

        // CallState:Limits:Shadow for every limit that does not say (docs/policies.md, "Shadow mode").
        return options.Shadow && settings.Shadow is null ? settings with { Shadow = true } : settings;
    }

    /// <summary>A user or trunk listed with limits other than the default's (a per-key limit never is).</summary>
    public bool HasOwnLimits(LimitKey key)
    {
        var options = _options();
        return key.Kind switch
        {
            LimitKind.User => options.FindUser(key.Value) is { } user
                && user.ToSettings() != (options.DefaultUser?.ToSettings() ?? LimitSettings.Unlimited),
            LimitKind.Trunk => options.Trunks.TryGetValue(key.Value, out var trunk) && trunk is not null
                && trunk.ToSettings() != LimitSettings.Unlimited,
            _ => false,
        };
    }
}
