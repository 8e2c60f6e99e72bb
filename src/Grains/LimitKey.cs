using System.Diagnostics.CodeAnalysis;

namespace CallState.Grains;

/// <summary>Direction of a call as seen by the limit it is counted against.</summary>
[GenerateSerializer]
public enum Direction : byte
{
    Inbound = 1,
    Outbound = 2,
}

/// <summary>What a limit applies to: a local user, a SIP trunk, or a per-call <c>cac</c> key.</summary>
[GenerateSerializer]
public enum LimitKind : byte
{
    User = 1,
    Trunk = 2,
    Key = 3,

    /// <summary>A tenant's pool, shared by all its users and trunks (docs/policies.md, "Tenants").</summary>
    Tenant = 4,
}

/// <summary>
/// A limit grain's key: <c>user/&lt;name&gt;</c> (<c>user/alice@a.com</c> for a tenant's user), <c>trunk/&lt;id&gt;</c>,
/// <c>key/&lt;value&gt;</c> or <c>tenant/&lt;name&gt;</c>.
/// Ordinal ordering of <see cref="ToString"/> is the fixed order in which a call reserves its limits.
/// </summary>
public readonly record struct LimitKey(LimitKind Kind, string Value)
{
    /// <summary>Longest accepted key value; keys come from SIP user parts and addresses.</summary>
    public const int MaxValueLength = 256;

    public static LimitKey User(string name) => new(LimitKind.User, name);

    public static LimitKey Trunk(string id) => new(LimitKind.Trunk, id);

    public static LimitKey PerKey(string value) => new(LimitKind.Key, value);

    public static LimitKey Tenant(string name) => new(LimitKind.Tenant, name);

    public static string Prefix(LimitKind kind) => kind switch
    {
        LimitKind.User => "user",
        LimitKind.Trunk => "trunk",
        LimitKind.Key => "key",
        LimitKind.Tenant => "tenant",
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    public override string ToString() => Prefix(Kind) + "/" + Value;

    /// <summary>Parses a key already validated (for example read back from a call's record).</summary>
    public static LimitKey Parse(string text) =>
        TryParse(text, out var key, out var error) ? key : throw new FormatException(error);

    /// <summary>Parses <c>prefix/value</c>; an unknown prefix or an empty value is an error, not an exception.</summary>
    public static bool TryParse(string? text, out LimitKey key, [NotNullWhen(false)] out string? error)
    {
        key = default;
        if (string.IsNullOrEmpty(text))
        {
            error = "limit key is empty";
            return false;
        }

        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0)
        {
            error = $"limit key '{text}' has no prefix (expected user/, trunk/, key/ or tenant/)";
            return false;
        }

        var prefix = text.AsSpan(0, slash);
        LimitKind kind;
        if (prefix.SequenceEqual("user"))
        {
            kind = LimitKind.User;
        }
        else if (prefix.SequenceEqual("trunk"))
        {
            kind = LimitKind.Trunk;
        }
        else if (prefix.SequenceEqual("key"))
        {
            kind = LimitKind.Key;
        }
        else if (prefix.SequenceEqual("tenant"))
        {
            kind = LimitKind.Tenant;
        }
        else
        {
            error = $"unknown limit key prefix '{prefix}' in '{text}' (expected user/, trunk/, key/ or tenant/)";
            return false;
        }

        var value = text[(slash + 1)..];
        if (value.Length == 0)
        {
            error = $"limit key '{text}' has an empty value";
            return false;
        }

        if (value.Length > MaxValueLength)
        {
            error = $"limit key value is longer than {MaxValueLength} characters";
            return false;
        }

        key = new LimitKey(kind, value);
        error = null;
        return true;
    }
}
