using System.Buffers;
using BenchmarkDotNet.Attributes;
using CallState.Sip.Tests.Messages;
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
        _invite = SippMessages.Invite;
        _ok = SippMessages.Ok200;
        _inviteContiguous = new ReadOnlySequence<byte>(_invite);
        _inviteSegments = Segments.Split(_invite, 20, _invite.Length - 100);
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
}
