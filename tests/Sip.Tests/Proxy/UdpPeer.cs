using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using CallState.Sip.Messages;

namespace CallState.Sip.Tests.Proxy;

/// <summary>A UDP socket on 127.0.0.1 standing for a SIP client or next hop; everything it receives is queued.</summary>
internal sealed class UdpPeer : IDisposable
{
    private readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    private readonly BlockingCollection<byte[]> _received = [];
    private readonly Thread _thread;

    public UdpPeer(int port = 0)
    {
        _socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
        EndPoint = (IPEndPoint)_socket.LocalEndPoint!;
        _thread = new Thread(ReceiveLoop) { IsBackground = true, Name = "udp-peer" };
        _thread.Start();
    }

    public IPEndPoint EndPoint { get; }

    public void Send(byte[] datagram, IPEndPoint to) => _socket.SendTo(datagram, to);

    public void Send(string text, IPEndPoint to) => Send(Encoding.UTF8.GetBytes(text), to);

    /// <summary>The next datagram containing <paramref name="marker"/> within <paramref name="timeout"/>, or null; others are discarded.</summary>
    public byte[]? Receive(string marker, TimeSpan timeout)
    {
        var needle = Encoding.UTF8.GetBytes(marker);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !_received.TryTake(out var datagram, left))
            {
                return null;
            }
            if (datagram.AsSpan().IndexOf(needle) >= 0)
            {
                return datagram;
            }
        }
    }

    /// <summary>
    /// Every datagram received up to and including the first containing <paramref name="marker"/>; fails the test if
    /// that one does not come within <paramref name="timeout"/>. What a barrier message proves arrived before it.
    /// </summary>
    public List<byte[]> ReceiveThrough(string marker, TimeSpan timeout)
    {
        var needle = Encoding.UTF8.GetBytes(marker);
        var deadline = DateTime.UtcNow + timeout;
        var seen = new List<byte[]>();
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            byte[]? datagram = null;
            Assert.True(left > TimeSpan.Zero && _received.TryTake(out datagram, left), $"no message containing '{marker}' arrived at {EndPoint}");
            seen.Add(datagram!);
            if (datagram.AsSpan().IndexOf(needle) >= 0)
            {
                return seen;
            }
        }
    }

    /// <summary>Receives and parses the next message containing <paramref name="marker"/>; fails the test if none comes.</summary>
    public SipMessage Expect(string marker, TimeSpan? timeout = null, string? what = null)
    {
        var datagram = Receive(marker, timeout ?? TimeSpan.FromSeconds(5));
        Assert.True(datagram is not null, $"no message containing '{marker}' arrived at {EndPoint} ({what})");
        var message = new SipMessage();
        Assert.Equal(SipParseError.None, message.Parse(datagram));
        return message;
    }

    public void Dispose()
    {
        _socket.Dispose();
        _thread.Join(TimeSpan.FromSeconds(5));
        _received.Dispose();
    }

    private void ReceiveLoop()
    {
        var buffer = new byte[65536];
        while (true)
        {
            int n;
            try
            {
                n = _socket.Receive(buffer);
            }
            catch (SocketException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            try
            {
                _received.Add(buffer.AsSpan(0, n).ToArray());
            }
            catch (ObjectDisposedException)
            {
                return;
            }
        }
    }
}
