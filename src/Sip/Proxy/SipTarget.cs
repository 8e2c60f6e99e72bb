using System.Net;
using CallState.Sip.Transport;

namespace CallState.Sip.Proxy;

/// <summary>The transports the edge speaks.</summary>
public enum SipTransportKind : byte
{
    Udp,
    Tcp,

    /// <summary>TLS over TCP (RFC 3261 26.2), on its own listener and port.</summary>
    Tls,
}

/// <summary>
/// Where a message came from or goes to: transport, address, and for TCP and TLS the connection when there is one.
/// <paramref name="ServerName"/> is the name a TLS next hop's certificate must carry when it was reached through a
/// host name (null: its IP address).
/// </summary>
public readonly record struct SipTarget(SipTransportKind Transport, IPEndPoint EndPoint, SipTcpConnection? Connection = null, string? ServerName = null)
{
    /// <summary>Reliable transports need no retransmission timers (RFC 3261 17.1.1.2, 17.1.2.2).</summary>
    public bool IsReliable => Transport is SipTransportKind.Tcp or SipTransportKind.Tls;

    public override string ToString() => $"{Transport switch
    {
        SipTransportKind.Udp => "udp",
        SipTransportKind.Tcp => "tcp",
        _ => "tls",
    }}:{EndPoint}";

    /// <summary>
    /// A target written by <see cref="ToString"/> (<c>udp:192.0.2.1:5060</c>, <c>tcp:[2001:db8::1]:5060</c>), without a
    /// connection: a TCP or TLS send then reuses one to that address or opens one. False for anything else.
    /// </summary>
    public static bool TryParse(string? text, out SipTarget target)
    {
        target = default;
        var colon = text?.IndexOf(':', StringComparison.Ordinal) ?? -1;
        if (colon < 0)
        {
            return false;
        }

        SipTransportKind transport;
        switch (text.AsSpan(0, colon))
        {
            case "udp":
                transport = SipTransportKind.Udp;
                break;
            case "tcp":
                transport = SipTransportKind.Tcp;
                break;
            case "tls":
                transport = SipTransportKind.Tls;
                break;
            default:
                return false;
        }

        if (!IPEndPoint.TryParse(text.AsSpan(colon + 1), out var endPoint) || endPoint.Port == 0)
        {
            return false;
        }

        target = new SipTarget(transport, endPoint);
        return true;
    }
}

/// <summary>Sends messages on behalf of the proxy core.</summary>
public interface ISipSender
{
    /// <summary>
    /// Sends <paramref name="message"/> (which the sender may keep until the send completes). A failure to deliver
    /// (a TCP connect or a TLS handshake that fails) calls <paramref name="onFailure"/> once, on some other thread.
    /// </summary>
    void Send(in SipTarget target, byte[] message, Action? onFailure = null);
}
