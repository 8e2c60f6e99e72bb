using System.Net;
using CallState.Sip.Transport;

namespace CallState.Sip.Proxy;

/// <summary>The transports the edge speaks.</summary>
public enum SipTransportKind : byte
{
    Udp,
    Tcp,
}

/// <summary>Where a message came from or goes to: transport, address, and for TCP the connection when there is one.</summary>
public readonly record struct SipTarget(SipTransportKind Transport, IPEndPoint EndPoint, SipTcpConnection? Connection = null)
{
    /// <summary>Reliable transports need no retransmission timers (RFC 3261 17.1.1.2, 17.1.2.2).</summary>
    public bool IsReliable => Transport == SipTransportKind.Tcp;

    public override string ToString() => $"{(Transport == SipTransportKind.Udp ? "udp" : "tcp")}:{EndPoint}";
}

/// <summary>Sends messages on behalf of the proxy core.</summary>
public interface ISipSender
{
    /// <summary>
    /// Sends <paramref name="message"/> (which the sender may keep until the send completes). A failure to deliver
    /// (a TCP connect that fails) calls <paramref name="onFailure"/> once, on some other thread.
    /// </summary>
    void Send(in SipTarget target, byte[] message, Action? onFailure = null);
}
