using System.Buffers;

namespace CallState.Sip.Messages;

/// <summary>
/// A parsed SIP request or response. The message owns a copy of its bytes in a pooled buffer, and everything
/// parsed is a range into it, so an instance can be reused for message after message without allocating
/// (docs/architecture.md, "SIP stack") and can be kept past the receive call that produced it. Not thread-safe.
/// </summary>
public sealed partial class SipMessage : IDisposable
{
    private byte[] _buffer = [];
    private int _length;
    private SipHeaderField[] _fields = new SipHeaderField[32];
    private int _fieldCount;
    private readonly short[] _first = new short[SipHeaderNames.KindCount];

    /// <summary>The message bytes.</summary>
    public ReadOnlySpan<byte> Span => _buffer.AsSpan(0, _length);

    /// <summary>The message bytes as memory.</summary>
    public ReadOnlyMemory<byte> Memory => _buffer.AsMemory(0, _length);

    /// <summary>Why the last <see cref="Parse(ReadOnlySpan{byte})"/> refused the message, or <see cref="SipParseError.None"/>.</summary>
    public SipParseError Error { get; private set; }

    /// <summary>
    /// True when the header fields could be split into lines, so a 400 can copy Via, From, To, Call-ID and CSeq even
    /// though <see cref="Error"/> is set.
    /// </summary>
    public bool HeadersReadable { get; private set; }

    public bool IsRequest { get; private set; }

    public SipMethod Method { get; private set; }

    /// <summary>The method token of a request as written.</summary>
    public TextRange MethodToken { get; private set; }

    public TextRange RequestUriText { get; private set; }

    /// <summary>The parsed Request-URI (any scheme parses; see <see cref="SipUri.Scheme"/>).</summary>
    public SipUri RequestUri { get; private set; }

    public int StatusCode { get; private set; }

    public TextRange ReasonPhrase { get; private set; }

    /// <summary>The start line without its CR LF.</summary>
    public TextRange StartLine { get; private set; }

    public TextRange CallId { get; private set; }

    public NameAddress From { get; private set; }

    public NameAddress To { get; private set; }

    public TextRange FromTag { get; private set; }

    public TextRange ToTag { get; private set; }

    public long CSeq { get; private set; }

    public SipMethod CSeqMethod { get; private set; }

    public TextRange CSeqMethodToken { get; private set; }

    /// <summary>Max-Forwards, or -1 when absent.</summary>
    public int MaxForwards { get; private set; }

    /// <summary>Content-Length, or -1 when absent.</summary>
    public int ContentLength { get; private set; }

    /// <summary>The first Via entry.</summary>
    public ViaValue TopVia { get; private set; }

    /// <summary>Via entries over all Via fields.</summary>
    public int ViaCount { get; private set; }

    /// <summary>Where the header fields end (the index of the empty line's CR), or the end of the message.</summary>
    public int HeadersEnd { get; private set; }

    public TextRange Body { get; private set; }

    /// <summary>The header fields in message order.</summary>
    public ReadOnlySpan<SipHeaderField> Fields => _fields.AsSpan(0, _fieldCount);

    /// <summary>The index of the first field of <paramref name="kind"/> in <see cref="Fields"/>, or -1.</summary>
    public int IndexOf(SipHeaderKind kind) => _first[(int)kind];

    /// <summary>True when the message has a field of <paramref name="kind"/>.</summary>
    public bool Has(SipHeaderKind kind) => _first[(int)kind] >= 0;

    /// <summary>The bytes of a range of this message.</summary>
    public ReadOnlySpan<byte> this[TextRange range] => _buffer.AsSpan(range.Start, range.Length);

    /// <summary>Copies <paramref name="data"/> in and parses it; returns <see cref="Error"/>.</summary>
    public SipParseError Parse(ReadOnlySpan<byte> data)
    {
        if (data.Length > SipLimits.MaxMessageSize)
        {
            Reset(0);
            return Error = SipParseError.MessageTooLarge;
        }
        EnsureCapacity(data.Length);
        data.CopyTo(_buffer);
        return ParseBuffer(data.Length);
    }

    /// <summary>Copies a (possibly multi-segment) sequence in and parses it; returns <see cref="Error"/>.</summary>
    public SipParseError Parse(in ReadOnlySequence<byte> data)
    {
        if (data.Length > SipLimits.MaxMessageSize)
        {
            Reset(0);
            return Error = SipParseError.MessageTooLarge;
        }
        var length = (int)data.Length;
        EnsureCapacity(length);
        data.CopyTo(_buffer);
        return ParseBuffer(length);
    }

    /// <summary>Returns the buffer to the pool.</summary>
    public void Dispose()
    {
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = [];
        }
        _length = 0;
    }

    private void EnsureCapacity(int length)
    {
        if (_buffer.Length >= length)
        {
            return;
        }
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
        }
        _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(length, 2048));
    }

    private void Reset(int length)
    {
        _length = length;
        _fieldCount = 0;
        _first.AsSpan().Fill(-1);
        Error = SipParseError.None;
        HeadersReadable = false;
        IsRequest = false;
        Method = SipMethod.Extension;
        MethodToken = default;
        RequestUriText = default;
        RequestUri = default;
        StatusCode = 0;
        ReasonPhrase = default;
        StartLine = default;
        CallId = default;
        From = default;
        To = default;
        FromTag = default;
        ToTag = default;
        CSeq = -1;
        CSeqMethod = SipMethod.Extension;
        CSeqMethodToken = default;
        MaxForwards = -1;
        ContentLength = -1;
        TopVia = default;
        ViaCount = 0;
        HeadersEnd = length;
        Body = default;
    }
}
