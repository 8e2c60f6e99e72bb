namespace CallState.Sip.Messages;

/// <summary>
/// A run of bytes inside a message buffer, kept as offset and length so a parsed message holds no strings
/// (docs/architecture.md, "SIP stack"). <see cref="IsEmpty"/> also stands for "absent".
/// </summary>
public readonly record struct TextRange(int Start, int Length)
{
    /// <summary>The range that marks something absent.</summary>
    public static TextRange None => default;

    /// <summary>One past the last byte.</summary>
    public int End => Start + Length;

    /// <summary>True when the range holds no bytes (absent or empty).</summary>
    public bool IsEmpty => Length == 0;

    /// <summary>Builds a range from its first byte and one past its last.</summary>
    public static TextRange FromBounds(int start, int end) => new(start, end - start);

    /// <summary>The bytes of this range in <paramref name="buffer"/>.</summary>
    public ReadOnlySpan<byte> Of(ReadOnlySpan<byte> buffer) => buffer.Slice(Start, Length);
}
