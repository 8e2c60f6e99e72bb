using System.Text;
using CallState.Sip.Messages;

namespace CallState.Sip.Tests.Messages;

/// <summary>One test per RFC 4475 message, asserting the parser's outcome listed in the corpus MANIFEST.md.</summary>
public sealed class Rfc4475ParserTests
{
    private enum Outcome
    {
        /// <summary>Parses; the proxy may still refuse it for a reason of its own (scheme, Proxy-Require, Max-Forwards).</summary>
        Parses,

        /// <summary>A request refused by the parser with the status the proxy answers.</summary>
        Rejects,

        /// <summary>A malformed response: refused, and never answered.</summary>
        DropsResponse,
    }

    private static readonly Dictionary<string, (Outcome Outcome, SipParseError Error)> Expected = new()
    {
        ["wsinv"] = (Outcome.Parses, SipParseError.None),
        ["intmeth"] = (Outcome.Parses, SipParseError.None),
        ["esc01"] = (Outcome.Parses, SipParseError.None),
        ["escnull"] = (Outcome.Parses, SipParseError.None),
        ["esc02"] = (Outcome.Parses, SipParseError.None),
        ["lwsdisp"] = (Outcome.Parses, SipParseError.None),
        ["longreq"] = (Outcome.Parses, SipParseError.None),
        ["dblreq"] = (Outcome.Parses, SipParseError.None),
        ["semiuri"] = (Outcome.Parses, SipParseError.None),
        ["transports"] = (Outcome.Parses, SipParseError.None),
        ["mpart01"] = (Outcome.Parses, SipParseError.None),
        ["unreason"] = (Outcome.Parses, SipParseError.None),
        ["noreason"] = (Outcome.Parses, SipParseError.None),
        ["badinv01"] = (Outcome.Rejects, SipParseError.BadVia),
        ["clerr"] = (Outcome.Rejects, SipParseError.ContentLengthExceedsMessage),
        ["ncl"] = (Outcome.Rejects, SipParseError.BadContentLength),
        ["scalar02"] = (Outcome.Rejects, SipParseError.BadCSeq),
        ["scalarlg"] = (Outcome.DropsResponse, SipParseError.BadCSeq),
        ["quotbal"] = (Outcome.Rejects, SipParseError.BadTo),
        ["ltgtruri"] = (Outcome.Rejects, SipParseError.BadRequestUri),
        ["lwsruri"] = (Outcome.Rejects, SipParseError.BadStartLine),
        ["lwsstart"] = (Outcome.Rejects, SipParseError.BadStartLine),
        ["trws"] = (Outcome.Rejects, SipParseError.BadStartLine),
        ["escruri"] = (Outcome.Rejects, SipParseError.BadRequestUri),
        ["baddate"] = (Outcome.Parses, SipParseError.None),
        ["regbadct"] = (Outcome.Parses, SipParseError.None),
        ["badaspec"] = (Outcome.Rejects, SipParseError.BadTo),
        ["baddn"] = (Outcome.Rejects, SipParseError.MissingHeaderTerminator),
        ["badvers"] = (Outcome.Rejects, SipParseError.UnsupportedVersion),
        ["mismatch01"] = (Outcome.Rejects, SipParseError.CSeqMethodMismatch),
        ["mismatch02"] = (Outcome.Rejects, SipParseError.CSeqMethodMismatch),
        ["bigcode"] = (Outcome.DropsResponse, SipParseError.BadStatusCode),
        ["badbranch"] = (Outcome.Parses, SipParseError.None),
        ["insuf"] = (Outcome.Rejects, SipParseError.MissingRequiredHeader),
        ["unkscm"] = (Outcome.Parses, SipParseError.None),
        ["novelsc"] = (Outcome.Parses, SipParseError.None),
        ["unksm2"] = (Outcome.Parses, SipParseError.None),
        ["bext01"] = (Outcome.Parses, SipParseError.None),
        ["invut"] = (Outcome.Parses, SipParseError.None),
        ["regaut01"] = (Outcome.Parses, SipParseError.None),
        ["multi01"] = (Outcome.Rejects, SipParseError.DuplicateHeader),
        ["mcl01"] = (Outcome.Rejects, SipParseError.DuplicateHeader),
        ["bcast"] = (Outcome.Parses, SipParseError.None),
        ["zeromf"] = (Outcome.Parses, SipParseError.None),
        ["cparam01"] = (Outcome.Parses, SipParseError.None),
        ["cparam02"] = (Outcome.Parses, SipParseError.None),
        ["regescrt"] = (Outcome.Parses, SipParseError.None),
        ["sdp01"] = (Outcome.Parses, SipParseError.None),
        ["inv2543"] = (Outcome.Parses, SipParseError.None),
    };

    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var name in TortureCorpus.ManifestNames())
        {
            data.Add(name);
        }
        return data;
    }

    [Fact]
    public void Every_manifest_file_has_an_expected_outcome_and_exists()
    {
        var names = TortureCorpus.ManifestNames();
        Assert.Equal(49, names.Count);
        Assert.Equal(Expected.Keys.Order(StringComparer.Ordinal), names.Order(StringComparer.Ordinal));
        Assert.All(names, n => Assert.True(File.Exists(Path.Combine(TortureCorpus.Directory, n + ".dat")), n));
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void Parser_gives_the_manifest_outcome(string name)
    {
        var (outcome, error) = Expected[name];
        using var message = new SipMessage();
        var actual = message.Parse(TortureCorpus.Read(name));
        switch (outcome)
        {
            case Outcome.Parses:
                Assert.Equal(SipParseError.None, actual);
                Assert.True(message.HeadersReadable);
                break;
            case Outcome.Rejects:
                Assert.Equal(error, actual);
                Assert.True(message.IsRequest);
                Assert.True(message.HeadersReadable, "a 400 copies the request's Via, From, To, Call-ID and CSeq");
                Assert.True(message.Has(SipHeaderKind.Via));
                break;
            case Outcome.DropsResponse:
                Assert.Equal(error, actual);
                Assert.False(message.IsRequest);
                break;
        }
        AssertFields(name, message);

        // The same bytes split into a multi-segment sequence parse the same way.
        var bytes = TortureCorpus.Read(name);
        using var split = new SipMessage();
        Assert.Equal(actual, split.Parse(Segments.Split(bytes, bytes.Length / 3, 2 * bytes.Length / 3)));
    }

    private static string Text(SipMessage m, TextRange r) => Encoding.UTF8.GetString(m[r]);

    private static void AssertFields(string name, SipMessage m)
    {
        switch (name)
        {
            case "wsinv":
                Assert.Equal(SipMethod.Invite, m.Method);
                Assert.Equal(68, m.MaxForwards);
                Assert.Equal(9, m.CSeq);
                Assert.Equal(SipMethod.Invite, m.CSeqMethod);
                Assert.Equal(3, m.ViaCount);
                Assert.Equal("192.0.2.2", Text(m, m.TopVia.Host));
                Assert.Equal("390skdjuw", Text(m, m.TopVia.Branch));
                Assert.False(m.TopVia.HasMagicCookie(m.Span));
                Assert.Equal("1918181833n", Text(m, m.ToTag));
                Assert.Equal("98asjd8", Text(m, m.FromTag));
                Assert.Equal("wsinv.ndaksdj@192.0.2.1", Text(m, m.CallId));
                Assert.Equal(150, m.Body.Length);
                var unknown = m.Fields.ToArray().Single(f => Text(m, f.Name) == "NewFangledHeader");
                Assert.Equal(SipHeaderKind.Unknown, unknown.Kind);
                Assert.Equal("newfangled value\r\n continued newfangled value", Text(m, unknown.Value));
                Assert.Contains(m.Fields.ToArray(), f => f.Kind == SipHeaderKind.Subject && f.Value.IsEmpty);
                Assert.Contains(m.Fields.ToArray(), f => f.Kind == SipHeaderKind.Contact);
                Assert.Equal(";;,,;;,;", Text(m, m.Fields.ToArray().Single(f => Text(m, f.Name) == "UnknownHeaderWithUnusualValue").Value));
                break;
            case "intmeth":
                Assert.Equal(SipMethod.Extension, m.Method);
                Assert.Equal("!interesting-Method0123456789_*+`.%indeed'~", Text(m, m.MethodToken));
                Assert.Equal(SipUriScheme.Sip, m.RequestUri.Scheme);
                Assert.Equal("example.com", Text(m, m.RequestUri.Host));
                Assert.Equal(255, m.MaxForwards);
                break;
            case "esc01":
                using (var same = new SipMessage())
                {
                    // The To URI unescapes to sip:user@example.com (RFC 3261 19.1.4).
                    Assert.Equal(SipParseError.None, same.Parse(
                        "OPTIONS sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:user@EXAMPLE.com>\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"u8));
                    Assert.True(SipUri.AreEquivalent(m.Span, m.To.Uri, same.Span, same.RequestUri));
                    Assert.True(SipUri.AreEquivalent(m.Span, m.To.Uri, same.Span, same.To.Uri));
                    Assert.False(SipUri.AreEquivalent(m.Span, m.RequestUri, same.Span, same.RequestUri));
                }
                Assert.Equal("sips%3Auser%40example.com", Text(m, m.RequestUri.User));
                Assert.Equal("example.net", Text(m, m.RequestUri.Host));
                break;
            case "escnull":
                Assert.Equal("null-%00-null", Text(m, m.To.Uri.User));
                break;
            case "esc02":
                Assert.Equal("RE%47IST%45R", Text(m, m.MethodToken));
                Assert.Equal(SipMethod.Extension, m.Method);
                Assert.Equal(3, m.Fields.ToArray().Count(f => Text(m, f.Name).Equals("Contact", StringComparison.Ordinal) || Text(m, f.Name) == "C%6Fntact"));
                Assert.Equal(SipHeaderKind.Unknown, m.Fields.ToArray().Single(f => Text(m, f.Name) == "C%6Fntact").Kind);
                break;
            case "lwsdisp":
                Assert.Equal(SipMethod.Options, m.Method);
                Assert.False(m.From.DisplayName.IsEmpty);
                break;
            case "longreq":
                Assert.True(m.ViaCount > 30, $"{m.ViaCount} Via values");
                Assert.True(m.FromTag.Length > 100);
                Assert.True(m.CallId.Length > 100);
                break;
            case "dblreq":
                Assert.Equal(SipMethod.Register, m.Method);
                Assert.Equal(0, m.Body.Length);
                break;
            case "semiuri":
                Assert.Equal("user;par=u%40example.net", Text(m, m.RequestUri.User));
                Assert.Equal("example.com", Text(m, m.RequestUri.Host));
                break;
            case "transports":
                Assert.Equal(5, m.ViaCount);
                var transports = new List<string>();
                foreach (var f in m.Fields)
                {
                    if (f.Kind == SipHeaderKind.Via && ViaValue.TryParse(m.Span, f.Value.Start, f.Value.End, out var v))
                    {
                        transports.Add(Text(m, v.Transport));
                    }
                }
                Assert.Equal(["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"], transports);
                break;
            case "mpart01":
                Assert.Equal(m.ContentLength, m.Body.Length);
                Assert.True(m.Body.Length > 0);
                break;
            case "unreason":
                Assert.Equal(200, m.StatusCode);
                Assert.StartsWith("= 2**3 * 5**2 ", Text(m, m.ReasonPhrase), StringComparison.Ordinal);
                break;
            case "noreason":
                Assert.Equal(100, m.StatusCode);
                Assert.True(m.ReasonPhrase.IsEmpty);
                break;
            case "unkscm":
                Assert.Equal(SipUriScheme.Other, m.RequestUri.Scheme);
                break;
            case "novelsc":
                Assert.Equal(SipUriScheme.Other, m.RequestUri.Scheme);
                break;
            case "bext01":
                Assert.True(m.Has(SipHeaderKind.ProxyRequire));
                break;
            case "zeromf":
                Assert.Equal(0, m.MaxForwards);
                break;
            case "badbranch":
            case "inv2543":
                Assert.False(m.TopVia.HasMagicCookie(m.Span));
                break;
            case "bcast":
                Assert.Equal(200, m.StatusCode);
                Assert.Equal(2, m.ViaCount);
                break;
            case "cparam02":
            case "cparam01":
            case "regescrt":
                Assert.Equal(SipMethod.Register, m.Method);
                break;
            default:
                break;
        }
        if (name == "inv2543")
        {
            Assert.Equal(-1, m.MaxForwards);
            Assert.Equal(-1, m.ContentLength);
            Assert.True(m.Body.Length > 0, "no Content-Length on UDP: the body is the rest of the datagram");
        }
    }
}
