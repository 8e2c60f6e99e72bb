using System.Buffers;
using CallState.Sip.Messages;
using CallState.Sip.Tests.Messages;

namespace CallState.Sip.Tests.Fuzz;

/// <summary>
/// The in-process fuzz target: one input through <see cref="SipMessage.Parse(ReadOnlySpan{byte})"/> (contiguous and cut
/// into random segments) and <see cref="SipStreamFramer.Frame"/> (alone, and as part of a stream fed in random chunk
/// sizes). A check that fails throws; <see cref="Check"/> says which invariant, so equal failures are told apart.
/// </summary>
public sealed class ParserFuzzTarget : IDisposable
{
    /// <summary>A valid message sent after the input on a stream, so the framer has to find where the input ends.</summary>
    private static readonly byte[] Follower = SippMessages.Ok200;

    private readonly SipMessage _whole = new();
    private readonly SipMessage _split = new();

    /// <summary>Framed messages, parsed while this target ran.</summary>
    public long Framed { get; private set; }

    /// <summary>Inputs the parser accepted.</summary>
    public long Accepted { get; private set; }

    /// <summary>
    /// Runs every check on <paramref name="input"/>; <paramref name="rng"/> chooses the cut points and chunk sizes (seeded
    /// from the case, so a replay cuts the same way). Throws <see cref="FuzzFindingException"/> naming the invariant that broke.
    /// </summary>
    public void Check(byte[] input, Random rng)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(rng);
        var cuts = new[] { rng.Next(input.Length + 1), rng.Next(input.Length + 1), rng.Next(input.Length + 1) };
        var chunking = rng.Next();
        Run("parse", () =>
        {
            var error = _whole.Parse(input);
            if (error == SipParseError.None)
            {
                Accepted++;
            }
            ParserPropertyTests.CheckInvariants(_whole, error);
        });
        Run("parse-split", () =>
        {
            var error = _split.Parse(Segments.Split(input, cuts));
            ParserPropertyTests.CheckInvariants(_split, error);
            Assert.Equal(_whole.Error, error);
            Assert.Equal(ParserPropertyTests.Describe(_whole, offsets: true), ParserPropertyTests.Describe(_split, offsets: true));
        });
        Run("frame", () =>
        {
            var whole = ParserPropertyTests.FrameResult(new ReadOnlySequence<byte>(input));
            Assert.Equal(whole, ParserPropertyTests.FrameResult(Segments.Split(input, cuts)));
        });
        Run("stream", () =>
        {
            byte[] stream = [.. "\r\n"u8, .. input, .. Follower];
            var expected = FrameAll(new ReadOnlySequence<byte>(stream));
            var chunked = FrameInChunks(stream, new Random(chunking));
            Assert.Equal(expected, chunked);
            Framed += expected.Count(f => f.StartsWith("message", StringComparison.Ordinal));
        });
    }

    /// <summary>Frames a whole stream until the framer stops: the messages, then how it stopped.</summary>
    private List<string> FrameAll(ReadOnlySequence<byte> buffer)
    {
        var frames = new List<string>();
        while (true)
        {
            var status = FrameOnce(buffer, out var consumed, out var message);
            if (status == OperationStatus.Done)
            {
                frames.Add(DescribeFramed(message));
                buffer = buffer.Slice(consumed);
                continue;
            }
            frames.Add(status == OperationStatus.InvalidData ? "invalid" : $"need {buffer.Slice(consumed).Length}");
            return frames;
        }
    }

    /// <summary>
    /// Feeds the stream as a connection would, in chunks of 1 to 300 bytes (larger for a large input): frame what is buffered, drop what was
    /// consumed, read more when the framer needs it. The messages and the way it stops must equal <see cref="FrameAll"/>'s.
    /// </summary>
    private List<string> FrameInChunks(byte[] stream, Random rng)
    {
        var frames = new List<string>();
        var pending = new List<byte>();
        var offset = 0;
        while (true)
        {
            // Small reads for messages of normal size; a large input (a huge-value mutant) in at most about 32 reads.
            var most = stream.Length > 8192 ? stream.Length / 16 : rng.Next(2) == 0 ? 8 : 300;
            var n = Math.Min(stream.Length - offset, 1 + rng.Next(most));
            pending.AddRange(stream.AsSpan(offset, n));
            offset += n;
            while (true)
            {
                var buffer = Segments.Split([.. pending], rng.Next(pending.Count + 1));
                var status = FrameOnce(buffer, out var consumed, out var message);
                var used = (int)buffer.Slice(buffer.Start, consumed).Length;
                if (status == OperationStatus.Done)
                {
                    frames.Add(DescribeFramed(message));
                    pending.RemoveRange(0, used);
                    continue;
                }
                if (status == OperationStatus.InvalidData)
                {
                    frames.Add("invalid");
                    return frames;
                }
                pending.RemoveRange(0, used);
                if (offset == stream.Length)
                {
                    frames.Add($"need {pending.Count}");
                    return frames;
                }
                break;
            }
        }
    }

    /// <summary>One framing with the framer's contract checked: positions inside the buffer, in order, the message where it says.</summary>
    private static OperationStatus FrameOnce(in ReadOnlySequence<byte> buffer, out SequencePosition consumed, out ReadOnlySequence<byte> message)
    {
        var status = SipStreamFramer.Frame(buffer, out consumed, out var examined, out message);
        Assert.True(status is OperationStatus.Done or OperationStatus.NeedMoreData or OperationStatus.InvalidData, $"status {status}");
        var consumedAt = buffer.Slice(buffer.Start, consumed).Length;
        var examinedAt = buffer.Slice(buffer.Start, examined).Length;
        Assert.InRange(consumedAt, 0, buffer.Length);
        Assert.InRange(examinedAt, consumedAt, buffer.Length);
        if (status == OperationStatus.Done)
        {
            Assert.False(message.IsEmpty);
            Assert.Equal(consumedAt, buffer.Slice(buffer.Start, message.Start).Length + message.Length);
        }
        else
        {
            // A transport waits for bytes past 'examined' before it calls again: anything short of the end could hang it.
            Assert.Equal(buffer.Length, examinedAt);
        }
        return status;
    }

    private string DescribeFramed(in ReadOnlySequence<byte> message)
    {
        // What a connection hands on after framing is parsed; it must keep the parser's invariants too.
        var error = _split.Parse(message);
        ParserPropertyTests.CheckInvariants(_split, error);
        return $"message {message.Length} {error}";
    }

    private static void Run(string check, Action action)
    {
        try
        {
            action();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new FuzzFindingException(check, ex);
        }
    }

    public void Dispose()
    {
        _whole.Dispose();
        _split.Dispose();
    }
}

/// <summary>An invariant a fuzz input broke: which check, and what it threw.</summary>
public sealed class FuzzFindingException(string check, Exception inner) : Exception($"{check}: {inner.GetType().Name}: {inner.Message}", inner)
{
    public string CheckName { get; } = check;

    /// <summary>Check, exception type and the first frame of our code it came from: equal keys are one finding.</summary>
    public string Key
    {
        get
        {
            var frame = InnerException?.StackTrace?.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Contains("CallState.", StringComparison.Ordinal)) ?? "";
            var at = frame.IndexOf(" in ", StringComparison.Ordinal);
            return $"{CheckName} {InnerException?.GetType().Name} {(at < 0 ? frame : frame[..at])}";
        }
    }
}
