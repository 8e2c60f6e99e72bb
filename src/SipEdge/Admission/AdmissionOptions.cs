using System.Globalization;
using CallState.Grains;
using CallState.Silo.Limits;
using CallState.Sip.Proxy;

namespace CallState.SipEdge.Admission;

/// <summary>
/// How the edge classifies and admits calls (section <c>CallState:Admission</c>). The limits themselves
/// (users, trunks) are in <see cref="LimitsOptions"/> (section <c>CallState:Limits</c>); a trunk here and
/// its limits there share the id.
/// </summary>
public sealed class AdmissionOptions
{
    public const string SectionName = "CallState:Admission";

    /// <summary>Host names and IP addresses that are "ours": a From or Request-URI host in this list (or equal to the edge's own address) names a local user.</summary>
    public List<string> LocalDomains { get; set; } = [];

    /// <summary>SIP trunks by id: how a call from the trunk is recognised and where calls to it go.</summary>
    public Dictionary<string, AdmissionTrunkOptions> Trunks { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Request-URI user prefix -> a trunk or an upstream; the longest matching prefix wins.</summary>
    public List<AdmissionRoute> Routes { get; set; } = [];

    /// <summary>Called-number prefix -> tags (<c>cacMax=3</c>); the longest matching prefix wins (AudioCodes dial plan).</summary>
    public List<DialPlanEntry> DialPlan { get; set; } = [];

    /// <summary>Rules that add per-key limits (<c>key/&lt;value&gt;</c>) to a call (AudioCodes call setup rules); every matching rule applies.</summary>
    public List<SetupRule> SetupRules { get; set; } = [];

    /// <summary>
    /// Called numbers always connected (a refusal is still counted and logged), such as <c>112</c> or <c>911</c>: exact
    /// numbers after normalization (<c>1123</c> is not <c>112</c>), never prefixes.
    /// </summary>
    public List<string> EmergencyNumbers { get; set; } = [];

    /// <summary>How long the edge waits for the admission answer before failing closed (or open).</summary>
    public TimeSpan Deadline { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Admit calls when the silo tier does not answer in time (default: reject with 503).</summary>
    public bool FailOpen { get; set; }

    /// <summary>Seconds in the <c>Retry-After</c> of a rejection that carries one.</summary>
    public int RetryAfterSeconds { get; set; } = 5;

    /// <summary>Overrides of the rejection responses of the rejection table (docs/architecture.md, "Admission at the edge") (unset fields keep the defaults).</summary>
    public RejectCodesOptions RejectCodes { get; set; } = new();

    /// <summary>
    /// Every configuration error, each naming its field (<c>CallState:Admission:Trunks:carrier:Sources:0: ...</c>).
    /// With <paramref name="limits"/>, also reports trunk limits that no admission trunk can use.
    /// </summary>
    public IReadOnlyList<string> Validate(LimitsOptions? limits = null) => Validate(limits?.Trunks.Keys);

    /// <summary>As <see cref="Validate(LimitsOptions)"/>, given only the ids of <c>CallState:Limits:Trunks</c>.</summary>
    public IReadOnlyList<string> Validate(IEnumerable<string>? limitTrunkIds)
    {
        var errors = new List<string>();
        const string p = SectionName + ":";

        for (var i = 0; i < LocalDomains.Count; i++)
        {
            if (AddressText.HostError(LocalDomains[i]) is { } error)
            {
                errors.Add($"{p}{nameof(LocalDomains)}:{i}: {error}");
            }
        }

        ValidateTrunks(errors);
        ValidateRoutes(errors);
        var tagsByName = ValidateDialPlan(errors);
        ValidateSetupRules(errors, tagsByName);

        for (var i = 0; i < EmergencyNumbers.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(EmergencyNumbers[i]))
            {
                errors.Add($"{p}{nameof(EmergencyNumbers)}:{i}: empty; write the number, such as 112");
            }
        }

        if (Deadline <= TimeSpan.Zero)
        {
            errors.Add($"{p}{nameof(Deadline)}: must be positive (was {Deadline})");
        }

        if (RetryAfterSeconds is < 1 or > 86_400)
        {
            errors.Add($"{p}{nameof(RetryAfterSeconds)}: must be between 1 and 86400 (was {RetryAfterSeconds})");
        }

        (RejectCodes ?? new()).Validate(p + nameof(RejectCodes), errors);

        if (limitTrunkIds is not null)
        {
            foreach (var id in limitTrunkIds)
            {
                if (!Trunks.ContainsKey(id))
                {
                    errors.Add($"{LimitsOptions.SectionName}:Trunks:{id}: no trunk '{id}' in {p}{nameof(Trunks)}, so no call can use these limits");
                }
            }
        }

        return errors;
    }

    private void ValidateTrunks(List<string> errors)
    {
        var owners = new Dictionary<(string Network, int Length), string>();
        var thumbprintOwners = new Dictionary<string, string>(StringComparer.Ordinal);
        var nameOwners = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (id, trunk) in Trunks)
        {
            var path = $"{SectionName}:{nameof(Trunks)}:{id}";
            if (AddressText.LimitValueError(id) is { } idError)
            {
                errors.Add($"{path}: the trunk id {idError}");
            }

            if (trunk is null)
            {
                errors.Add($"{path}: the trunk has no Sources, CertificateThumbprints, CertificateNames or NextHop, so no call can use it");
                continue;
            }

            for (var i = 0; i < trunk.Sources.Count; i++)
            {
                var source = trunk.Sources[i];
                if (!AddressText.TryParseNetwork(source, out var network, out var error))
                {
                    errors.Add($"{path}:{nameof(AdmissionTrunkOptions.Sources)}:{i}: {error}");
                    continue;
                }

                var canonical = (network.BaseAddress.ToString(), network.PrefixLength);
                if (owners.TryGetValue(canonical, out var other) && !string.Equals(other, id, StringComparison.Ordinal))
                {
                    errors.Add($"{path}:{nameof(AdmissionTrunkOptions.Sources)}:{i}: '{source}' is also a source of trunk '{other}'; a source address must name one trunk");
                }
                else
                {
                    owners[canonical] = id;
                }
            }

            ValidateCertificates(errors, path, id, trunk, thumbprintOwners, nameOwners);

            if (!string.IsNullOrEmpty(trunk.NextHop) && !SipProxyOptions.TryParseHostPort(trunk.NextHop, out _))
            {
                errors.Add($"{path}:{nameof(AdmissionTrunkOptions.NextHop)}: '{trunk.NextHop}' is not ip:port");
            }

            // A trunk only calls go to (NextHop alone) is valid; one that neither sends nor receives calls is a mistake.
            if (trunk.Sources.Count == 0 && trunk.CertificateThumbprints.Count == 0 && trunk.CertificateNames.Count == 0 && string.IsNullOrEmpty(trunk.NextHop))
            {
                errors.Add($"{path}: the trunk has no Sources, CertificateThumbprints, CertificateNames or NextHop, so no call can use it");
            }

            trunk.RejectCodes?.Validate(path + ":" + nameof(AdmissionTrunkOptions.RejectCodes), errors);
        }
    }

    /// <summary>A trunk's certificate entries: well formed, each naming one trunk, and present when the trunk requires a certificate.</summary>
    private static void ValidateCertificates(List<string> errors, string path, string id, AdmissionTrunkOptions trunk,
        Dictionary<string, string> thumbprintOwners, Dictionary<string, string> nameOwners)
    {
        for (var i = 0; i < trunk.CertificateThumbprints.Count; i++)
        {
            var text = trunk.CertificateThumbprints[i];
            var field = $"{path}:{nameof(AdmissionTrunkOptions.CertificateThumbprints)}:{i}";
            if (AdmissionTrunkOptions.NormalizeThumbprint(text) is not { } thumbprint)
            {
                var digits = (text ?? "").Trim().Replace(":", "", StringComparison.Ordinal);
                var hint = digits.Length == 40 && digits.All(char.IsAsciiHexDigit) ? " (this looks like a SHA-1 thumbprint; give the SHA-256 one)" : "";
                errors.Add($"{field}: '{text}' is not a SHA-256 thumbprint: 64 hex digits, colons allowed{hint}");
            }
            else if (!thumbprintOwners.TryAdd(thumbprint, id) && !string.Equals(thumbprintOwners[thumbprint], id, StringComparison.Ordinal))
            {
                errors.Add($"{field}: this certificate is also trunk '{thumbprintOwners[thumbprint]}''s; a certificate must name one trunk");
            }
        }

        for (var i = 0; i < trunk.CertificateNames.Count; i++)
        {
            var name = trunk.CertificateNames[i];
            var field = $"{path}:{nameof(AdmissionTrunkOptions.CertificateNames)}:{i}";
            if (string.IsNullOrWhiteSpace(name) || name.Length > 253 || name.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
            {
                errors.Add($"{field}: '{name}' is not a DNS name (as in a certificate's subject alternative names, such as carrier.example.net)");
            }
            else if (!nameOwners.TryAdd(name, id) && !string.Equals(nameOwners[name], id, StringComparison.Ordinal))
            {
                errors.Add($"{field}: '{name}' is also a certificate name of trunk '{nameOwners[name]}'; a certificate name must name one trunk");
            }
        }

        if (trunk.RequireCertificate && trunk.CertificateThumbprints.Count == 0 && trunk.CertificateNames.Count == 0)
        {
            errors.Add($"{path}:{nameof(AdmissionTrunkOptions.RequireCertificate)}: true, but the trunk has no CertificateThumbprints or CertificateNames, so every call from it would be refused");
        }
    }

    private void ValidateRoutes(List<string> errors)
    {
        var prefixes = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < Routes.Count; i++)
        {
            var path = $"{SectionName}:{nameof(Routes)}:{i}";
            var route = Routes[i];
            if (route is null)
            {
                errors.Add($"{path}: empty route");
                continue;
            }

            var prefix = route.Prefix ?? "";
            if (!prefixes.TryAdd(prefix, i))
            {
                errors.Add($"{path}:{nameof(AdmissionRoute.Prefix)}: prefix '{prefix}' is already routed by {SectionName}:{nameof(Routes)}:{prefixes[prefix]}");
            }

            var hasTrunk = !string.IsNullOrEmpty(route.Trunk);
            var hasUpstream = !string.IsNullOrEmpty(route.Upstream);
            if (hasTrunk == hasUpstream)
            {
                errors.Add($"{path}: set exactly one of {nameof(AdmissionRoute.Trunk)} and {nameof(AdmissionRoute.Upstream)}");
                continue;
            }

            if (hasTrunk)
            {
                if (!Trunks.TryGetValue(route.Trunk!, out var trunk))
                {
                    errors.Add($"{path}:{nameof(AdmissionRoute.Trunk)}: no trunk '{route.Trunk}' in {SectionName}:{nameof(Trunks)}");
                }
                else if (string.IsNullOrEmpty(trunk?.NextHop))
                {
                    errors.Add($"{path}:{nameof(AdmissionRoute.Trunk)}: trunk '{route.Trunk}' has no {nameof(AdmissionTrunkOptions.NextHop)}, so calls cannot be routed to it");
                }
            }
            else if (!SipProxyOptions.TryParseHostPort(route.Upstream, out _))
            {
                errors.Add($"{path}:{nameof(AdmissionRoute.Upstream)}: '{route.Upstream}' is not ip:port");
            }
        }
    }

    /// <summary>Validates the dial plan; returns, per tag name, where each value was defined (for the setup rules' check).</summary>
    private Dictionary<string, List<(string Path, string Value)>> ValidateDialPlan(List<string> errors)
    {
        var tagsByName = new Dictionary<string, List<(string Path, string Value)>>(StringComparer.OrdinalIgnoreCase);
        var prefixes = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < DialPlan.Count; i++)
        {
            var path = $"{SectionName}:{nameof(DialPlan)}:{i}";
            var entry = DialPlan[i];
            if (entry is null)
            {
                errors.Add($"{path}: empty dial plan entry");
                continue;
            }

            var prefix = entry.Prefix ?? "";
            if (!prefixes.TryAdd(prefix, i))
            {
                errors.Add($"{path}:{nameof(DialPlanEntry.Prefix)}: prefix '{prefix}' is already in {SectionName}:{nameof(DialPlan)}:{prefixes[prefix]}");
            }

            if (!DialPlanEntry.TryParseTags(entry.Tags, out var tags, out var tagError))
            {
                errors.Add($"{path}:{nameof(DialPlanEntry.Tags)}: {tagError}");
                continue;
            }

            foreach (var (name, value) in tags)
            {
                if (!tagsByName.TryGetValue(name, out var list))
                {
                    tagsByName[name] = list = [];
                }

                list.Add(($"{path}:{nameof(DialPlanEntry.Tags)}", value));
            }
        }

        return tagsByName;
    }

    private void ValidateSetupRules(List<string> errors, Dictionary<string, List<(string Path, string Value)>> tagsByName)
    {
        // A call holds its caller's and its destination's limit plus one per matching rule.
        const int maxRules = CallAdmission.MaxLimitsPerCall - 2;
        if (SetupRules.Count > maxRules)
        {
            errors.Add($"{SectionName}:{nameof(SetupRules)}: at most {maxRules} rules (a call touches at most {CallAdmission.MaxLimitsPerCall} limits)");
        }

        for (var i = 0; i < SetupRules.Count; i++)
        {
            var path = $"{SectionName}:{nameof(SetupRules)}:{i}";
            var rule = SetupRules[i];
            if (rule is null)
            {
                errors.Add($"{path}: empty setup rule");
                continue;
            }

            if (!SetupRule.TryParseKey(rule.Key, out _))
            {
                errors.Add($"{path}:{nameof(SetupRule.Key)}: '{rule.Key}' is not FromUser, ToUser or SourceIp");
            }

            if (!SetupRule.TryParseDirection(rule.Direction, out _))
            {
                errors.Add($"{path}:{nameof(SetupRule.Direction)}: '{rule.Direction}' is not In or Out");
            }

            if (!SetupRule.TryParseMax(rule.Max, out var tag, out _))
            {
                errors.Add($"{path}:{nameof(SetupRule.Max)}: '{rule.Max}' is not tag:<name> or a whole number 0 or more");
                continue;
            }

            if (tag is null)
            {
                continue;
            }

            if (!tagsByName.TryGetValue(tag, out var definitions))
            {
                errors.Add($"{path}:{nameof(SetupRule.Max)}: no {SectionName}:{nameof(DialPlan)} entry sets tag '{tag}', so this rule never applies");
                continue;
            }

            foreach (var (tagPath, value) in definitions)
            {
                if (!SetupRule.TryParseCount(value, out _))
                {
                    errors.Add($"{tagPath}: tag '{tag}' is '{value}', not a whole number 0 or more ({path} uses it as a maximum)");
                }
            }
        }
    }
}

/// <summary>A SIP trunk as the edge sees it. Its limits are <c>CallState:Limits:Trunks:&lt;id&gt;</c>.</summary>
public sealed class AdmissionTrunkOptions
{
    /// <summary>IP addresses or CIDRs (IPv4 or IPv6): a call whose packets come from one of them comes from this trunk.</summary>
    public List<string> Sources { get; set; } = [];

    /// <summary>
    /// SHA-256 thumbprints (64 hex digits, any case, colons ignored) of TLS client certificates: a call over a connection
    /// whose validated client certificate has one of them comes from this trunk, whatever its address.
    /// </summary>
    public List<string> CertificateThumbprints { get; set; } = [];

    /// <summary>DNS names (subject alternative names, compared whole and case-insensitively) of TLS client certificates that identify this trunk.</summary>
    public List<string> CertificateNames { get; set; } = [];

    /// <summary>
    /// A call from one of <see cref="Sources"/> is this trunk's only with a client certificate matching
    /// <see cref="CertificateThumbprints"/> or <see cref="CertificateNames"/>; without one it is refused with 403.
    /// </summary>
    public bool RequireCertificate { get; set; }

    /// <summary>Where calls routed to this trunk are sent (<c>ip:port</c>).</summary>
    public string? NextHop { get; set; }

    /// <summary>Rejection codes for calls from this trunk and for refusals by its limits; unset fields fall back to <see cref="AdmissionOptions.RejectCodes"/>.</summary>
    public RejectCodesOptions? RejectCodes { get; set; }

    /// <summary>
    /// A configured thumbprint as the edge compares it (upper-case hex, colons removed, as
    /// <c>SipTcpConnection.RemoteCertificateSha256</c> gives it); null when it is not 64 hex digits.
    /// </summary>
    public static string? NormalizeThumbprint(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var hex = text.Trim().Replace(":", "", StringComparison.Ordinal);
        return hex.Length == 64 && hex.All(char.IsAsciiHexDigit) ? hex.ToUpperInvariant() : null;
    }
}

/// <summary>A route: calls whose Request-URI user starts with <see cref="Prefix"/> go to a trunk or to an upstream.</summary>
public sealed class AdmissionRoute
{
    /// <summary>Request-URI user prefix (for example <c>+</c>); empty matches every call.</summary>
    public string? Prefix { get; set; }

    /// <summary>The trunk id the call leaves through (counted as the trunk's outbound call).</summary>
    public string? Trunk { get; set; }

    /// <summary>An internal next hop such as a PBX (<c>ip:port</c>).</summary>
    public string? Upstream { get; set; }
}

/// <summary>A dial-plan rule: calls to numbers starting with <see cref="Prefix"/> carry <see cref="Tags"/>.</summary>
public sealed class DialPlanEntry
{
    public string? Prefix { get; set; }

    /// <summary><c>name=value</c> pairs separated by <c>;</c>, for example <c>cacMax=3;class=gold</c>.</summary>
    public string? Tags { get; set; }

    /// <summary>Parses <c>a=1;b=x</c>; tag names are case-insensitive.</summary>
    public static bool TryParseTags(string? text, out Dictionary<string, string> tags, out string? error)
    {
        tags = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        error = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "no tags (expected name=value, for example cacMax=3)";
            return false;
        }

        foreach (var part in text.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            var name = eq < 0 ? part : part[..eq].Trim();
            var value = eq < 0 ? "" : part[(eq + 1)..].Trim();
            if (eq <= 0 || name.Length == 0 || value.Length == 0)
            {
                error = $"'{part}' is not name=value";
                return false;
            }

            if (!tags.TryAdd(name, value))
            {
                error = $"tag '{name}' is set twice";
                return false;
            }
        }

        if (tags.Count == 0)
        {
            error = "no tags (expected name=value, for example cacMax=3)";
            return false;
        }

        return true;
    }
}

/// <summary>What a setup rule keys its per-key limit on.</summary>
public enum SetupRuleKey
{
    /// <summary>The From URI's user part (AudioCodes <c>Header.From.URL.User</c>).</summary>
    FromUser = 1,

    /// <summary>The To URI's user part.</summary>
    ToUser = 2,

    /// <summary>The packet source address (AudioCodes <c>Param.Message.Address.Src.IP</c>).</summary>
    SourceIp = 3,
}

/// <summary>
/// A call setup rule: each matching rule adds one per-key limit <c>key/&lt;value&gt;</c> with a maximum
/// (AudioCodes <c>cac=key|max</c>).
/// </summary>
public sealed class SetupRule
{
    private const string TagPrefix = "tag:";

    /// <summary>Called-number prefix the rule applies to; empty or absent: every call.</summary>
    public string? Prefix { get; set; }

    /// <summary><c>FromUser</c>, <c>ToUser</c> or <c>SourceIp</c>.</summary>
    public string? Key { get; set; }

    /// <summary><c>tag:&lt;name&gt;</c> (the dial-plan tag's value; the rule applies only when the call has the tag) or a constant.</summary>
    public string? Max { get; set; }

    /// <summary><c>In</c> or <c>Out</c>: the direction the per-key limit counts and names in its reason.</summary>
    public string? Direction { get; set; }

    public static bool TryParseKey(string? text, out SetupRuleKey key)
    {
        key = text?.Trim().ToUpperInvariant() switch
        {
            "FROMUSER" => SetupRuleKey.FromUser,
            "TOUSER" => SetupRuleKey.ToUser,
            "SOURCEIP" => SetupRuleKey.SourceIp,
            _ => 0,
        };
        return key != 0;
    }

    public static bool TryParseDirection(string? text, out Direction direction)
    {
        direction = text?.Trim().ToUpperInvariant() switch
        {
            "IN" or "INBOUND" => Grains.Direction.Inbound,
            "OUT" or "OUTBOUND" => Grains.Direction.Outbound,
            _ => 0,
        };
        return direction != 0;
    }

    /// <summary>Parses <see cref="Max"/>: a tag reference (<paramref name="tag"/> set) or a constant (<paramref name="constant"/>).</summary>
    public static bool TryParseMax(string? text, out string? tag, out int constant)
    {
        tag = null;
        constant = 0;
        var trimmed = text?.Trim();
        if (string.IsNullOrEmpty(trimmed))
        {
            return false;
        }

        if (trimmed.StartsWith(TagPrefix, StringComparison.OrdinalIgnoreCase))
        {
            tag = trimmed[TagPrefix.Length..].Trim();
            return tag.Length > 0;
        }

        return TryParseCount(trimmed, out constant);
    }

    /// <summary>A maximum: a whole number, 0 or more.</summary>
    public static bool TryParseCount(string? text, out int value) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
}
