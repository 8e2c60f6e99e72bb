using System.Net;
using System.Text;
using CallState.Silo.Limits;
using CallState.Sip.Messages;
using CallState.SipEdge.Admission;

namespace CallState.SipEdge.Trust;

/// <summary>How the edge came to believe who is calling.</summary>
public enum TrustKind
{
    /// <summary>A trunk (by source address or TLS client certificate): the call is counted on the trunk; its From names nobody of ours.</summary>
    Trunk,

    /// <summary>A trusted peer: its P-Asserted-Identity (or From) is believed.</summary>
    Peer,

    /// <summary>Digest credentials of a configured user.</summary>
    Authenticated,

    /// <summary>Challenged or refused: <see cref="TrustVerdict.Status"/> answers the INVITE.</summary>
    Refused,
}

/// <summary>The caller an INVITE is counted as, or how it is answered instead.</summary>
public readonly record struct TrustVerdict(TrustKind Kind, string? User, int Status = 0, string? Reason = null, string? Headers = null, string? Log = null);

/// <summary>
/// Decides who an initial INVITE is from before any limit is asked (docs/security.md, "Who may call as whom"): a trunk by
/// its source or its TLS client certificate (as the call classifier tells), a trusted peer by its source (believing its
/// asserted identity), anyone else by digest credentials (RFC 3261 22, RFC 7616; 407 challenge, 403 after a failure, a
/// source with too many failures refused for a while).
/// The caller used for limits is the authenticated or asserted one, never a bare From from an untrusted source.
/// </summary>
public sealed class CallerTrust : IDigestCredentialStore
{
    private readonly (IPNetwork Network, TrustedPeerOptions Peer)[] _peers;
    private readonly LimitsOptions _limits;
    private readonly Dictionary<string, DigestCredentialOptions> _credentials;
    private readonly DigestVerifier? _verifier;
    private readonly DigestChallenge? _challenge;
    private readonly AuthFailureLimiter? _failures;

    public CallerTrust(TrustOptions options, LimitsOptions limits, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(limits);
        _limits = limits;
        var peers = new List<(IPNetwork, TrustedPeerOptions)>();
        foreach (var peer in options.Peers.Values)
        {
            foreach (var source in peer.Sources)
            {
                if (AddressText.TryParseNetwork(source, out var network, out _))
                {
                    peers.Add((network, peer));
                }
            }
        }
        _peers = [.. peers.OrderByDescending(p => p.Item1.PrefixLength)];
        _credentials = new Dictionary<string, DigestCredentialOptions>(StringComparer.Ordinal);
        foreach (var (name, credential) in options.AllCredentials())
        {
            if (limits.Normalize(name) is { Length: > 0 } user)
            {
                _credentials.TryAdd(user, credential);
            }
        }
        if (options.Digest is { } digest)
        {
            var nonces = new NonceService(digest.ReadSecret(), time, digest.NonceLifetime);
            var algorithms = digest.GetAlgorithms();
            _verifier = new DigestVerifier(digest.Realm!, algorithms, this, nonces, new NonceCountCache(time, digest.MaxNonceEntries));
            _challenge = new DigestChallenge(digest.Realm!, algorithms, nonces);
            _failures = new AuthFailureLimiter(time, digest.MaxFailures, digest.FailureWindow, digest.BlockTime, digest.MaxTrackedSources);
        }
    }

    /// <summary>True when <paramref name="source"/> is one of a trusted peer's <c>Sources</c> (it gets the peers' overload budget).</summary>
    public bool IsTrustedPeer(IPAddress source)
    {
        ArgumentNullException.ThrowIfNull(source);
        source = AddressText.Canonical(source);
        foreach (var (network, _) in _peers)
        {
            if (network.Contains(source))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>Who <paramref name="invite"/> (from <paramref name="source"/>, a trunk's call or not) is counted as.</summary>
    public TrustVerdict Check(SipMessage invite, IPAddress source, bool trunkSource)
    {
        ArgumentNullException.ThrowIfNull(invite);
        ArgumentNullException.ThrowIfNull(source);
        if (trunkSource)
        {
            return new TrustVerdict(TrustKind.Trunk, null);
        }
        source = AddressText.Canonical(source);
        foreach (var (network, peer) in _peers)
        {
            if (network.Contains(source))
            {
                return new TrustVerdict(TrustKind.Peer, peer.AssertedIdentity ? _limits.Normalize(AssertedUser(invite)) : null);
            }
        }
        if (_verifier is null)
        {
            return Refuse(403, "Forbidden (untrusted source)", "no trunk or trusted peer has this address and digest authentication is off");
        }
        if (_failures!.IsBlocked(source))
        {
            return Refuse(403, "Forbidden (too many failed authentications)", "the source is blocked after failed authentications");
        }
        var result = _verifier.Verify(invite, DigestRole.Proxy, out _);
        switch (result.Outcome)
        {
            case DigestOutcome.Authenticated:
                return new TrustVerdict(TrustKind.Authenticated, _limits.Normalize(result.User));
            case DigestOutcome.Malformed:
                return Refuse(400, "Bad Request (malformed credentials)", $"malformed credentials ({result.Error})");
            case DigestOutcome.Stale:
                return new TrustVerdict(TrustKind.Refused, null, _challenge!.Status, "Proxy Authentication Required", _challenge.Build(stale: true));
            case DigestOutcome.Missing or DigestOutcome.WrongRealm:
                return new TrustVerdict(TrustKind.Refused, null, _challenge!.Status, "Proxy Authentication Required", _challenge.Build(stale: false));
            default:
                // Unknown user, wrong password, forged nonce, replayed nonce count: the same answer for each, so
                // nobody learns which user names exist; counted against the source.
                _failures.RecordFailure(source);
                return Refuse(403, "Forbidden (authentication failed)", $"authentication failed ({result.Outcome})");
        }
    }

    bool IDigestCredentialStore.TryGetHa1(string user, DigestAlgorithm algorithm, out string ha1Hex)
    {
        ha1Hex = "";
        if (_limits.Normalize(user) is not { Length: > 0 } name || !_credentials.TryGetValue(name, out var credential))
        {
            return false;
        }
        var value = algorithm == DigestAlgorithm.Sha256 ? credential.Sha256 : credential.Md5;
        if (string.IsNullOrEmpty(value))
        {
            return false;
        }
        ha1Hex = value;
        return true;
    }

    private static TrustVerdict Refuse(int status, string reason, string log) => new(TrustKind.Refused, null, status, reason, null, log);

    /// <summary>The user part of the first P-Asserted-Identity (RFC 3325) that is a SIP or tel URI, or null.</summary>
    private static string? AssertedUser(SipMessage invite)
    {
        var s = invite.Span;
        foreach (var field in invite.Fields)
        {
            if (field.Kind != SipHeaderKind.Unknown || !Ascii.EqualsIgnoreCase(field.Name.Of(s), "P-Asserted-Identity"u8))
            {
                continue;
            }
            foreach (var entry in new SipListEnumerator(s, field.Value))
            {
                if (NameAddress.TryParse(s, entry.Start, entry.End, out var identity) && !identity.Uri.User.IsEmpty)
                {
                    return Encoding.UTF8.GetString(identity.Uri.User.Of(s));
                }
            }
        }
        return null;
    }
}
