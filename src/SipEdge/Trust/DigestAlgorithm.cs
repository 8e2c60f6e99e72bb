using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using System.Text;

namespace CallState.SipEdge.Trust;

/// <summary>The digest algorithms the edge supports (RFC 7616 3.2); the <c>-sess</c> variants are refused.</summary>
public enum DigestAlgorithm
{
    /// <summary><c>MD5</c>: what most SIP phones still send (RFC 3261 22.4).</summary>
    Md5 = 1,

    /// <summary><c>SHA-256</c> (RFC 7616 3.2, RFC 8760).</summary>
    Sha256 = 2,
}

/// <summary>Names of <see cref="DigestAlgorithm"/> as written in the <c>algorithm</c> parameter.</summary>
public static class DigestAlgorithms
{
    /// <summary>The parameter value: <c>MD5</c> or <c>SHA-256</c>.</summary>
    public static ReadOnlySpan<byte> Name(DigestAlgorithm algorithm) => algorithm switch
    {
        DigestAlgorithm.Md5 => "MD5"u8,
        DigestAlgorithm.Sha256 => "SHA-256"u8,
        _ => throw new ArgumentOutOfRangeException(nameof(algorithm)),
    };

    /// <summary>Reads an <c>algorithm</c> value, any case (RFC 7616 3.4: case-insensitive); false for <c>-sess</c> and anything else.</summary>
    public static bool TryParse(ReadOnlySpan<byte> name, out DigestAlgorithm algorithm)
    {
        algorithm = Ascii.EqualsIgnoreCase(name, "MD5"u8) ? DigestAlgorithm.Md5
            : Ascii.EqualsIgnoreCase(name, "SHA-256"u8) ? DigestAlgorithm.Sha256
            : 0;
        return algorithm != 0;
    }

    /// <summary>As <see cref="TryParse(ReadOnlySpan{byte}, out DigestAlgorithm)"/>, for configuration text.</summary>
    public static bool TryParse(string? name, out DigestAlgorithm algorithm)
    {
        algorithm = 0;
        return name is not null && name.Length <= 16 && Ascii.IsValid(name)
            && TryParse(Encoding.ASCII.GetBytes(name.Trim()), out algorithm);
    }
}

/// <summary>
/// The digest computations of RFC 7616 3.4.1 with <c>qop=auth</c>: HA1 = H(user:realm:password),
/// HA2 = H(method:digest-uri), response = H(HA1:nonce:nc:cnonce:qop:HA2), each as lower-case hex.
/// </summary>
public static class DigestHash
{
    /// <summary>Inputs up to this size are assembled on the stack; larger ones in a pooled array.</summary>
    private const int StackInput = 512;

    /// <summary>Length of the lower-case hex of a digest: 32 for MD5, 64 for SHA-256.</summary>
    public static int HexLength(DigestAlgorithm algorithm) => algorithm switch
    {
        DigestAlgorithm.Md5 => 32,
        DigestAlgorithm.Sha256 => 64,
        _ => throw new ArgumentOutOfRangeException(nameof(algorithm)),
    };

    /// <summary>HA1 as lower-case hex, the value a credential store keeps instead of the password (for tooling and tests).</summary>
    public static string Ha1(DigestAlgorithm algorithm, string user, string realm, string password)
    {
        ArgumentNullException.ThrowIfNull(user);
        ArgumentNullException.ThrowIfNull(realm);
        ArgumentNullException.ThrowIfNull(password);
        var hex = new byte[HexLength(algorithm)];
        Ha1(algorithm, Encoding.UTF8.GetBytes(user), Encoding.UTF8.GetBytes(realm), Encoding.UTF8.GetBytes(password), hex);
        return Encoding.ASCII.GetString(hex);
    }

    /// <summary>Writes HA1 = H(user:realm:password) as lower-case hex into <paramref name="ha1Hex"/> (<see cref="HexLength"/> bytes).</summary>
    public static void Ha1(DigestAlgorithm algorithm, ReadOnlySpan<byte> user, ReadOnlySpan<byte> realm, ReadOnlySpan<byte> password, Span<byte> ha1Hex) =>
        HashJoined(algorithm, user, realm, password, default, default, default, 3, ha1Hex);

    /// <summary>The <c>response</c> of a <c>qop=auth</c> request as lower-case hex (for tooling and tests).</summary>
    public static string Response(DigestAlgorithm algorithm, string ha1Hex, string method, string uri, string nonce, string nonceCount, string cnonce)
    {
        var hex = new byte[HexLength(algorithm)];
        Response(algorithm, Encoding.ASCII.GetBytes(ha1Hex), Encoding.UTF8.GetBytes(method), Encoding.UTF8.GetBytes(uri),
            Encoding.UTF8.GetBytes(nonce), Encoding.ASCII.GetBytes(nonceCount), Encoding.UTF8.GetBytes(cnonce), hex);
        return Encoding.ASCII.GetString(hex);
    }

    /// <summary>
    /// Writes the <c>qop=auth</c> response H(HA1:nonce:nc:cnonce:auth:HA2) with HA2 = H(method:uri) as lower-case hex into
    /// <paramref name="responseHex"/> (<see cref="HexLength"/> bytes). The values are the parameters' values without quotes or escapes.
    /// </summary>
    public static void Response(DigestAlgorithm algorithm, ReadOnlySpan<byte> ha1Hex, ReadOnlySpan<byte> method, ReadOnlySpan<byte> uri,
        ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> nonceCount, ReadOnlySpan<byte> cnonce, Span<byte> responseHex) =>
        Response(algorithm, ha1Hex, method, uri, nonce, nonceCount, cnonce, "auth"u8, responseHex);

    /// <summary>As the public overload, with the <c>qop</c> value as the client wrote it (it is hashed as sent).</summary>
    internal static void Response(DigestAlgorithm algorithm, ReadOnlySpan<byte> ha1Hex, ReadOnlySpan<byte> method, ReadOnlySpan<byte> uri,
        ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> nonceCount, ReadOnlySpan<byte> cnonce, ReadOnlySpan<byte> qop, Span<byte> responseHex)
    {
        Span<byte> ha2 = stackalloc byte[64];
        ha2 = ha2[..HexLength(algorithm)];
        HashJoined(algorithm, method, uri, default, default, default, default, 2, ha2);
        HashJoined(algorithm, ha1Hex, nonce, nonceCount, cnonce, qop, ha2, 6, responseHex);
    }

    /// <summary>Hashes the first <paramref name="count"/> parts joined with <c>:</c> and writes the digest as lower-case hex.</summary>
    private static void HashJoined(DigestAlgorithm algorithm, ReadOnlySpan<byte> p0, ReadOnlySpan<byte> p1, ReadOnlySpan<byte> p2,
        ReadOnlySpan<byte> p3, ReadOnlySpan<byte> p4, ReadOnlySpan<byte> p5, int count, Span<byte> hex)
    {
        var hexLength = HexLength(algorithm);
        if (hex.Length < hexLength)
        {
            throw new ArgumentException($"needs {hexLength} bytes for the hex digest", nameof(hex));
        }

        var length = p0.Length + p1.Length + p2.Length + p3.Length + p4.Length + p5.Length + count - 1;
        byte[]? rented = null;
        var input = length <= StackInput ? stackalloc byte[StackInput] : (rented = ArrayPool<byte>.Shared.Rent(length));
        try
        {
            var n = 0;
            Append(input, ref n, p0);
            for (var i = 1; i < count; i++)
            {
                input[n++] = (byte)':';
                Append(input, ref n, i switch { 1 => p1, 2 => p2, 3 => p3, 4 => p4, _ => p5 });
            }

            Span<byte> digest = stackalloc byte[32];
            var written = Hash(algorithm, input[..n], digest);
            ToLowerHex(digest[..written], hex);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    private static void Append(Span<byte> destination, ref int n, ReadOnlySpan<byte> part)
    {
        part.CopyTo(destination[n..]);
        n += part.Length;
    }

    [SuppressMessage("Security", "CA5351:Do Not Use Broken Cryptographic Algorithms",
        Justification = "RFC 7616 3.2 keeps MD5 for backward compatibility, and most SIP phones offer nothing else; SHA-256 is offered first.")]
    private static int Hash(DigestAlgorithm algorithm, ReadOnlySpan<byte> input, Span<byte> digest) => algorithm switch
    {
        DigestAlgorithm.Md5 => MD5.HashData(input, digest),
        DigestAlgorithm.Sha256 => SHA256.HashData(input, digest),
        _ => throw new ArgumentOutOfRangeException(nameof(algorithm)),
    };

    /// <summary>Writes <paramref name="bytes"/> as lower-case hex (RFC 7616 3.4.1: LHEX).</summary>
    internal static void ToLowerHex(ReadOnlySpan<byte> bytes, Span<byte> hex)
    {
        ReadOnlySpan<byte> digits = "0123456789abcdef"u8;
        for (var i = 0; i < bytes.Length; i++)
        {
            hex[2 * i] = digits[bytes[i] >> 4];
            hex[(2 * i) + 1] = digits[bytes[i] & 0xF];
        }
    }
}
