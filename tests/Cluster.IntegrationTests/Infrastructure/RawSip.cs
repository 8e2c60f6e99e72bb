using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace CallState.Cluster.IntegrationTests.Infrastructure;

/// <summary>A UDP socket and a TCP listener on one address and port, counting what arrives.</summary>
public sealed class CountingListener : IDisposable
{
    private readonly UdpClient _udp;
    private readonly TcpListener _tcp;
    private readonly CancellationTokenSource _stop = new();
    private int _datagrams;
    private int _connections;

    public CountingListener(IPAddress address, int port)
    {
        Port = port;
        _udp = new UdpClient(new IPEndPoint(address, port));
        _tcp = new TcpListener(address, port);
        _tcp.Start();
        _ = CountDatagramsAsync();
        _ = CountConnectionsAsync();
    }

    public int Port { get; }

    public int Datagrams => Volatile.Read(ref _datagrams);

    public int Connections => Volatile.Read(ref _connections);

    private async Task CountDatagramsAsync()
    {
        try
        {
            while (true)
            {
                await _udp.ReceiveAsync(_stop.Token);
                Interlocked.Increment(ref _datagrams);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    private async Task CountConnectionsAsync()
    {
        try
        {
            while (true)
            {
                using var client = await _tcp.AcceptTcpClientAsync(_stop.Token);
                Interlocked.Increment(ref _connections);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _udp.Dispose();
        _tcp.Stop();
        _stop.Dispose();
    }
}

/// <summary>A caller writing its own requests from a UDP socket on <paramref name="address"/> and reading the answers.</summary>
public sealed class RawSipCaller(IPAddress address, int edgePort) : IDisposable
{
    private readonly UdpClient _socket = new(new IPEndPoint(address, 0));
    private readonly IPEndPoint _edge = new(IPAddress.Loopback, edgePort);

    private IPEndPoint Local => (IPEndPoint)_socket.Client.LocalEndPoint!;

    public string Request(string method, string uri, string callId, string? toTag, string? route = null, int cseq = 1,
        string? branch = null, bool sdp = false, string user = "alice", string? headers = null, bool fromTag = true)
    {
        var body = sdp ? "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n" : "";
        var cseqMethod = method == "ACK" ? "ACK" : method;
        return $"{method} {uri} SIP/2.0\r\n" +
            $"Via: SIP/2.0/UDP {Local};rport;branch={branch ?? "z9hG4bK" + callId + method + cseq}\r\n" +
            (route is null ? "" : $"Route: {route}\r\n") +
            "Max-Forwards: 70\r\n" +
            $"From: <sip:{user}@127.0.0.1>{(fromTag ? ";tag=from-" + callId : "")}\r\n" +
            $"To: <{uri}>{(toTag is null ? "" : ";tag=" + toTag)}\r\n" +
            $"Call-ID: {callId}\r\nCSeq: {cseq} {cseqMethod}\r\n" +
            $"Contact: <sip:{user}@{Local}>\r\n" +
            (headers ?? "") +
            (sdp ? "Content-Type: application/sdp\r\n" : "") +
            $"Content-Length: {Encoding.ASCII.GetByteCount(body)}\r\n\r\n{body}";
    }

    public async Task SendOnlyAsync(string message) => await _socket.SendAsync(Encoding.ASCII.GetBytes(message), _edge);

    /// <summary>Sends and returns the first final response (or any response), or "" after 10 s.</summary>
    public async Task<string> SendAsync(string message, bool final)
    {
        await SendOnlyAsync(message);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            while (true)
            {
                var received = await _socket.ReceiveAsync(timeout.Token);
                var text = Encoding.ASCII.GetString(received.Buffer);
                if (text.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && (!final || text[8] != '1'))
                {
                    return text;
                }
                if (!text.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && text.StartsWith("BYE ", StringComparison.Ordinal))
                {
                    // Not expected in these tests; shown in the failure.
                    return text;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return "";
        }
    }

    public void Dispose() => _socket.Dispose();
}

/// <summary>What the tests read out of a SIP message's text.</summary>
public static partial class SipText
{
    public static string FirstLine(string message) => message.Length == 0 ? "(nothing)" : message[..message.IndexOf('\r', StringComparison.Ordinal)];

    public static int Status(string response) =>
        response.StartsWith("SIP/2.0 ", StringComparison.Ordinal) ? int.Parse(response.AsSpan(8, 3), System.Globalization.CultureInfo.InvariantCulture) : 0;

    public static string ToTag(string response) => ToTagPattern().Match(response).Groups[1].Value;

    public static string RecordRoute(string response) => RecordRoutePattern().Match(response).Groups[1].Value.Trim();

    public static string ContactUri(string response) => ContactPattern().Match(response).Groups[1].Value;

    [GeneratedRegex(@"\r\nTo:[^\r]*;tag=([^;\r>]+)")]
    private static partial Regex ToTagPattern();

    [GeneratedRegex(@"\r\nRecord-Route:([^\r]*)")]
    private static partial Regex RecordRoutePattern();

    [GeneratedRegex(@"\r\nContact:\s*<([^>]*)>")]
    private static partial Regex ContactPattern();
}
