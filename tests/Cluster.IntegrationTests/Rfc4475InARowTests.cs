using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Sip.Tests.Messages;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The 49 RFC 4475 messages sent one after another from one UDP socket on 127.0.0.1 (a trusted PBX in the sample
/// configuration) to one running standalone edge, each checked against the outcome this edge gives: MANIFEST.md's
/// outcome for a proxy, except where docs/security.md ("Forwarding only to configured destinations", "Dialogs bound to
/// admissions") or the transactions earlier files opened decide otherwise (the comments in <see cref="Expected"/>).
/// </summary>
[Collection(LoadTests.Name)]
public sealed partial class Rfc4475InARowTests(ITestOutputHelper output) : IDisposable
{
    private enum Outcome
    {
        /// <summary>Forwarded to the upstream, whose answer (486 to an INVITE, after 100 Trying; else 200) comes back.</summary>
        Forwarded,

        /// <summary>Answered by the edge with <see cref="Expectation.Status"/> (INVITE: after 100 Trying); never forwarded.</summary>
        Answered,

        /// <summary>A response: nothing comes back and nothing is forwarded.</summary>
        Dropped,

        /// <summary>
        /// Same branch, sent-by and method as <see cref="Expectation.Of"/>: one transaction to a proxy (RFC 3261 17.2.3),
        /// so the edge sends that transaction's last response again (status <see cref="Expectation.Status"/>, carrying the
        /// earlier file's Call-ID) and forwards nothing.
        /// </summary>
        Retransmission,
    }

    private sealed record Expectation(Outcome Outcome, int Status = 0, string? Of = null);

    private static Expectation Forward => new(Outcome.Forwarded);

    private static Expectation Answer(int status) => new(Outcome.Answered, status);

    private static Expectation Drop => new(Outcome.Dropped);

    private static Expectation Repeat(string of, int status) => new(Outcome.Retransmission, status, of);

    /// <summary>Every manifest file, in manifest order, with what this edge does with it when it comes in that order.</summary>
    private static readonly Dictionary<string, Expectation> Expected = new()
    {
        // Deviation (dialog binding): wsinv's To carries a tag (1918181833n), so it is in-dialog; no admitted dialog
        // matches it, so 100 Trying then 481, not forwarded.
        ["wsinv"] = Answer(481),
        ["intmeth"] = Forward,
        ["esc01"] = Forward,
        ["escnull"] = Forward,
        ["esc02"] = Forward,
        ["lwsdisp"] = Forward,
        ["longreq"] = Forward,
        ["dblreq"] = Forward,
        ["semiuri"] = Forward,
        ["transports"] = Forward,

        // Deviation (configured destinations): mpart01's Route names 127.0.0.1:5080, which this edge is not configured to
        // send to: 403 (the per-file test configures it as an allowed destination and binds 5080, so this test does not:
        // DialogAttackTests listens at such an address and shows nothing reaches it).
        ["mpart01"] = Answer(403),
        ["unreason"] = Drop,
        ["noreason"] = Drop,
        ["badinv01"] = Answer(400),
        ["clerr"] = Answer(400),
        ["ncl"] = Answer(400),
        ["scalar02"] = Answer(400),
        ["scalarlg"] = Drop,
        ["quotbal"] = Answer(400),
        ["ltgtruri"] = Answer(400),

        // lwsruri has a To tag too, but it is malformed: refused 400 before any dialog is looked for.
        ["lwsruri"] = Answer(400),
        ["lwsstart"] = Answer(400),
        ["trws"] = Answer(400),
        ["escruri"] = Answer(400),
        ["baddate"] = Forward,
        ["regbadct"] = Forward,
        ["badaspec"] = Answer(400),
        ["baddn"] = Answer(400),
        ["badvers"] = Answer(505),

        // Refused 400 as malformed, before transaction matching: mismatch01 shares baddate's branch and sent-by, but a
        // malformed request never opens or matches a transaction.
        ["mismatch01"] = Answer(400),
        ["mismatch02"] = Answer(400),
        ["bigcode"] = Drop,
        ["badbranch"] = Forward,
        ["insuf"] = Answer(400),
        ["unkscm"] = Answer(416),

        // Deviation (retransmission): novelsc has unkscm's branch (z9hG4bKkdjuw39234), sent-by (host9.example.com) and
        // method (OPTIONS): the edge repeats unkscm's 416, the same status MANIFEST.md lists for novelsc on its own.
        ["novelsc"] = Repeat("unkscm", 416),
        ["unksm2"] = Forward,
        ["bext01"] = Answer(420),
        ["invut"] = Forward,
        ["regaut01"] = Forward,
        ["multi01"] = Answer(400),
        ["mcl01"] = Answer(400),
        ["bcast"] = Drop,

        // RFC 3261 16.3 lets a proxy answer an OPTIONS whose Max-Forwards is 0 instead of sending 483.
        ["zeromf"] = Answer(200),
        ["cparam01"] = Forward,

        // Deviation (retransmission): cparam02 has cparam01's branch (z9hG4bKkdjuw), sent-by (saturn.example.com:5060)
        // and method (REGISTER): the edge repeats the upstream's 200 to cparam01 instead of forwarding cparam02.
        ["cparam02"] = Repeat("cparam01", 200),

        // Deviation (retransmission): regescrt has escnull's branch (z9hG4bKkdjuw), sent-by (host5.example.com) and
        // method (REGISTER): the edge repeats the upstream's 200 to escnull instead of forwarding regescrt.
        ["regescrt"] = Repeat("escnull", 200),
        ["sdp01"] = Forward,
        ["inv2543"] = Forward,
    };

    private readonly TempDirectory _temp = new("callstate-rfc4475-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task All_49_messages_in_a_row_get_their_outcome_and_the_edge_still_answers()
    {
        var names = TortureCorpus.ManifestNames();
        Assert.Equal(49, names.Count);
        Assert.Equal(names.Order(StringComparer.Ordinal), Expected.Keys.Order(StringComparer.Ordinal));

        using var upstream = new AnsweringUpstream();
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, upstream.Port, extra: [
            "--CallState:Sip:SymmetricResponses=true",

            // Requests outside a call (OPTIONS, REGISTER, MESSAGE...) go to the default upstream: the test's socket.
            $"--CallState:Sip:DefaultUpstream=127.0.0.1:{upstream.Port}",

            // One receive loop takes datagrams in arrival order, so a probe's answer shows an earlier message is handled.
            "--CallState:Sip:UdpReceiveLoops=1",
        ]);
        using var client = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var edgeAddress = new IPEndPoint(IPAddress.Loopback, edge.SipPort);
        var inbox = new List<string>();
        var finals = new Dictionary<string, int>();

        foreach (var name in names)
        {
            var bytes = TortureCorpus.Read(name);
            var marker = TortureCorpus.Marker(bytes);
            var expected = Expected[name];
            var upstreamBefore = upstream.Count;
            var inboxBefore = inbox.Count;
            await client.SendAsync(bytes, edgeAddress);

            switch (expected.Outcome)
            {
                case Outcome.Forwarded:
                {
                    var invite = bytes.AsSpan().StartsWith("INVITE "u8);
                    var answer = await ReceiveFinalAsync(client, inbox, marker, name);
                    Assert.True(invite ? Status(answer) == 486 : Status(answer) == 200, $"{name}: {FirstLine(answer)}");
                    finals[name] = Status(answer);
                    var forwarded = upstream.Requests(upstreamBefore).Where(r => r.Contains(marker, StringComparison.Ordinal) && !r.StartsWith("ACK ", StringComparison.Ordinal)).ToList();
                    Assert.True(forwarded.Count == 1, $"{name} reached the upstream {forwarded.Count} times");
                    AssertForwarded(bytes, forwarded[0], edge.SipPort, name);
                    if (invite)
                    {
                        Assert.Contains(inbox.Skip(inboxBefore), d => d.Contains(marker, StringComparison.Ordinal) && Status(d) == 100);
                    }
                    break;
                }
                case Outcome.Answered:
                {
                    var answer = await ReceiveFinalAsync(client, inbox, marker, name);
                    Assert.True(expected.Status == Status(answer), $"{name}: expected {expected.Status}, got {FirstLine(answer)}");
                    finals[name] = Status(answer);
                    if (expected.Status == 400)
                    {
                        Assert.StartsWith("SIP/2.0 400 Bad Request (", answer, StringComparison.Ordinal);
                    }
                    if (name == "bext01")
                    {
                        Assert.Contains("\r\nUnsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n", answer, StringComparison.Ordinal);
                    }
                    if (bytes.AsSpan().StartsWith("INVITE "u8) && Status(answer) != 400)
                    {
                        Assert.Contains(inbox.Skip(inboxBefore), d => d.Contains(marker, StringComparison.Ordinal) && Status(d) == 100);
                    }
                    break;
                }
                case Outcome.Retransmission:
                {
                    var earlier = TortureCorpus.Marker(TortureCorpus.Read(expected.Of!));
                    var answer = await ReceiveFinalAsync(client, inbox, earlier, name, from: inboxBefore);
                    Assert.Equal(expected.Status, Status(answer));
                    Assert.Equal(finals[expected.Of!], Status(answer));
                    break;
                }
                case Outcome.Dropped:
                    break;
            }

            // Barrier: once the edge has answered a probe sent after this file, whatever it did with the file is in.
            await ProbeAsync(client, inbox, edgeAddress, edge.SipPort);
            var sentOn = upstream.Requests(upstreamBefore).Where(r => r.Contains(marker, StringComparison.Ordinal) && !r.StartsWith("ACK ", StringComparison.Ordinal)).ToList();
            Assert.True(expected.Outcome == Outcome.Forwarded ? sentOn.Count == 1 : sentOn.Count == 0,
                $"{name} ({expected.Outcome}) reached the upstream {sentOn.Count} times");
            if (expected.Outcome is Outcome.Dropped or Outcome.Retransmission)
            {
                Assert.DoesNotContain(inbox.Skip(inboxBefore), d => d.Contains(marker, StringComparison.Ordinal));
            }
            output.WriteLine($"{name}: {expected.Outcome} {(finals.TryGetValue(name, out var s) ? s : expected.Status)}");
        }

        Assert.False(edge.HasExited);
        var self = "self-" + Guid.NewGuid().ToString("N");
        await client.SendAsync(Encoding.ASCII.GetBytes(Options($"sip:127.0.0.1:{edge.SipPort}", self, (IPEndPoint)client.Client.LocalEndPoint!)), edgeAddress);
        Assert.Equal(200, Status(await ReceiveFinalAsync(client, inbox, self, "OPTIONS to the edge")));
        Assert.False(edge.HasExited);
    }

    /// <summary>The forwarded copy: our Via on top, Max-Forwards one less (70 where absent), the body's octets intact.</summary>
    private static void AssertForwarded(byte[] original, string forwarded, int edgePort, string name)
    {
        var text = Encoding.UTF8.GetString(original);
        Assert.Matches(@"^[^\r]+\r\n(Via|v) *: *SIP/2\.0/UDP 127\.0\.0\.1:" + edgePort.ToString(CultureInfo.InvariantCulture) + ";branch=z9hG4bK", forwarded);
        var maxForwards = MaxForwardsPattern().Match(text);
        var expected = maxForwards.Success ? int.Parse(maxForwards.Groups[1].Value, CultureInfo.InvariantCulture) - 1 : 70;
        Assert.True(expected == int.Parse(MaxForwardsPattern().Match(forwarded).Groups[1].Value, CultureInfo.InvariantCulture), $"{name}: Max-Forwards");
        var headerEnd = original.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        var length = ContentLengthPattern().Match(Encoding.UTF8.GetString(original, 0, headerEnd));
        var body = original.AsSpan(headerEnd, length.Success ? int.Parse(length.Groups[1].Value, CultureInfo.InvariantCulture) : original.Length - headerEnd);
        var copy = Encoding.UTF8.GetBytes(forwarded);
        Assert.True(copy.AsSpan().EndsWith(body), $"{name}: body changed");
        Assert.Equal(body.Length, copy.Length - (copy.AsSpan().IndexOf("\r\n\r\n"u8) + 4));
    }

    private static async Task ProbeAsync(UdpClient client, List<string> inbox, IPEndPoint edge, int edgePort)
    {
        var probe = "probe-" + Guid.NewGuid().ToString("N");
        var local = (IPEndPoint)client.Client.LocalEndPoint!;
        await client.SendAsync(Encoding.ASCII.GetBytes(Options($"sip:probe@127.0.0.1:{edgePort}", probe + "-hop", local)), edge);
        await client.SendAsync(Encoding.ASCII.GetBytes(Options($"sip:127.0.0.1:{edgePort}", probe + "-self", local)), edge);
        Assert.Equal(200, Status(await ReceiveFinalAsync(client, inbox, probe + "-hop", "probe forwarded")));
        Assert.Equal(200, Status(await ReceiveFinalAsync(client, inbox, probe + "-self", "probe to the edge")));
    }

    private static string Options(string uri, string callId, IPEndPoint local) =>
        $"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{callId}\r\n" +
        $"From: <sip:lb@127.0.0.1>;tag=1\r\nTo: <{uri}>\r\nCall-ID: {callId}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    /// <summary>The first final response containing <paramref name="marker"/> in the inbox from <paramref name="from"/> on, waiting up to 10 s.</summary>
    private static async Task<string> ReceiveFinalAsync(UdpClient client, List<string> inbox, string marker, string what, int from = -1)
    {
        bool IsIt(string d) => d.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && Status(d) >= 200 && d.Contains(marker, StringComparison.Ordinal);
        var start = from >= 0 ? from : 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (true)
        {
            var found = inbox.Skip(start).FirstOrDefault(IsIt);
            if (found is not null)
            {
                inbox.Remove(found);
                inbox.Add("(read) " + found);
                return found;
            }
            try
            {
                var received = await client.ReceiveAsync(timeout.Token);
                inbox.Add(Encoding.UTF8.GetString(received.Buffer));
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"no final response to {what} ({marker}) within 10 s");
            }
        }
    }

    private static int Status(string response) =>
        response.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && response.Length > 11 && int.TryParse(response.AsSpan(8, 3), CultureInfo.InvariantCulture, out var status) ? status : 0;

    private static string FirstLine(string message) => message.Split("\r\n")[0];

    [GeneratedRegex(@"\r\nMax-Forwards *: *(\d+)", RegexOptions.IgnoreCase)]
    private static partial Regex MaxForwardsPattern();

    [GeneratedRegex(@"\r\n(?:Content-Length|l) *: *(\d+)", RegexOptions.IgnoreCase)]
    private static partial Regex ContentLengthPattern();

    /// <summary>
    /// The upstream: a UDP socket recording every datagram, answering each request at once (INVITE 486 Busy Here, anything
    /// else but ACK 200 OK) so the edge's client transactions end, admitted slots go back, and a retransmitted request
    /// has a final response to be answered with.
    /// </summary>
    private sealed class AnsweringUpstream : IDisposable
    {
        private readonly UdpClient _socket = new(new IPEndPoint(IPAddress.Loopback, 0));
        private readonly ConcurrentQueue<string> _received = new();
        private readonly CancellationTokenSource _stop = new();

        public AnsweringUpstream() => _ = RunAsync();

        public int Port => ((IPEndPoint)_socket.Client.LocalEndPoint!).Port;

        public int Count => _received.Count;

        /// <summary>The requests received, from the <paramref name="skip"/>th datagram on.</summary>
        public IEnumerable<string> Requests(int skip) => _received.Skip(skip).Where(d => !d.StartsWith("SIP/2.0 ", StringComparison.Ordinal));

        private async Task RunAsync()
        {
            try
            {
                while (true)
                {
                    var datagram = await _socket.ReceiveAsync(_stop.Token);
                    var text = Encoding.UTF8.GetString(datagram.Buffer);
                    _received.Enqueue(text);
                    if (!text.StartsWith("SIP/2.0 ", StringComparison.Ordinal) && !text.StartsWith("ACK ", StringComparison.Ordinal))
                    {
                        await _socket.SendAsync(Encoding.UTF8.GetBytes(AnswerTo(text)), datagram.RemoteEndPoint, _stop.Token);
                    }
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
            }
        }

        /// <summary>A response copying the request's Via, From, To (with a tag added), Call-ID and CSeq fields (unfolded).</summary>
        private static string AnswerTo(string request)
        {
            var head = request[..request.IndexOf("\r\n\r\n", StringComparison.Ordinal)];
            var lines = new List<string>();
            foreach (var line in head.Split("\r\n").Skip(1))
            {
                if (line.Length > 0 && (line[0] == ' ' || line[0] == '\t') && lines.Count > 0)
                {
                    lines[^1] += " " + line.Trim();
                }
                else
                {
                    lines.Add(line);
                }
            }
            var response = new StringBuilder(request.StartsWith("INVITE ", StringComparison.Ordinal) ? "SIP/2.0 486 Busy Here\r\n" : "SIP/2.0 200 OK\r\n");
            foreach (var line in lines)
            {
                var colon = line.IndexOf(':', StringComparison.Ordinal);
                var name = colon > 0 ? line[..colon].Trim().ToUpperInvariant() : "";
                if (name is "VIA" or "V" or "FROM" or "F" or "CALL-ID" or "I" or "CSEQ")
                {
                    response.Append(line).Append("\r\n");
                }
                else if (name is "TO" or "T")
                {
                    response.Append(line).Append(TagPattern().IsMatch(line) ? "" : ";tag=up").Append("\r\n");
                }
            }
            return response.Append("Content-Length: 0\r\n\r\n").ToString();
        }

        public void Dispose()
        {
            _stop.Cancel();
            _socket.Dispose();
            _stop.Dispose();
        }
    }

    [GeneratedRegex(@";\s*tag\s*=", RegexOptions.IgnoreCase)]
    private static partial Regex TagPattern();
}
