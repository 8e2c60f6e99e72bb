namespace CallState.SipEdge.Trust;

/// <summary>
/// Digest authentication of callers (section <c>CallState:Trust:Digest</c>). The nonce secret is given inline
/// (<see cref="Secret"/>) or in a file (<see cref="SecretFile"/>), base64 either way; it never appears in an error message.
/// </summary>
public sealed class DigestOptions
{
    public const string SectionName = "CallState:Trust:Digest";

    /// <summary>Longest realm accepted: it is hashed into every nonce and written into every challenge.</summary>
    public const int MaxRealmLength = 256;

    private static readonly TimeSpan MaxNonceLifetime = TimeSpan.FromHours(1);

    /// <summary>The protection space (RFC 3261 22.1), the same on every edge; usually the service's domain name.</summary>
    public string? Realm { get; set; }

    /// <summary>How long a nonce is accepted; a request with an older one is answered with <c>stale=true</c>.</summary>
    public TimeSpan NonceLifetime { get; set; } = NonceService.DefaultLifetime;

    /// <summary>A file holding the nonce secret in base64 (for example a mounted Kubernetes Secret). Exclusive with <see cref="Secret"/>.</summary>
    public string? SecretFile { get; set; }

    /// <summary>The nonce secret in base64, at least <see cref="NonceService.MinSecretLength"/> bytes, the same on every edge.</summary>
    public string? Secret { get; set; }

    /// <summary>Failed verifications from one source within <see cref="FailureWindow"/> that block it.</summary>
    public int MaxFailures { get; set; } = AuthFailureLimiter.DefaultMaxFailures;

    public TimeSpan FailureWindow { get; set; } = AuthFailureLimiter.DefaultWindow;

    /// <summary>How long a source that reached <see cref="MaxFailures"/> is refused.</summary>
    public TimeSpan BlockTime { get; set; } = AuthFailureLimiter.DefaultBlockTime;

    /// <summary>Sources the failure limiter tracks at most.</summary>
    public int MaxTrackedSources { get; set; } = AuthFailureLimiter.DefaultMaxSources;

    /// <summary>Live nonces the replay cache remembers at most; past it, new nonces are answered with <c>stale=true</c>.</summary>
    public int MaxNonceEntries { get; set; } = NonceCountCache.DefaultMaxEntries;

    /// <summary><c>SHA-256</c> and/or <c>MD5</c>; empty means both. Challenges offer SHA-256 first whatever the order here.</summary>
    public List<string> Algorithms { get; set; } = [];

    /// <summary>The algorithms to offer and accept (call after <see cref="Validate"/> found no error).</summary>
    public IReadOnlyList<DigestAlgorithm> GetAlgorithms()
    {
        if (Algorithms.Count == 0)
        {
            return [DigestAlgorithm.Sha256, DigestAlgorithm.Md5];
        }

        var algorithms = new List<DigestAlgorithm>();
        foreach (var name in Algorithms)
        {
            if (DigestAlgorithms.TryParse(name, out var algorithm) && !algorithms.Contains(algorithm))
            {
                algorithms.Add(algorithm);
            }
        }

        return algorithms;
    }

    /// <summary>The nonce secret's bytes, from <see cref="Secret"/> or <see cref="SecretFile"/>.</summary>
    /// <exception cref="InvalidOperationException">The secret is missing, unreadable or too short (the message names the field).</exception>
    public byte[] ReadSecret() =>
        TryReadSecret(out var secret, out var error) ? secret : throw new InvalidOperationException(error);

    /// <summary>Every configuration error, each naming its field (<c>CallState:Trust:Digest:Realm: ...</c>); reads <see cref="SecretFile"/> to check it.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        const string p = SectionName + ":";

        if (string.IsNullOrWhiteSpace(Realm))
        {
            errors.Add($"{p}{nameof(Realm)}: required (the realm callers' credentials are for, for example the service's domain name)");
        }
        else if (Realm.Any(char.IsControl))
        {
            errors.Add($"{p}{nameof(Realm)}: must not contain control characters (they would break the challenge header)");
        }
        else if (Realm.Length > MaxRealmLength)
        {
            errors.Add($"{p}{nameof(Realm)}: at most {MaxRealmLength} characters (was {Realm.Length})");
        }

        if (NonceLifetime < TimeSpan.FromSeconds(1) || NonceLifetime > MaxNonceLifetime)
        {
            errors.Add($"{p}{nameof(NonceLifetime)}: must be between 00:00:01 and {MaxNonceLifetime} (was {NonceLifetime})");
        }

        if (!TryReadSecret(out _, out var secretError))
        {
            errors.Add(secretError);
        }

        if (MaxFailures < 1)
        {
            errors.Add($"{p}{nameof(MaxFailures)}: must be 1 or more (was {MaxFailures})");
        }

        if (FailureWindow <= TimeSpan.Zero)
        {
            errors.Add($"{p}{nameof(FailureWindow)}: must be positive (was {FailureWindow})");
        }

        if (BlockTime <= TimeSpan.Zero)
        {
            errors.Add($"{p}{nameof(BlockTime)}: must be positive (was {BlockTime})");
        }

        if (MaxTrackedSources < 1)
        {
            errors.Add($"{p}{nameof(MaxTrackedSources)}: must be 1 or more (was {MaxTrackedSources})");
        }

        if (MaxNonceEntries < 1)
        {
            errors.Add($"{p}{nameof(MaxNonceEntries)}: must be 1 or more (was {MaxNonceEntries})");
        }

        for (var i = 0; i < Algorithms.Count; i++)
        {
            if (!DigestAlgorithms.TryParse(Algorithms[i], out _))
            {
                errors.Add($"{p}{nameof(Algorithms)}:{i}: '{Algorithms[i]}' is not SHA-256 or MD5 (the -sess variants are not supported)");
            }
        }

        return errors;
    }

    private bool TryReadSecret(out byte[] secret, out string error)
    {
        secret = [];
        error = "";
        const string p = SectionName + ":";
        var hasInline = !string.IsNullOrWhiteSpace(Secret);
        var hasFile = !string.IsNullOrWhiteSpace(SecretFile);
        if (hasInline == hasFile)
        {
            error = $"{p}{nameof(Secret)}: set exactly one of {nameof(Secret)} and {nameof(SecretFile)} (base64 of at least {NonceService.MinSecretLength} random bytes, the same on every edge)";
            return false;
        }

        var field = p + (hasInline ? nameof(Secret) : nameof(SecretFile));
        string text;
        if (hasInline)
        {
            text = Secret!;
        }
        else
        {
            try
            {
                text = File.ReadAllText(SecretFile!);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                error = $"{field}: cannot read '{SecretFile}': {e.Message}";
                return false;
            }
        }

        try
        {
            secret = Convert.FromBase64String(text.Trim());
        }
        catch (FormatException)
        {
            error = $"{field}: not base64";
            return false;
        }

        if (secret.Length < NonceService.MinSecretLength)
        {
            error = $"{field}: must be at least {NonceService.MinSecretLength} bytes (was {secret.Length})";
            secret = [];
            return false;
        }

        return true;
    }
}
