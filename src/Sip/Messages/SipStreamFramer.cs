using System.Buffers;
using System.Text;

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
    /// Reads Content-Length (or <c>l</c>) from the header lines; absent means 0. A negative, non-numeric, overlarge
    /// or repeated value cannot be framed.
    /// </summary>
    private static bool TryFindContentLength(in ReadOnlySequence<byte> head, out long contentLength)
    {
        contentLength = 0;
        var found = false;
        var lines = new SequenceReader<byte>(head);
        Span<byte> scratch = stackalloc byte[64];
        while (lines.TryReadTo(out ReadOnlySequence<byte> line, "\r\n"u8, advancePastDelimiter: true) || TakeRest(ref lines, out line))
        {
            if (line.IsEmpty || line.FirstSpan[0] is (byte)' ' or (byte)'\t')
            {
                continue;
            }
            var lineReader = new SequenceReader<byte>(line);
            if (!lineReader.TryReadTo(out ReadOnlySequence<byte> name, (byte)':'))
            {
                continue;
            }
            if (name.Length > 20)
            {
                continue;
            }
            var nameSpan = scratch[..(int)name.Length];
            name.CopyTo(nameSpan);
            var trimmed = Ascii.Trim(nameSpan);
            if (SipHeaderNames.Lookup(nameSpan[trimmed]) != SipHeaderKind.ContentLength)
            {
                continue;
            }
            if (found)
            {
                return false;
            }
            found = true;
            var valueSeq = line.Slice(lineReader.Position);
            if (valueSeq.Length > scratch.Length)
            {
                return false;
            }
            var value = scratch[..(int)valueSeq.Length];
            valueSeq.CopyTo(value);
            var range = Ascii.Trim(value);
            if (!Messages.SipSyntax.TryParseNumber(value[range], SipLimits.MaxMessageSize, out contentLength))
            {
                return false;
            }
        }
        return true;
    }

    private static bool TakeRest(ref SequenceReader<byte> reader, out ReadOnlySequence<byte> rest)
    {
        rest = reader.UnreadSequence;
        if (rest.IsEmpty)
        {
            return false;
        }
        reader.AdvanceToEnd();
        return true;
    }
}
