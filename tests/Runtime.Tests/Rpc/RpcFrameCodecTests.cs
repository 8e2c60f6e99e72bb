using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using CallState.Runtime.Rpc;

namespace CallState.Runtime.Tests.Rpc;

/// <summary>
/// The frame codec on its own: the documented bytes, and properties over random frames. FsCheck is not referenced by
/// this test project, so the properties draw their cases from seeded <see cref="Random"/> instances (a failure names
/// its seed to replay it).
/// </summary>
public sealed class RpcFrameCodecTests
{
    private const int MaxFrameBytes = 1024 * 1024;

    [Fact]
    public void A_request_is_encoded_exactly_as_documented()
    {
        var writer = new ArrayBufferWriter<byte>();
        var trace = new ActivityContext(
            ActivityTraceId.CreateFromString("0af7651916cd43dd8448eb211c80319c"), ActivitySpanId.CreateFromString("b7ad6b7169203331"), ActivityTraceFlags.Recorded);

        RpcFrameCodec.WriteRequest(writer, 0x0102030405060708, 0x0A0B, 1_767_225_600_000, trace, [0xEE, 0xFF]);

        Assert.Equal(
            "0000002F" + "01" + "0102030405060708" + "0A0B" + "0000019B76DAA800" + "01" + "0AF7651916CD43DD8448EB211C80319C" + "B7AD6B7169203331" + "01" + "EEFF",
            Convert.ToHexString(writer.WrittenSpan));
    }

    [Fact]
    public void Responses_and_cancels_are_encoded_exactly_as_documented()
    {
        var writer = new ArrayBufferWriter<byte>();

        RpcFrameCodec.WriteResponse(writer, 9, RpcStatus.Redirect, [0x41]);
        RpcFrameCodec.WriteCancel(writer, 9);

        Assert.Equal("0000000B" + "02" + "0000000000000009" + "05" + "41" + "00000009" + "03" + "0000000000000009", Convert.ToHexString(writer.WrittenSpan));
    }

    [Fact]
    public async Task Random_frames_fed_through_a_pipe_in_random_chunks_decode_to_the_same_frames()
    {
        for (var seed = 0; seed < 300; seed++)
        {
            var random = new Random(seed);
            var frames = Enumerable.Range(0, random.Next(1, 20)).Select(_ => RandomFrame(random)).ToList();
            var bytes = Encode(frames);

            // Small segments so frames, and their length prefixes, straddle segment boundaries.
            var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 0, resumeWriterThreshold: 0, minimumSegmentSize: 16));
            var decoded = new List<Expected>();
            var position = 0;
            while (position < bytes.Length)
            {
                var chunk = Math.Min(bytes.Length - position, random.Next(3) == 0 ? random.Next(1, 4) : random.Next(1, 700));
                await pipe.Writer.WriteAsync(bytes.AsMemory(position, chunk));
                position += chunk;
                var result = await pipe.Reader.ReadAsync();
                var buffer = result.Buffer;
                OperationStatus status;
                while ((status = RpcFrameCodec.TryRead(ref buffer, MaxFrameBytes, out var frame, out _)) == OperationStatus.Done)
                {
                    decoded.Add(Expected.From(frame));
                }

                Assert.True(status == OperationStatus.NeedMoreData, $"seed {seed}: {status}");
                pipe.Reader.AdvanceTo(buffer.Start, buffer.End);
            }

            Assert.True(frames.SequenceEqual(decoded), $"seed {seed}: decoded frames differ");
        }
    }

    [Fact]
    public void Random_frames_split_into_random_segments_decode_to_the_same_frames()
    {
        for (var seed = 0; seed < 300; seed++)
        {
            var random = new Random(seed);
            var frames = Enumerable.Range(0, random.Next(1, 10)).Select(_ => RandomFrame(random)).ToList();
            var buffer = Segments.Split(Encode(frames), random);
            var decoded = new List<Expected>();
            while (RpcFrameCodec.TryRead(ref buffer, MaxFrameBytes, out var frame, out _) == OperationStatus.Done)
            {
                decoded.Add(Expected.From(frame));
            }

            Assert.True(buffer.IsEmpty, $"seed {seed}: bytes left over");
            Assert.True(frames.SequenceEqual(decoded), $"seed {seed}: decoded frames differ");
        }
    }

    [Fact]
    public void Random_and_truncated_bytes_never_throw_and_every_refusal_names_a_reason()
    {
        for (var seed = 0; seed < 2000; seed++)
        {
            var random = new Random(seed);
            byte[] bytes;
            if (random.Next(2) == 0)
            {
                bytes = new byte[random.Next(0, 120)];
                random.NextBytes(bytes);
                if (bytes.Length >= 5 && random.Next(2) == 0)
                {
                    // A plausible length and kind, so the fixed-part checks are reached.
                    bytes[0] = bytes[1] = bytes[2] = 0;
                    bytes[4] = (byte)random.Next(0, 5);
                }
            }
            else
            {
                var encoded = Encode([RandomFrame(random)]);
                bytes = encoded[..random.Next(0, encoded.Length + 1)];
                if (bytes.Length > 4)
                {
                    bytes[random.Next(bytes.Length)] ^= (byte)random.Next(1, 256);
                }
            }

            var buffer = Segments.Split(bytes, random);
            OperationStatus status;
            RpcFrameError error;
            while ((status = RpcFrameCodec.TryRead(ref buffer, 256, out _, out error)) == OperationStatus.Done)
            {
            }

            Assert.True(status != OperationStatus.InvalidData || error != RpcFrameError.None, $"seed {seed}: refusal without a reason");
        }
    }

    [Theory]
    [InlineData((byte)RpcFrameKind.Request, RpcFrameCodec.RequestFixedBytes)]
    [InlineData((byte)RpcFrameKind.Response, RpcFrameCodec.ResponseFixedBytes)]
    public void A_frame_one_byte_shorter_than_its_fixed_part_is_malformed(byte kind, int fixedBytes)
    {
        var bytes = new byte[4 + fixedBytes - 1];
        bytes[3] = (byte)(fixedBytes - 1);
        bytes[4] = kind;
        var buffer = new ReadOnlySequence<byte>(bytes);

        Assert.Equal(OperationStatus.InvalidData, RpcFrameCodec.TryRead(ref buffer, MaxFrameBytes, out _, out var error));
        Assert.Equal(RpcFrameError.Malformed, error);
    }

    [Fact]
    public void A_length_above_the_limit_is_refused_before_the_frame_arrives()
    {
        var buffer = new ReadOnlySequence<byte>([0, 0, 4, 1, (byte)RpcFrameKind.Request]);

        Assert.Equal(OperationStatus.InvalidData, RpcFrameCodec.TryRead(ref buffer, 1024, out _, out var error));
        Assert.Equal(RpcFrameError.Oversized, error);
    }

    private static byte[] Encode(IEnumerable<Expected> frames)
    {
        var writer = new ArrayBufferWriter<byte>();
        foreach (var frame in frames)
        {
            switch (frame.Kind)
            {
                case RpcFrameKind.Request:
                    RpcFrameCodec.WriteRequest(writer, frame.RequestId, frame.Method, frame.Deadline, frame.Trace, frame.Body);
                    break;
                case RpcFrameKind.Response:
                    RpcFrameCodec.WriteResponse(writer, frame.RequestId, frame.Status, frame.Body);
                    break;
                default:
                    RpcFrameCodec.WriteCancel(writer, frame.RequestId);
                    break;
            }
        }

        return writer.WrittenSpan.ToArray();
    }

    private static Expected RandomFrame(Random random)
    {
        var kind = (RpcFrameKind)random.Next(1, 4);
        var id = (ulong)random.NextInt64() ^ ((ulong)random.Next(2) << 63);
        var body = new byte[random.Next(10) == 0 ? random.Next(0, 5000) : random.Next(0, 80)];
        random.NextBytes(body);
        return kind switch
        {
            RpcFrameKind.Request => new Expected(
                kind,
                id,
                (ushort)random.Next(0, 65536),
                random.NextInt64(long.MinValue, long.MaxValue),
                random.Next(2) == 0
                    ? default
                    : new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), (ActivityTraceFlags)random.Next(0, 256), null, isRemote: true),
                RpcStatus.Ok,
                body),
            RpcFrameKind.Response => new Expected(kind, id, 0, 0, default, (RpcStatus)random.Next(0, 256), body),
            _ => new Expected(kind, id, 0, 0, default, RpcStatus.Ok, []),
        };
    }

    /// <summary>A frame with its body copied out, comparable by value.</summary>
    private sealed record Expected(RpcFrameKind Kind, ulong RequestId, ushort Method, long Deadline, ActivityContext Trace, RpcStatus Status, byte[] Body)
    {
        public static Expected From(in RpcFrame frame) =>
            new(frame.Kind, frame.RequestId, frame.Method, frame.DeadlineUnixMs, frame.TraceContext, frame.Status, frame.Body.ToArray());

        public bool Equals(Expected? other) =>
            other is not null
            && (Kind, RequestId, Method, Deadline, Status) == (other.Kind, other.RequestId, other.Method, other.Deadline, other.Status)
            && (Trace.TraceId, Trace.SpanId, Trace.TraceFlags) == (other.Trace.TraceId, other.Trace.SpanId, other.Trace.TraceFlags)
            && Body.AsSpan().SequenceEqual(other.Body);

        public override int GetHashCode() => HashCode.Combine(Kind, RequestId, Body.Length);
    }
}

/// <summary>Cuts bytes into a multi-segment sequence at random points.</summary>
internal static class Segments
{
    public static ReadOnlySequence<byte> Split(byte[] bytes, Random random)
    {
        if (bytes.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }

        var cuts = Enumerable.Range(0, random.Next(0, 8)).Select(_ => random.Next(1, bytes.Length + 1)).Append(bytes.Length).Distinct().Order().ToList();
        Segment? first = null;
        Segment? last = null;
        var start = 0;
        foreach (var cut in cuts)
        {
            var segment = new Segment(bytes.AsMemory(start, cut - start), start);
            last?.SetNext(segment);
            first ??= segment;
            last = segment;
            start = cut;
        }

        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public void SetNext(Segment next) => Next = next;
    }
}
