using System.Buffers;

namespace CallState.Sip.Messages;

/// <summary>
/// Frames SIP messages on a stream (RFC 3261 18.3): the header ends at the first empty line and Content-Length gives
/// the body. CR LF keep-alives between messages (RFC 5626 4.4.1) are consumed. Matches the
/// <see cref="Transport.SipFramer"/> delegate.
/// </summary>
public static class SipStreamFramer
{
    private static ReadOnlySpan<byte> HeaderEnd => "\r\n\r\n"u8;

    public static OperationStatus Frame(
        in ReadOnlySequence<byte> buffer,
        out SequencePosition consumed,
        out SequencePosition examined,
        out ReadOnlySequence<byte> message)
    {
        message = default;
        var reader = new SequenceReader<byte>(buffer);
        while (reader.IsNext("\r\n"u8, advancePast: true))
        {
        }
        var start = reader.Position;
        consumed = start;
        if (reader.End)
        {
            examined = buffer.End;
            return OperationStatus.NeedMoreData;
        }
        if (!reader.TryReadTo(out ReadOnlySequence<byte> head, HeaderEnd, advancePastDelimiter: true))
        {
            // Next time the search resumes near here; the last three bytes may begin the delimiter.
            examined = buffer.End;
            return OperationStatus.NeedMoreData;
        }
        if (!TryFindContentLength(head, out var contentLength))
        {
            examined = buffer.End;
            return OperationStatus.InvalidData;
        }
        if (reader.Remaining < contentLength)
        {
            examined = buffer.End;
            return OperationStatus.NeedMoreData;
        }
        reader.Advance(contentLength);
        message = buffer.Slice(start, reader.Position);
        consumed = reader.Position;
        examined = reader.Position;
        return OperationStatus.Done;
    }

    /// <summary>
    /// Reads Content-Length (or <c>l</c>) from the header lines, folded or not; absent means 0. A negative,
    /// non-numeric, overlarge or repeated value cannot be framed.
    /// </summary>
    private static bool TryFindContentLength(in ReadOnlySequence<byte> head, out long contentLength)
    {
        if (head.IsSingleSegment)
        {
            return TryFindContentLength(head.FirstSpan, out contentLength);
        }
        var length = (int)head.Length;
        var rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            head.CopyTo(rented);
            return TryFindContentLength(rented.AsSpan(0, length), out contentLength);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static bool TryFindContentLength(ReadOnlySpan<byte> head, out long contentLength)
    {
        contentLength = 0;
        var found = false;
        var p = 0;
        while (p < head.Length)
        {
            // A field ends at a CR LF not followed by SP or HT (RFC 3261 7.3.1 folding).
            var end = p;
            while (true)
            {
                var crlf = head[end..].IndexOf("\r\n"u8);
                if (crlf < 0)
                {
                    end = head.Length;
                    break;
                }
                end += crlf;
                if (end + 2 < head.Length && head[end + 2] is (byte)' ' or (byte)'\t')
                {
                    end += 2;
                    continue;
                }
                break;
            }
            var field = head[p..end];
            p = end + 2;
            var colon = field.IndexOf((byte)':');
            if (colon <= 0 || SipHeaderNames.Lookup(field[..colon].TrimEnd(" \t"u8)) != SipHeaderKind.ContentLength)
            {
                continue;
            }
            if (found)
            {
                return false;
            }
            found = true;
            var value = field[(colon + 1)..].Trim(" \t\r\n"u8);
            if (!SipSyntax.TryParseNumber(value, SipLimits.MaxMessageSize, out contentLength))
            {
                return false;
            }
        }
        return true;
    }
}
