namespace CallState.Sip.Proxy;

/// <summary>What was running when a handler exception was caught.</summary>
public enum SipHandlerErrorKind
{
    /// <summary>Parsing or proxying one received message.</summary>
    Message,

    /// <summary>A transaction timer's callback.</summary>
    Timer,
}

/// <summary>
/// An exception the SIP stack caught so that one message or one timer cannot stop the others: counted in
/// <c>callstate.sip.handler.errors</c> and handed to the host to log. Nothing of it is ever sent to a peer.
/// </summary>
/// <param name="Kind">What was running.</param>
/// <param name="Exception">What it threw.</param>
/// <param name="Peer">The message's source, or the timed transaction's peer; null when unknown.</param>
/// <param name="Detail">The first line of the message (cut at <see cref="MaxDetailLength"/> bytes), or the timer's name.</param>
public readonly record struct SipHandlerError(SipHandlerErrorKind Kind, Exception Exception, SipTarget? Peer = null, string? Detail = null)
{
    /// <summary>The most of a message's first line kept: enough for a method and Request-URI, never a whole message in a log.</summary>
    public const int MaxDetailLength = 160;

    /// <summary>The first line of <paramref name="message"/>, with control and non-ASCII bytes shown as '?' so a log line stays one line.</summary>
    public static string FirstLineOf(ReadOnlySpan<byte> message)
    {
        var end = message.IndexOfAny((byte)'\r', (byte)'\n');
        var line = end < 0 ? message : message[..end];
        if (line.Length > MaxDetailLength)
        {
            line = line[..MaxDetailLength];
        }
        Span<char> chars = stackalloc char[line.Length];
        for (var i = 0; i < line.Length; i++)
        {
            var b = line[i];
            chars[i] = b is >= 0x20 and < 0x7f ? (char)b : '?';
        }
        return new string(chars);
    }
}
