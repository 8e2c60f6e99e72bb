using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Sip.Messages;
using CallState.Testing.Fuzz;
using Xunit.Abstractions;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The network part of the fuzz run (docs/testing.md, "Fuzzing"): mutants of the RFC 4475 corpus and captured sipp
/// traffic sent over UDP and TCP to one running standalone edge, from 127.0.0.1 (a trusted PBX in the sample
/// configuration). Some mutants carry a Route, Contact or Request-URI naming a bait address the edge is not configured
/// to send to. The edge must stay up and answer a probe after every batch, answer each malformed request whose Via it
/// can read with its parse error's status (and drop the rest unanswered), never answer 500 (a handler exception), send
/// nothing to the bait, and hold no slot once the run's transactions have ended.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class EdgeFuzzTests(ITestOutputHelper output) : IDisposable
{
    /// <summary>Inputs sent over UDP between two probes: each from its own socket, so what comes back is its own.</summary>
    private const int UdpBatch = 16;

    /// <summary>The largest payload one UDP datagram carries (65,535 less the IP and UDP headers); longer mutants are cut.</summary>
    private const int MaxUdpPayload = 65_507;

    /// <summary>The edge's TCP limit (SipTcpTransportOptions.DefaultMaxMessageSize): past it a connection may be closed before framing.</summary>
    private const int MaxTcpMessage = 64 * 1024;

    /// <summary>Cases per run seed and transport in the CI variant (the time budget usually ends it first).</summary>
    private const long CiCases = 20_000;

    private static readonly TimeSpan Answer = TimeSpan.FromSeconds(10);

    private readonly TempDirectory _temp = new("callstate-fuzz-");
    private readonly List<string> _violations = [];
    private long _expectedAnswers;
    private long _answered;
    private long _silent;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Mutants_over_UDP_and_TCP_leave_the_edge_up_answered_or_dropped_and_holding_nothing()
    {
        using var callee = new FuzzPeer(answer: true);
        using var bait = new FuzzPeer(answer: false);
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, callee.Port, extra: [
            // Answers to UDP requests go back to the socket they came from, so each input's answer is its own.
            "--CallState:Sip:SymmetricResponses=true",
            $"--CallState:Sip:DefaultUpstream=127.0.0.1:{callee.Port}",

            // One receive loop takes datagrams in arrival order: a probe's answer shows the batch before it is handled.
            "--CallState:Sip:UdpReceiveLoops=1",
        ]);
        var baitPort = bait.Port.ToString(CultureInfo.InvariantCulture);
        var mutator = new SipMutator(
            FuzzPlan.Seeds(),
            extraFields:
            [
                $"Route: <sip:127.0.0.1:{baitPort};lr>\r\n",
                $"Route: <sip:127.0.0.1:{baitPort};transport=tcp;lr>\r\n",
                $"Record-Route: <sip:127.0.0.1:{baitPort};lr>\r\n",
                $"Contact: <sip:bait@127.0.0.1:{baitPort}>\r\n",
            ],
            extraStartLines:
            [
                $"INVITE sip:bob@127.0.0.1:{baitPort} SIP/2.0",
                $"OPTIONS sip:bob@127.0.0.1:{baitPort};transport=tcp SIP/2.0",
                $"MESSAGE sip:127.0.0.1:{baitPort} SIP/2.0",
                $"BYE sip:bob@127.0.0.1:{baitPort} SIP/2.0",
            ]);
        var seeds = FuzzPlan.RunSeeds();
        var udpBudget = FuzzPlan.Budget(TimeSpan.FromSeconds(10), share: 0.3) / seeds.Count;
        var tcpBudget = FuzzPlan.Budget(TimeSpan.FromSeconds(8), share: 0.3) / seeds.Count;
        var edgeAddress = new IPEndPoint(IPAddress.Loopback, edge.SipPort);
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        output.WriteLine($"run seeds {string.Join(", ", seeds)} (replay one with CALLSTATE_FUZZ_SEED=n, one case with CALLSTATE_FUZZ_CASE=i too)");

        foreach (var (name, bytes, statusLines) in Regressions())
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            await socket.SendToAsync(bytes, SocketFlags.None, edgeAddress);
            using var wait = new CancellationTokenSource(Answer);
            var buffer = new byte[70_000];
            string answer;
            do
            {
                answer = Encoding.UTF8.GetString(buffer, 0, await socket.ReceiveAsync(buffer, SocketFlags.None, wait.Token));
            }
            while (answer.StartsWith("SIP/2.0 100 ", StringComparison.Ordinal));
            Assert.True(statusLines.Contains(FirstLine(answer)), $"regression {name}: expected '{string.Join("' or '", statusLines)}', got '{FirstLine(answer)}'");
        }

        var clock = Stopwatch.StartNew();
        long udpCases = 0, tcpCases = 0;
        foreach (var seed in seeds)
        {
            udpCases += await RunUdpAsync(mutator, seed, udpBudget, edge, edgeAddress, probe);
            tcpCases += await RunTcpAsync(mutator, seed, tcpBudget, edge, edgeAddress, probe);
        }
        var fuzzTime = clock.Elapsed;

        Assert.False(edge.HasExited, $"the edge exited: {edge.Output}");
        await ProbeAsync(probe, edgeAddress, edge, "the end of the run");

        // Every INVITE the callee saw was answered 486 and every transaction times out within 64*T1: nothing stays held
        // a minute after the last input. A slot still held then is a finding; the early lease (3 min) must still end it.
        var settle = Stopwatch.StartNew();
        var held = await HeldAfterAsync(edge, TimeSpan.FromSeconds(60));
        if (held.Count > 0)
        {
            _violations.Add($"slots still held {settle.Elapsed.TotalSeconds:F0} s after the last input: {string.Join("; ", held)}");
            held = await HeldAfterAsync(edge, TimeSpan.FromSeconds(210));
            if (held.Count > 0)
            {
                _violations.Add($"and still held {settle.Elapsed.TotalSeconds:F0} s after it, past the early lease: {string.Join("; ", held)}");
            }
        }
        output.WriteLine(held.Count == 0 ? $"every count was 0 {settle.Elapsed.TotalSeconds:F1} s after the last input" : "counts not back to 0");
        output.WriteLine(
            $"UDP {udpCases} and TCP {tcpCases} inputs in {fuzzTime.TotalSeconds:F1} s; {_expectedAnswers} malformed with a readable Via, " +
            $"{_answered} answered with their parse error; {_silent} dropped unanswered as expected; the callee received {callee.Datagrams} " +
            $"datagrams; the bait {bait.Datagrams} datagrams and {bait.Connections} connections");
        if (bait.Datagrams > 0 || bait.Connections > 0)
        {
            _violations.Add($"the bait (an unconfigured destination) received {bait.Datagrams} datagrams and {bait.Connections} connections: " +
                string.Join(" | ", bait.Received.Take(3).Select(b => FuzzText.Escape(b, 300))));
        }
        // A handler or timer exception is logged at Error (docs/architecture.md), whether or not the peer got a 500.
        var log = edge.Output;
        foreach (var marker in new[] { "could not be handled", "callback failed" })
        {
            var at = log.IndexOf(marker, StringComparison.Ordinal);
            if (at >= 0)
            {
                _violations.Add($"the edge logged a handler exception: {log[Math.Max(0, at - 200)..Math.Min(log.Length, at + 3000)]}");
            }
        }
        foreach (var v in _violations)
        {
            output.WriteLine(v);
        }
        Assert.True(_violations.Count == 0, $"{_violations.Count} violation(s):\n{string.Join("\n", _violations.Take(20))}");
        Assert.True(FuzzPlan.SingleCase is not null || (_expectedAnswers > 0 && udpCases > 0 && tcpCases > 0), "the run sent no malformed request with a readable Via");
    }

    /// <summary>
    /// What earlier fuzz runs found, as minimal inputs, each with the answer it must get now. An INVITE whose Via branch
    /// or sent-by is longer than a call's record keeps was answered 500 (the grains refused it as invalid).
    /// </summary>
    /// <summary>Earlier findings' minimal inputs, sent in this order, each with the answers it may get.</summary>
    private static IEnumerable<(string Name, byte[] Bytes, string[] StatusLines)> Regressions()
    {
        var invite = Encoding.ASCII.GetString(FuzzPlan.Seeds().Single(s => s.Name == "sipp-invite").Bytes);
        yield return ("long Via branch", Encoding.ASCII.GetBytes(invite.Replace("branch=z9hG4bK-21367-1-0", "branch=z9hG4bK-" + new string('0', 300), StringComparison.Ordinal)),
            ["SIP/2.0 400 Bad Request (value too long)"]);
        yield return ("long Via sent-by", Encoding.ASCII.GetBytes(invite.Replace("Via: SIP/2.0/UDP 127.0.0.1:47612;", "Via: SIP/2.0/UDP " + string.Concat(Enumerable.Repeat("h", 300)) + ".example.com;", StringComparison.Ordinal)),
            ["SIP/2.0 400 Bad Request (value too long)"]);

        // Seed 4475, case 29254: esc01 with its Via branch destroyed right after an esc01 INVITE with the same Call-ID and
        // From tag was refused by the callee. Its admission may reach the call while the first one's end is still being
        // written (it was answered 500 then): it is a new call (forwarded, 486 from the callee), or, before that end
        // arrives, a duplicate of the first (482); never 500.
        var esc01 = Encoding.ASCII.GetString(FuzzPlan.Seeds().Single(s => s.Name == "esc01").Bytes);
        yield return ("esc01 before its branchless copy", Encoding.ASCII.GetBytes(esc01), ["SIP/2.0 486 Busy Here"]);
        yield return ("esc01 without a Via branch after the call ended", Encoding.ASCII.GetBytes(esc01.Replace("branch=", string.Concat(Enumerable.Repeat("branch", 154)) + "=", StringComparison.Ordinal)),
            ["SIP/2.0 486 Busy Here", "SIP/2.0 482 Loop Detected (call already admitted)"]);
    }

    private async Task<long> RunUdpAsync(SipMutator mutator, int seed, TimeSpan budget, SipEdgeProcess edge, IPEndPoint edgeAddress, Socket probe)
    {
        var clock = Stopwatch.StartNew();
        using var parsed = new SipMessage();
        using var cases = FuzzPlan.Cases(FuzzPlan.LongRun ? long.MaxValue : CiCases).GetEnumerator();
        var more = true;
        long sent = 0;
        while (more && (clock.Elapsed < budget || FuzzPlan.SingleCase is not null))
        {
            var batch = new List<(FuzzCase Case, Socket Socket, FuzzExpectation? Expect)>();
            try
            {
                while (batch.Count < UdpBatch && (more = cases.MoveNext()))
                {
                    var index = cases.Current;
                    var c = mutator.Make(seed, index);
                    var bytes = c.Bytes.Length > MaxUdpPayload ? c.Bytes[..MaxUdpPayload] : c.Bytes;
                    parsed.Parse(bytes);
                    var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                    batch.Add((c, socket, FuzzExpectation.Of(parsed)));
                    socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
                    await socket.SendToAsync(bytes, SocketFlags.None, edgeAddress);
                    sent++;
                }
                if (batch.Count == 0)
                {
                    break;
                }
                await ProbeAsync(probe, edgeAddress, edge, $"UDP cases {batch[0].Case.Index}..{batch[^1].Case.Index} of run seed {seed}");
                foreach (var (c, socket, expect) in batch)
                {
                    await CheckUdpAsync(c, socket, expect);
                }
            }
            finally
            {
                foreach (var (_, socket, _) in batch)
                {
                    socket.Dispose();
                }
            }
        }
        output.WriteLine($"run seed {seed}: {sent} UDP inputs in {clock.Elapsed.TotalSeconds:F1} s");
        return sent;
    }

    /// <summary>What came back to one input's own socket, once the probe after its batch was answered.</summary>
    private async Task CheckUdpAsync(FuzzCase c, Socket socket, FuzzExpectation? expect)
    {
        var received = Drain(socket, c);
        if (expect is { Status: > 0 } e)
        {
            _expectedAnswers++;
            var deadline = Stopwatch.StartNew();
            while (!received.Any(r => r.StartsWith(e.StatusLine + "\r\n", StringComparison.Ordinal)) && deadline.Elapsed < TimeSpan.FromSeconds(2))
            {
                using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(2) - deadline.Elapsed);
                try
                {
                    var buffer = new byte[70_000];
                    var n = await socket.ReceiveAsync(buffer, SocketFlags.None, wait.Token);
                    if (IsFor(c, buffer.AsSpan(0, n)))
                    {
                        received.Add(Encoding.UTF8.GetString(buffer, 0, n));
                    }
                }
                catch (OperationCanceledException)
                {
                }
            }
            if (received.Any(r => r.StartsWith(e.StatusLine + "\r\n", StringComparison.Ordinal)))
            {
                _answered++;
            }
            else
            {
                _violations.Add($"UDP: expected '{e.StatusLine}', got [{string.Join(" | ", received.Select(FirstLine))}] for {c}");
            }
        }
        else if (expect is { Status: 0 })
        {
            _silent++;
            if (received.Count > 0)
            {
                _violations.Add($"UDP: an input that does not parse and cannot be answered was answered [{string.Join(" | ", received.Select(FirstLine))}]: {c}");
            }
        }
        foreach (var r in received.Where(r => r.StartsWith("SIP/2.0 500", StringComparison.Ordinal)))
        {
            _violations.Add($"UDP: 500 (a handler exception) '{FirstLine(r)}' for {c}");
        }
    }

    private async Task<long> RunTcpAsync(SipMutator mutator, int seed, TimeSpan budget, SipEdgeProcess edge, IPEndPoint edgeAddress, Socket probe)
    {
        var clock = Stopwatch.StartNew();
        using var parsed = new SipMessage();
        long sent = 0;
        foreach (var index in FuzzPlan.Cases(FuzzPlan.LongRun ? long.MaxValue : CiCases))
        {
            if (clock.Elapsed > budget && FuzzPlan.SingleCase is null)
            {
                break;
            }
            var c = mutator.Make(seed, index);
            await RunTcpCaseAsync(c, edgeAddress, parsed);
            sent++;
            if (sent % UdpBatch == 0)
            {
                await ProbeAsync(probe, edgeAddress, edge, $"TCP case {index} of run seed {seed}");
            }
        }
        await ProbeAsync(probe, edgeAddress, edge, $"the TCP cases of run seed {seed}");
        output.WriteLine($"run seed {seed}: {sent} TCP inputs in {clock.Elapsed.TotalSeconds:F1} s");
        return sent;
    }

    /// <summary>
    /// One input on its own connection, followed by a probe OPTIONS. Framed locally as the edge frames it: when the probe
    /// frames whole after the input's messages, its answer is the barrier (the connection handles messages in order);
    /// when framing fails, the edge must close the connection; when the input leaves the framer waiting, nothing is due.
    /// </summary>
    private async Task RunTcpCaseAsync(FuzzCase c, IPEndPoint edgeAddress, SipMessage parsed)
    {
        var probeId = $"fuzz-tcp-{c.RunSeed}-{c.Index}";
        var probeBytes = Encoding.ASCII.GetBytes(Options($"sip:127.0.0.1:{edgeAddress.Port}", probeId, "TCP", "127.0.0.1:9"));
        byte[] stream = [.. c.Bytes, .. probeBytes];
        var (messages, stop) = FuzzFraming.Frame(stream);
        var probeFramed = messages.Count > 0 && messages[^1].AsSpan().SequenceEqual(probeBytes);
        var expected = new List<FuzzExpectation>();
        foreach (var m in probeFramed ? messages.Take(messages.Count - 1) : messages)
        {
            parsed.Parse(m);
            if (FuzzExpectation.Of(parsed) is { } e)
            {
                if (e.Status > 0)
                {
                    expected.Add(e);
                }
                else
                {
                    _silent++;
                }
            }
        }
        var oversized = stream.Length > MaxTcpMessage;

        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(edgeAddress);
        var rng = new Random(SipMutator.CaseSeed(c.RunSeed, c.Index));
        try
        {
            for (var at = 0; at < stream.Length;)
            {
                var n = Math.Min(stream.Length - at, 1 + rng.Next(Math.Max(1, stream.Length / 2)));
                await socket.SendAsync(stream.AsMemory(at, n), SocketFlags.None);
                at += n;
            }
        }
        catch (SocketException) when (oversized || stop == OperationStatus.InvalidData)
        {
            // The edge closed the connection while the input was still being written: allowed for these.
            return;
        }
        if (!probeFramed && stop != OperationStatus.InvalidData)
        {
            return;
        }

        var (responses, closed) = await ReadResponsesAsync(socket, probeFramed ? probeId : null);
        if (responses.Any(r => r.StartsWith("SIP/2.0 500", StringComparison.Ordinal)))
        {
            _violations.Add($"TCP: 500 (a handler exception) for {c}");
        }
        var probeAnswered = probeFramed && responses.Any(r => r.Contains(probeId, StringComparison.Ordinal) && r.StartsWith("SIP/2.0 200 ", StringComparison.Ordinal));
        if (probeFramed && !probeAnswered && !oversized)
        {
            _violations.Add($"TCP: no answer to the probe after the input (connection {(closed ? "closed" : "open")}; got [{string.Join(" | ", responses.Select(FirstLine))}]): {c}");
            return;
        }
        if (!probeFramed && !closed)
        {
            _violations.Add($"TCP: the input cannot be framed but the edge kept the connection open: {c}");
            return;
        }
        if (!probeAnswered && oversized)
        {
            return;
        }
        var unmatched = responses.Select(FirstLine).ToList();
        foreach (var e in expected)
        {
            _expectedAnswers++;
            var i = unmatched.IndexOf(e.StatusLine);
            if (i < 0)
            {
                _violations.Add($"TCP: expected '{e.StatusLine}', got [{string.Join(" | ", responses.Select(FirstLine))}] for {c}");
                continue;
            }
            unmatched.RemoveAt(i);
            _answered++;
        }
    }

    /// <summary>Responses on the connection until the probe's answer (or, with no probe, until the edge closes it), within 10 s.</summary>
    private static async Task<(List<string> Responses, bool Closed)> ReadResponsesAsync(Socket socket, string? probeId)
    {
        var responses = new List<string>();
        var pending = new List<byte>();
        var buffer = new byte[16 * 1024];
        using var timeout = new CancellationTokenSource(Answer);
        try
        {
            while (true)
            {
                var n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    return (responses, true);
                }
                pending.AddRange(buffer.AsSpan(0, n));
                var framed = new ReadOnlySequence<byte>([.. pending]);
                while (SipStreamFramer.Frame(framed, out var consumed, out _, out var message) == OperationStatus.Done)
                {
                    responses.Add(Encoding.UTF8.GetString(message.ToArray()));
                    framed = framed.Slice(consumed);
                }
                pending = [.. framed.ToArray()];
                if (probeId is not null && responses.Any(r => r.Contains(probeId, StringComparison.Ordinal)))
                {
                    return (responses, false);
                }
            }
        }
        catch (OperationCanceledException)
        {
            return (responses, false);
        }
        catch (SocketException)
        {
            return (responses, true);
        }
    }

    /// <summary>The calls the limits still hold (limit, call key, phase, since), waiting up to <paramref name="timeout"/> for none.</summary>
    private static async Task<List<string>> HeldAfterAsync(SipEdgeProcess edge, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var held = (await StandaloneEdge.LimitsAsync(edge, calls: true))
                .SelectMany(l => l.GetProperty("calls").EnumerateArray().Select(c =>
                    $"{l.GetProperty("key").GetString()} {c.GetProperty("callKey").GetString()} {c.GetProperty("phase").GetString()} since {c.GetProperty("since").GetString()}"))
                .ToList();
            if (held.Count == 0 || deadline.Elapsed > timeout)
            {
                return held;
            }
            await Task.Delay(500);
        }
    }

    /// <summary>An OPTIONS to the edge itself from the probe socket: it must come back 200 (the edge is up and its receive loop past the batch).</summary>
    private async Task ProbeAsync(Socket probe, IPEndPoint edgeAddress, SipEdgeProcess edge, string after)
    {
        var id = "fuzz-probe-" + Guid.NewGuid().ToString("N");
        var local = (IPEndPoint)probe.LocalEndPoint!;
        await probe.SendToAsync(Encoding.ASCII.GetBytes(Options($"sip:127.0.0.1:{edgeAddress.Port}", id, "UDP", local.ToString())), SocketFlags.None, edgeAddress);
        using var timeout = new CancellationTokenSource(Answer);
        var buffer = new byte[70_000];
        try
        {
            while (true)
            {
                var n = await probe.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
                var text = Encoding.UTF8.GetString(buffer, 0, n);
                if (text.Contains(id, StringComparison.Ordinal) && text.StartsWith("SIP/2.0 200 ", StringComparison.Ordinal))
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"the edge did not answer a probe OPTIONS within {Answer.TotalSeconds} s after {after} (exited: {edge.HasExited}); violations so far:\n" +
                string.Join("\n", _violations.Take(10)) + $"\n{edge.Output}");
        }
    }

    private static List<string> Drain(Socket socket, FuzzCase c)
    {
        var received = new List<string>();
        var buffer = new byte[70_000];
        while (socket.Available > 0)
        {
            var n = socket.Receive(buffer);
            if (IsFor(c, buffer.AsSpan(0, n)))
            {
                received.Add(Encoding.UTF8.GetString(buffer, 0, n));
            }
        }
        return received;
    }

    /// <summary>
    /// False for a datagram that cannot be about this input: its Call-ID does not occur in the input. A socket bound to
    /// port 0 may get the port of an earlier input's closed socket, and with it that input's late retransmissions.
    /// </summary>
    private static bool IsFor(FuzzCase c, ReadOnlySpan<byte> datagram)
    {
        using var m = new SipMessage();
        m.Parse(datagram);
        return m.CallId.IsEmpty || c.Bytes.AsSpan().IndexOf(m[m.CallId]) >= 0;
    }

    private static string Options(string uri, string callId, string transport, string sentBy) =>
        $"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {sentBy};branch=z9hG4bK{callId}\r\n" +
        $"From: <sip:lb@127.0.0.1>;tag=1\r\nTo: <{uri}>\r\nCall-ID: {callId}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    private static string FirstLine(string message)
    {
        var end = message.IndexOf("\r\n", StringComparison.Ordinal);
        return end < 0 ? message : message[..end];
    }
}
