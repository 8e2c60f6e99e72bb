using System.Globalization;
using System.Text;

namespace CallState.Sip.Tests.Messages;

/// <summary>A sipp-like INVITE (uac scenario with an SDP offer) and the 200 OK a proxy relays back (two Vias, Record-Route).</summary>
public static class SippMessages
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

    public static byte[] Invite { get; } = Build(InviteHead, Offer);

    public static byte[] Ok200 { get; } = Build(OkHead, Answer);

    /// <summary>Head, Content-Length of the body, empty line, body.</summary>
    public static byte[] Build(string head, string body) =>
        Encoding.ASCII.GetBytes(head + "Content-Length: " + body.Length.ToString(CultureInfo.InvariantCulture) + "\r\n\r\n" + body);
}
