using System.Net;
using System.Text;
using CallState.Grains;
using CallState.Silo.Limits;
using CallState.Sip.Proxy;

namespace CallState.SipEdge.Admission;

/// <summary>
/// What the edge knows of an initial INVITE when it classifies it: header values as text (user parts
/// unescaped by the caller if it wants escapes to compare equal) and the packet source address.
/// </summary>
public readonly struct ClassificationInput
{
    public string? CallId { get; init; }

    public string? FromTag { get; init; }

    public string? FromUser { get; init; }

    public string? FromHost { get; init; }

    public string? ToUser { get; init; }

    public string? ToHost { get; init; }

    public string? RequestUser { get; init; }

    public string? RequestHost { get; init; }

    /// <summary>Where the packet came from (an IPv4-mapped IPv6 address is treated as the IPv4 address).</summary>
    public IPAddress? Source { get; init; }

    /// <summary>SHA-256 thumbprint (hex) of the validated TLS client certificate the INVITE came with; null without one.</summary>
    public string? CertificateSha256 { get; init; }

    /// <summary>The DNS names in that certificate's subject alternative names; null or empty without one.</summary>
    public IReadOnlyList<string>? CertificateNames { get; init; }

    /// <summary>
    /// The caller as authenticated (digest) or asserted by a trusted peer (docs/security.md): one of ours whatever the From
    /// header says, and the From user is not used for the caller's limits. Null: the From decides.
    /// </summary>
    public string? VerifiedCaller { get; init; }
}

/// <summary>Where a call comes from.</summary>
public enum CallOrigin
{
    /// <summary>Neither a trunk's source nor a local user: only the destination and per-key limits apply.</summary>
    Unknown = 0,
    Trunk = 1,
    LocalUser = 2,
}

/// <summary>How a call's peer names a trunk (<see cref="CallClassifier.SourceTrunkOf"/>).</summary>
public enum TrunkMatch
{
    /// <summary>No trunk: neither the certificate nor the source address is a trunk's.</summary>
    None = 0,

    /// <summary>The source address is in the trunk's <c>Sources</c> (and the trunk does not require a certificate).</summary>
    Address = 1,

    /// <summary>The client certificate is in the trunk's <c>CertificateThumbprints</c> or <c>CertificateNames</c>.</summary>
    Certificate = 2,

    /// <summary>The source address is a <c>RequireCertificate</c> trunk's, without a certificate that names a trunk: refused.</summary>
    CertificateRequired = 3,
}

/// <summary>The trunk a call comes from, and how it was told; <see cref="Trunk"/> is null for <see cref="TrunkMatch.None"/>.</summary>
public readonly record struct TrunkSource(TrunkMatch Match, string? Trunk)
{
    /// <summary>The call is the trunk's (by address or by certificate).</summary>
    public bool IsTrunk => Match is TrunkMatch.Address or TrunkMatch.Certificate;
}

/// <summary>Where a call goes.</summary>
public enum CallDestination
{
    /// <summary>Not a trunk and not a local user: forwarded to the route's upstream or the proxy's default, not counted.</summary>
    Other = 0,
    Trunk = 1,
    LocalUser = 2,
}

/// <summary>The call key a call is addressed by (and sharded on): Call-ID and From-tag (docs/architecture.md, "Grains").</summary>
public static class CallKeys
{
    /// <summary>Separates the two parts; neither a Call-ID (RFC 3261 <c>word</c>) nor a tag (<c>token</c>) can contain it.</summary>
    public const char Separator = ';';

    /// <summary>
    /// <c>&lt;Call-ID&gt;;&lt;From-tag&gt;</c>. A BYE from the callee carries the caller's tag as its To-tag. A caller
    /// following RFC 2543 sends no From tag: its calls are named by the Call-ID alone (<c>&lt;Call-ID&gt;;</c>), as RFC 3261
    /// 12.2.1.1 lets a dialog's remote tag be empty for such peers.
    /// </summary>
    public static string Create(string callId, string? fromTag)
    {
        ArgumentException.ThrowIfNullOrEmpty(callId);
        return string.Concat(callId, ";", fromTag);
    }
}

/// <summary>The classification of one initial INVITE: its call key, the limits it needs, and where it goes.</summary>
public sealed class CallClassification
{
    private string? _description;

    private CallClassification(string? error)
    {
        Error = error;
        CallKey = "";
        Limits = [];
    }

    internal CallClassification(
        string callKey,
        IReadOnlyList<LimitRequest> limits,
        IPEndPoint? nextHop,
        CallOrigin origin,
        CallDestination destination,
        string? sourceTrunk,
        string? destinationTrunk,
        string? caller,
        string? called,
        string? routePrefix,
        bool isEmergency,
        IPAddress? source)
    {
        CallKey = callKey;
        Limits = limits;
        NextHop = nextHop;
        Origin = origin;
        Destination = destination;
        SourceTrunk = sourceTrunk;
        DestinationTrunk = destinationTrunk;
        CallerUser = caller;
        CalledUser = called;
        RoutePrefix = routePrefix;
        IsEmergency = isEmergency;
        Source = source;
    }

    /// <summary>False when the INVITE cannot be classified (see <see cref="Error"/>); nothing may be reserved for it.</summary>
    public bool Succeeded => Error is null;

    /// <summary>Why classification failed (no Call-ID, no From-tag, a key too long); the caller answers 400.</summary>
    public string? Error { get; }

    /// <summary>Call-ID and From-tag (<see cref="CallKeys.Create"/>).</summary>
    public string CallKey { get; }

    /// <summary>The limits to reserve, in classification order (the admission sorts them), each key once.</summary>
    public IReadOnlyList<LimitRequest> Limits { get; }

    /// <summary>Where to forward: the trunk's next hop or the route's upstream; null means the proxy's default routing.</summary>
    public IPEndPoint? NextHop { get; }

    public CallOrigin Origin { get; }

    public CallDestination Destination { get; }

    /// <summary>The trunk the call came from (its source address matched).</summary>
    public string? SourceTrunk { get; }

    /// <summary>The trunk the call is routed to.</summary>
    public string? DestinationTrunk { get; }

    /// <summary>The local user who called (counted outbound).</summary>
    public string? CallerUser { get; }

    /// <summary>The local user called (counted inbound).</summary>
    public string? CalledUser { get; }

    /// <summary>The prefix of the route taken; null when no route matched.</summary>
    public string? RoutePrefix { get; }

    /// <summary>The called number has an emergency prefix: admit it whatever the limits answer (still reserved, counted and logged).</summary>
    public bool IsEmergency { get; }

    public IPAddress? Source { get; }

    /// <summary>One line for logs: origin, destination, limits, next hop.</summary>
    public string Description => _description ??= Describe();

    /// <summary>The direction this call asked of <paramref name="limitKey"/>; null when the call does not hold it.</summary>
    public Direction? DirectionOf(string? limitKey)
    {
        foreach (var limit in Limits)
        {
            if (string.Equals(limit.Key, limitKey, StringComparison.Ordinal))
            {
                return limit.Direction;
            }
        }

        return null;
    }

    internal static CallClassification Failed(string error) => new(error);

    public override string ToString() => Description;

    private string Describe()
    {
        if (Error is not null)
        {
            return "unclassified: " + Error;
        }

        var sb = new StringBuilder();
        sb.Append(Origin switch
        {
            CallOrigin.Trunk => $"from trunk {SourceTrunk}",
            CallOrigin.LocalUser => $"from user {CallerUser}",
            _ => "from unknown caller",
        });
        sb.Append(" (").Append(Source?.ToString() ?? "no source").Append(") ");
        sb.Append(Destination switch
        {
            CallDestination.Trunk => $"to trunk {DestinationTrunk}",
            CallDestination.LocalUser => $"to user {CalledUser}",
            _ => "to other destination",
        });
        if (IsEmergency)
        {
            sb.Append(", EMERGENCY");
        }

        sb.Append("; limits ");
        if (Limits.Count == 0)
        {
            sb.Append("none");
        }

        for (var i = 0; i < Limits.Count; i++)
        {
            var l = Limits[i];
            sb.Append(i == 0 ? "" : ", ").Append(l.Key).Append(l.Direction == Direction.Inbound ? " in" : " out");
            if (l.PerCallMax is { } max)
            {
                sb.Append(" max ").Append(max);
            }
        }

        sb.Append("; next hop ").Append(NextHop?.ToString() ?? "default");
        if (RoutePrefix is not null)
        {
            sb.Append(" (route '").Append(RoutePrefix).Append("')");
        }

        return sb.ToString();
    }
}

/// <summary>
/// Classifies initial INVITEs (issue 4, Build 2) from immutable, validated configuration; thread-safe.
/// <list type="number">
/// <item>Origin: a TLS client certificate in a trunk's <c>CertificateThumbprints</c> or <c>CertificateNames</c>, else a
/// source address inside a trunk's <c>Sources</c> (most specific network wins; not for a trunk with
/// <c>RequireCertificate</c>, whose calls then fail) is that trunk, counted <c>trunk/&lt;id&gt;</c> inbound
/// (<see cref="SourceTrunkOf"/>). Otherwise a local From user is counted <c>user/&lt;name&gt;</c> outbound.
/// Otherwise the caller is unknown and nothing is counted for the caller.</item>
/// <item>Destination: the longest route prefix of the called number (Request-URI user; the To user when the
/// Request-URI has none). A route to a trunk counts <c>trunk/&lt;id&gt;</c> outbound (not when it is the trunk the
/// call came from: one key per call) and the called party is not a local user. Otherwise a local called user is
/// counted <c>user/&lt;name&gt;</c> inbound, and the call goes to the route's upstream (or the proxy's default).</item>
/// <item>Per-key: every setup rule whose prefix matches adds <c>key/&lt;value&gt;</c> (From user, To user or source IP)
/// with its maximum (a dial-plan tag of the longest dial-plan prefix, or a constant); a rule whose tag the call
/// lacks, or whose value is empty, adds nothing. A key already in the list is not added again.</item>
/// </list>
/// A user is local when listed in <c>CallState:Limits:Users</c> (whatever the host) or, with <c>DefaultUser</c> set,
/// when the host is a local domain or one of the edge's own addresses. A user calling herself counts once, outbound.
/// </summary>
public sealed class CallClassifier
{
    private readonly HashSet<string> _localHosts;
    private readonly HashSet<IPEndPoint> _destinations;
    private readonly LimitsOptions _limits;
    private readonly bool _hasDefaultUser;
    private readonly (IPNetwork Network, string Trunk)[] _trunkSources;
    private readonly Dictionary<string, string> _trunkThumbprints;
    private readonly Dictionary<string, string> _trunkCertificateNames;
    private readonly HashSet<string> _certificateRequired;
    private readonly Dictionary<string, CompiledRoute> _routes;
    private readonly int _longestRoute;
    private readonly Dictionary<string, Dictionary<string, string>> _dialPlan;
    private readonly int _longestDialPlan;
    private readonly CompiledRule[] _rules;
    private readonly HashSet<string> _emergencyNumbers;
    private readonly RejectCodesOptions _rejectCodes;
    private readonly Dictionary<string, RejectCodesOptions?> _trunkRejectCodes;

    /// <summary>A trunk's next hop or a route's upstream: where this configuration sends calls.</summary>
    public bool IsDestination(IPEndPoint endPoint) => _destinations.Contains(endPoint);

    /// <summary>
    /// Compiles <paramref name="admission"/> (which must be valid: <see cref="AdmissionOptions.Validate(LimitsOptions)"/>)
    /// with the users of <paramref name="limits"/>. <paramref name="ownHosts"/> are the edge's own addresses and
    /// names (<see cref="OwnHostsOf"/>), which count as local domains.
    /// </summary>
    public CallClassifier(AdmissionOptions admission, LimitsOptions limits, IEnumerable<string>? ownHosts = null)
    {
        ArgumentNullException.ThrowIfNull(admission);
        ArgumentNullException.ThrowIfNull(limits);
        var errors = admission.Validate(limitTrunkIds: null);
        if (errors.Count > 0)
        {
            throw new ArgumentException("invalid admission configuration: " + string.Join("; ", errors), nameof(admission));
        }

        // Every parse below was checked by Validate, so the results are not checked again.
        Options = admission;
        _limits = limits;
        _hasDefaultUser = limits.DefaultUser is not null;
        _localHosts = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var host in admission.LocalDomains.Concat(ownHosts ?? []))
        {
            if (AddressText.NormalizeHost(host) is { } normalized)
            {
                _localHosts.Add(normalized);
            }
        }

        var sources = new List<(IPNetwork, string)>();
        var nextHops = new Dictionary<string, IPEndPoint>(StringComparer.Ordinal);
        _trunkRejectCodes = new Dictionary<string, RejectCodesOptions?>(StringComparer.Ordinal);
        _trunkThumbprints = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        _trunkCertificateNames = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        _certificateRequired = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (id, trunk) in admission.Trunks)
        {
            foreach (var source in trunk.Sources)
            {
                _ = AddressText.TryParseNetwork(source, out var network, out _);
                sources.Add((network, id));
            }

            foreach (var thumbprint in trunk.CertificateThumbprints)
            {
                _trunkThumbprints[AdmissionTrunkOptions.NormalizeThumbprint(thumbprint)!] = id;
            }

            foreach (var name in trunk.CertificateNames)
            {
                _trunkCertificateNames[name] = id;
            }

            if (trunk.RequireCertificate)
            {
                _certificateRequired.Add(id);
            }

            if (SipProxyOptions.TryParseHostPort(trunk.NextHop, out var hop))
            {
                nextHops[id] = hop;
            }

            _trunkRejectCodes[id] = trunk.RejectCodes;
        }

        // Most specific network first, so a /32 inside another trunk's /24 names its own trunk.
        _trunkSources = [.. sources.OrderByDescending(s => s.Item1.PrefixLength)];

        _routes = new Dictionary<string, CompiledRoute>(StringComparer.Ordinal);
        foreach (var route in admission.Routes)
        {
            var prefix = route.Prefix ?? "";
            _routes[prefix] = string.IsNullOrEmpty(route.Trunk)
                ? new CompiledRoute(prefix, null, SipProxyOptions.TryParseHostPort(route.Upstream, out var upstream) ? upstream : null)
                : new CompiledRoute(prefix, route.Trunk, nextHops[route.Trunk]);
            _longestRoute = Math.Max(_longestRoute, prefix.Length);
        }

        _destinations = [.. nextHops.Values, .. _routes.Values.Where(r => r.NextHop is not null).Select(r => r.NextHop!)];

        _dialPlan = new Dictionary<string, Dictionary<string, string>>(StringComparer.Ordinal);
        foreach (var entry in admission.DialPlan)
        {
            _ = DialPlanEntry.TryParseTags(entry.Tags, out var tags, out _);
            var prefix = entry.Prefix ?? "";
            _dialPlan[prefix] = tags;
            _longestDialPlan = Math.Max(_longestDialPlan, prefix.Length);
        }

        _rules = [.. admission.SetupRules.Select(r =>
        {
            _ = SetupRule.TryParseKey(r.Key, out var key);
            _ = SetupRule.TryParseDirection(r.Direction, out var direction);
            _ = SetupRule.TryParseMax(r.Max, out var tag, out var constant);
            return new CompiledRule(r.Prefix ?? "", key, direction, tag, constant);
        })];
        _emergencyNumbers = new HashSet<string>(admission.EmergencyNumbers.Select(n => limits.Normalize(n)!), StringComparer.Ordinal);
        _rejectCodes = admission.RejectCodes ?? new();
    }

    /// <summary>The options this classifier was built from (deadline, fail-open, leases, Retry-After).</summary>
    public AdmissionOptions Options { get; }

    /// <summary>The edge's own hosts from its SIP options: listen address (unless a wildcard), Via host and advertised host.</summary>
    public static IEnumerable<string> OwnHostsOf(SipProxyOptions sip)
    {
        ArgumentNullException.ThrowIfNull(sip);
        if (IPAddress.TryParse(sip.ListenAddress, out var listen) && !listen.Equals(IPAddress.Any) && !listen.Equals(IPAddress.IPv6Any))
        {
            yield return sip.ListenAddress;
        }

        if (!string.IsNullOrEmpty(sip.ViaHost))
        {
            yield return sip.ViaHost;
        }

        if (!string.IsNullOrEmpty(sip.AdvertisedHost))
        {
            yield return sip.AdvertisedHost;
        }
    }

    public CallClassification Classify(in ClassificationInput input)
    {
        if (string.IsNullOrEmpty(input.CallId))
        {
            return CallClassification.Failed("the INVITE has no Call-ID");
        }

        var callKey = CallKeys.Create(input.CallId, input.FromTag);
        if (callKey.Length > GrainTypes.MaxCallKeyLength)
        {
            return CallClassification.Failed($"Call-ID and From tag are longer than {GrainTypes.MaxCallKeyLength} characters together");
        }

        // Every user part in its one form: %61lice is alice, +1-234 is +1234, Alice is alice unless case-sensitive.
        var fromUser = _limits.Normalize(input.VerifiedCaller ?? input.FromUser);
        var toUser = _limits.Normalize(input.ToUser);
        var requestUser = _limits.Normalize(input.RequestUser);
        var source = input.Source is null ? null : AddressText.Canonical(input.Source);
        var useTo = string.IsNullOrEmpty(requestUser);
        var called = (useTo ? toUser : requestUser) ?? "";
        var calledHost = useTo ? input.ToHost : input.RequestHost;
        var limits = new List<LimitRequest>(4);
        string? error = null;

        // Origin.
        // Tenants (docs/policies.md, "Tenants"): a user at a tenant's domain is keyed with the domain (alice@a.com).
        var callerTenant = _limits.TenantOfDomain(AddressText.NormalizeHost(input.FromHost));
        var calledTenant = _limits.TenantOfDomain(AddressText.NormalizeHost(calledHost));
        var trunkSource = SourceTrunkOf(source, input.CertificateSha256, input.CertificateNames);
        if (trunkSource.Match == TrunkMatch.CertificateRequired)
        {
            return CallClassification.Failed($"the source address is trunk '{trunkSource.Trunk}''s, which requires a client certificate, and no certificate of a trunk came with the call");
        }

        var sourceTrunk = trunkSource.Trunk;
        string? caller = null;
        string? originTenant = null;
        CallOrigin origin;
        if (sourceTrunk is not null)
        {
            origin = CallOrigin.Trunk;
            originTenant = _limits.TenantOfTrunk(sourceTrunk);
            Add(LimitKind.Trunk, sourceTrunk, Direction.Inbound, null);
        }
        else if (input.VerifiedCaller is not null
                 ? !string.IsNullOrEmpty(fromUser) && (_hasDefaultUser || callerTenant is not null || _limits.FindUser(UserKeyOf(fromUser, input.FromHost, callerTenant)) is not null)
                 : IsLocalUser(fromUser, input.FromHost, callerTenant))
        {
            origin = CallOrigin.LocalUser;
            caller = UserKeyOf(fromUser!, input.FromHost, callerTenant);
            originTenant = callerTenant;
            Add(LimitKind.User, caller, Direction.Outbound, null);
        }
        else
        {
            origin = CallOrigin.Unknown;
        }

        // Destination.
        var route = RouteOf(called);
        string? destinationTrunk = null;
        string? calledUser = null;
        string? destinationTenant = null;
        CallDestination destination;
        IPEndPoint? nextHop = route?.NextHop;
        if (route?.Trunk is { } trunk)
        {
            destination = CallDestination.Trunk;
            destinationTrunk = trunk;
            destinationTenant = _limits.TenantOfTrunk(trunk);
            if (!string.Equals(trunk, sourceTrunk, StringComparison.Ordinal))
            {
                Add(LimitKind.Trunk, trunk, Direction.Outbound, null, originTenant);
            }
        }
        else if (IsLocalUser(called, calledHost, calledTenant))
        {
            destination = CallDestination.LocalUser;
            calledUser = UserKeyOf(called, calledHost, calledTenant);
            destinationTenant = calledTenant;
            Add(LimitKind.User, calledUser, Direction.Inbound, null);
        }
        else
        {
            destination = CallDestination.Other;
        }

        // Each trunk is counted for the tenant on the call's other side (a shared trunk's reservations); then the tenants'
        // pools: a call a tenant makes is its outbound, a call to it its inbound; within one tenant, counted once.
        if (sourceTrunk is not null && destinationTenant is not null && limits.Count > 0 && limits[0].Key == LimitKey.Trunk(sourceTrunk).ToString())
        {
            limits[0] = limits[0] with { Tenant = destinationTenant };
        }

        if (originTenant is not null)
        {
            Add(LimitKind.Tenant, originTenant, Direction.Outbound, null);
        }

        if (destinationTenant is not null)
        {
            Add(LimitKind.Tenant, destinationTenant, Direction.Inbound, null);
        }

        // Per-key limits from the dial plan and setup rules.
        if (_rules.Length > 0)
        {
            var tags = DialPlanTagsOf(called);
            foreach (var rule in _rules)
            {
                if (!called.StartsWith(rule.Prefix, StringComparison.Ordinal))
                {
                    continue;
                }

                int max;
                if (rule.Tag is null)
                {
                    max = rule.Constant;
                }
                else if (tags is null || !tags.TryGetValue(rule.Tag, out var tagValue) || !SetupRule.TryParseCount(tagValue, out max))
                {
                    continue;
                }

                var value = rule.Key switch
                {
                    SetupRuleKey.FromUser => fromUser,
                    SetupRuleKey.ToUser => toUser,
                    _ => source?.ToString(),
                };
                if (!string.IsNullOrEmpty(value))
                {
                    Add(LimitKind.Key, value, rule.Direction, max);
                }
            }
        }

        if (error is not null)
        {
            return CallClassification.Failed(error);
        }

        // Emergency numbers are exact: 1123 is not 112.
        var isEmergency = _emergencyNumbers.Contains(called);

        return new CallClassification(callKey, limits, nextHop, origin, destination, sourceTrunk, destinationTrunk, caller, calledUser, route?.Prefix, isEmergency, source);

        void Add(LimitKind kind, string value, Direction direction, int? max, string? tenant = null)
        {
            if (error is not null)
            {
                return;
            }

            if (value.Length > LimitKey.MaxValueLength)
            {
                error = $"'{value[..32]}...' is longer than {LimitKey.MaxValueLength} characters and cannot be a limit key";
                return;
            }

            var key = new LimitKey(kind, value).ToString();
            foreach (var existing in limits)
            {
                if (string.Equals(existing.Key, key, StringComparison.Ordinal))
                {
                    return;
                }
            }

            if (limits.Count == CallAdmission.MaxLimitsPerCall)
            {
                error = $"the call would touch more than {CallAdmission.MaxLimitsPerCall} limits";
                return;
            }

            limits.Add(new LimitRequest(key, direction, max, tenant));
        }
    }

    /// <summary>
    /// The response for a call refused by <paramref name="limitKey"/> with <paramref name="reason"/> (from the
    /// admission answer). Overrides apply most specific first: the refusing trunk's, the source trunk's (the
    /// peer that receives the response), then the global ones, then the rejection table (docs/architecture.md, "Admission at the edge").
    /// </summary>
    public SipRejection RejectionFor(CallClassification call, RejectReason reason, string? limitKey)
    {
        ArgumentNullException.ThrowIfNull(call);
        var direction = call.DirectionOf(limitKey) ?? (call.Origin == CallOrigin.LocalUser ? Direction.Outbound : Direction.Inbound);
        var category = SipRejection.CategoryOf(reason, direction);
        RejectCodesOptions? refusing = null;
        if (LimitKey.TryParse(limitKey, out var key, out _) && key.Kind == LimitKind.Trunk)
        {
            _trunkRejectCodes.TryGetValue(key.Value, out refusing);
        }

        return RejectCodesOptions.Resolve(category, refusing, SourceCodes(call), _rejectCodes);
    }

    /// <summary>The response when the silo tier cannot answer in time and the edge fails closed.</summary>
    public SipRejection UnavailableRejection(CallClassification? call) =>
        RejectCodesOptions.Resolve(RejectionCategory.Unavailable, call is null ? null : SourceCodes(call), _rejectCodes);

    private RejectCodesOptions? SourceCodes(CallClassification call) =>
        call.SourceTrunk is { } id && _trunkRejectCodes.TryGetValue(id, out var codes) ? codes : null;

    private bool IsLocalUser(string? user, string? host, string? tenant) =>
        !string.IsNullOrEmpty(user)
        && (tenant is not null || _limits.FindUser(UserKeyOf(user, host, null)) is not null
            || (_hasDefaultUser && AddressText.NormalizeHost(host) is { } h && _localHosts.Contains(h)));

    /// <summary>
    /// The name a user's limit is keyed by (docs/policies.md, "Tenants"): <c>alice@a.com</c> at a tenant's domain, else the
    /// user part alone; an <c>@</c> in a user part (an escaped <c>%40</c>) stays escaped, so it never names a tenant's user.
    /// </summary>
    private static string UserKeyOf(string user, string? host, string? tenant) =>
        tenant is not null && AddressText.NormalizeHost(host) is { } domain
            ? LimitsOptions.Qualify(user.Replace("@", "%40", StringComparison.Ordinal), domain)
            : user.Replace("@", "%40", StringComparison.Ordinal);

    /// <summary>
    /// Whether a call from <paramref name="source"/>, with the given client certificate if any, is a trunk's: see
    /// <see cref="SourceTrunkOf"/>. False for a <c>RequireCertificate</c> trunk's address without a matching certificate.
    /// </summary>
    public bool IsTrunkSource(IPAddress source, string? certificateSha256 = null, IReadOnlyList<string>? certificateNames = null) =>
        SourceTrunkOf(source, certificateSha256, certificateNames).IsTrunk;

    /// <summary>
    /// The trunk a call comes from (docs/security.md, "SIP over TLS"): the trunk whose <c>CertificateThumbprints</c> hold
    /// the client certificate's SHA-256, else the one whose <c>CertificateNames</c> hold the first of its DNS names that
    /// any trunk lists; else the trunk whose <c>Sources</c> hold <paramref name="source"/> (most specific network first),
    /// unless that trunk requires a certificate (<see cref="TrunkMatch.CertificateRequired"/>). A certificate names its
    /// trunk whatever the address, so it wins over an address match.
    /// </summary>
    public TrunkSource SourceTrunkOf(IPAddress? source, string? certificateSha256 = null, IReadOnlyList<string>? certificateNames = null)
    {
        if (!string.IsNullOrEmpty(certificateSha256) && _trunkThumbprints.TryGetValue(certificateSha256, out var byThumbprint))
        {
            return new TrunkSource(TrunkMatch.Certificate, byThumbprint);
        }

        if (certificateNames is not null && _trunkCertificateNames.Count > 0)
        {
            foreach (var name in certificateNames)
            {
                if (_trunkCertificateNames.TryGetValue(name, out var byName))
                {
                    return new TrunkSource(TrunkMatch.Certificate, byName);
                }
            }
        }

        if (source is null || TrunkOf(AddressText.Canonical(source)) is not { } byAddress)
        {
            return default;
        }

        return new TrunkSource(_certificateRequired.Contains(byAddress) ? TrunkMatch.CertificateRequired : TrunkMatch.Address, byAddress);
    }

    private string? TrunkOf(IPAddress source)
    {
        foreach (var (network, trunk) in _trunkSources)
        {
            if (network.Contains(source))
            {
                return trunk;
            }
        }

        return null;
    }

    private CompiledRoute? RouteOf(string called)
    {
        var lookup = _routes.GetAlternateLookup<ReadOnlySpan<char>>();
        for (var length = Math.Min(called.Length, _longestRoute); length >= 0; length--)
        {
            if (lookup.TryGetValue(called.AsSpan(0, length), out var route))
            {
                return route;
            }
        }

        return null;
    }

    private Dictionary<string, string>? DialPlanTagsOf(string called)
    {
        var lookup = _dialPlan.GetAlternateLookup<ReadOnlySpan<char>>();
        for (var length = Math.Min(called.Length, _longestDialPlan); length >= 0; length--)
        {
            if (lookup.TryGetValue(called.AsSpan(0, length), out var tags))
            {
                return tags;
            }
        }

        return null;
    }

    private sealed record CompiledRoute(string Prefix, string? Trunk, IPEndPoint? NextHop);

    private sealed record CompiledRule(string Prefix, SetupRuleKey Key, Direction Direction, string? Tag, int Constant);
}
