using System.Buffers;
using System.Buffers.Binary;
using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;

namespace CallState.SipEdge.Trust;

/// <summary>What <see cref="NonceService.Verify"/> found.</summary>
public enum NonceStatus
{
    /// <summary>Not a nonce of this realm and secret: malformed, forged, tampered with, or issued too far in the future.</summary>
    Invalid = 0,

    /// <summary>Issued by an edge sharing the secret, within its lifetime.</summary>
    Valid = 1,

    /// <summary>Genuine but older than the lifetime: the challenge that answers it carries <c>stale=true</c> (RFC 7616 3.3).</summary>
    Stale = 2,
}

/// <summary>
/// Stateless nonces (RFC 7616 3.3 leaves their form to the server): base64url of the issue time (8 bytes, Unix milliseconds,
/// big-endian) and the first 16 bytes of HMAC-SHA256(secret, issue time || realm). Any edge holding the same secret verifies
/// any edge's nonce without shared state; replay of a nonce count is <see cref="NonceCountCache"/>'s concern.
/// </summary>
public sealed class NonceService
{
    /// <summary>Characters of a nonce: base64url of 24 bytes, no padding.</summary>
    public const int NonceLength = 32;

    /// <summary>Shortest secret accepted: HMAC-SHA256 keys shorter than its 32-byte output weaken it (RFC 2104 3).</summary>
    public const int MinSecretLength = 32;

    private const int TimeLength = 8;
    private const int MacLength = 16;
    private const int RawLength = TimeLength + MacLength;

    /// <summary>How long a nonce stays valid unless configured otherwise.</summary>
    public static readonly TimeSpan DefaultLifetime = TimeSpan.FromSeconds(30);

    /// <summary>How far in the future an issue time may lie: the clocks of edges sharing the secret differ a little.</summary>
    public static readonly TimeSpan MaxClockSkew = TimeSpan.FromSeconds(2);

    private readonly byte[] _secret;
    private readonly TimeProvider _time;
    private readonly long _lifetimeMs;

    /// <summary>Nonces keyed by <paramref name="secret"/>: at least <see cref="MinSecretLength"/> random bytes, the same on every edge of the realm (copied).</summary>
    public NonceService(ReadOnlySpan<byte> secret, TimeProvider time, TimeSpan? lifetime = null)
    {
        ArgumentNullException.ThrowIfNull(time);
        if (secret.Length < MinSecretLength)
        {
            throw new ArgumentException($"The nonce secret must be at least {MinSecretLength} bytes (was {secret.Length}).", nameof(secret));
        }

        Lifetime = lifetime ?? DefaultLifetime;
        ArgumentOutOfRangeException.ThrowIfLessThan(Lifetime, TimeSpan.FromSeconds(1), nameof(lifetime));
        _secret = secret.ToArray();
        _time = time;
        _lifetimeMs = (long)Lifetime.TotalMilliseconds;
    }

    public TimeSpan Lifetime { get; }

    /// <summary>Writes a fresh nonce for <paramref name="realm"/> (UTF-8) into <paramref name="nonce"/> (<see cref="NonceLength"/> bytes).</summary>
    public void Issue(ReadOnlySpan<byte> realm, Span<byte> nonce)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nonce.Length, NonceLength, nameof(nonce));
        Span<byte> raw = stackalloc byte[RawLength];
        BinaryPrimitives.WriteInt64BigEndian(raw, _time.GetUtcNow().ToUnixTimeMilliseconds());
        Mac(raw[..TimeLength], realm, raw[TimeLength..]);
        Base64Url.EncodeToUtf8(raw, nonce);
    }

    /// <summary>A fresh nonce as text (tooling and tests).</summary>
    public string Issue(string realm)
    {
        Span<byte> nonce = stackalloc byte[NonceLength];
        Issue(Encoding.UTF8.GetBytes(realm), nonce);
        return Encoding.ASCII.GetString(nonce);
    }

    /// <summary>
    /// Checks a nonce a client sent back for <paramref name="realm"/>. <paramref name="expires"/> is when it stops being valid
    /// (set for <see cref="NonceStatus.Valid"/> and <see cref="NonceStatus.Stale"/>). Never throws for any bytes.
    /// </summary>
    public NonceStatus Verify(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> realm, out DateTimeOffset expires)
    {
        expires = default;
        if (nonce.Length != NonceLength || !IsBase64Url(nonce))
        {
            return NonceStatus.Invalid;
        }

        Span<byte> raw = stackalloc byte[RawLength];
        if (Base64Url.DecodeFromUtf8(nonce, raw, out _, out var written) != OperationStatus.Done || written != RawLength)
        {
            return NonceStatus.Invalid;
        }

        Span<byte> mac = stackalloc byte[MacLength];
        Mac(raw[..TimeLength], realm, mac);
        if (!CryptographicOperations.FixedTimeEquals(mac, raw[TimeLength..]))
        {
            return NonceStatus.Invalid;
        }

        // The MAC is good, so the issue time was written by an edge's clock and converts without overflow.
        var issued = BinaryPrimitives.ReadInt64BigEndian(raw);
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        if (issued - now > (long)MaxClockSkew.TotalMilliseconds)
        {
            return NonceStatus.Invalid;
        }

        expires = DateTimeOffset.FromUnixTimeMilliseconds(issued + _lifetimeMs);
        return now - issued > _lifetimeMs ? NonceStatus.Stale : NonceStatus.Valid;
    }

    /// <summary>The first <see cref="MacLength"/> bytes of HMAC-SHA256(secret, time || realm).</summary>
    private void Mac(ReadOnlySpan<byte> time, ReadOnlySpan<byte> realm, Span<byte> mac)
    {
        var length = TimeLength + realm.Length;
        byte[]? rented = null;
        var input = length <= 256 ? stackalloc byte[256] : (rented = ArrayPool<byte>.Shared.Rent(length));
        try
        {
            time.CopyTo(input);
            realm.CopyTo(input[TimeLength..]);
            Span<byte> full = stackalloc byte[HMACSHA256.HashSizeInBytes];
            HMACSHA256.HashData(_secret, input[..length], full);
            full[..MacLength].CopyTo(mac);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    private static bool IsBase64Url(ReadOnlySpan<byte> text)
    {
        foreach (var b in text)
        {
            if (!(char.IsAsciiLetterOrDigit((char)b) || b is (byte)'-' or (byte)'_'))
            {
                return false;
            }
        }

        return true;
    }
}
