using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using CallState.Sip.Messages;

namespace CallState.SipEdge.Trust;

/// <summary>Where the edge keeps its users' secrets: HA1 = H(user:realm:password) as hex per algorithm, never passwords.</summary>
public interface IDigestCredentialStore
{
    /// <summary>The HA1 of <paramref name="user"/> for <paramref name="algorithm"/> as hex (<see cref="DigestHash.HexLength"/> characters).</summary>
    bool TryGetHa1(string user, DigestAlgorithm algorithm, out string ha1Hex);
}

/// <summary>Which pair of headers digest authentication uses.</summary>
public enum DigestRole
{
    /// <summary>A proxy: <c>407</c> with <c>Proxy-Authenticate</c>, answered with <c>Proxy-Authorization</c> (RFC 3261 22.3).</summary>
    Proxy = 0,

    /// <summary>A registrar or user agent server: <c>401</c> with <c>WWW-Authenticate</c>, answered with <c>Authorization</c> (RFC 3261 22.2).</summary>
    Server = 1,
}

/// <summary>What <see cref="DigestVerifier"/> decided.</summary>
public enum DigestOutcome
{
    /// <summary>Good credentials, fresh nonce, first use of its count here: <see cref="DigestResult.User"/> is who sent it.</summary>
    Authenticated = 0,

    /// <summary>No credentials (for this role): challenge. Not a failure.</summary>
    Missing,

    /// <summary>Credentials that do not parse, name an algorithm not offered, or a <c>uri</c> other than the Request-URI: answer 400 (RFC 7616 3.4.6).</summary>
    Malformed,

    /// <summary>Credentials for another realm only: challenge.</summary>
    WrongRealm,

    /// <summary>A nonce this realm's secret did not make (forged, tampered with, another cluster's): challenge.</summary>
    InvalidNonce,

    /// <summary>No such user in the store: challenge, exactly as for <see cref="BadResponse"/> so users cannot be enumerated.</summary>
    UnknownUser,

    /// <summary>The response does not match: wrong password (or a stale nonce with a wrong password): challenge.</summary>
    BadResponse,

    /// <summary>The right response on an expired nonce (or the replay cache is full): challenge with <c>stale=true</c> (RFC 7616 3.3).</summary>
    Stale,

    /// <summary>The right response with a (nonce, nc) this edge accepted before: challenge.</summary>
    Replay,
}

/// <summary>The outcome of one verification, with the user name the credentials claimed (null when none parsed).</summary>
public readonly record struct DigestResult(DigestOutcome Outcome, string? User = null, DigestCredentialsError Error = DigestCredentialsError.None)
{
    /// <summary>
    /// True for outcomes that count toward <see cref="AuthFailureLimiter"/>: guesses and forgeries. Not for missing credentials
    /// (every call's first attempt), a stale nonce (the right password), or a malformed header (a broken client, not a guess).
    /// </summary>
    public bool IsFailure => Outcome is DigestOutcome.UnknownUser or DigestOutcome.BadResponse or DigestOutcome.InvalidNonce or DigestOutcome.Replay;
}

/// <summary>
/// Verifies digest credentials with <c>qop=auth</c> (RFC 3261 22.4, RFC 7616 3.4): realm, algorithm offered, <c>uri</c> equal to the
/// Request-URI, nonce issued by an edge sharing the secret, the response (compared in constant time), then the nonce count's first
/// use. Thread-safe when the store is.
/// </summary>
public sealed class DigestVerifier
{
    private readonly byte[] _realm;
    private readonly DigestAlgorithm[] _algorithms;
    private readonly IDigestCredentialStore _store;
    private readonly NonceService _nonces;
    private readonly NonceCountCache _counts;

    public DigestVerifier(string realm, IEnumerable<DigestAlgorithm> algorithms, IDigestCredentialStore store, NonceService nonces, NonceCountCache counts)
    {
        ArgumentException.ThrowIfNullOrEmpty(realm);
        ArgumentNullException.ThrowIfNull(algorithms);
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(nonces);
        ArgumentNullException.ThrowIfNull(counts);
        _realm = Encoding.UTF8.GetBytes(realm);
        _algorithms = [.. algorithms.Distinct()];
        if (_algorithms.Length == 0)
        {
            throw new ArgumentException("At least one digest algorithm is needed.", nameof(algorithms));
        }

        _store = store;
        _nonces = nonces;
        _counts = counts;
    }

    /// <summary>
    /// Verifies the credentials of <paramref name="request"/>: the <c>Proxy-Authorization</c> (or, for <see cref="DigestRole.Server"/>,
    /// <c>Authorization</c>) field whose realm is this verifier's (RFC 3261 22.3: other fields are for other proxies).
    /// <paramref name="fieldIndex"/> is that field's index in <see cref="SipMessage.Fields"/>, or -1.
    /// </summary>
    public DigestResult Verify(SipMessage request, DigestRole role, out int fieldIndex)
    {
        ArgumentNullException.ThrowIfNull(request);
        fieldIndex = -1;
        var s = request.Span;
        var name = role == DigestRole.Proxy ? "Proxy-Authorization"u8 : "Authorization"u8;
        var found = DigestOutcome.Missing;
        var error = DigestCredentialsError.None;
        var fields = request.Fields;
        for (var i = 0; i < fields.Length; i++)
        {
            if (fields[i].Kind != SipHeaderKind.Unknown || !Ascii.EqualsIgnoreCase(fields[i].Name.Of(s), name))
            {
                continue;
            }

            if (!DigestCredentials.TryParse(s, fields[i].Value, out var credentials, out var parseError))
            {
                (found, error) = (DigestOutcome.Malformed, parseError);
                continue;
            }

            if (!RealmMatches(s, credentials))
            {
                found = found == DigestOutcome.Malformed ? found : DigestOutcome.WrongRealm;
                continue;
            }

            fieldIndex = i;
            return Verify(request.MethodToken.Of(s), request.RequestUriText.Of(s), s, credentials);
        }

        return new DigestResult(found, null, error);
    }

    /// <summary>
    /// Verifies one credentials header value (<paramref name="credentials"/>; empty: <see cref="DigestOutcome.Missing"/>) of a
    /// request with method token <paramref name="method"/> and Request-URI <paramref name="requestUri"/>, as written.
    /// </summary>
    public DigestResult Verify(ReadOnlySpan<byte> method, ReadOnlySpan<byte> requestUri, ReadOnlySpan<byte> credentials)
    {
        if (credentials.Trim(" \t"u8).IsEmpty)
        {
            return new DigestResult(DigestOutcome.Missing);
        }

        if (!DigestCredentials.TryParse(credentials, out var parsed, out var error))
        {
            return new DigestResult(DigestOutcome.Malformed, null, error);
        }

        return RealmMatches(credentials, parsed)
            ? Verify(method, requestUri, credentials, parsed)
            : new DigestResult(DigestOutcome.WrongRealm, parsed.GetUser(credentials));
    }

    /// <summary>
    /// The credentials' uri is the Request-URI, or the Request-URI without its user part (<c>sip:host:port</c> for
    /// <c>sip:bob@host:port</c>), which some clients send (sipp among them); the response is computed over it either way.
    /// </summary>
    public static bool UriMatches(ReadOnlySpan<byte> uri, ReadOnlySpan<byte> requestUri)
    {
        if (uri.SequenceEqual(requestUri))
        {
            return true;
        }
        var colon = requestUri.IndexOf((byte)':');
        var at = requestUri.IndexOf((byte)'@');
        return colon > 0 && at > colon
            && uri.Length == requestUri.Length - (at - colon)
            && uri[..(colon + 1)].SequenceEqual(requestUri[..(colon + 1)])
            && uri[(colon + 1)..].SequenceEqual(requestUri[(at + 1)..]);
    }

    private DigestResult Verify(ReadOnlySpan<byte> method, ReadOnlySpan<byte> requestUri, ReadOnlySpan<byte> s, in DigestCredentials c)
    {
        var user = c.GetUser(s);
        if (Array.IndexOf(_algorithms, c.Algorithm) < 0)
        {
            return new DigestResult(DigestOutcome.Malformed, user, DigestCredentialsError.UnsupportedAlgorithm);
        }

        // Unescaped values of the quoted parameters; a copy is made only for those holding escapes.
        byte[]? rented = c.HasEscapes ? ArrayPool<byte>.Shared.Rent(s.Length) : null;
        try
        {
            var scratch = rented.AsSpan();
            var used = 0;

            // RFC 3261 22.4 and RFC 7616 3.4.6: the digest covers the uri parameter, which must be the Request-URI, or credentials
            // captured for one request would authorise another.
            var uri = DigestCredentials.Value(s, c.Uri, scratch, ref used);
            if (!UriMatches(uri, requestUri))
            {
                return new DigestResult(DigestOutcome.Malformed, user);
            }

            var nonce = DigestCredentials.Value(s, c.Nonce, scratch, ref used);
            var nonceStatus = _nonces.Verify(nonce, _realm, out var expires);
            if (nonceStatus == NonceStatus.Invalid)
            {
                return new DigestResult(DigestOutcome.InvalidNonce, user);
            }

            var hexLength = DigestHash.HexLength(c.Algorithm);
            Span<byte> ha1 = stackalloc byte[64];
            ha1 = ha1[..hexLength];
            if (!_store.TryGetHa1(user, c.Algorithm, out var ha1Text) || !TryLowerHex(ha1Text, ha1))
            {
                return new DigestResult(DigestOutcome.UnknownUser, user);
            }

            Span<byte> expected = stackalloc byte[64];
            expected = expected[..hexLength];
            DigestHash.Response(c.Algorithm, ha1, method, uri, nonce, c.NonceCountText.Of(s),
                DigestCredentials.Value(s, c.Cnonce, scratch, ref used), DigestCredentials.Value(s, c.Qop, scratch, ref used), expected);

            Span<byte> received = stackalloc byte[64];
            received = received[..hexLength];
            Ascii.ToLower(DigestCredentials.Value(s, c.Response, scratch, ref used), received, out _);
            if (!CryptographicOperations.FixedTimeEquals(expected, received))
            {
                return new DigestResult(DigestOutcome.BadResponse, user);
            }

            if (nonceStatus == NonceStatus.Stale)
            {
                return new DigestResult(DigestOutcome.Stale, user);
            }

            return _counts.TryAccept(nonce, c.NonceCount, expires) switch
            {
                NonceCountResult.Accepted => new DigestResult(DigestOutcome.Authenticated, user),
                NonceCountResult.Replay => new DigestResult(DigestOutcome.Replay, user),
                _ => new DigestResult(DigestOutcome.Stale, user),
            };
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    private bool RealmMatches(ReadOnlySpan<byte> s, in DigestCredentials c)
    {
        if (!c.HasEscapes)
        {
            return c.Realm.Of(s).SequenceEqual(_realm);
        }

        var scratch = c.Realm.Length <= 256 ? stackalloc byte[256] : new byte[c.Realm.Length];
        var used = 0;
        return DigestCredentials.Value(s, c.Realm, scratch, ref used).SequenceEqual(_realm);
    }

    /// <summary>The stored HA1 as lower-case hex bytes; an entry of the wrong length or not hex counts as no entry.</summary>
    private static bool TryLowerHex(string? text, Span<byte> ha1)
    {
        if (text is null || text.Length != ha1.Length)
        {
            return false;
        }

        for (var i = 0; i < text.Length; i++)
        {
            if (!char.IsAsciiHexDigit(text[i]))
            {
                return false;
            }

            ha1[i] = (byte)char.ToLowerInvariant(text[i]);
        }

        return true;
    }
}
