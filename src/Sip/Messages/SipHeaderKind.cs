using System.Text;

namespace CallState.Sip.Messages;

/// <summary>The header fields the parser and the proxy look into; every other field is <see cref="Unknown"/> and kept verbatim.</summary>
public enum SipHeaderKind : byte
{
    Unknown = 0,
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Route,
    RecordRoute,
    Contact,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Expires,
    Reason,
    RetryAfter,
    SessionExpires,
    Subject,
    ContentEncoding,
    Event,
    AllowEvents,
    ReferTo,
    Identity,
}

/// <summary>Header names, long and compact (RFC 3261 7.3.3 and 20), matched as bytes without regard to case.</summary>
public static class SipHeaderNames
{
    /// <summary>Number of <see cref="SipHeaderKind"/> values, for per-kind arrays.</summary>
    public const int KindCount = (int)SipHeaderKind.Identity + 1;

    /// <summary>Classifies a header name (long or compact form, any case).</summary>
    public static SipHeaderKind Lookup(ReadOnlySpan<byte> name)
    {
        if (name.Length == 1)
        {
            return (name[0] | 0x20) switch
            {
                'v' => SipHeaderKind.Via,
                'f' => SipHeaderKind.From,
                't' => SipHeaderKind.To,
                'i' => SipHeaderKind.CallId,
                'l' => SipHeaderKind.ContentLength,
                'c' => SipHeaderKind.ContentType,
                'm' => SipHeaderKind.Contact,
                'k' => SipHeaderKind.Supported,
                's' => SipHeaderKind.Subject,
                'e' => SipHeaderKind.ContentEncoding,
                'o' => SipHeaderKind.Event,
                'u' => SipHeaderKind.AllowEvents,
                'r' => SipHeaderKind.ReferTo,
                'x' => SipHeaderKind.SessionExpires,
                'y' => SipHeaderKind.Identity,
                _ => SipHeaderKind.Unknown,
            };
        }
        return name.Length switch
        {
            2 when Ascii.EqualsIgnoreCase(name, "To"u8) => SipHeaderKind.To,
            3 when Ascii.EqualsIgnoreCase(name, "Via"u8) => SipHeaderKind.Via,
            4 when Ascii.EqualsIgnoreCase(name, "From"u8) => SipHeaderKind.From,
            4 when Ascii.EqualsIgnoreCase(name, "CSeq"u8) => SipHeaderKind.CSeq,
            5 when Ascii.EqualsIgnoreCase(name, "Route"u8) => SipHeaderKind.Route,
            5 when Ascii.EqualsIgnoreCase(name, "Event"u8) => SipHeaderKind.Event,
            6 when Ascii.EqualsIgnoreCase(name, "Reason"u8) => SipHeaderKind.Reason,
            7 when Ascii.EqualsIgnoreCase(name, "Call-ID"u8) => SipHeaderKind.CallId,
            7 when Ascii.EqualsIgnoreCase(name, "Contact"u8) => SipHeaderKind.Contact,
            7 when Ascii.EqualsIgnoreCase(name, "Require"u8) => SipHeaderKind.Require,
            7 when Ascii.EqualsIgnoreCase(name, "Expires"u8) => SipHeaderKind.Expires,
            7 when Ascii.EqualsIgnoreCase(name, "Subject"u8) => SipHeaderKind.Subject,
            8 when Ascii.EqualsIgnoreCase(name, "Refer-To"u8) => SipHeaderKind.ReferTo,
            8 when Ascii.EqualsIgnoreCase(name, "Identity"u8) => SipHeaderKind.Identity,
            9 when Ascii.EqualsIgnoreCase(name, "Supported"u8) => SipHeaderKind.Supported,
            11 when Ascii.EqualsIgnoreCase(name, "Retry-After"u8) => SipHeaderKind.RetryAfter,
            11 when Ascii.EqualsIgnoreCase(name, "Unsupported"u8) => SipHeaderKind.Unsupported,
            12 when Ascii.EqualsIgnoreCase(name, "Max-Forwards"u8) => SipHeaderKind.MaxForwards,
            12 when Ascii.EqualsIgnoreCase(name, "Record-Route"u8) => SipHeaderKind.RecordRoute,
            12 when Ascii.EqualsIgnoreCase(name, "Content-Type"u8) => SipHeaderKind.ContentType,
            12 when Ascii.EqualsIgnoreCase(name, "Allow-Events"u8) => SipHeaderKind.AllowEvents,
            13 when Ascii.EqualsIgnoreCase(name, "Proxy-Require"u8) => SipHeaderKind.ProxyRequire,
            14 when Ascii.EqualsIgnoreCase(name, "Content-Length"u8) => SipHeaderKind.ContentLength,
            15 when Ascii.EqualsIgnoreCase(name, "Session-Expires"u8) => SipHeaderKind.SessionExpires,
            16 when Ascii.EqualsIgnoreCase(name, "Content-Encoding"u8) => SipHeaderKind.ContentEncoding,
            _ => SipHeaderKind.Unknown,
        };
    }

    /// <summary>The canonical long name of a known header (empty for <see cref="SipHeaderKind.Unknown"/>).</summary>
    public static ReadOnlySpan<byte> Canonical(SipHeaderKind kind) => kind switch
    {
        SipHeaderKind.Via => "Via"u8,
        SipHeaderKind.From => "From"u8,
        SipHeaderKind.To => "To"u8,
        SipHeaderKind.CallId => "Call-ID"u8,
        SipHeaderKind.CSeq => "CSeq"u8,
        SipHeaderKind.MaxForwards => "Max-Forwards"u8,
        SipHeaderKind.ContentLength => "Content-Length"u8,
        SipHeaderKind.ContentType => "Content-Type"u8,
        SipHeaderKind.Route => "Route"u8,
        SipHeaderKind.RecordRoute => "Record-Route"u8,
        SipHeaderKind.Contact => "Contact"u8,
        SipHeaderKind.Require => "Require"u8,
        SipHeaderKind.ProxyRequire => "Proxy-Require"u8,
        SipHeaderKind.Supported => "Supported"u8,
        SipHeaderKind.Unsupported => "Unsupported"u8,
        SipHeaderKind.Expires => "Expires"u8,
        SipHeaderKind.Reason => "Reason"u8,
        SipHeaderKind.RetryAfter => "Retry-After"u8,
        SipHeaderKind.SessionExpires => "Session-Expires"u8,
        SipHeaderKind.Subject => "Subject"u8,
        SipHeaderKind.ContentEncoding => "Content-Encoding"u8,
        SipHeaderKind.Event => "Event"u8,
        SipHeaderKind.AllowEvents => "Allow-Events"u8,
        SipHeaderKind.ReferTo => "Refer-To"u8,
        SipHeaderKind.Identity => "Identity"u8,
        _ => default,
    };

    /// <summary>
    /// Headers that may appear at most once (RFC 3261 20; RFC 4475 3.3.8 and 3.3.9): a second one makes the message
    /// ambiguous, so it is refused.
    /// </summary>
    public static bool IsSingleValued(SipHeaderKind kind) => kind is SipHeaderKind.From or SipHeaderKind.To
        or SipHeaderKind.CallId or SipHeaderKind.CSeq or SipHeaderKind.MaxForwards or SipHeaderKind.ContentLength;

    /// <summary>Headers whose value is a comma-separated list of entries the proxy walks one by one.</summary>
    public static bool IsList(SipHeaderKind kind) => kind is SipHeaderKind.Via or SipHeaderKind.Route
        or SipHeaderKind.RecordRoute or SipHeaderKind.Contact or SipHeaderKind.Require or SipHeaderKind.ProxyRequire
        or SipHeaderKind.Supported or SipHeaderKind.Unsupported;
}
