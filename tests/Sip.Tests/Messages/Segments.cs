using System.Buffers;

namespace CallState.Sip.Tests.Messages;

/// <summary>Builds multi-segment sequences, as a pipe hands a message split across reads.</summary>
public static class Segments
{
    public static ReadOnlySequence<byte> Split(byte[] bytes, params int[] cuts)
    {
        var bounds = cuts.Where(c => c > 0 && c < bytes.Length).Distinct().Order().ToList();
        bounds.Add(bytes.Length);
        Segment? first = null, last = null;
        var start = 0;
        foreach (var end in bounds)
        {
            var piece = bytes.AsMemory(start, end - start);
            if (first is null)
            {
                first = last = new Segment(piece, 0);
            }
            else
            {
                last = last!.Append(piece);
            }
            start = end;
        }
        first ??= last = new Segment(Memory<byte>.Empty, 0);
        return new ReadOnlySequence<byte>(first, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
