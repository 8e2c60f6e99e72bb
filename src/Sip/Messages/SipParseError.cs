namespace CallState.Sip.Messages;

/// <summary>Why a message was refused. Each has a reason phrase for the 400 (or 505) a request gets.</summary>
public enum SipParseError : byte
{
    None = 0,
    Empty,
    MessageTooLarge,
    BadStartLine,
    BadRequestUri,
    UnsupportedVersion,
    BadStatusCode,
    BadHeaderLine,
    TooManyHeaders,
    HeaderTooLong,
    MissingHeaderTerminator,
    DuplicateHeader,
    MissingRequiredHeader,
    BadVia,
    TooManyVias,
    BadFrom,
    BadTo,
    BadCallId,
    BadCSeq,
    CSeqMethodMismatch,
    BadMaxForwards,
    BadContentLength,
    ContentLengthExceedsMessage,
}

/// <summary>Status codes and reason phrases for parse errors.</summary>
public static class SipParseErrors
{
    /// <summary>The status a request with this error is answered with: 505 for a version, 400 otherwise.</summary>
    public static int StatusCode(SipParseError error) => error == SipParseError.UnsupportedVersion ? 505 : 400;

    /// <summary>The reason phrase of the answer, naming what was wrong.</summary>
    public static ReadOnlySpan<byte> ReasonPhrase(SipParseError error) => error switch
    {
        SipParseError.Empty => "Bad Request (empty message)"u8,
        SipParseError.MessageTooLarge => "Bad Request (message too large)"u8,
        SipParseError.BadStartLine => "Bad Request (malformed Request-Line)"u8,
        SipParseError.BadRequestUri => "Bad Request (malformed Request-URI)"u8,
        SipParseError.UnsupportedVersion => "Version Not Supported"u8,
        SipParseError.BadStatusCode => "Bad Request (malformed Status-Line)"u8,
        SipParseError.BadHeaderLine => "Bad Request (malformed header field)"u8,
        SipParseError.TooManyHeaders => "Bad Request (too many header fields)"u8,
        SipParseError.HeaderTooLong => "Bad Request (header field too long)"u8,
        SipParseError.MissingHeaderTerminator => "Bad Request (no empty line after the header fields)"u8,
        SipParseError.DuplicateHeader => "Bad Request (header field that may appear once appears twice)"u8,
        SipParseError.MissingRequiredHeader => "Bad Request (missing To, From, Call-ID, CSeq or Via)"u8,
        SipParseError.BadVia => "Bad Request (malformed Via)"u8,
        SipParseError.TooManyVias => "Bad Request (too many Via values)"u8,
        SipParseError.BadFrom => "Bad Request (malformed From)"u8,
        SipParseError.BadTo => "Bad Request (malformed To)"u8,
        SipParseError.BadCallId => "Bad Request (malformed Call-ID)"u8,
        SipParseError.BadCSeq => "Bad Request (malformed CSeq)"u8,
        SipParseError.CSeqMethodMismatch => "Bad Request (CSeq method does not match the Request-Line)"u8,
        SipParseError.BadMaxForwards => "Bad Request (malformed Max-Forwards)"u8,
        SipParseError.BadContentLength => "Bad Request (malformed Content-Length)"u8,
        SipParseError.ContentLengthExceedsMessage => "Bad Request (Content-Length larger than the message)"u8,
        _ => "Bad Request"u8,
    };
}

/// <summary>
/// The parser's named limits: each bounds what one message can make the proxy store or scan.
/// </summary>
public static class SipLimits
{
    /// <summary>64 KiB, the largest UDP payload rounded: a bigger message is not one a proxy should carry.</summary>
    public const int MaxMessageSize = 64 * 1024;

    /// <summary>Header fields (lines) per message; bounds the field table a message fills.</summary>
    public const int MaxHeaderFields = 256;

    /// <summary>Via values per message: a longer path is a loop or an attack, and each value is parsed.</summary>
    public const int MaxViaValues = 70;

    /// <summary>Bytes of one header field including folded continuation lines.</summary>
    public const int MaxHeaderFieldLength = 16 * 1024;

    /// <summary>Largest CSeq number (RFC 3261 8.1.1.5: less than 2**31).</summary>
    public const long MaxCSeq = int.MaxValue;
}
