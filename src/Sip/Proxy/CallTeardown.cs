using System.Buffers.Binary;
using System.Security.Cryptography;
using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

/// <summary>
/// Ends an answered call from the middle of its path: a BYE to the callee and a BYE to the caller, built when the 2xx
/// passed from what it and the INVITE held (Call-ID, both tags, each side's Contact and the route set our Record-Route
/// entry splits in two). Used when the call's confirm finds it no longer counted (docs/architecture.md, "Leases that fit
/// SIP"): a call nothing counts must not stay up. Sent once, and not before the caller's ACK of the 2xx has passed
/// this edge or 64*T1 has gone by without it: the BYE toward the caller stands in for the callee's, which must wait for
/// the ACK (RFC 3261 15), and a BYE that overtook the ACK would reach the callee before it. Each BYE is a client
/// transaction of the proxy (retransmitted over UDP, its answer absorbed).
/// </summary>
public sealed class CallTeardown
{
    private const int Requested = 1;
    private const int Acknowledged = 2;
    private const int Sent = 4;

    private readonly SipProxy _proxy;
    private readonly OwnRequest _towardCallee;
    private readonly OwnRequest _towardCaller;
    private int _state;

    internal CallTeardown(SipProxy proxy, OwnRequest towardCallee, OwnRequest towardCaller, bool acknowledged = false)
    {
        _proxy = proxy;
        _towardCallee = towardCallee;
        _towardCaller = towardCaller;
        _state = acknowledged ? Acknowledged : 0;
    }

    /// <summary>The BYE toward the callee, as it is sent but for its Via.</summary>
    public OwnRequest TowardCallee => _towardCallee;

    /// <summary>The BYE toward the caller, as it is sent but for its Via.</summary>
    public OwnRequest TowardCaller => _towardCaller;

    /// <summary>Where the BYE toward the callee goes (where its INVITE went).</summary>
    public SipTarget CalleeTarget => _towardCallee.Target;

    /// <summary>Where the BYE toward the caller goes (where its INVITE came from).</summary>
    public SipTarget CallerTarget => _towardCaller.Target;

    /// <summary>Sends both BYEs, at once or as soon as the ACK has passed; false when they were asked for already.</summary>
    public bool Send()
    {
        var before = Interlocked.Or(ref _state, Requested);
        if ((before & Requested) != 0)
        {
            return false;
        }

        TrySend();
        return true;
    }

    /// <summary>The caller's ACK has been forwarded, or 64*T1 passed without it: BYEs asked for may go.</summary>
    internal void OnAcknowledged()
    {
        Interlocked.Or(ref _state, Acknowledged);
        TrySend();
    }

    private void TrySend()
    {
        var state = Volatile.Read(ref _state);
        while ((state & (Requested | Acknowledged)) == (Requested | Acknowledged) && (state & Sent) == 0)
        {
            var seen = Interlocked.CompareExchange(ref _state, state | Sent, state);
            if (seen == state)
            {
                _proxy.SendOwnRequest(_towardCallee);
                _proxy.SendOwnRequest(_towardCaller);
                return;
            }

            state = seen;
        }
    }
}

/// <summary>
/// A request this proxy originates (a BYE of <see cref="CallTeardown"/>): where it goes, its request line and the header
/// fields that follow its Via, which is written with a fresh branch (and the sending edge's address) when it is sent.
/// </summary>
public sealed record OwnRequest(SipTarget Target, byte[] RequestLine, byte[] Rest)
{
    /// <summary>A branch no other transaction has (RFC 3261 8.1.1.7: the magic cookie and a random part).</summary>
    internal static byte[] NewBranch()
    {
        Span<byte> random = stackalloc byte[8];
        RandomNumberGenerator.Fill(random);
        var w = Scratch.Small();
        w.Write(TransactionKeys.MagicCookie);
        w.Write("-cs-bye-"u8);
        w.WriteNumber((long)(BinaryPrimitives.ReadUInt64LittleEndian(random) >> 1));
        return w.ToArray();
    }
}
