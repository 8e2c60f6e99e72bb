using System.Buffers;
using System.Globalization;
using System.Text;
using CallState.Sip.Messages;
using FsCheck;
using FsCheck.Fluent;

namespace CallState.Sip.Tests.Messages;

/// <summary>
/// Property tests of <see cref="SipMessage.Parse(ReadOnlySpan{byte})"/>, its sequence overload,
/// <see cref="SipStreamFramer.Frame"/> and <see cref="SipMessage.WriteTo"/>: (a) mutations of valid messages never make
/// them throw and always give a defined error with readable properties; (b) a message split across buffer segments
/// parses and frames exactly like the contiguous one; (c) parse, write, parse is stable for valid messages, including
/// messages generated from random parts.
/// </summary>
public sealed class ParserPropertyTests
{
    /// <summary>The RFC 4475 files <see cref="Rfc4475ParserTests"/> expects to parse.</summary>
    private static readonly string[] ValidCorpusNames =
    [
        "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri", "transports",
        "mpart01", "unreason", "noreason", "baddate", "regbadct", "badbranch", "unkscm", "novelsc", "unksm2", "bext01",
        "invut", "regaut01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
    ];

    private static readonly Lazy<(string Name, byte[] Bytes)[]> ValidSeeds = new(() =>
        [
            .. ValidCorpusNames.Select(n => (n, TortureCorpus.Read(n))),
            ("sipp-invite", SippMessages.Invite),
            ("sipp-200", SippMessages.Ok200),
        ]);

    private static readonly Lazy<(string Name, byte[] Bytes)[]> AllSeeds = new(() =>
        [
            .. TortureCorpus.ManifestNames().Select(n => (n, TortureCorpus.Read(n))),
            ("sipp-invite", SippMessages.Invite),
            ("sipp-200", SippMessages.Ok200),
        ]);

    /// <summary>Bytes that end or split something in the SIP grammar.</summary>
    private static readonly byte[] InterestingBytes =
        [(byte)'\r', (byte)'\n', (byte)':', (byte)';', (byte)',', (byte)'"', (byte)'<', (byte)'>', (byte)'%', 0, 0xFF, (byte)' ',
         (byte)'\t', (byte)'\\', (byte)'@', (byte)'=', (byte)'[', (byte)']', (byte)'/', (byte)'0', (byte)'9'];

    /// <summary>Test counts scale with SIP_PROPERTY_SCALE (default 1) for a deeper run than the few seconds a build allows.</summary>
    private static int Tests(int count) =>
        int.TryParse(Environment.GetEnvironmentVariable("SIP_PROPERTY_SCALE"), CultureInfo.InvariantCulture, out var scale) && scale > 1
            ? count * scale
            : count;

    // ---------------------------------------------------------------------------------------------------------------
    // (a) Mutations never throw.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public void Mutated_valid_messages_never_throw_and_give_a_defined_error()
    {
        using var reused = new SipMessage();
        Check.One(
            Config.QuickThrowOnFailure.WithMaxTest(Tests(1000)),
            Prop.ForAll(MutationArb(ValidSeeds.Value), c => MutantHolds(c, reused)));
    }

    [Fact]
    public void Oversized_inserts_give_their_limit_error()
    {
        var invite = SippMessages.Invite;
        var afterStartLine = invite.AsSpan().IndexOf("\r\n"u8) + 2;
        using var m = new SipMessage();
        foreach (var (big, expected) in new[]
                 {
                     (Oversize.Blob70K, SipParseError.MessageTooLarge),
                     (Oversize.LongHeaderLine, SipParseError.HeaderTooLong),
                     (Oversize.ManyHeaderLines, SipParseError.TooManyHeaders),
                     (Oversize.ManyViaValues, SipParseError.TooManyVias),
                     (Oversize.ManyViaLines, SipParseError.TooManyVias),
                 })
        {
            var bytes = Insert(invite, afterStartLine, OversizeBytes(big));
            Assert.True(expected == m.Parse(bytes), $"{big}: {m.Error}");
            CheckInvariants(m, m.Error);
            using var split = new SipMessage();
            Assert.Equal(expected, split.Parse(Segments.Split(bytes, 100, bytes.Length / 2, bytes.Length - 7)));
            Assert.Equal(Describe(m, offsets: true), Describe(split, offsets: true));
            _ = FrameResult(new ReadOnlySequence<byte>(bytes));
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // (b) Segments change nothing.
    // ---------------------------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("sipp-invite")]
    [InlineData("sipp-200")]
    [InlineData("wsinv")]
    [InlineData("mpart01")]
    [InlineData("dblreq")]
    [InlineData("baddn")]
    public void Every_cut_point_parses_and_frames_like_the_contiguous_message(string name)
    {
        var bytes = AllSeeds.Value.Single(s => s.Name == name).Bytes;
        using var whole = new SipMessage();
        var error = whole.Parse(bytes);
        CheckInvariants(whole, error);
        var expected = Describe(whole, offsets: true);
        var expectedFrame = FrameResult(new ReadOnlySequence<byte>(bytes));
        using var split = new SipMessage();
        for (var cut = 0; cut <= bytes.Length; cut++)
        {
            foreach (var cuts in new[] { new[] { cut }, new[] { cut, cut + 1 } })
            {
                var seq = Segments.Split(bytes, cuts);
                Assert.Equal(error, split.Parse(seq));
                var actual = Describe(split, offsets: true);
                Assert.True(expected == actual, $"cuts {string.Join(',', cuts)}:\n{expected}\n---\n{actual}");
                Assert.True(expectedFrame == FrameResult(seq), $"cuts {string.Join(',', cuts)}");
            }
        }
    }

    [Fact]
    public void Two_messages_on_a_stream_frame_alike_at_every_cut_point()
    {
        byte[] stream = [.. "\r\n"u8, .. SippMessages.Invite, .. "\r\n\r\n"u8, .. SippMessages.Ok200];
        for (var cut = 0; cut <= stream.Length; cut++)
        {
            var buffer = Segments.Split(stream, cut);
            var frames = new List<string>();
            while (true)
            {
                var status = SipStreamFramer.Frame(buffer, out var consumed, out _, out var message);
                if (status != OperationStatus.Done)
                {
                    Assert.Equal(OperationStatus.NeedMoreData, status);
                    Assert.Equal(0, buffer.Slice(consumed).Length);
                    break;
                }
                frames.Add(Escape(message.ToArray()));
                buffer = buffer.Slice(consumed);
            }
            Assert.Equal(new[] { Escape(SippMessages.Invite), Escape(SippMessages.Ok200) }, frames);
        }
    }

    [Fact]
    public void Random_cuts_parse_and_frame_like_the_contiguous_message()
    {
        var seeds = AllSeeds.Value;
        var gen =
            from seed in Gen.Choose(0, seeds.Length - 1)
            from count in Gen.Choose(2, 4)
            from cuts in Gen.ArrayOf(Gen.Choose(0, 1 << 20), count)
            select (Seed: seed, Cuts: cuts);
        using var whole = new SipMessage();
        using var split = new SipMessage();
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Tests(500)), Prop.ForAll(Arb.From(gen), c =>
        {
            var (name, bytes) = seeds[c.Seed];
            var cuts = c.Cuts.Select(x => x % (bytes.Length + 1)).ToArray();
            var error = whole.Parse(bytes);
            var seq = Segments.Split(bytes, cuts);
            Assert.Equal(error, split.Parse(seq));
            Assert.True(Describe(whole, offsets: true) == Describe(split, offsets: true), $"{name} cuts {string.Join(',', cuts)}");
            Assert.True(FrameResult(new ReadOnlySequence<byte>(bytes)) == FrameResult(seq), $"{name} cuts {string.Join(',', cuts)}");
            return true;
        }));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // (c) Round trip.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public void Valid_messages_round_trip_through_WriteTo()
    {
        using var m = new SipMessage();
        foreach (var (name, bytes) in ValidSeeds.Value)
        {
            AssertRoundTrip(bytes, name);
            Assert.Equal(SipParseError.None, m.Parse(bytes));
            AssertFramerAgrees(m, name);
        }
    }

    [Fact]
    public void Generated_messages_parse_with_the_generated_values_and_round_trip()
    {
        using var m = new SipMessage();
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Tests(600)), Prop.ForAll(Arb.From(GeneratedMessages()), g => GeneratedHolds(g, m)));
    }

    /// <summary>
    /// The stream framer agrees with the parser on where a valid message ends. This property found the framer reading
    /// Content-Length from the field's first line only, so a folded value (RFC 3261 7.3.1), which the parser accepts,
    /// was InvalidData: <c>"OPTIONS sip:a SIP/2.0\r\nl:\r\n 0\r\n\r\n"</c> (fixed in the framer since).
    /// </summary>
    [Fact]
    public void Generated_messages_frame_whole_on_a_stream()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Tests(600)), Prop.ForAll(Arb.From(GeneratedMessages()), GeneratedFrames));
    }

    /// <summary>Any mutant the parser accepts is a valid message as far as the proxy is concerned, so it must round-trip too.</summary>
    [Fact]
    public void Accepted_mutants_round_trip_through_WriteTo()
    {
        using var m = new SipMessage();
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Tests(1000)), Prop.ForAll(MutationArb(ValidSeeds.Value), c =>
        {
            var bytes = c.Apply();
            if (m.Parse(bytes) == SipParseError.None)
            {
                AssertRoundTrip(bytes, c.ToString());
                AssertFramerAgrees(m, c.ToString());
            }
            return true;
        }));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Mutations.
    // ---------------------------------------------------------------------------------------------------------------

    private enum MutationKind
    {
        FlipBit,
        Replace,
        InsertByte,
        Delete,
        Truncate,
        Duplicate,
        Oversize,
    }

    private enum Oversize
    {
        /// <summary>70 KiB: the message passes <see cref="SipLimits.MaxMessageSize"/>.</summary>
        Blob70K,

        /// <summary>A 20 KiB header line.</summary>
        LongHeaderLine,

        /// <summary>20 KiB without a line end, lengthening whatever line it lands in.</summary>
        LongValueFragment,

        /// <summary>300 header lines.</summary>
        ManyHeaderLines,

        /// <summary>100 Via values in one field.</summary>
        ManyViaValues,

        /// <summary>100 Via fields.</summary>
        ManyViaLines,

        /// <summary>2000 empty parameters.</summary>
        ManyParameters,

        /// <summary>500 CR LF.</summary>
        ManyCrlf,

        /// <summary>A value folded over 1000 lines.</summary>
        LongFoldedValue,

        /// <summary>An unterminated quoted string of 20 KiB.</summary>
        UnterminatedQuote,

        /// <summary>5000 commas (empty list entries).</summary>
        ManyCommas,
    }

    private sealed record Mutation(MutationKind Kind, int Position, int Length, byte Value, int Bit, Oversize Big, bool AtLineStart)
    {
        public override string ToString() => Kind switch
        {
            MutationKind.FlipBit => $"FlipBit(@{Position}, bit {Bit})",
            MutationKind.Replace => $"Replace(@{Position}, 0x{Value:X2})",
            MutationKind.InsertByte => $"Insert(@{Position}{(AtLineStart ? " line" : "")}, 0x{Value:X2})",
            MutationKind.Delete => $"Delete(@{Position}, {Length})",
            MutationKind.Truncate => $"Truncate(@{Position})",
            MutationKind.Duplicate => $"Duplicate(@{Position}, {Length})",
            _ => $"Insert(@{Position}{(AtLineStart ? " line" : "")}, {Big})",
        };
    }

    private sealed record MutationCase(string SeedName, byte[] Seed, IReadOnlyList<Mutation> Steps, IReadOnlyList<int> Cuts)
    {
        public byte[] Apply() => Steps.Aggregate(Seed, ApplyMutation);

        public int[] CutsFor(int length) => Cuts.Select(c => c % (length + 1)).ToArray();

        public override string ToString()
        {
            var bytes = Apply();
            return $"{SeedName} {string.Join(" ", Steps)} cuts [{string.Join(',', CutsFor(bytes.Length))}] -> {bytes.Length} bytes:\n{Escape(bytes, 3000)}";
        }
    }

    private static Arbitrary<MutationCase> MutationArb((string Name, byte[] Bytes)[] seeds)
    {
        var value = Gen.Frequency((3, Gen.Elements(InterestingBytes)), (1, Gen.Choose(0, 255).Select(b => (byte)b)));
        var kind = Gen.Frequency(
            (3, Gen.Constant(MutationKind.FlipBit)),
            (4, Gen.Constant(MutationKind.Replace)),
            (3, Gen.Constant(MutationKind.InsertByte)),
            (2, Gen.Constant(MutationKind.Delete)),
            (2, Gen.Constant(MutationKind.Truncate)),
            (2, Gen.Constant(MutationKind.Duplicate)),
            (2, Gen.Constant(MutationKind.Oversize)));
        var mutation =
            from k in kind
            from position in Gen.Choose(0, 1 << 20)
            from length in Gen.Frequency((3, Gen.Choose(1, 16)), (1, Gen.Choose(1, 400)))
            from v in value
            from bit in Gen.Choose(0, 7)
            from big in Gen.Elements(Enum.GetValues<Oversize>())
            from atLine in Gen.Elements(true, false)
            select new Mutation(k, position, length, v, bit, big, atLine);
        var gen =
            from seed in Gen.Choose(0, seeds.Length - 1)
            from stepCount in Gen.Frequency((4, Gen.Constant(1)), (3, Gen.Choose(2, 3)), (1, Gen.Choose(4, 8)))
            from steps in Gen.ArrayOf(mutation, stepCount)
            from cutCount in Gen.Choose(0, 4)
            from cuts in Gen.ArrayOf(Gen.Choose(0, 1 << 20), cutCount)
            select new MutationCase(seeds[seed].Name, seeds[seed].Bytes, steps, cuts);
        return Arb.From(gen, Shrink);

        static IEnumerable<MutationCase> Shrink(MutationCase c)
        {
            if (c.Cuts.Count > 0)
            {
                yield return c with { Cuts = [] };
            }
            for (var i = 0; i < c.Steps.Count && c.Steps.Count > 1; i++)
            {
                yield return c with { Steps = [.. c.Steps.Take(i), .. c.Steps.Skip(i + 1)] };
            }
        }
    }

    private static byte[] ApplyMutation(byte[] input, Mutation m)
    {
        var length = input.Length;
        var pos = m.Position % (length + 1);
        if (m.AtLineStart && m.Kind is MutationKind.InsertByte or MutationKind.Oversize)
        {
            var crlf = input.AsSpan(pos).IndexOf("\r\n"u8);
            pos = crlf < 0 ? length : pos + crlf + 2;
        }
        switch (m.Kind)
        {
            case MutationKind.FlipBit or MutationKind.Replace:
                if (length == 0)
                {
                    return input;
                }
                var copy = (byte[])input.Clone();
                var at = m.Position % length;
                copy[at] = m.Kind == MutationKind.FlipBit ? (byte)(copy[at] ^ (1 << m.Bit)) : m.Value;
                return copy;
            case MutationKind.InsertByte:
                return Insert(input, pos, [m.Value]);
            case MutationKind.Delete:
                return [.. input.AsSpan(0, pos), .. input.AsSpan(Math.Min(length, pos + m.Length))];
            case MutationKind.Truncate:
                return input[..pos];
            case MutationKind.Duplicate:
                var count = Math.Min(m.Length, length - pos);
                return Insert(input, pos + count, input.AsSpan(pos, count));
            default:
                return Insert(input, pos, OversizeBytes(m.Big));
        }
    }

    private static byte[] Insert(byte[] input, int pos, ReadOnlySpan<byte> bytes) => [.. input.AsSpan(0, pos), .. bytes, .. input.AsSpan(pos)];

    private static readonly Dictionary<Oversize, byte[]> OversizeCache = [];

    private static byte[] OversizeBytes(Oversize big)
    {
        lock (OversizeCache)
        {
            if (!OversizeCache.TryGetValue(big, out var bytes))
            {
                var text = big switch
                {
                    Oversize.Blob70K => new string('a', 70 * 1024),
                    Oversize.LongHeaderLine => "X-Long: " + new string('v', 20 * 1024) + "\r\n",
                    Oversize.LongValueFragment => new string('x', 20 * 1024),
                    Oversize.ManyHeaderLines => string.Concat(Enumerable.Repeat("X-H: v\r\n", 300)),
                    Oversize.ManyViaValues => "Via: " + string.Join(", ", Enumerable.Range(0, 100).Select(i => $"SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}")) + "\r\n",
                    Oversize.ManyViaLines => string.Concat(Enumerable.Range(0, 100).Select(i => $"Via: SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}\r\n")),
                    Oversize.ManyParameters => string.Concat(Enumerable.Repeat(";p", 2000)),
                    Oversize.ManyCrlf => string.Concat(Enumerable.Repeat("\r\n", 500)),
                    Oversize.LongFoldedValue => "X-Fold: a" + string.Concat(Enumerable.Repeat("\r\n b", 1000)) + "\r\n",
                    Oversize.UnterminatedQuote => "\"" + new string('q', 20 * 1024),
                    _ => new string(',', 5000),
                };
                bytes = Encoding.ASCII.GetBytes(text);
                OversizeCache[big] = bytes;
            }
            return bytes;
        }
    }

    private static bool MutantHolds(MutationCase c, SipMessage reused)
    {
        var bytes = c.Apply();
        var error = reused.Parse(bytes);
        CheckInvariants(reused, error);
        var expected = Describe(reused, offsets: true);

        using var fresh = new SipMessage();
        var seq = Segments.Split(bytes, c.CutsFor(bytes.Length));
        var seqError = fresh.Parse(seq);
        CheckInvariants(fresh, seqError);
        Assert.Equal(error, seqError);
        Assert.Equal(expected, Describe(fresh, offsets: true));

        Assert.Equal(FrameResult(new ReadOnlySequence<byte>(bytes)), FrameResult(seq));
        return true;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Invariants and digests.
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// What must hold after any parse: the error is the returned one and defined; every range lies in the message;
    /// every public property and the readers the proxy runs on fields (list entries, Via, name-addr, URI) do not throw.
    /// </summary>
    internal static void CheckInvariants(SipMessage m, SipParseError returned)
    {
        Assert.Equal(returned, m.Error);
        Assert.True(Enum.IsDefined(returned), $"undefined error {(int)returned}");
        Assert.False(SipParseErrors.ReasonPhrase(returned).IsEmpty);
        Assert.Contains(SipParseErrors.StatusCode(returned), new[] { 400, 505 });
        var s = m.Span;
        var len = s.Length;
        Assert.Equal(len, m.Memory.Length);
        Assert.InRange(m.HeadersEnd, 0, len);
        foreach (var r in new[]
                 {
                     m.StartLine, m.MethodToken, m.RequestUriText, m.ReasonPhrase, m.CallId, m.FromTag, m.ToTag, m.CSeqMethodToken,
                     m.Body,
                 })
        {
            InMessage(m, r);
        }
        CheckUri(m, m.RequestUri);
        CheckNameAddress(m, m.From);
        CheckNameAddress(m, m.To);
        CheckVia(m, m.TopVia);
        _ = m.TopVia.HasMagicCookie(s);
        Assert.True(Enum.IsDefined(m.Method));
        Assert.True(Enum.IsDefined(m.CSeqMethod));

        var fields = m.Fields;
        for (var i = 0; i < fields.Length; i++)
        {
            var f = fields[i];
            Assert.True(Enum.IsDefined(f.Kind));
            InMessage(m, f.Name);
            InMessage(m, f.Value);
            InMessage(m, f.Line);
            Assert.False(f.Name.IsEmpty);
            Assert.InRange(m.IndexOf(f.Kind), 0, i);
            foreach (var entry in new SipListEnumerator(s, f.Value))
            {
                InMessage(m, entry);
                if (ViaValue.TryParse(s, entry.Start, entry.End, out var via))
                {
                    CheckVia(m, via);
                }
                if (NameAddress.TryParse(s, entry.Start, entry.End, out var address))
                {
                    CheckNameAddress(m, address);
                }
                if (SipUri.TryParse(s, entry.Start, entry.End, out var uri))
                {
                    CheckUri(m, uri);
                }
            }
        }
        for (var k = 0; k < SipHeaderNames.KindCount; k++)
        {
            Assert.InRange(m.IndexOf((SipHeaderKind)k), -1, fields.Length - 1);
            Assert.Equal(m.IndexOf((SipHeaderKind)k) >= 0, m.Has((SipHeaderKind)k));
        }

        // Serializing is defined for a refused message too (it writes what was read); it must not throw.
        using (var writer = new PooledBufferWriter(64))
        {
            m.WriteTo(writer);
        }

        if (returned == SipParseError.None)
        {
            Assert.True(m.HeadersReadable);
            Assert.InRange(m.ViaCount, 1, SipLimits.MaxViaValues);
            Assert.InRange(m.CSeq, 0, SipLimits.MaxCSeq);
            Assert.False(m.CallId.IsEmpty);
            Assert.InRange(m.MaxForwards, -1, 255);
            Assert.InRange(m.ContentLength, -1, len);
            Assert.Equal(m.HeadersEnd + 2, m.Body.Start);
            if (m.ContentLength >= 0)
            {
                Assert.Equal(m.ContentLength, m.Body.Length);
            }
            else
            {
                Assert.Equal(len, m.Body.End);
            }
            if (m.IsRequest)
            {
                Assert.False(m.MethodToken.IsEmpty);
                Assert.Equal(m.MethodToken.Of(s).ToArray(), m.CSeqMethodToken.Of(s).ToArray());
            }
            else
            {
                Assert.InRange(m.StatusCode, 100, 699);
            }
            _ = SipUri.AreEquivalent(s, m.From.Uri, s, m.To.Uri);
            Span<byte> scratch = stackalloc byte[64];
            _ = SipUri.Unescape(m.To.Uri.User.Of(s), scratch);
        }
    }

    private static void InMessage(SipMessage m, TextRange r)
    {
        Assert.True(r.Start >= 0 && r.Length >= 0 && r.End <= m.Span.Length, $"range {r} outside a message of {m.Span.Length} bytes");
        _ = m[r];
    }

    private static void CheckUri(SipMessage m, SipUri uri)
    {
        Assert.True(Enum.IsDefined(uri.Scheme));
        foreach (var r in new[] { uri.Whole, uri.User, uri.Password, uri.Host, uri.Parameters, uri.Headers })
        {
            InMessage(m, r);
        }
        Assert.InRange(uri.Port, -1, 65535);
        _ = uri.IsLooseRouter(m.Span);
        _ = SipParameters.TryFindUriParameter(m.Span, uri.Parameters, "transport"u8, out var transport);
        InMessage(m, transport);
    }

    private static void CheckNameAddress(SipMessage m, NameAddress a)
    {
        InMessage(m, a.DisplayName);
        InMessage(m, a.Parameters);
        CheckUri(m, a.Uri);
        if (a.TryGetParameter(m.Span, "tag"u8, out var tag))
        {
            InMessage(m, tag);
        }
        _ = SipParameters.Validate(m.Span, a.Parameters);
    }

    private static void CheckVia(SipMessage m, ViaValue v)
    {
        foreach (var r in new[] { v.Whole, v.Version, v.Transport, v.Host, v.Parameters, v.Branch, v.Received, v.Maddr })
        {
            InMessage(m, r);
        }
        Assert.InRange(v.Port, -1, 65535);
        Assert.InRange(v.Rport, -1, 65535);
    }

    /// <summary>Everything the parser exposes, as text; with <paramref name="offsets"/> the ranges' positions too.</summary>
    internal static string Describe(SipMessage m, bool offsets)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        string T(TextRange r) => offsets ? $"{r.Start}+{r.Length}:{Escape(m[r])}" : Escape(m[r]);
        sb.Append(inv, $"error={m.Error} readable={m.HeadersReadable} request={m.IsRequest} method={m.Method} status={m.StatusCode} length={m.Span.Length}\n");
        sb.Append(inv, $"start={T(m.StartLine)} token={T(m.MethodToken)} ruri={T(m.RequestUriText)} reason={T(m.ReasonPhrase)}\n");
        var u = m.RequestUri;
        sb.Append(inv, $"uri={u.Scheme} {T(u.Whole)} user={T(u.User)} password={T(u.Password)} host={T(u.Host)} port={u.Port} params={T(u.Parameters)} headers={u.HasHeaders}/{T(u.Headers)}\n");
        sb.Append(inv, $"callid={T(m.CallId)} from={T(m.From.Uri.Whole)} {T(m.From.DisplayName)} {m.From.Bracketed} {T(m.From.Parameters)} fromtag={T(m.FromTag)}\n");
        sb.Append(inv, $"to={T(m.To.Uri.Whole)} {T(m.To.DisplayName)} {m.To.Bracketed} {T(m.To.Parameters)} totag={T(m.ToTag)}\n");
        sb.Append(inv, $"cseq={m.CSeq} {m.CSeqMethod} {T(m.CSeqMethodToken)} maxforwards={m.MaxForwards} contentlength={m.ContentLength}\n");
        var v = m.TopVia;
        sb.Append(inv, $"vias={m.ViaCount} top={T(v.Whole)} version={T(v.Version)} transport={T(v.Transport)} host={T(v.Host)} port={v.Port} params={T(v.Parameters)} branch={T(v.Branch)} received={T(v.Received)} rport={v.HasRport}/{v.Rport} maddr={T(v.Maddr)}\n");
        sb.Append(inv, $"headersend={(offsets ? m.HeadersEnd : 0)} body={T(m.Body)}\n");
        foreach (var f in m.Fields)
        {
            sb.Append(inv, $"  {f.Kind} [{T(f.Name)}] [{T(f.Value)}] [{T(f.Line)}]\n");
        }
        return sb.ToString();
    }

    /// <summary>Frames <paramref name="buffer"/>, checks the positions make sense, and describes the outcome by offsets and bytes.</summary>
    internal static string FrameResult(in ReadOnlySequence<byte> buffer)
    {
        var status = SipStreamFramer.Frame(buffer, out var consumed, out var examined, out var message);
        Assert.True(status is OperationStatus.Done or OperationStatus.NeedMoreData or OperationStatus.InvalidData, $"status {status}");
        var consumedAt = buffer.Slice(buffer.Start, consumed).Length;
        var examinedAt = buffer.Slice(buffer.Start, examined).Length;
        Assert.InRange(consumedAt, 0, examinedAt);
        Assert.InRange(examinedAt, consumedAt, buffer.Length);
        var skipped = buffer.Slice(0, consumedAt).ToArray();
        if (status == OperationStatus.Done)
        {
            Assert.False(message.IsEmpty);
            var startAt = buffer.Slice(buffer.Start, message.Start).Length;
            Assert.Equal(consumedAt, startAt + message.Length);
            Assert.Equal(consumedAt, examinedAt);
            skipped = buffer.Slice(0, startAt).ToArray();

            // What the framer hands on must itself parse without throwing.
            using var framed = new SipMessage();
            CheckInvariants(framed, framed.Parse(message));
        }
        Assert.True(skipped.Length % 2 == 0 && skipped.AsSpan().SequenceEqual(Repeat("\r\n"u8, skipped.Length / 2)), "only CR LF keep-alives are skipped");
        return $"{status} consumed={consumedAt} examined={examinedAt} message={(message.IsEmpty ? "" : Escape(message.ToArray(), 200))}";
    }

    private static byte[] Repeat(ReadOnlySpan<byte> unit, int count)
    {
        var result = new byte[unit.Length * count];
        for (var i = 0; i < count; i++)
        {
            unit.CopyTo(result.AsSpan(i * unit.Length));
        }
        return result;
    }

    /// <summary>Bytes as readable text: CR, LF, TAB and backslash escaped, other non-printables as \xNN.</summary>
    internal static string Escape(ReadOnlySpan<byte> bytes, int max = int.MaxValue)
    {
        var sb = new StringBuilder();
        var shown = Math.Min(bytes.Length, max);
        for (var i = 0; i < shown; i++)
        {
            var b = bytes[i];
            switch (b)
            {
                case (byte)'\r':
                    sb.Append("\\r");
                    break;
                case (byte)'\n':
                    sb.Append("\\n");
                    break;
                case (byte)'\t':
                    sb.Append("\\t");
                    break;
                case (byte)'\\':
                    sb.Append("\\\\");
                    break;
                case >= 0x20 and < 0x7f:
                    sb.Append((char)b);
                    break;
                default:
                    sb.Append(CultureInfo.InvariantCulture, $"\\x{b:X2}");
                    break;
            }
        }
        if (shown < bytes.Length)
        {
            sb.Append(CultureInfo.InvariantCulture, $"...({bytes.Length - shown} more bytes)");
        }
        return sb.ToString();
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Round trip.
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// Parses, writes, parses again: the second parse has the same start line, the same fields in order (plus the
    /// Content-Length WriteTo adds when the message had none), the same body and key values; writing it again gives
    /// the same bytes.
    /// </summary>
    private static void AssertRoundTrip(byte[] bytes, string what)
    {
        using var first = new SipMessage();
        Assert.Equal(SipParseError.None, first.Parse(bytes));
        using var w1 = new PooledBufferWriter();
        first.WriteTo(w1);
        using var second = new SipMessage();
        var again = second.Parse(w1.WrittenSpan);
        Assert.True(again == SipParseError.None, $"{what}: the serialized message gives {again}:\n{Escape(w1.WrittenSpan)}");

        var a = first.Span;
        var b = second.Span;
        Assert.Equal(Escape(first.StartLine.Of(a)), Escape(second.StartLine.Of(b)));
        var hadLength = first.Has(SipHeaderKind.ContentLength);
        Assert.Equal(first.Fields.Length + (hadLength ? 0 : 1), second.Fields.Length);
        for (var i = 0; i < first.Fields.Length; i++)
        {
            var x = first.Fields[i];
            var y = second.Fields[i];
            Assert.True(
                x.Kind == y.Kind && x.Name.Of(a).SequenceEqual(y.Name.Of(b)) && x.Value.Of(a).SequenceEqual(y.Value.Of(b)),
                $"{what}: field {i} [{Escape(x.Name.Of(a))}: {Escape(x.Value.Of(a))}] became [{Escape(y.Name.Of(b))}: {Escape(y.Value.Of(b))}]");
        }
        if (!hadLength)
        {
            var added = second.Fields[^1];
            Assert.Equal(SipHeaderKind.ContentLength, added.Kind);
            Assert.Equal(first.Body.Length.ToString(CultureInfo.InvariantCulture), Encoding.ASCII.GetString(added.Value.Of(b)));
        }
        Assert.Equal(first.Body.Of(a).ToArray(), second.Body.Of(b).ToArray());
        Assert.Equal(first.ContentLength >= 0 ? first.ContentLength : first.Body.Length, second.ContentLength);
        Assert.Equal(first.IsRequest, second.IsRequest);
        Assert.Equal(first.Method, second.Method);
        Assert.Equal(first.StatusCode, second.StatusCode);
        Assert.Equal(Escape(first.MethodToken.Of(a)), Escape(second.MethodToken.Of(b)));
        Assert.Equal(Escape(first.RequestUriText.Of(a)), Escape(second.RequestUriText.Of(b)));
        Assert.Equal(Escape(first.CallId.Of(a)), Escape(second.CallId.Of(b)));
        Assert.Equal(first.CSeq, second.CSeq);
        Assert.Equal(Escape(first.CSeqMethodToken.Of(a)), Escape(second.CSeqMethodToken.Of(b)));
        Assert.Equal(Escape(first.FromTag.Of(a)), Escape(second.FromTag.Of(b)));
        Assert.Equal(Escape(first.ToTag.Of(a)), Escape(second.ToTag.Of(b)));
        Assert.Equal(Escape(first.TopVia.Branch.Of(a)), Escape(second.TopVia.Branch.Of(b)));
        Assert.Equal(Escape(first.TopVia.Host.Of(a)), Escape(second.TopVia.Host.Of(b)));
        Assert.Equal(first.TopVia.Port, second.TopVia.Port);
        Assert.Equal(first.ViaCount, second.ViaCount);
        Assert.Equal(first.MaxForwards, second.MaxForwards);

        using var w2 = new PooledBufferWriter();
        second.WriteTo(w2);
        Assert.True(w1.WrittenSpan.SequenceEqual(w2.WrittenSpan), $"{what}: a second serialization differs:\n{Escape(w1.WrittenSpan)}\n---\n{Escape(w2.WrittenSpan)}");

        // The serialized form also frames as one whole message on a stream.
        var status = SipStreamFramer.Frame(new ReadOnlySequence<byte>(w1.WrittenMemory), out _, out _, out var framed);
        Assert.Equal(OperationStatus.Done, status);
        Assert.Equal(w1.WrittenCount, framed.Length);
    }

    /// <summary>
    /// On a stream, a message the parser accepts frames from its start line to the end of its Content-Length body
    /// (no body without Content-Length), so framer and parser never disagree on where it ends.
    /// </summary>
    private static void AssertFramerAgrees(SipMessage m, string what)
    {
        var bytes = m.Span.ToArray();
        var buffer = Segments.Split(bytes, bytes.Length / 3);
        var status = SipStreamFramer.Frame(buffer, out var consumed, out _, out var message);
        Assert.True(status == OperationStatus.Done, $"{what}: the framer says {status}");
        var expectedEnd = m.Body.Start + Math.Max(m.ContentLength, 0);
        Assert.Equal(expectedEnd, buffer.Slice(buffer.Start, consumed).Length);
        Assert.True(
            message.ToArray().AsSpan().SequenceEqual(bytes.AsSpan(m.StartLine.Start, expectedEnd - m.StartLine.Start)),
            $"{what}: framed {Escape(message.ToArray(), 400)}");
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Messages generated from random parts.
    // ---------------------------------------------------------------------------------------------------------------

    private const string TokenChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~";
    private const string AlnumChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    private const string WordChars = TokenChars + "()<>:\\\"/[]?{}";

    private static readonly string[] KnownMethods =
        ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"];

    private sealed record Header(string Name, string Separator, string Value, string Trailing, string[] Branches)
    {
        public string Line => Name + Separator + Value + Trailing + "\r\n";
    }

    private sealed record GeneratedMessage(
        byte[] Bytes,
        string StartLine,
        string? Method,
        int Status,
        string CallId,
        string FromTag,
        string ToTag,
        long CSeq,
        string CSeqMethod,
        int MaxForwards,
        Header[] Headers,
        byte[] Body,
        bool HasContentLength,
        int Leading)
    {
        public override string ToString() => Escape(Bytes);
    }

    private static Gen<string> Chars(string alphabet, int min, int max) =>
        from n in Gen.Choose(min, max)
        from cs in Gen.ArrayOf(Gen.Elements(alphabet.ToCharArray()), n)
        select new string(cs);

    private static Gen<string> Host() => Gen.OneOf(
        Gen.Elements("192.0.2.1", "198.51.100.77", "proxy.example.com", "[2001:db8::1]", "h-1.example.net"),
        Chars(AlnumChars, 1, 12).Select(l => l + ".example.com"));

    private static Gen<string> Port() => Gen.Elements("", ":5060", ":5061", ":1", ":65535", ":0");

    private static Gen<string> SipUriText() =>
        from scheme in Gen.Elements("sip", "sip", "sips", "SIP")
        from user in Gen.Frequency((4, Chars(AlnumChars, 1, 10)), (1, Gen.Constant("us%41er")), (1, Gen.Constant("")))
        from host in Host()
        from port in Port()
        from parameters in Gen.Elements("", ";transport=udp", ";lr", ";transport=tcp;lr", ";user=phone")
        select scheme + ":" + (user.Length > 0 ? user + "@" : "") + host + port + parameters;

    private static Gen<string> NameVariant(params string[] names) => Gen.Elements(names);

    private static Gen<string> Separator() => Gen.Elements(": ", ":", " : ", "\t:\t", ":   ", ":\r\n ");

    private static Gen<string> Trailing() => Gen.Frequency((6, Gen.Constant("")), (1, Gen.Elements(" ", "\t", "  ")));

    private static Gen<Header> HeaderOf(Gen<string> name, Gen<string> value, string[]? branches = null) =>
        from n in name
        from sep in Separator()
        from v in value
        from t in Trailing()
        select new Header(n, sep, v, t, branches ?? []);

    private static Gen<(string Text, string Branch)> ViaEntry() =>
        from transport in Gen.Elements("UDP", "TCP", "TLS", "SCTP", "WS", "udp")
        from host in Host()
        from port in Port()
        from branch in Chars(TokenChars, 1, 24)
        from extra in Gen.Elements("", ";rport", ";rport=5060", ";received=192.0.2.9", ";rport;received=192.0.2.9", ";maddr=224.2.0.1;ttl=1")
        from order in Gen.Elements(true, false)
        select (order
            ? $"SIP/2.0/{transport} {host}{port};branch=z9hG4bK{branch}{extra}"
            : $"SIP/2.0/{transport} {host}{port}{extra};branch=z9hG4bK{branch}", "z9hG4bK" + branch);

    private static Gen<Header[]> ViaHeaders() =>
        from count in Gen.Choose(1, 5)
        from entries in Gen.ArrayOf(ViaEntry(), count)
        from lines in Gen.Choose(1, count)
        from comma in Gen.Elements(", ", ",", " ,\t", ",\r\n ")
        from names in Gen.ArrayOf(NameVariant("Via", "via", "VIA", "v", "V"), lines)
        from seps in Gen.ArrayOf(Separator(), lines)
        select Enumerable.Range(0, lines).Select(l =>
        {
            // Entries are dealt to lines in order: line l gets entries [l*count/lines, (l+1)*count/lines).
            var part = entries[(l * count / lines)..((l + 1) * count / lines)];
            return new Header(names[l], seps[l], string.Join(comma, part.Select(e => e.Text)), "", [.. part.Select(e => e.Branch)]);
        }).ToArray();

    private static Gen<string> Address(string tag) =>
        from display in Gen.Elements("", "\"Alice Smith\" ", "Alice ", "\"\" ", "\"Q \\\"x\\\" \"", "Bob\t")
        from uri in SipUriText()
        from bare in Gen.Elements(true, false)
        from extra in Gen.Elements("", ";x-p=1", " ; x-q", ";x-r=\"a b;c\"")
        select (display.Length == 0 && bare && !uri.Contains(';', StringComparison.Ordinal) ? uri : display + "<" + uri + ">")
            + (tag.Length > 0 ? ";tag=" + tag : "") + extra;

    private static Gen<Header> UnknownHeader()
    {
        var valueChars = Gen.Frequency(
            (20, Gen.Elements("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".ToCharArray())),
            (1, Gen.Elements('é', 'ü', '€')));
        var part =
            from n in Gen.Choose(1, 30)
            from cs in Gen.ArrayOf(valueChars, n)
            select new string(cs).Trim();
        var value = Gen.Frequency(
            (5, part),
            (1, Gen.Constant("")),
            (2, from a in part from b in part select a.Length > 0 && b.Length > 0 ? a + "\r\n " + b : a + b));
        return HeaderOf(Chars(TokenChars, 1, 12).Select(n => "X-" + n), value);
    }

    private static Gen<GeneratedMessage> GeneratedMessages()
    {
        var method = Gen.Frequency((5, Gen.Elements(KnownMethods)), (1, Chars(TokenChars, 1, 10)));
        var requestLine =
            from m in method
            from uri in Gen.OneOf(SipUriText(), Gen.Constant("tel:+15550100"), Gen.Constant("urn:service:sos"))
            from version in Gen.Elements("SIP/2.0", "SIP/2.0", "sip/2.0")
            select (Line: $"{m} {uri} {version}", Method: (string?)m, Status: 0);
        var statusLine =
            from code in Gen.Choose(100, 699)
            from reason in Gen.Elements("OK", "Ringing", "Not Found", "Session Progress", "", "Très bien")
            select (Line: $"SIP/2.0 {code} {reason}", Method: (string?)null, Status: code);
        return
            from start in Gen.Frequency((3, requestLine), (2, statusLine))
            from cseqMethod in start.Method is null ? Gen.Elements(KnownMethods) : Gen.Constant(start.Method)
            from vias in ViaHeaders()
            from fromTag in Chars(TokenChars, 1, 20)
            from toTag in Gen.Frequency((1, Gen.Constant("")), (1, Chars(TokenChars, 1, 20)))
            from fromHeader in HeaderOf(NameVariant("From", "from", "f", "F"), Address(fromTag))
            from toHeader in HeaderOf(NameVariant("To", "to", "TO", "t"), Address(toTag))
            from callId in Gen.OneOf(
                Chars(WordChars, 1, 30),
                from a in Chars(AlnumChars, 1, 20) from h in Gen.Elements("192.0.2.1", "example.com") select a + "@" + h)
            from callIdHeader in HeaderOf(NameVariant("Call-ID", "call-id", "CALL-ID", "i", "I"), Gen.Constant(callId))
            from cseq in Gen.Frequency((3, Gen.Choose(0, 100_000)), (1, Gen.Elements(0, int.MaxValue, int.MaxValue - 1)))
            from cseqSpace in Gen.Elements(" ", "  ", "\t", "\r\n ")
            from cseqHeader in HeaderOf(NameVariant("CSeq", "cseq", "CSEQ"), Gen.Constant(cseq.ToString(CultureInfo.InvariantCulture) + cseqSpace + cseqMethod))
            from maxForwards in Gen.Frequency((1, Gen.Constant(-1)), (3, Gen.Choose(0, 255)))
            from mfHeader in HeaderOf(NameVariant("Max-Forwards", "max-forwards"), Gen.Constant(maxForwards.ToString(CultureInfo.InvariantCulture)))
            from contact in Gen.Frequency((1, Gen.Constant("")), (2, SipUriText().Select(u => "<" + u + ">;expires=60")), (1, Gen.Constant("*")))
            from contactHeader in HeaderOf(NameVariant("Contact", "m"), Gen.Constant(contact))
            from routeCount in Gen.Choose(0, 3)
            from routes in Gen.ArrayOf(SipUriText().Select(u => "<" + u + ";lr>"), routeCount)
            from routeHeader in HeaderOf(NameVariant("Record-Route", "Route", "record-route"), Gen.Constant(string.Join(", ", routes)))
            from contentType in HeaderOf(NameVariant("Content-Type", "c"), Gen.Elements("application/sdp", "text/plain;charset=utf-8"))
            from hasContentType in Gen.Elements(true, false)
            from unknownCount in Gen.Choose(0, 5)
            from unknown in Gen.ArrayOf(UnknownHeader(), unknownCount)
            from bodyLength in Gen.Frequency((2, Gen.Constant(0)), (3, Gen.Choose(1, 300)))
            from body in Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), bodyLength)
            from hasContentLength in Gen.Frequency((4, Gen.Constant(true)), (1, Gen.Constant(false)))
            from zeros in Gen.Elements("", "", "0", "00")
            from clHeader in HeaderOf(NameVariant("Content-Length", "content-length", "l", "L"), Gen.Constant(zeros + bodyLength.ToString(CultureInfo.InvariantCulture)))
            let headers = vias
                .Concat([fromHeader, toHeader, callIdHeader, cseqHeader, contentType])
                .Concat(maxForwards >= 0 ? [mfHeader] : [])
                .Concat(contact.Length > 0 ? [contactHeader] : [])
                .Concat(routeCount > 0 ? [routeHeader] : [])
                .Concat(hasContentLength ? [clHeader] : [])
                .Concat(unknown)
                .Where(h => hasContentType || !ReferenceEquals(h, contentType))
                .ToArray()
            from ordered in Gen.Shuffle(headers)
            from leading in Gen.Frequency((4, Gen.Constant(0)), (1, Gen.Choose(1, 2)))
            select Build(start.Line, start.Method, start.Status, callId, fromTag, toTag, cseq, cseqMethod, maxForwards, ordered, body, hasContentLength, leading);
    }

    private static GeneratedMessage Build(
        string startLine, string? method, int status, string callId, string fromTag, string toTag, long cseq, string cseqMethod,
        int maxForwards, Header[] headers, byte[] body, bool hasContentLength, int leading)
    {
        var text = new StringBuilder();
        for (var i = 0; i < leading; i++)
        {
            text.Append("\r\n");
        }
        text.Append(startLine).Append("\r\n");
        foreach (var h in headers)
        {
            text.Append(h.Line);
        }
        text.Append("\r\n");
        byte[] bytes = [.. Encoding.UTF8.GetBytes(text.ToString()), .. body];
        return new GeneratedMessage(bytes, startLine, method, status, callId, fromTag, toTag, cseq, cseqMethod, maxForwards, headers, body, hasContentLength, leading);
    }

    private static bool GeneratedHolds(GeneratedMessage g, SipMessage m)
    {
        var error = m.Parse(g.Bytes);
        Assert.True(error == SipParseError.None, $"{error}: {g}");
        CheckInvariants(m, error);
        var s = m.Span;
        string Text(TextRange r) => Encoding.UTF8.GetString(m[r]);
        Assert.Equal(g.StartLine, Text(m.StartLine));
        Assert.Equal(g.Method is not null, m.IsRequest);
        if (g.Method is not null)
        {
            Assert.Equal(g.Method, Text(m.MethodToken));
            var known = Array.IndexOf(KnownMethods, g.Method);
            Assert.Equal(known < 0 ? SipMethod.Extension : Enum.Parse<SipMethod>(g.Method, ignoreCase: true), m.Method);
        }
        else
        {
            Assert.Equal(g.Status, m.StatusCode);
        }
        Assert.Equal(g.CallId, Text(m.CallId));
        Assert.Equal(g.FromTag, Text(m.FromTag));
        Assert.Equal(g.ToTag, Text(m.ToTag));
        Assert.Equal(g.CSeq, m.CSeq);
        Assert.Equal(g.CSeqMethod, Text(m.CSeqMethodToken));
        Assert.Equal(g.MaxForwards, m.MaxForwards);
        var branches = g.Headers.SelectMany(h => h.Branches).ToArray();
        Assert.Equal(branches.Length, m.ViaCount);
        Assert.Equal(branches[0], Text(m.TopVia.Branch));
        Assert.True(m.TopVia.HasMagicCookie(s));
        Assert.Equal(g.Body, m.Body.Of(s).ToArray());
        Assert.Equal(g.HasContentLength ? g.Body.Length : -1, m.ContentLength);
        Assert.Equal(g.Headers.Length, m.Fields.Length);
        for (var i = 0; i < g.Headers.Length; i++)
        {
            var expected = g.Headers[i];
            var actual = m.Fields[i];
            Assert.Equal(expected.Name, Text(actual.Name));
            Assert.Equal(ExpectedValue(expected), Text(actual.Value));
            Assert.Equal(expected.Line, Text(actual.Line));
        }

        AssertRoundTrip(g.Bytes, g.ToString());
        return true;
    }

    /// <summary>On a stream a valid message frames whole when it says how long its body is, and without its body when it does not.</summary>
    private static bool GeneratedFrames(GeneratedMessage g)
    {
        var buffer = Segments.Split(g.Bytes, g.Bytes.Length / 2);
        var status = SipStreamFramer.Frame(buffer, out var consumed, out _, out var message);
        Assert.True(status == OperationStatus.Done, $"{status}: {g}");
        Assert.Equal(g.Bytes.Length - (2 * g.Leading) - (g.HasContentLength ? 0 : g.Body.Length), message.Length);
        Assert.Equal(g.Bytes.Length - (g.HasContentLength ? 0 : g.Body.Length), buffer.Slice(buffer.Start, consumed).Length);
        return true;
    }

    /// <summary>The field value as the parser reports it: LWS (including a folded line break) trimmed at both ends.</summary>
    private static string ExpectedValue(Header h)
    {
        var value = h.Value + h.Trailing;
        return value.Trim(' ', '\t', '\r', '\n');
    }
}
