using System.Net;
using System.Net.Sockets;

namespace CallState.Testing;

/// <summary>
/// The one place a test run gets loopback ports for processes and listeners that cannot bind port 0 and report back
/// (sipp, silo and edge processes, a SIP endpoint listening on UDP and TCP at once). Each test project, one process
/// under <c>dotnet test</c>, hands out ports from its own range, in order and never twice; the ranges do not overlap
/// and lie below the kernel's ephemeral range (32768 and up), so neither another test project nor a socket bound to
/// port 0 can take a port between the pick and the bind.
/// </summary>
public static class TestPorts
{
    private static readonly (int First, int Last) Range = typeof(TestPorts).Assembly.GetName().Name switch
    {
        "CallState.Cluster.IntegrationTests" => (20_000, 25_999),
        "CallState.Sip.Tests" => (26_000, 27_999),
        "CallState.Grains.Tests" => (28_000, 29_999),
        "CallState.Storage.Tests" => (30_000, 30_999),
        "CallState.SipEdge.Tests" => (31_000, 31_999),
        var other => throw new InvalidOperationException($"no port range for test assembly {other}: add one in tests/Shared/TestPorts.cs"),
    };

    private static readonly Lock Sync = new();
    private static int _next = Range.First;

    /// <summary>The next port of this project's range that is free on 127.0.0.1 for both UDP and TCP.</summary>
    public static int FreeUdpAndTcp()
    {
        lock (Sync)
        {
            while (_next <= Range.Last)
            {
                var port = _next++;
                try
                {
                    using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    tcp.Bind(new IPEndPoint(IPAddress.Loopback, port));
                    using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                    udp.Bind(new IPEndPoint(IPAddress.Loopback, port));
                    return port;
                }
                catch (SocketException)
                {
                    // Taken by something outside the test run: skip it.
                }
            }
        }

        throw new InvalidOperationException($"every port from {Range.First} to {Range.Last} was handed out in this test run");
    }
}
