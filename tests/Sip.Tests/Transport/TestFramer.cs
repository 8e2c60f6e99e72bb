using System.Buffers;
using System.Text;

namespace CallState.Sip.Tests.Transport;

/// <summary>
/// A plain framer for transport tests (RFC 3261 18.3): headers end at the first CRLFCRLF and Content-Length, which
/// a stream transport requires, gives the body length. The production framer comes from the parser.
/// </summary>
internal static class TestFramer
{
    private static ReadOnlySpan<byte> HeaderEnd => "\r\n\r\n"u8;

    public static OperationStatus Frame(
        in ReadOnlySequence<byte> buffer,
        out SequencePosition consumed,
        out SequencePosition examined,
        out ReadOnlySequence<byte> message)
    {
        message = default;
        consumed = buffer.Start;
        examined = buffer.End;
        var reader = new SequenceReader<byte>(buffer);
        if (!reader.TryReadTo(out ReadOnlySequence<byte> head, HeaderEnd, advancePastDelimiter: true))
        {
            return OperationStatus.NeedMoreData;
        }
        if (!TryGetContentLength(head, out var length))
        {
            return OperationStatus.InvalidData;
        }
        if (reader.Remaining < length)
        {
            return OperationStatus.NeedMoreData;
        }
        reader.Advance(length);
        message = buffer.Slice(buffer.Start, reader.Position);
        consumed = reader.Position;
        examined = reader.Position;
        return OperationStatus.Done;
    }

    private static bool TryGetContentLength(in ReadOnlySequence<byte> head, out int length)
    {
        length = 0;
        foreach (var line in Encoding.ASCII.GetString(head).Split("\r\n"))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                continue;
            }
            var name = line[..colon].Trim();
            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) || name.Equals("l", StringComparison.OrdinalIgnoreCase))
            {
                var value = line[(colon + 1)..].Trim();
                return value.Length > 0 && value.All(char.IsAsciiDigit) && int.TryParse(value, out length);
            }
        }
        return false;
    }

    /// <summary>A minimal request with a body, as bytes.</summary>
    public static byte[] Message(string tag, string body = "")
    {
        var text = $"OPTIONS sip:{tag}@example.test SIP/2.0\r\nCall-ID: {tag}\r\nContent-Length: {Encoding.ASCII.GetByteCount(body)}\r\n\r\n{body}";
        return Encoding.ASCII.GetBytes(text);
    }
}
