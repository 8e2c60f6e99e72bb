using System.Buffers;
using System.Text;
using CallState.Sip.Messages;

namespace CallState.SipEdge.Trust;

/// <summary>
/// Writes the challenge header lines of a 407 (<c>Proxy-Authenticate</c>) or a 401 (<c>WWW-Authenticate</c>): one per algorithm,
/// the preferred first (RFC 7616 3.7: SHA-256 before MD5, which older clients still need), each with the realm, one fresh nonce,
/// <c>qop="auth"</c>, and <c>stale=true</c> after a stale nonce (RFC 7616 3.3).
/// </summary>
public sealed class DigestChallenge
{
    private readonly byte[] _realm;
    private readonly byte[] _quotedRealm;
    private readonly DigestAlgorithm[] _algorithms;
    private readonly NonceService _nonces;
    private readonly DigestRole _role;

    /// <summary>Challenges for <paramref name="realm"/> (RFC 3261 22.1: for example the service's domain; control characters are refused).</summary>
    public DigestChallenge(string realm, IEnumerable<DigestAlgorithm> algorithms, NonceService nonces, DigestRole role = DigestRole.Proxy)
    {
        ArgumentException.ThrowIfNullOrEmpty(realm);
        ArgumentNullException.ThrowIfNull(algorithms);
        ArgumentNullException.ThrowIfNull(nonces);
        if (realm.Any(char.IsControl))
        {
            // A CR or LF would end the header line and let the realm inject headers.
            throw new ArgumentException("The realm must not contain control characters.", nameof(realm));
        }

        _realm = Encoding.UTF8.GetBytes(realm);
        _quotedRealm = Encoding.UTF8.GetBytes(Quote(realm));
        _algorithms = [.. algorithms.Distinct().OrderByDescending(Strength)];
        if (_algorithms.Length == 0)
        {
            throw new ArgumentException("At least one digest algorithm is needed.", nameof(algorithms));
        }

        _nonces = nonces;
        _role = role;
    }

    /// <summary>The response status the lines belong in: 407 for a proxy, 401 for a registrar or server.</summary>
    public int Status => _role == DigestRole.Proxy ? 407 : 401;

    /// <summary>Writes the header lines, each ending in CR LF, with a fresh nonce.</summary>
    public void WriteTo(IBufferWriter<byte> writer, bool stale)
    {
        ArgumentNullException.ThrowIfNull(writer);
        Span<byte> nonce = stackalloc byte[NonceService.NonceLength];
        _nonces.Issue(_realm, nonce);
        var name = _role == DigestRole.Proxy ? "Proxy-Authenticate"u8 : "WWW-Authenticate"u8;
        foreach (var algorithm in _algorithms)
        {
            writer.Write(name);
            writer.Write(": Digest realm="u8);
            writer.Write(_quotedRealm);
            writer.Write(", nonce=\""u8);
            writer.Write(nonce);
            writer.Write("\", algorithm="u8);
            writer.Write(DigestAlgorithms.Name(algorithm));
            writer.Write(", qop=\"auth\""u8);
            if (stale)
            {
                writer.Write(", stale=true"u8);
            }

            writer.WriteCrlf();
        }
    }

    /// <summary>The header lines as text, for <c>CallDecision.Reject(407, ..., extraHeaders)</c>.</summary>
    public string Build(bool stale)
    {
        var writer = new ArrayBufferWriter<byte>(256);
        WriteTo(writer, stale);
        return Encoding.UTF8.GetString(writer.WrittenSpan);
    }

    private static int Strength(DigestAlgorithm algorithm) => algorithm == DigestAlgorithm.Sha256 ? 2 : 1;

    /// <summary>A quoted-string (RFC 3261 25.1): <c>"</c> and <c>\</c> escaped as quoted-pairs.</summary>
    private static string Quote(string text) => "\"" + text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}
