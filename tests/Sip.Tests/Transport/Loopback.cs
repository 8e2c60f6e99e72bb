using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace CallState.Sip.Tests.Transport;

internal static class Loopback
{
    /// <summary>Bound on every wait in these tests; they pass in milliseconds, so only a hang reaches it.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private static readonly Lazy<bool> IPv6 = new(() =>
    {
        // A network namespace or container may come without ::1; IPv4 loopback is always asserted.
        try
        {
            using var socket = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
            socket.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    });

    public static bool IPv6Available => Socket.OSSupportsIPv6 && IPv6.Value;

    /// <summary>127.0.0.1, and ::1 where it can be bound.</summary>
    public static IReadOnlyList<IPAddress> Addresses =>
        IPv6Available ? [IPAddress.Loopback, IPAddress.IPv6Loopback] : [IPAddress.Loopback];

    public static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var waited = Stopwatch.StartNew();
        while (!condition())
        {
            if (waited.Elapsed > Timeout)
            {
                Assert.Fail($"Timed out after {Timeout.TotalSeconds} s waiting until {what}.");
            }
            await Task.Delay(5);
        }
    }

    /// <summary>A port nothing listens on: bound, then released.</summary>
    public static IPEndPoint UnusedTcpEndPoint(IPAddress address)
    {
        using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(address, 0));
        return (IPEndPoint)socket.LocalEndPoint!;
    }
}
