using System.Globalization;
using CallState.SipEdge.Admission;

namespace CallState.SipEdge.Trust;

/// <summary>
/// Whom the edge believes about who is calling (section <c>CallState:Trust</c>, docs/security.md "Who may call as
/// whom"): trunks by source address (<c>CallState:Admission:Trunks</c>), trusted peers (a PBX or SBC whose asserted identity
/// is believed), and everyone else, who must authenticate with SIP digest against <see cref="Credentials"/> and
/// <see cref="CredentialsFile"/>. Without <see cref="Digest"/>, calls from anyone else are refused with 403.
/// </summary>
public sealed class TrustOptions
{
    public const string SectionName = "CallState:Trust";

    /// <summary>PBXs and SBCs by id: their source addresses, and whether their P-Asserted-Identity is believed.</summary>
    public Dictionary<string, TrustedPeerOptions> Peers { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Digest authentication of everyone else; absent: they are refused.</summary>
    public DigestOptions? Digest { get; set; }

    /// <summary>
    /// Optional CSV of credentials, <c>name,ha1_md5,ha1_sha256</c>: per user, the hex HA1 of each algorithm for
    /// <see cref="DigestOptions.Realm"/> (<c>MD5(name:realm:password)</c>, <c>SHA-256(name:realm:password)</c>); either may be
    /// empty. Never plain passwords. Relative to the working directory.
    /// </summary>
    public string? CredentialsFile { get; set; }

    /// <summary>Credentials by user name, as in <see cref="CredentialsFile"/> (a user in both keeps this entry).</summary>
    public Dictionary<string, DigestCredentialOptions> Credentials { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Every configuration error, each naming its field; reads <see cref="CredentialsFile"/> to check it.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        const string p = SectionName + ":";
        foreach (var (id, peer) in Peers)
        {
            var path = $"{p}{nameof(Peers)}:{id}";
            if (peer is null || peer.Sources.Count == 0)
            {
                errors.Add($"{path}:{nameof(TrustedPeerOptions.Sources)}: at least one address or network (10.0.0.5, 10.0.0.0/24)");
                continue;
            }
            for (var i = 0; i < peer.Sources.Count; i++)
            {
                if (!AddressText.TryParseNetwork(peer.Sources[i], out _, out var error))
                {
                    errors.Add($"{path}:{nameof(TrustedPeerOptions.Sources)}:{i}: {error}");
                }
            }
        }
        if (Digest is not null)
        {
            errors.AddRange(Digest.Validate());
        }
        foreach (var (name, credential) in Credentials)
        {
            CheckHa1(errors, $"{p}{nameof(Credentials)}:{name}:{nameof(DigestCredentialOptions.Md5)}", credential?.Md5, 32);
            CheckHa1(errors, $"{p}{nameof(Credentials)}:{name}:{nameof(DigestCredentialOptions.Sha256)}", credential?.Sha256, 64);
        }
        if (!string.IsNullOrWhiteSpace(CredentialsFile))
        {
            ReadCredentialsFile(CredentialsFile, errors);
        }
        if (Digest is null && (Credentials.Count > 0 || !string.IsNullOrWhiteSpace(CredentialsFile)))
        {
            errors.Add($"{p}{nameof(Digest)}: credentials are configured but digest authentication is not (set {DigestOptions.SectionName}:Realm and its secret)");
        }
        return errors;
    }

    /// <summary>Every user's credentials: <see cref="Credentials"/>, then the file's users not listed there.</summary>
    public Dictionary<string, DigestCredentialOptions> AllCredentials()
    {
        var all = new Dictionary<string, DigestCredentialOptions>(Credentials, StringComparer.Ordinal);
        if (!string.IsNullOrWhiteSpace(CredentialsFile))
        {
            foreach (var (name, credential) in ReadCredentialsFile(CredentialsFile, errors: null))
            {
                all.TryAdd(name, credential);
            }
        }
        return all;
    }

    private static void CheckHa1(List<string> errors, string path, string? value, int length)
    {
        if (!string.IsNullOrEmpty(value) && (value.Length != length || !value.All(char.IsAsciiHexDigit)))
        {
            errors.Add($"{path}: must be {length} hex digits (the HA1, never the password)");
        }
    }

    private static Dictionary<string, DigestCredentialOptions> ReadCredentialsFile(string path, List<string>? errors)
    {
        var users = new Dictionary<string, DigestCredentialOptions>(StringComparer.Ordinal);
        try
        {
            var number = 0;
            foreach (var raw in File.ReadLines(path))
            {
                number++;
                var line = raw.Trim();
                if (line.Length == 0 || line[0] == '#' || (users.Count == 0 && line.StartsWith("name,", StringComparison.OrdinalIgnoreCase)))
                {
                    continue;
                }
                var fields = line.Split(',');
                var where = string.Create(CultureInfo.InvariantCulture, $"{path}:{number}");
                if (fields.Length != 3 || fields[0].Trim().Length == 0)
                {
                    errors?.Add($"{where}: expected name,ha1_md5,ha1_sha256");
                    continue;
                }
                var credential = new DigestCredentialOptions { Md5 = Empty(fields[1]), Sha256 = Empty(fields[2]) };
                if (errors is not null)
                {
                    CheckHa1(errors, $"{where}: ha1_md5", credential.Md5, 32);
                    CheckHa1(errors, $"{where}: ha1_sha256", credential.Sha256, 64);
                }
                if (!users.TryAdd(fields[0].Trim(), credential))
                {
                    errors?.Add($"{where}: user '{fields[0].Trim()}' is listed twice");
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            errors?.Add($"{SectionName}:{nameof(CredentialsFile)}: '{path}' cannot be read ({ex.GetType().Name})");
        }
        return users;

        static string? Empty(string field) => field.Trim() is { Length: > 0 } value ? value : null;
    }
}

/// <summary>A PBX or SBC whose callers are believed (no digest challenge).</summary>
public sealed class TrustedPeerOptions
{
    /// <summary>Its source addresses or networks.</summary>
    public List<string> Sources { get; set; } = [];

    /// <summary>Take the caller from its P-Asserted-Identity (RFC 3325) when present, else from From.</summary>
    public bool AssertedIdentity { get; set; } = true;
}

/// <summary>A user's digest credentials: the hex HA1 for the realm, per algorithm.</summary>
public sealed class DigestCredentialOptions
{
    public string? Md5 { get; set; }

    public string? Sha256 { get; set; }
}
