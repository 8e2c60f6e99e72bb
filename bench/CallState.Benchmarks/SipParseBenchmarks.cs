using System.Buffers;
using System.Globalization;
using System.Text;
using BenchmarkDotNet.Attributes;
using CallState.Sip.Messages;

namespace CallState.Benchmarks;

/// <summary>
/// The SIP hot path per message: parsing a sipp-like INVITE (with SDP) and a relayed 200 OK into one reused
/// <see cref="SipMessage"/>, the INVITE as a three-segment sequence (a pipe read), stream framing, and serializing
/// into a reused <see cref="PooledBufferWriter"/>. All are expected to allocate nothing per operation.
/// </summary>
[MemoryDiagnoser]
public class SipParseBenchmarks : IDisposable
{
    private const string InviteHead =
        "INVITE sip:service@192.0.2.10:5060 SIP/2.0\r\n" +
        "Via: SIP/2.0/UDP 192.0.2.20:5061;branch=z9hG4bK-4711-1-0;rport\r\n" +
        "From: sipp <sip:sipp@192.0.2.20:5061>;tag=4711SIPpTag001\r\n" +
        "To: service <sip:service@192.0.2.10:5060>\r\n" +
        "Call-ID: 1-4711@192.0.2.20\r\n" +
        "CSeq: 1 INVITE\r\n" +
        "Contact: sip:sipp@192.0.2.20:5061\r\n" +
        "Max-Forwards: 70\r\n" +
        "Subject: Performance Test\r\n" +
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n" +
        "Supported: timer, replaces\r\n" +
        "User-Agent: SIPp/3.7.2\r\n" +
        "Expires: 180\r\n" +
        "Content-Type: application/sdp\r\n";

    private const string Offer =
        "v=0\r\n" +
        "o=user1 53655765 2353687637 IN IP4 192.0.2.20\r\n" +
        "s=-\r\n" +
        "c=IN IP4 192.0.2.20\r\n" +
        "t=0 0\r\n" +
        "m=audio 6000 RTP/AVP 0 8 18 101\r\n" +
        "a=rtpmap:0 PCMU/8000\r\n" +
        "a=rtpmap:8 PCMA/8000\r\n" +
        "a=rtpmap:18 G729/8000\r\n" +
        "a=fmtp:18 annexb=no\r\n" +
        "a=rtpmap:101 telephone-event/8000\r\n" +
        "a=fmtp:101 0-15\r\n" +
        "a=ptime:20\r\n" +
        "a=maxptime:150\r\n" +
        "a=sendrecv\r\n";

    private const string OkHead =
        "SIP/2.0 200 OK\r\n" +
        "Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK7f3a1c2d3e4f.0\r\n" +
        "Via: SIP/2.0/UDP 192.0.2.20:5061;received=192.0.2.20;rport=5061;branch=z9hG4bK-4711-1-0\r\n" +
        "Record-Route: <sip:192.0.2.5;lr>\r\n" +
        "From: sipp <sip:sipp@192.0.2.20:5061>;tag=4711SIPpTag001\r\n" +
        "To: service <sip:service@192.0.2.10:5060>;tag=8823SIPpTag011\r\n" +
        "Call-ID: 1-4711@192.0.2.20\r\n" +
        "CSeq: 1 INVITE\r\n" +
        "Contact: <sip:192.0.2.10:5060;transport=UDP>\r\n" +
        "Content-Type: application/sdp\r\n";

    private const string Answer =
        "v=0\r\n" +
        "o=user2 53655765 2353687637 IN IP4 192.0.2.10\r\n" +
        "s=-\r\n" +
        "c=IN IP4 192.0.2.10\r\n" +
        "t=0 0\r\n" +
        "m=audio 6002 RTP/AVP 0 101\r\n" +
        "a=rtpmap:0 PCMU/8000\r\n" +
        "a=rtpmap:101 telephone-event/8000\r\n";

    private readonly SipMessage _message = new();
    private readonly SipMessage _parsedInvite = new();
    private readonly PooledBufferWriter _writer = new(4096);
    private byte[] _invite = [];
    private byte[] _ok = [];
    private ReadOnlySequence<byte> _inviteContiguous;
    private ReadOnlySequence<byte> _inviteSegments;

    [GlobalSetup]
    public void Setup()
    {
        _invite = Build(InviteHead, Offer);
        _ok = Build(OkHead, Answer);
        _inviteContiguous = new ReadOnlySequence<byte>(_invite);
        _inviteSegments = ThreeSegments(_invite);
        if (_message.Parse(_invite) != SipParseError.None || _message.Parse(_ok) != SipParseError.None
            || _message.Parse(_inviteSegments) != SipParseError.None || _parsedInvite.Parse(_invite) != SipParseError.None)
        {
            throw new InvalidOperationException("benchmark messages must parse");
        }
        Console.WriteLine($"// INVITE {_invite.Length} bytes, 200 OK {_ok.Length} bytes");
    }

    [GlobalCleanup]
    public void Cleanup() => Dispose();

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Returns the pooled buffers.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (disposing)
        {
            _message.Dispose();
            _parsedInvite.Dispose();
            _writer.Dispose();
        }
    }

    /// <summary>A sipp INVITE with SDP, from contiguous bytes (a UDP datagram).</summary>
    [Benchmark(Baseline = true)]
    public SipParseError ParseInvite() => _message.Parse(_invite);

    /// <summary>A 200 OK with Record-Route and two Vias.</summary>
    [Benchmark]
    public SipParseError Parse200Ok() => _message.Parse(_ok);

    /// <summary>The INVITE as a pipe hands it over three reads.</summary>
    [Benchmark]
    public SipParseError ParseInviteThreeSegments() => _message.Parse(_inviteSegments);

    /// <summary>Finding the INVITE's end on a stream (header end and Content-Length).</summary>
    [Benchmark]
    public OperationStatus FrameInvite() => SipStreamFramer.Frame(_inviteContiguous, out _, out _, out _);

    /// <summary>Serializing the parsed INVITE into a reused buffer writer.</summary>
    [Benchmark]
    public int WriteInvite()
    {
        _writer.Clear();
        _parsedInvite.WriteTo(_writer);
        return _writer.WrittenCount;
    }

    private static byte[] Build(string head, string body) =>
        Encoding.ASCII.GetBytes(head + "Content-Length: " + body.Length.ToString(CultureInfo.InvariantCulture) + "\r\n\r\n" + body);

    /// <summary>The bytes in three segments: cut inside the start line and inside the SDP.</summary>
    private static ReadOnlySequence<byte> ThreeSegments(byte[] bytes)
    {
        var first = new Segment(bytes.AsMemory(0, 20), 0);
        var second = first.Append(bytes.AsMemory(20, bytes.Length - 120));
        var third = second.Append(bytes.AsMemory(bytes.Length - 100));
        return new ReadOnlySequence<byte>(first, 0, third, third.Memory.Length);
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
