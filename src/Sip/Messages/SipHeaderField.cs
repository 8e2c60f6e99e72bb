namespace CallState.Sip.Messages;

/// <summary>
/// One header field line of a message: its kind, its name as written, its value (LWS-trimmed; folded lines keep
/// their CR LF inside, which every reader treats as LWS), and the whole line including its CR LF, for verbatim copies.
/// </summary>
public readonly record struct SipHeaderField(SipHeaderKind Kind, TextRange Name, TextRange Value, TextRange Line);

/// <summary>
/// Splits the comma-separated entries of a list header (Via, Route, Record-Route, Contact, Require...) without
/// allocating: commas inside quoted strings and angle brackets do not split.
/// </summary>
public ref struct SipListEnumerator
{
    private readonly ReadOnlySpan<byte> _s;
    private readonly int _end;
    private int _next;

    public SipListEnumerator(ReadOnlySpan<byte> s, TextRange value)
    {
        _s = s;
        _next = value.Start;
        _end = value.End;
        Current = default;
    }

    /// <summary>The current entry, LWS-trimmed (may be empty for <c>a,,b</c>, which readers refuse).</summary>
    public TextRange Current { get; private set; }

    /// <summary>True when the current entry is the last of the field.</summary>
    public readonly bool IsLast => _next > _end;

    public readonly SipListEnumerator GetEnumerator() => this;

    public bool MoveNext()
    {
        if (_next > _end)
        {
            return false;
        }
        var comma = SipSyntax.IndexOfUnquoted(_s, (byte)',', _next, _end);
        var itemEnd = comma < 0 ? _end : comma;
        var start = SipSyntax.SkipLws(_s, _next, itemEnd);
        Current = TextRange.FromBounds(start, SipSyntax.TrimLwsEnd(_s, start, itemEnd));
        _next = comma < 0 ? _end + 1 : comma + 1;
        return true;
    }
}
