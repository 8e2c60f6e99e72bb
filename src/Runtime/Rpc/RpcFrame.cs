// Wire format of the cluster RPC (edge -> silo, silo -> silo). All integers are big-endian.
//
//   frame    = length:u32 | kind:u8 | request-id:u64 | kind-specific
//              `length` counts every byte after itself (kind onwards); at most RpcOptions.MaxFrameBytes.
//   Request  (kind 1) = method:u16 | deadline:i64 (Unix milliseconds, caller's clock)
//                       | trace-present:u8 (0 or 1) | trace-id:16 B | span-id:8 B | trace-flags:u8 (W3C trace context)
//                       | body (the rest of the frame, opaque)
//   Response (kind 2) = status:u8 (RpcStatus) | body (the rest of the frame, opaque)
//   Cancel   (kind 3) = nothing more: the caller gave up on request-id.
//
// Fixed parts: Request 45 bytes, Response 10, Cancel 9 (after the length prefix). A length above MaxFrameBytes,
// an unknown kind, a frame shorter than its fixed part (or a Cancel longer than it), a trace-present byte other
// than 0 or 1, or a request id already in flight on that connection is a protocol violation: the receiver closes
// that connection. Request ids are chosen by the caller, unique among its in-flight requests on one connection.

using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;

namespace CallState.Runtime.Rpc;

internal enum RpcFrameKind : byte
{
    Request = 1,
    Response = 2,
    Cancel = 3,
}

/// <summary>Why a frame was refused; the connection that sent it is closed.</summary>
internal enum RpcFrameError : byte
{
    None = 0,

    /// <summary>The length prefix is above <see cref="RpcOptions.MaxFrameBytes"/>.</summary>
    Oversized = 1,

    /// <summary>Unknown kind, shorter than its fixed part, a bad field, or an unexpected kind or request id.</summary>
    Malformed = 2,
}

/// <summary>One decoded frame. <see cref="Body"/> points into the reader's buffer: copy it before advancing.</summary>
internal readonly struct RpcFrame
{
    public RpcFrameKind Kind { get; init; }

    public ulong RequestId { get; init; }

    public ushort Method { get; init; }

    public long DeadlineUnixMs { get; init; }

    public ActivityContext TraceContext { get; init; }

    public RpcStatus Status { get; init; }

    public ReadOnlySequence<byte> Body { get; init; }
}

/// <summary>Encodes and decodes frames (see the wire format at the top of this file).</summary>
internal static class RpcFrameCodec
{
    public const int LengthPrefixBytes = 4;

    /// <summary>kind + request id: every frame has them.</summary>
    public const int CommonBytes = 1 + 8;

    public const int RequestFixedBytes = CommonBytes + 2 + 8 + 1 + 16 + 8 + 1;

    public const int ResponseFixedBytes = CommonBytes + 1;

    public const int CancelBytes = CommonBytes;

    private const int TraceIdBytes = 16;
    private const int SpanIdBytes = 8;

    /// <summary>
    /// Reads one frame from the front of <paramref name="buffer"/> and slices it off. <see cref="OperationStatus.NeedMoreData"/>
    /// leaves <paramref name="buffer"/> untouched; only the 4-byte prefix is ever re-read, so a slow sender costs no rescan.
    /// </summary>
    public static OperationStatus TryRead(ref ReadOnlySequence<byte> buffer, int maxFrameBytes, out RpcFrame frame, out RpcFrameError error)
    {
        frame = default;
        error = RpcFrameError.None;
        if (buffer.Length < LengthPrefixBytes)
        {
            return OperationStatus.NeedMoreData;
        }

        uint length;
        if (buffer.FirstSpan.Length >= LengthPrefixBytes)
        {
            length = BinaryPrimitives.ReadUInt32BigEndian(buffer.FirstSpan);
        }
        else
        {
            Span<byte> prefix = stackalloc byte[LengthPrefixBytes];
            buffer.Slice(0, LengthPrefixBytes).CopyTo(prefix);
            length = BinaryPrimitives.ReadUInt32BigEndian(prefix);
        }

        if (length > (uint)maxFrameBytes)
        {
            error = RpcFrameError.Oversized;
            return OperationStatus.InvalidData;
        }

        if (length < CommonBytes)
        {
            error = RpcFrameError.Malformed;
            return OperationStatus.InvalidData;
        }

        if (buffer.Length - LengthPrefixBytes < length)
        {
            return OperationStatus.NeedMoreData;
        }

        var content = buffer.Slice(LengthPrefixBytes, length);
        if (!TryParse(content, out frame))
        {
            error = RpcFrameError.Malformed;
            return OperationStatus.InvalidData;
        }

        buffer = buffer.Slice(content.End);
        return OperationStatus.Done;
    }

    private static bool TryParse(ReadOnlySequence<byte> content, out RpcFrame frame)
    {
        frame = default;
        var reader = new SequenceReader<byte>(content);
        reader.TryRead(out var kindByte);
        reader.TryReadBigEndian(out long id);
        var kind = (RpcFrameKind)kindByte;
        switch (kind)
        {
            case RpcFrameKind.Request:
                {
                    if (content.Length < RequestFixedBytes)
                    {
                        return false;
                    }

                    reader.TryReadBigEndian(out short method);
                    reader.TryReadBigEndian(out long deadline);
                    reader.TryRead(out var tracePresent);
                    if (tracePresent > 1)
                    {
                        return false;
                    }

                    Span<byte> ids = stackalloc byte[TraceIdBytes + SpanIdBytes];
                    reader.TryCopyTo(ids);
                    reader.Advance(ids.Length);
                    reader.TryRead(out var flags);
                    var trace = tracePresent == 1
                        ? new ActivityContext(
                            ActivityTraceId.CreateFromBytes(ids[..TraceIdBytes]),
                            ActivitySpanId.CreateFromBytes(ids[TraceIdBytes..]),
                            (ActivityTraceFlags)flags,
                            traceState: null,
                            isRemote: true)
                        : default;
                    frame = new RpcFrame
                    {
                        Kind = kind,
                        RequestId = (ulong)id,
                        Method = (ushort)method,
                        DeadlineUnixMs = deadline,
                        TraceContext = trace,
                        Body = reader.UnreadSequence,
                    };
                    return true;
                }

            case RpcFrameKind.Response:
                {
                    if (content.Length < ResponseFixedBytes)
                    {
                        return false;
                    }

                    reader.TryRead(out var status);
                    frame = new RpcFrame { Kind = kind, RequestId = (ulong)id, Status = (RpcStatus)status, Body = reader.UnreadSequence };
                    return true;
                }

            case RpcFrameKind.Cancel:
                if (content.Length != CancelBytes)
                {
                    return false;
                }

                frame = new RpcFrame { Kind = kind, RequestId = (ulong)id };
                return true;

            default:
                return false;
        }
    }

    public static void WriteRequest(
        IBufferWriter<byte> output, ulong requestId, ushort method, long deadlineUnixMs, in ActivityContext trace, ReadOnlySpan<byte> body)
    {
        var span = output.GetSpan(LengthPrefixBytes + RequestFixedBytes);
        WriteCommon(span, RequestFixedBytes + body.Length, RpcFrameKind.Request, requestId);
        var fields = span[(LengthPrefixBytes + CommonBytes)..];
        BinaryPrimitives.WriteUInt16BigEndian(fields, method);
        BinaryPrimitives.WriteInt64BigEndian(fields[2..], deadlineUnixMs);
        var traceFields = fields[10..(RequestFixedBytes - CommonBytes)];
        if (trace.TraceId == default)
        {
            traceFields.Clear();
        }
        else
        {
            traceFields[0] = 1;
            trace.TraceId.CopyTo(traceFields.Slice(1, TraceIdBytes));
            trace.SpanId.CopyTo(traceFields.Slice(1 + TraceIdBytes, SpanIdBytes));
            traceFields[1 + TraceIdBytes + SpanIdBytes] = (byte)trace.TraceFlags;
        }

        output.Advance(LengthPrefixBytes + RequestFixedBytes);
        output.Write(body);
    }

    public static void WriteResponse(IBufferWriter<byte> output, ulong requestId, RpcStatus status, ReadOnlySpan<byte> body)
    {
        var span = output.GetSpan(LengthPrefixBytes + ResponseFixedBytes);
        WriteCommon(span, ResponseFixedBytes + body.Length, RpcFrameKind.Response, requestId);
        span[LengthPrefixBytes + CommonBytes] = (byte)status;
        output.Advance(LengthPrefixBytes + ResponseFixedBytes);
        output.Write(body);
    }

    public static void WriteCancel(IBufferWriter<byte> output, ulong requestId)
    {
        var span = output.GetSpan(LengthPrefixBytes + CancelBytes);
        WriteCommon(span, CancelBytes, RpcFrameKind.Cancel, requestId);
        output.Advance(LengthPrefixBytes + CancelBytes);
    }

    private static void WriteCommon(Span<byte> span, int length, RpcFrameKind kind, ulong requestId)
    {
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)length);
        span[LengthPrefixBytes] = (byte)kind;
        BinaryPrimitives.WriteUInt64BigEndian(span[(LengthPrefixBytes + 1)..], requestId);
    }
}
