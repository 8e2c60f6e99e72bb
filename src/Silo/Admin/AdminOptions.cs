using System.Net;

namespace CallState.Silo.Admin;

/// <summary>What a token may do: read (listings, snapshots, the audit) or also write (limits, ending calls).</summary>
public enum AdminRole
{
    Read,
    Write,
}

/// <summary>One admin API token as configured: the secret and its role; the entry's name says who it is (audit).</summary>
public sealed class AdminTokenOptions
{
    public string? Token { get; set; }

    public AdminRole Role { get; set; } = AdminRole.Read;
}

/// <summary>
/// The admin API's access (section <c>CallState:Admin</c>): tokens from configuration or a secret file, and the separate
/// unauthenticated port of the health probes. The API itself listens on <c>Urls</c> (loopback in the shipped settings).
/// See docs/operations.md, "Admin API".
/// </summary>
public sealed class AdminOptions
{
    public const string SectionName = "CallState:Admin";

    /// <summary>Shortest token accepted: 16 characters leave guessing out of reach over HTTP.</summary>
    public const int MinTokenLength = 16;

    /// <summary>Tokens by name; the name is the "who" of the audit trail.</summary>
    public Dictionary<string, AdminTokenOptions> Tokens { get; set; } = new(StringComparer.Ordinal);

    /// <summary>
    /// A file of more tokens (a mounted secret), one per line: <c>name role token</c> (role <c>read</c> or <c>write</c>);
    /// blank lines and lines starting with <c>#</c> are skipped.
    /// </summary>
    public string? TokensFile { get; set; }

    /// <summary>Address of the health probes' listener (<c>/health/live</c>, <c>/health/ready</c>), without authentication.</summary>
    public string HealthAddress { get; set; } = "127.0.0.1";

    /// <summary>Port of the health probes' listener; never the admin API's.</summary>
    public int HealthPort { get; set; }

    /// <summary>Reads the section from <paramref name="configuration"/> (defaults when absent).</summary>
    public static AdminOptions From(IConfiguration configuration) =>
        configuration.GetSection(SectionName).Get<AdminOptions>() ?? new AdminOptions();

    /// <summary>
    /// Every configured and file token, checked: each error names its field (or file and line) and never the secret.
    /// </summary>
    public IReadOnlyList<AdminCredential> LoadCredentials(out IReadOnlyList<string> errors)
    {
        var list = new List<string>();
        var credentials = new List<AdminCredential>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Add(string name, string? token, AdminRole role, string where)
        {
            if (string.IsNullOrWhiteSpace(token))
            {
                list.Add($"{where}:Token is empty");
            }
            else if (token.Length < MinTokenLength)
            {
                list.Add($"{where}:Token is shorter than {MinTokenLength} characters");
            }
            else if (!names.Add(name))
            {
                list.Add($"{where}: the token name '{name}' is used twice");
            }
            else
            {
                credentials.Add(new AdminCredential(name, role, AdminCredential.Hash(token)));
            }
        }

        foreach (var (name, token) in Tokens)
        {
            Add(name, token?.Token, token?.Role ?? AdminRole.Read, $"{SectionName}:Tokens:{name}");
        }

        if (!string.IsNullOrWhiteSpace(TokensFile))
        {
            try
            {
                var number = 0;
                foreach (var raw in File.ReadLines(TokensFile))
                {
                    number++;
                    var line = raw.Trim();
                    if (line.Length == 0 || line[0] == '#')
                    {
                        continue;
                    }

                    var where = $"{SectionName}:TokensFile {TokensFile}:{number}";
                    var fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                    if (fields.Length != 3 || !Enum.TryParse<AdminRole>(fields[1], ignoreCase: true, out var role))
                    {
                        list.Add($"{where}: expected 'name role token' with role read or write");
                        continue;
                    }

                    Add(fields[0], fields[2], role, where);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                list.Add($"{SectionName}:TokensFile {TokensFile} cannot be read: {ex.Message}");
            }
        }

        errors = list;
        return credentials;
    }

    /// <summary>Configuration errors, each naming its field; <paramref name="adminPorts"/> are the API's own ports.</summary>
    public IEnumerable<string> Validate(IReadOnlyCollection<int> adminPorts)
    {
        ArgumentNullException.ThrowIfNull(adminPorts);
        if (HealthPort is < 1 or > 65535)
        {
            yield return $"{SectionName}:HealthPort must be a port from 1 to 65535 (was {HealthPort}); the health probes have a listener of their own.";
        }
        else if (adminPorts.Contains(HealthPort))
        {
            yield return $"{SectionName}:HealthPort ({HealthPort}) must differ from the admin API's port (Urls): the probes are not authenticated.";
        }

        if (!IPAddress.TryParse(HealthAddress, out _))
        {
            yield return $"{SectionName}:HealthAddress must be an IP address (was '{HealthAddress}').";
        }

        _ = LoadCredentials(out var errors);
        foreach (var error in errors)
        {
            yield return error;
        }
    }
}

/// <summary>A token as kept in memory: only its SHA-256, so neither a dump nor a log line carries the secret.</summary>
public sealed record AdminCredential(string Name, AdminRole Role, byte[] TokenHash)
{
    public static byte[] Hash(string token) => System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(token));
}
