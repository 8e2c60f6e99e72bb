using System.Buffers;
using System.Buffers.Text;

namespace CallState.Sip.Messages;

/// <summary>Small writers for building SIP messages into an <see cref="IBufferWriter{T}"/>.</summary>
public static class SipWriter
{
    /// <summary>Writes raw bytes.</summary>
    public static void Write(this IBufferWriter<byte> writer, ReadOnlySpan<byte> bytes)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var span = writer.GetSpan(bytes.Length);
        bytes.CopyTo(span);
        writer.Advance(bytes.Length);
    }

    /// <summary>Writes a decimal number.</summary>
    public static void WriteNumber(this IBufferWriter<byte> writer, long value)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var span = writer.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out var written);
        writer.Advance(written);
    }

    /// <summary>Writes CR LF.</summary>
    public static void WriteCrlf(this IBufferWriter<byte> writer) => writer.Write("\r\n"u8);

    /// <summary>Writes <c>Name: value</c> and CR LF.</summary>
    public static void WriteHeader(this IBufferWriter<byte> writer, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        writer.Write(name);
        writer.Write(": "u8);
        writer.Write(value);
        writer.WriteCrlf();
    }
}

public sealed partial class SipMessage
{
    /// <summary>
    /// Serializes the message: the start line and every field as parsed (names and values as written, one field per
    /// line), a Content-Length when the message had none, the empty line and the body. Parsing the output gives the
    /// same message.
    /// </summary>
    public void WriteTo(IBufferWriter<byte> writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var s = Span;
        writer.Write(StartLine.Of(s));
        writer.WriteCrlf();
        foreach (var field in Fields)
        {
            writer.Write(field.Name.Of(s));
            writer.Write(": "u8);
            writer.Write(field.Value.Of(s));
            writer.WriteCrlf();
        }
        if (!Has(SipHeaderKind.ContentLength))
        {
            writer.Write("Content-Length: "u8);
            writer.WriteNumber(Body.Length);
            writer.WriteCrlf();
        }
        writer.WriteCrlf();
        writer.Write(Body.Of(s));
    }
}
