using System.Globalization;
using System.Net;
using System.Net.Sockets;
using CallState.Grains;

namespace CallState.SipEdge.Admission;

/// <summary>Parsing and normalisation of the host names, addresses and networks in the admission configuration.</summary>
internal static class AddressText
{
    /// <summary>
    /// Parses an IPv4 or IPv6 address strictly: IPv4 only in dotted-quad form (<see cref="IPAddress.TryParse(string?, out IPAddress?)"/>
    /// also takes <c>10.1</c> or <c>0x7f.1</c>), IPv6 with or without brackets.
    /// </summary>
    public static bool TryParseAddress(ReadOnlySpan<char> text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IPAddress? address)
    {
        address = null;
        if (text.Length > 2 && text[0] == '[' && text[^1] == ']')
        {
            text = text[1..^1];
            return text.Contains(':') && IPAddress.TryParse(text, out address) && address.AddressFamily == AddressFamily.InterNetworkV6;
        }

        if (text.Contains(':'))
        {
            return IPAddress.TryParse(text, out address) && address.AddressFamily == AddressFamily.InterNetworkV6;
        }

        var dots = 0;
        foreach (var c in text)
        {
            if (c == '.')
            {
                dots++;
            }
            else if (!char.IsAsciiDigit(c))
            {
                return false;
            }
        }

        return dots == 3 && IPAddress.TryParse(text, out address) && address.AddressFamily == AddressFamily.InterNetwork;
    }

    /// <summary>Parses <c>192.0.2.7</c>, <c>192.0.2.0/24</c>, <c>2001:db8::1</c> or <c>2001:db8::/32</c>.</summary>
    public static bool TryParseNetwork(string? text, out IPNetwork network, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error)
    {
        network = default;
        var span = (text ?? "").AsSpan().Trim();
        var slash = span.IndexOf('/');
        var addressText = slash < 0 ? span : span[..slash];
        if (!TryParseAddress(addressText, out var address))
        {
            error = $"'{text}' is not an IP address or CIDR";
            return false;
        }

        address = Canonical(address);
        var bits = address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        var length = bits;
        if (slash >= 0 && (!int.TryParse(span[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out length) || length > bits))
        {
            error = $"'{text}' is not an IP address or CIDR (the prefix length must be 0-{bits})";
            return false;
        }

        var masked = Mask(address, length);
        if (!masked.Equals(address))
        {
            error = $"'{text}' has address bits set past the /{length} prefix (did you mean {masked}/{length}?)";
            return false;
        }

        network = new IPNetwork(masked, length);
        error = null;
        return true;
    }

    /// <summary>An IPv4-mapped IPv6 address (from a dual-stack socket) as the IPv4 address it carries.</summary>
    public static IPAddress Canonical(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    /// <summary>
    /// The form a host is compared in: lower case, no trailing dot, an IP address in its canonical text (brackets
    /// removed). Null for an empty host.
    /// </summary>
    public static string? NormalizeHost(string? host)
    {
        var span = (host ?? "").AsSpan().Trim();
        if (span.EndsWith('.'))
        {
            span = span[..^1];
        }

        if (span.IsEmpty)
        {
            return null;
        }

        if (TryParseAddress(span, out var address))
        {
            return Canonical(address).ToString();
        }

        return span.ToString().ToLowerInvariant();
    }

    /// <summary>Why a configured local domain is not a host name or address; null when it is one.</summary>
    public static string? HostError(string? host)
    {
        var span = (host ?? "").AsSpan().Trim();
        if (span.IsEmpty)
        {
            return "empty host";
        }

        if (TryParseAddress(span, out _))
        {
            return null;
        }

        foreach (var c in span)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_'))
            {
                return $"'{host}' is not a host name or IP address (without port)";
            }
        }

        return null;
    }

    /// <summary>Why a text cannot be the value of a limit key (<c>trunk/&lt;id&gt;</c>); null when it can.</summary>
    public static string? LimitValueError(string value)
    {
        if (value.Length == 0)
        {
            return "is empty";
        }

        if (value.Length > LimitKey.MaxValueLength)
        {
            return $"is longer than {LimitKey.MaxValueLength} characters";
        }

        foreach (var c in value)
        {
            if (char.IsWhiteSpace(c) || char.IsControl(c) || c == '/')
            {
                return $"'{value}' contains white space, a control character or '/'";
            }
        }

        return null;
    }

    private static IPAddress Mask(IPAddress address, int length)
    {
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var written);
        bytes = bytes[..written];
        for (var i = 0; i < bytes.Length; i++)
        {
            var keep = Math.Clamp(length - (i * 8), 0, 8);
            bytes[i] &= (byte)(0xFF << (8 - keep));
        }

        return new IPAddress(bytes);
    }
}
