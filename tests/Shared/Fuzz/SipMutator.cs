using System.Globalization;
using System.Text;

namespace CallState.Testing.Fuzz;

/// <summary>One message to mutate: an RFC 4475 file or a captured sipp message, by name.</summary>
public sealed record FuzzSeed(string Name, byte[] Bytes);

/// <summary>
/// One generated input: case <see cref="Index"/> of run seed <see cref="RunSeed"/>. The same run seed, case index and
/// seed list always give the same bytes, so a failure is replayed from the two numbers printed with it.
/// </summary>
public sealed record FuzzCase(int RunSeed, long Index, string SeedName, byte[] Bytes, IReadOnlyList<string> Steps)
{
    public override string ToString() =>
        $"run seed {RunSeed}, case {Index} (replay: CALLSTATE_FUZZ_SEED={RunSeed} CALLSTATE_FUZZ_CASE={Index}): " +
        $"{SeedName} + [{string.Join("; ", Steps)}], {Bytes.Length} bytes: {FuzzText.Escape(Bytes, 600)}";
}

/// <summary>
/// Seeded mutations of SIP messages: bit flips, byte inserts and deletes, token and header field duplication, header
/// fields and start lines spliced from other seeds, CR LF and whitespace games, Content-Length lies, truncation and
/// huge values. A case applies one to four of them, so most inputs stay close to a message a parser must read.
/// </summary>
public sealed class SipMutator
{
    private const int MutationKinds = 16;

    /// <summary>Bytes that end or split something in the SIP grammar.</summary>
    private static readonly byte[] Interesting =
        [(byte)'\r', (byte)'\n', (byte)':', (byte)';', (byte)',', (byte)'"', (byte)'<', (byte)'>', (byte)'%', 0, 0xFF, 0x80,
         (byte)' ', (byte)'\t', (byte)'\\', (byte)'@', (byte)'=', (byte)'[', (byte)']', (byte)'/', (byte)'0', (byte)'9', (byte)'-'];

    /// <summary>Numbers at the edges of what a parser may store: zero, sign, 31, 32 and 64 bits, leading zeros.</summary>
    private static readonly string[] Numbers =
        ["0", "-1", "1", "65535", "65536", "2147483647", "2147483648", "4294967296", "9223372036854775808",
         "99999999999999999999999999", "00000000000000000000000001", "+5", "0x10", "1e3", ""];

    private readonly IReadOnlyList<FuzzSeed> _seeds;
    private readonly IReadOnlyList<byte[]> _extraFields;
    private readonly IReadOnlyList<byte[]> _extraStartLines;

    /// <param name="seeds">The messages to start from.</param>
    /// <param name="extraFields">Header fields (with their CR LF) spliced in besides those of the seeds, e.g. a Route to a bait address.</param>
    /// <param name="extraStartLines">Start lines (without CR LF) spliced in besides those of the seeds.</param>
    public SipMutator(IReadOnlyList<FuzzSeed> seeds, IEnumerable<string>? extraFields = null, IEnumerable<string>? extraStartLines = null)
    {
        ArgumentOutOfRangeException.ThrowIfZero(seeds.Count);
        _seeds = seeds;
        _extraFields = [.. (extraFields ?? []).Select(Encoding.ASCII.GetBytes)];
        _extraStartLines = [.. (extraStartLines ?? []).Select(Encoding.ASCII.GetBytes)];
    }

    public IReadOnlyList<FuzzSeed> Seeds => _seeds;

    /// <summary>Case <paramref name="index"/> of run <paramref name="runSeed"/>.</summary>
    public FuzzCase Make(int runSeed, long index)
    {
        var rng = new Random(CaseSeed(runSeed, index));
        var seed = _seeds[rng.Next(_seeds.Count)];
        var bytes = seed.Bytes;
        var steps = new List<string>();
        var count = rng.Next(8) switch { < 4 => 1, < 6 => 2, 6 => 3, _ => 4 };
        for (var i = 0; i < count; i++)
        {
            bytes = Mutate(bytes, rng, steps);
        }
        return new FuzzCase(runSeed, index, seed.Name, bytes, steps);
    }

    /// <summary>A stable per-case seed (the runtime's string hash is randomised per process, this is not).</summary>
    public static int CaseSeed(int runSeed, long index)
    {
        unchecked
        {
            var h = ((ulong)(uint)runSeed << 32) ^ (ulong)index;
            h ^= h >> 33;
            h *= 0xff51afd7ed558ccdUL;
            h ^= h >> 33;
            h *= 0xc4ceb9fe1a85ec53UL;
            h ^= h >> 33;
            return (int)h;
        }
    }

    private byte[] Mutate(byte[] input, Random rng, List<string> steps)
    {
        var kind = rng.Next(MutationKinds);
        var length = input.Length;
        var pos = length == 0 ? 0 : rng.Next(length + 1);
        switch (kind)
        {
            case 0 when length > 0:
            {
                var copy = (byte[])input.Clone();
                var at = rng.Next(length);
                var bit = rng.Next(8);
                copy[at] ^= (byte)(1 << bit);
                steps.Add(Invariant($"flip bit {bit} at {at}"));
                return copy;
            }
            case 1:
            {
                var b = rng.Next(3) == 0 ? (byte)rng.Next(256) : Interesting[rng.Next(Interesting.Length)];
                steps.Add(Invariant($"insert 0x{b:X2} at {pos}"));
                return Splice(input, pos, 0, [b]);
            }
            case 2 when length > 0:
            {
                var at = rng.Next(length);
                var b = Interesting[rng.Next(Interesting.Length)];
                var copy = (byte[])input.Clone();
                copy[at] = b;
                steps.Add(Invariant($"replace at {at} with 0x{b:X2}"));
                return copy;
            }
            case 3 when length > 0:
            {
                var at = rng.Next(length);
                var n = Math.Min(length - at, 1 + rng.Next(rng.Next(2) == 0 ? 4 : 40));
                steps.Add(Invariant($"delete {n} at {at}"));
                return Splice(input, at, n, []);
            }
            case 4 when length > 0:
            {
                var (start, end) = Token(input, rng.Next(length));
                var times = rng.Next(4) == 0 ? 50 + rng.Next(200) : 1;
                var token = input.AsSpan(start, end - start);
                var repeated = new byte[token.Length * times];
                for (var i = 0; i < times; i++)
                {
                    token.CopyTo(repeated.AsSpan(i * token.Length));
                }
                steps.Add(Invariant($"duplicate token {start}..{end} x{times}"));
                return Splice(input, end, 0, repeated);
            }
            case 5:
            {
                var lines = HeaderLines(input);
                if (lines.Count == 0)
                {
                    break;
                }
                var (start, end) = lines[rng.Next(lines.Count)];
                var to = lines[rng.Next(lines.Count)].End;
                steps.Add(Invariant($"duplicate field {start}..{end} to {to}"));
                return Splice(input, to, 0, input.AsSpan(start, end - start));
            }
            case 6:
            {
                var lines = HeaderLines(input);
                if (lines.Count == 0)
                {
                    break;
                }
                var (start, end) = lines[rng.Next(lines.Count)];
                steps.Add(Invariant($"delete field {start}..{end}"));
                return Splice(input, start, end - start, []);
            }
            case 7:
            {
                var field = RandomField(rng, out var from);
                var lines = HeaderLines(input);
                var to = lines.Count == 0 ? pos : rng.Next(2) == 0 ? lines[rng.Next(lines.Count)].Start : lines[^1].End;
                steps.Add(Invariant($"splice field from {from} at {to}"));
                return Splice(input, to, 0, field);
            }
            case 8:
            {
                var other = _seeds[rng.Next(_seeds.Count)];
                var lineEnd = input.AsSpan().IndexOf("\r\n"u8);
                byte[] start;
                string from;
                if (_extraStartLines.Count > 0 && rng.Next(3) == 0)
                {
                    start = _extraStartLines[rng.Next(_extraStartLines.Count)];
                    from = "extra";
                }
                else
                {
                    var otherEnd = other.Bytes.AsSpan().IndexOf("\r\n"u8);
                    start = other.Bytes[..(otherEnd < 0 ? other.Bytes.Length : otherEnd)];
                    from = other.Name;
                }
                steps.Add($"start line from {from}");
                return Splice(input, 0, lineEnd < 0 ? length : lineEnd, start);
            }
            case 9:
                return WhitespaceGame(input, rng, steps);
            case 10:
                return LengthLie(input, rng, steps);
            case 11 when length > 0:
            {
                var at = rng.Next(2) == 0 ? rng.Next(length) : Math.Max(0, HeaderEnd(input) + rng.Next(-6, 6));
                at = Math.Clamp(at, 0, length);
                steps.Add(Invariant($"truncate at {at}"));
                return input[..at];
            }
            case 12:
                return HugeValue(input, rng, steps);
            case 13:
            {
                var (start, end) = Digits(input, pos);
                if (start == end)
                {
                    break;
                }
                var n = Numbers[rng.Next(Numbers.Length)];
                steps.Add(Invariant($"number {start}..{end} -> '{n}'"));
                return Splice(input, start, end - start, Encoding.ASCII.GetBytes(n));
            }
            case 14:
            {
                // Header splicing between messages: the other seed's whole header block in place of this one's.
                var other = _seeds[rng.Next(_seeds.Count)];
                var otherLines = HeaderLines(other.Bytes);
                var lines = HeaderLines(input);
                if (otherLines.Count == 0 || lines.Count == 0)
                {
                    break;
                }
                var take = otherLines[rng.Next(otherLines.Count)];
                var drop = lines[rng.Next(lines.Count)];
                steps.Add(Invariant($"replace field {drop.Start}..{drop.End} with {other.Name}'s {take.Start}..{take.End}"));
                return Splice(input, drop.Start, drop.End - drop.Start, other.Bytes.AsSpan(take.Start, take.End - take.Start));
            }
            case 15:
            {
                // Two messages in one: the start of another seed after this one (a datagram or a stream carrying more).
                var other = _seeds[rng.Next(_seeds.Count)];
                var cut = rng.Next(other.Bytes.Length + 1);
                steps.Add(Invariant($"append {other.Name}[..{cut}]"));
                return [.. input, .. other.Bytes.AsSpan(0, cut)];
            }
        }
        steps.Add("none");
        return input;
    }

    private static byte[] WhitespaceGame(byte[] input, Random rng, List<string> steps)
    {
        var crlfs = AllIndexes(input, "\r\n"u8);
        var game = rng.Next(9);
        if (crlfs.Count == 0 || game == 8)
        {
            var n = 1 + rng.Next(rng.Next(2) == 0 ? 3 : 300);
            steps.Add(Invariant($"{n} leading CRLF"));
            return [.. Enumerable.Repeat("\r\n"u8.ToArray(), n).SelectMany(x => x), .. input];
        }
        var at = crlfs[rng.Next(crlfs.Count)];
        switch (game)
        {
            case 0:
                steps.Add(Invariant($"CRLF at {at} -> LF"));
                return Splice(input, at, 2, "\n"u8);
            case 1:
                steps.Add(Invariant($"CRLF at {at} -> CR"));
                return Splice(input, at, 2, "\r"u8);
            case 2:
                steps.Add(Invariant($"extra CRLF at {at}"));
                return Splice(input, at, 0, "\r\n"u8);
            case 3:
                steps.Add(Invariant($"fold at {at}"));
                return Splice(input, at + 2, 0, rng.Next(2) == 0 ? " "u8 : "\t \t"u8);
            case 4:
            {
                var colon = input.AsSpan(at + 2).IndexOf((byte)':');
                var p = colon < 0 ? at : at + 2 + colon;
                steps.Add(Invariant($"whitespace around ':' at {p}"));
                return Splice(input, p, colon < 0 ? 0 : 1, " \t : \t "u8);
            }
            case 5:
                steps.Add(Invariant($"trailing whitespace at {at}"));
                return Splice(input, at, 0, rng.Next(2) == 0 ? " "u8 : " \t \t "u8);
            case 6:
                steps.Add(Invariant($"fold to empty line at {at}"));
                return Splice(input, at, 0, "\r\n \r\n"u8);
            default:
                steps.Add(Invariant($"CRLF at {at} -> LF CR"));
                return Splice(input, at, 2, "\n\r"u8);
        }
    }

    private static byte[] LengthLie(byte[] input, Random rng, List<string> steps)
    {
        var headerEnd = HeaderEnd(input);
        var body = headerEnd < 0 ? 0 : input.Length - headerEnd - 4;
        var value = rng.Next(9) switch
        {
            0 => "0",
            1 => (body + 1).ToString(CultureInfo.InvariantCulture),
            2 => Math.Max(0, body - 1).ToString(CultureInfo.InvariantCulture),
            3 => (body + 1 + rng.Next(100_000)).ToString(CultureInfo.InvariantCulture),
            4 => "-" + body.ToString(CultureInfo.InvariantCulture),
            5 => "18446744073709551617",
            6 => body.ToString(CultureInfo.InvariantCulture) + " " + body.ToString(CultureInfo.InvariantCulture),
            7 => "65536",
            _ => Numbers[rng.Next(Numbers.Length)],
        };
        var name = rng.Next(3) == 0 ? "l" : "Content-Length";
        var lines = HeaderLines(input);
        var existing = lines.FindIndex(l => IsContentLength(input.AsSpan(l.Start, l.End - l.Start)));
        var field = Encoding.ASCII.GetBytes($"{name}: {value}\r\n");
        if (existing >= 0 && rng.Next(3) != 0)
        {
            steps.Add($"Content-Length -> '{value}'");
            return Splice(input, lines[existing].Start, lines[existing].End - lines[existing].Start, field);
        }
        if (existing >= 0 && rng.Next(2) == 0)
        {
            steps.Add("Content-Length removed");
            return Splice(input, lines[existing].Start, lines[existing].End - lines[existing].Start, []);
        }
        var to = lines.Count == 0 ? 0 : lines[^1].End;
        steps.Add($"another Content-Length '{value}'");
        return Splice(input, to, 0, field);
    }

    private static byte[] HugeValue(byte[] input, Random rng, List<string> steps)
    {
        var lines = HeaderLines(input);
        var firstLineEnd = input.AsSpan().IndexOf("\r\n"u8);
        var to = lines.Count > 0 ? lines[rng.Next(lines.Count)].End : firstLineEnd < 0 ? input.Length : firstLineEnd + 2;
        string text;
        switch (rng.Next(8))
        {
            case 0:
                text = "X-Big: " + new string('a', 70 * 1024) + "\r\n";
                break;
            case 1:
                text = "Subject: " + new string('v', 17 * 1024) + "\r\n";
                break;
            case 2:
                text = string.Concat(Enumerable.Repeat("X-H: v\r\n", 300));
                break;
            case 3:
                text = "Via: " + string.Join(",", Enumerable.Range(0, 80).Select(i => Invariant($"SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}"))) + "\r\n";
                break;
            case 4:
                text = "Contact: <sip:a@b" + string.Concat(Enumerable.Repeat(";p", 3000)) + ">\r\n";
                break;
            case 5:
                text = "Route: " + string.Join(",", Enumerable.Repeat("<sip:x;lr>", 1000)) + "\r\n";
                break;
            case 6:
            {
                // An existing value made huge in place: a Call-ID, a tag, a branch grown to 20 KiB.
                if (lines.Count == 0)
                {
                    goto default;
                }
                var (start, end) = lines[rng.Next(lines.Count)];
                var at = input.AsSpan(start, end - start).EndsWith("\r\n"u8) ? end - 2 : end;
                steps.Add(Invariant($"field {start}..{end} grown by 20 KiB"));
                return Splice(input, at, 0, Encoding.ASCII.GetBytes(new string('z', 20 * 1024)));
            }
            default:
                text = "X-Fold: a" + string.Concat(Enumerable.Repeat("\r\n b", 2000)) + "\r\n";
                break;
        }
        steps.Add(Invariant($"huge field ({text.Length} bytes) at {to}"));
        return Splice(input, to, 0, Encoding.ASCII.GetBytes(text));
    }

    private byte[] RandomField(Random rng, out string from)
    {
        if (_extraFields.Count > 0 && rng.Next(4) == 0)
        {
            from = "extra";
            return _extraFields[rng.Next(_extraFields.Count)];
        }
        for (var attempt = 0; attempt < 8; attempt++)
        {
            var other = _seeds[rng.Next(_seeds.Count)];
            var lines = HeaderLines(other.Bytes);
            if (lines.Count > 0)
            {
                var (start, end) = lines[rng.Next(lines.Count)];
                from = other.Name;
                return other.Bytes[start..end];
            }
        }
        from = "none";
        return "X-Empty:\r\n"u8.ToArray();
    }

    private static bool IsContentLength(ReadOnlySpan<byte> line)
    {
        var colon = line.IndexOf((byte)':');
        if (colon <= 0)
        {
            return false;
        }
        var name = line[..colon].Trim(" \t"u8);
        return name.Length == 1 ? (name[0] | 0x20) == 'l' : Ascii.EqualsIgnoreCase(name, "Content-Length"u8);
    }

    /// <summary>Where the header block ends (the index of its CR LF CR LF), or -1.</summary>
    public static int HeaderEnd(ReadOnlySpan<byte> message) => message.IndexOf("\r\n\r\n"u8);

    /// <summary>The header field lines (start, end after CR LF) between the start line and the empty line; folded lines count apart.</summary>
    public static List<(int Start, int End)> HeaderLines(byte[] message)
    {
        var lines = new List<(int, int)>();
        var headerEnd = HeaderEnd(message);
        var limit = headerEnd < 0 ? message.Length : headerEnd + 2;
        var first = message.AsSpan().IndexOf("\r\n"u8);
        if (first < 0)
        {
            return lines;
        }
        var p = first + 2;
        while (p < limit)
        {
            var crlf = message.AsSpan(p, limit - p).IndexOf("\r\n"u8);
            var end = crlf < 0 ? limit : p + crlf + 2;
            lines.Add((p, end));
            p = end;
        }
        return lines;
    }

    private static (int Start, int End) Token(byte[] input, int at)
    {
        static bool Separator(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n' or (byte)';' or (byte)',' or (byte)':' or (byte)'<' or (byte)'>' or (byte)'=' or (byte)'@';
        if (Separator(input[at]))
        {
            return (at, at + 1);
        }
        var start = at;
        while (start > 0 && !Separator(input[start - 1]))
        {
            start--;
        }
        var end = at;
        while (end < input.Length && !Separator(input[end]))
        {
            end++;
        }
        return (start, end);
    }

    private static (int Start, int End) Digits(byte[] input, int from)
    {
        for (var i = 0; i < input.Length; i++)
        {
            var at = (from + i) % input.Length;
            if (char.IsAsciiDigit((char)input[at]))
            {
                var start = at;
                while (start > 0 && char.IsAsciiDigit((char)input[start - 1]))
                {
                    start--;
                }
                var end = at;
                while (end < input.Length && char.IsAsciiDigit((char)input[end]))
                {
                    end++;
                }
                return (start, end);
            }
        }
        return (0, 0);
    }

    private static List<int> AllIndexes(byte[] input, ReadOnlySpan<byte> what)
    {
        var found = new List<int>();
        for (var p = 0; p <= input.Length - what.Length;)
        {
            var i = input.AsSpan(p).IndexOf(what);
            if (i < 0)
            {
                break;
            }
            found.Add(p + i);
            p += i + what.Length;
        }
        return found;
    }

    private static byte[] Splice(byte[] input, int at, int remove, ReadOnlySpan<byte> insert) =>
        [.. input.AsSpan(0, at), .. insert, .. input.AsSpan(at + remove)];

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Bytes shown as text in a failure message, and the seed list every fuzz target starts from.</summary>
public static class FuzzText
{
    /// <summary>CR, LF, TAB and backslash escaped, other bytes outside printable ASCII as \xNN; at most <paramref name="max"/> bytes shown.</summary>
    public static string Escape(ReadOnlySpan<byte> bytes, int max = int.MaxValue)
    {
        var sb = new StringBuilder();
        var shown = Math.Min(bytes.Length, max);
        foreach (var b in bytes[..shown])
        {
            _ = b switch
            {
                (byte)'\r' => sb.Append("\\r"),
                (byte)'\n' => sb.Append("\\n"),
                (byte)'\t' => sb.Append("\\t"),
                (byte)'\\' => sb.Append("\\\\"),
                >= 0x20 and < 0x7F => sb.Append((char)b),
                _ => sb.Append(CultureInfo.InvariantCulture, $"\\x{b:X2}"),
            };
        }
        if (shown < bytes.Length)
        {
            sb.Append(CultureInfo.InvariantCulture, $"... ({bytes.Length - shown} more)");
        }
        return sb.ToString();
    }
}
