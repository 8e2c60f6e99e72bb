using System.Buffers;
using System.Text;
using CallState.Sip.Messages;

namespace CallState.Sip.Tests.Messages;

/// <summary>
/// <see cref="SipStreamFramer.Frame"/> on stream buffers (RFC 3261 18.3): where a message ends, what is consumed and
/// examined while waiting for more bytes, keep-alives (RFC 5626 4.4.1), and the Content-Length values that make a
/// stream unframeable.
/// </summary>
public sealed class StreamFramerTests
{
    private const string OptionsHead =
        "OPTIONS sip:proxy.example.com SIP/2.0\r\n" +
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-opt-1\r\n" +
        "From: <sip:alice@example.com>;tag=a1\r\n" +
        "To: <sip:proxy.example.com>\r\n" +
        "Call-ID: opt-1@192.0.2.1\r\n" +
        "CSeq: 1 OPTIONS\r\n";

    private sealed record Framed(OperationStatus Status, long Consumed, long Examined, byte[] Message)
    {
        public string Text => Encoding.Latin1.GetString(Message);
    }

    private static Framed Frame(in ReadOnlySequence<byte> buffer)
    {
        var status = SipStreamFramer.Frame(buffer, out var consumed, out var examined, out var message);
        var consumedAt = buffer.Slice(buffer.Start, consumed).Length;
        var examinedAt = buffer.Slice(buffer.Start, examined).Length;
        Assert.InRange(consumedAt, 0, examinedAt);
        Assert.InRange(examinedAt, consumedAt, buffer.Length);
        if (status == OperationStatus.Done)
        {
            Assert.Equal(consumedAt, examinedAt);
            Assert.Equal(consumedAt, buffer.Slice(buffer.Start, message.End).Length);
        }
        else
        {
            Assert.True(message.IsEmpty);
        }
        return new Framed(status, consumedAt, examinedAt, message.ToArray());
    }

    private static Framed Frame(byte[] bytes) => Frame(new ReadOnlySequence<byte>(bytes));

    private static byte[] Bytes(string text) => Encoding.ASCII.GetBytes(text);

    private static byte[] WithHead(string extraHeaders, string body = "") => Bytes(OptionsHead + extraHeaders + "\r\n" + body);

    [Fact]
    public void Two_messages_back_to_back_in_one_buffer_frame_one_at_a_time()
    {
        byte[] stream = [.. SippMessages.Invite, .. SippMessages.Ok200];
        var buffer = new ReadOnlySequence<byte>(stream);

        var first = Frame(buffer);
        Assert.Equal(OperationStatus.Done, first.Status);
        Assert.Equal(SippMessages.Invite, first.Message);
        Assert.Equal(SippMessages.Invite.Length, first.Consumed);

        buffer = buffer.Slice(first.Consumed);
        var second = Frame(buffer);
        Assert.Equal(OperationStatus.Done, second.Status);
        Assert.Equal(SippMessages.Ok200, second.Message);
        Assert.Equal(SippMessages.Ok200.Length, second.Consumed);

        var rest = Frame(buffer.Slice(second.Consumed));
        Assert.Equal(OperationStatus.NeedMoreData, rest.Status);
        Assert.Equal(0, rest.Consumed);
        Assert.Equal(0, rest.Examined);

        using var m = new SipMessage();
        Assert.Equal(SipParseError.None, m.Parse(first.Message));
        Assert.Equal(SipMethod.Invite, m.Method);
        Assert.Equal(SipParseError.None, m.Parse(second.Message));
        Assert.Equal(200, m.StatusCode);
    }

    [Fact]
    public void Two_messages_split_across_segments_frame_the_same()
    {
        byte[] stream = [.. SippMessages.Invite, .. SippMessages.Ok200];
        var cuts = new[] { 1, 40, SippMessages.Invite.Length - 2, SippMessages.Invite.Length, SippMessages.Invite.Length + 3, stream.Length - 1 };
        var buffer = Segments.Split(stream, cuts);
        var first = Frame(buffer);
        Assert.Equal(SippMessages.Invite, first.Message);
        var second = Frame(buffer.Slice(first.Consumed));
        Assert.Equal(SippMessages.Ok200, second.Message);
    }

    [Fact]
    public void A_message_trickled_byte_by_byte_needs_more_data_until_its_last_byte()
    {
        var invite = SippMessages.Invite;
        for (var n = 0; n <= invite.Length; n++)
        {
            // As one segment, and as n one-byte segments (a pipe that received one byte per read).
            foreach (var buffer in new[] { new ReadOnlySequence<byte>(invite, 0, n), Chunks(invite.Take(n).Select(b => new[] { b }).ToArray()) })
            {
                var result = Frame(buffer);
                if (n < invite.Length)
                {
                    Assert.True(result.Status == OperationStatus.NeedMoreData, $"{n} bytes: {result.Status}");
                    Assert.Equal(0, result.Consumed);
                    Assert.Equal(n, result.Examined);
                }
                else
                {
                    Assert.Equal(OperationStatus.Done, result.Status);
                    Assert.Equal(invite, result.Message);
                    Assert.Equal(n, result.Consumed);
                }
            }
        }
    }

    /// <summary>
    /// A pipe fed one byte at a time and advanced to what the framer consumed: keep-alive CR LFs before the message
    /// are consumed as they complete, nothing of the message is consumed before it is whole, and the message framed
    /// is exactly the message.
    /// </summary>
    [Fact]
    public void Keep_alives_before_a_trickled_message_are_consumed_and_the_message_is_kept_whole()
    {
        var invite = SippMessages.Invite;
        byte[] stream = [.. "\r\n\r\n\r\n"u8, .. invite, .. "\r\n"u8];
        var pending = new List<byte>();
        var messages = new List<byte[]>();
        var maxPending = 0;
        for (var i = 0; i < stream.Length; i++)
        {
            pending.Add(stream[i]);
            var result = Frame(Chunks([.. pending.Take(pending.Count / 2)], [.. pending.Skip(pending.Count / 2)]));
            if (result.Status == OperationStatus.Done)
            {
                messages.Add(result.Message);
            }
            else
            {
                Assert.Equal(OperationStatus.NeedMoreData, result.Status);
                Assert.Equal(pending.Count, result.Examined);

                // Only whole CR LF pairs may be consumed while waiting.
                var skipped = pending.Take((int)result.Consumed).ToArray();
                Assert.True(skipped.Length % 2 == 0 && skipped.Chunk(2).All(p => p[0] == '\r' && p[1] == '\n'), $"byte {i}");
            }
            pending.RemoveRange(0, (int)result.Consumed);
            maxPending = Math.Max(maxPending, pending.Count);
            if (i < 6)
            {
                // A completed keep-alive is consumed at once; half of one is kept.
                Assert.Equal(i % 2 == 1 ? 0 : 1, pending.Count);
            }
        }
        Assert.Single(messages);
        Assert.Equal(invite, messages[0]);
        Assert.Empty(pending);
        Assert.Equal(invite.Length - 1, maxPending);
    }

    [Fact]
    public void A_body_arriving_after_the_headers_is_waited_for()
    {
        var invite = SippMessages.Invite;
        var headersEnd = invite.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        Assert.True(headersEnd < invite.Length - 10);
        for (var n = headersEnd; n < invite.Length; n++)
        {
            var result = Frame(Segments.Split(invite[..n], headersEnd));
            Assert.Equal(OperationStatus.NeedMoreData, result.Status);
            Assert.Equal(0, result.Consumed);
            Assert.Equal(n, result.Examined);
        }
        byte[] withNext = [.. invite, .. "OPTIONS"u8];
        var done = Frame(Segments.Split(withNext, headersEnd, headersEnd + 5, invite.Length + 2));
        Assert.Equal(OperationStatus.Done, done.Status);
        Assert.Equal(invite, done.Message);
        Assert.Equal(invite.Length, done.Consumed);
    }

    [Theory]
    [InlineData("l: 5\r\n")]
    [InlineData("L:5\r\n")]
    [InlineData("l :\t5 \r\n")]
    [InlineData("content-length: 5\r\n")]
    [InlineData("CONTENT-LENGTH   :   005\r\n")]
    public void Compact_and_case_variants_of_Content_Length_give_the_body_length(string header)
    {
        byte[] stream = [.. WithHead(header, "hello"), .. "NEXT"u8];
        var result = Frame(stream);
        Assert.Equal(OperationStatus.Done, result.Status);
        Assert.EndsWith("\r\n\r\nhello", result.Text, StringComparison.Ordinal);
        Assert.Equal(stream.Length - 4, result.Consumed);
    }

    [Fact]
    public void Missing_Content_Length_means_an_empty_body()
    {
        var message = WithHead("");
        byte[] stream = [.. message, .. "v=0\r\n"u8];
        var result = Frame(stream);
        Assert.Equal(OperationStatus.Done, result.Status);
        Assert.Equal(message, result.Message);
        Assert.Equal(message.Length, result.Consumed);
    }

    [Fact]
    public void Content_Length_zero_frames_the_headers_alone()
    {
        var message = WithHead("Content-Length: 0\r\n");
        var result = Frame(Segments.Split([.. message, .. "\r\n"u8], message.Length - 2));
        Assert.Equal(OperationStatus.Done, result.Status);
        Assert.Equal(message, result.Message);
    }

    [Theory]
    [InlineData("Content-Length: -1\r\n")]
    [InlineData("Content-Length: abc\r\n")]
    [InlineData("Content-Length: 5a\r\n")]
    [InlineData("Content-Length: +5\r\n")]
    [InlineData("Content-Length: 0x10\r\n")]
    [InlineData("Content-Length: 1 2\r\n")]
    [InlineData("Content-Length:\r\n")]
    [InlineData("l: \r\n")]
    [InlineData("Content-Length: 65537\r\n")]
    [InlineData("Content-Length: 99999999999999999999999999\r\n")]
    [InlineData("Content-Length: 0\r\nContent-Length: 0\r\n")]
    [InlineData("l: 0\r\nContent-Length: 0\r\n")]
    [InlineData("Content-Length: 5\r\nl: 5\r\n")]
    public void Unusable_Content_Length_is_invalid_data(string header)
    {
        var stream = WithHead(header, "hello");
        Assert.Equal(OperationStatus.InvalidData, Frame(stream).Status);
        Assert.Equal(OperationStatus.InvalidData, Frame(Segments.Split(stream, 30, stream.Length - 20)).Status);
    }

    [Fact]
    public void The_largest_allowed_Content_Length_waits_for_its_body()
    {
        var result = Frame(WithHead($"Content-Length: {SipLimits.MaxMessageSize}\r\n", "hello"));
        Assert.Equal(OperationStatus.NeedMoreData, result.Status);
        Assert.Equal(0, result.Consumed);
    }

    [Theory]
    [InlineData("\r\n", 2)]
    [InlineData("\r\n\r\n", 4)]
    [InlineData("\r\n\r\n\r\n\r\n\r\n", 10)]
    [InlineData("\r\n\r", 2)]
    [InlineData("\r", 0)]
    [InlineData("", 0)]
    public void Keep_alives_alone_need_more_data_and_are_consumed(string keepAlives, int consumed)
    {
        var bytes = Bytes(keepAlives);
        foreach (var buffer in new[] { new ReadOnlySequence<byte>(bytes), Chunks(bytes.Select(b => new[] { b }).ToArray()) })
        {
            var result = Frame(buffer);
            Assert.Equal(OperationStatus.NeedMoreData, result.Status);
            Assert.Equal(consumed, result.Consumed);
            Assert.Equal(bytes.Length, result.Examined);
        }
    }

    [Fact]
    public void Keep_alives_between_messages_are_skipped()
    {
        var message = WithHead("Content-Length: 0\r\n");
        byte[] stream = [.. "\r\n\r\n"u8, .. message, .. "\r\n"u8, .. message];
        var first = Frame(stream);
        Assert.Equal(OperationStatus.Done, first.Status);
        Assert.Equal(message, first.Message);
        Assert.Equal(4 + message.Length, first.Consumed);
        var second = Frame(new ReadOnlySequence<byte>(stream).Slice(first.Consumed));
        Assert.Equal(message, second.Message);
        Assert.Equal(2 + message.Length, second.Consumed);
    }

    [Fact]
    public void Empty_segments_anywhere_change_nothing()
    {
        var invite = SippMessages.Invite;
        var expected = Frame(invite);
        var pieces = new List<byte[]> { Array.Empty<byte>() };
        foreach (var chunk in invite.Chunk(7))
        {
            pieces.Add(chunk);
            pieces.Add([]);
        }
        var actual = Frame(Chunks([.. pieces]));
        Assert.Equal(expected.Status, actual.Status);
        Assert.Equal(expected.Consumed, actual.Consumed);
        Assert.Equal(expected.Message, actual.Message);

        byte[] withKeepAlive = [.. "\r\n"u8, .. invite];
        var split = Frame(Chunks([(byte)'\r'], [], [(byte)'\n'], [], withKeepAlive[2..40], [], withKeepAlive[40..]));
        Assert.Equal(OperationStatus.Done, split.Status);
        Assert.Equal(invite, split.Message);
    }

    [Fact]
    public void A_body_holding_an_empty_line_is_not_taken_for_the_next_header_end()
    {
        const string Body = "a\r\n\r\nb";
        var message = WithHead($"Content-Length: {Body.Length}\r\n", Body);
        var result = Frame([.. message, .. WithHead("l: 0\r\n")]);
        Assert.Equal(OperationStatus.Done, result.Status);
        Assert.Equal(message, result.Message);
    }

    /// <summary>
    /// RFC 3261 7.3.1 lets any header value continue on a line starting with SP or HT, and
    /// <see cref="SipMessage.Parse(ReadOnlySpan{byte})"/> accepts this message with Content-Length 5. The framer once read
    /// only the field's first line, found an empty value and answered InvalidData, disconnecting the TCP peer; smallest
    /// input then: <c>"OPTIONS sip:a SIP/2.0\r\nl:\r\n 0\r\n\r\n"</c>.
    /// </summary>
    [Fact]
    public void A_folded_Content_Length_is_read_like_the_parser_reads_it()
    {
        var stream = WithHead("Content-Length:\r\n 5\r\n", "hello");
        using var m = new SipMessage();
        Assert.Equal(SipParseError.None, m.Parse(stream));
        Assert.Equal(5, m.ContentLength);

        var result = Frame(stream);
        Assert.Equal(OperationStatus.Done, result.Status);
        Assert.Equal(stream, result.Message);
        Assert.Equal(OperationStatus.Done, Frame(Bytes("OPTIONS sip:a SIP/2.0\r\nl:\r\n 0\r\n\r\n")).Status);
        Assert.Equal(OperationStatus.InvalidData, Frame(Bytes("OPTIONS sip:a SIP/2.0\r\nl:\r\n 0\r\nl:\t1\r\n\r\n")).Status);
    }

    /// <summary>A sequence over the given pieces, empty ones included, in order.</summary>
    private static ReadOnlySequence<byte> Chunks(params byte[][] pieces)
    {
        if (pieces.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }
        var first = new Chunk(pieces[0], 0);
        var last = first;
        foreach (var piece in pieces.Skip(1))
        {
            last = last.Append(piece);
        }
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Chunk : ReadOnlySequenceSegment<byte>
    {
        public Chunk(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Chunk Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Chunk(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
