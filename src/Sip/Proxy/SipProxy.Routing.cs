using System.Net;
using System.Text;
using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

public sealed partial class SipProxy
{
    /// <summary>This edge's TLS listener as routing sees it (Via and Record-Route ports, self checks); null when TLS is off.</summary>
    private readonly TlsAddressing? _tls;

    /// <summary>
    /// Where responses to this request go (RFC 3261 18.2.2, RFC 3581): over TCP back on the connection; over UDP to
    /// the source address, at the source port when the Via asks for rport (or <see cref="SipProxyOptions.SymmetricResponses"/>),
    /// else at the Via's port.
    /// </summary>
    private SipTarget ResponseTarget(SipMessage m, in SipTarget source)
    {
        if (source.IsReliable || _options.SymmetricResponses || m.TopVia.HasRport)
        {
            return source;
        }
        var port = m.TopVia.Port > 0 ? m.TopVia.Port : 5060;
        return port == source.EndPoint.Port ? source : source with { EndPoint = new IPEndPoint(source.EndPoint.Address, port) };
    }

    /// <summary>Answers a request that did not parse: 400 (or 505) naming the problem, unless nothing can be answered.</summary>
    private void RejectMalformed(SipMessage m, in SipTarget source)
    {
        if (m.Method == SipMethod.Ack || !m.HeadersReadable || !m.Has(SipHeaderKind.Via))
        {
            _metrics.Drop("malformed_request");
            return;
        }
        var target = source;
        if (source.Transport == SipTransportKind.Udp && !_options.SymmetricResponses)
        {
            var via = m.Fields[m.IndexOf(SipHeaderKind.Via)].Value;
            var s = m.Span;
            var comma = SipSyntax.IndexOfUnquoted(s, (byte)',', via.Start, via.End);
            if (ViaValue.TryParse(s, via.Start, comma < 0 ? via.End : comma, out var top) && !top.HasRport)
            {
                target = source with { EndPoint = new IPEndPoint(source.EndPoint.Address, top.Port > 0 ? top.Port : 5060) };
            }
        }
        var seed = Scratch.Key();
        seed.Write(m.StartLine.Of(m.Span));
        seed.Write(m.Fields[m.IndexOf(SipHeaderKind.Via)].Value.Of(m.Span));
        var response = ResponseTemplate.From(m, seed.WrittenSpan)
            .Build(SipParseErrors.StatusCode(m.Error), SipParseErrors.ReasonPhrase(m.Error));
        _metrics.Generated(SipParseErrors.StatusCode(m.Error), target.Transport, badRequest: true);
        _sender.Send(target, response);
    }

    private void RespondStateless(SipMessage m, in SipTarget source, int status, ReadOnlySpan<byte> reason, ReadOnlySpan<byte> extraHeaders = default)
    {
        var seed = Scratch.Key();
        TransactionKeys.ServerKey(m, seed);
        var response = ResponseTemplate.From(m, seed.WrittenSpan).Build(status, reason, extraHeaders);
        _metrics.Generated(status, source.Transport);
        _sender.Send(ResponseTarget(m, source), response);
    }

    /// <summary>True when <paramref name="uri"/> names this edge (any of its hosts, and one of its ports or none).</summary>
    private bool IsSelf(ReadOnlySpan<byte> s, in SipUri uri)
    {
        if (uri.Scheme is not (SipUriScheme.Sip or SipUriScheme.Sips))
        {
            return false;
        }
        // RFC 3263 4.2: without a port, a sips URI or transport=tls means 5061, anything else 5060.
        var port = uri.Port > 0 ? uri.Port
            : uri.Scheme == SipUriScheme.Sips || (SipParameters.TryFindUriParameter(s, uri.Parameters, "transport"u8, out var t) && Ascii.EqualsIgnoreCase(t.Of(s), "tls"u8)) ? 5061
            : 5060;
        if (Array.IndexOf(_selfPorts, port) < 0 && (_tls is null || Array.IndexOf(_tls.Ports, port) < 0))
        {
            return false;
        }
        var host = uri.Host.Of(s);
        foreach (var self in _selfHosts)
        {
            if (Ascii.EqualsIgnoreCase(host, self))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// RFC 3261 16.3 step 4: the request already passed here unchanged when one of its Via entries is ours and its
    /// branch ends with the loop hash this request has now (a spiral, with a changed Request-URI, does not).
    /// </summary>
    private bool IsLoop(SipMessage m, ulong loopHash) => HasOurVia(m, loopHash);

    /// <summary>One of the request's Via entries is ours: it passed this edge before (a spiral once <see cref="IsLoop"/> said no).</summary>
    private bool IsSpiral(SipMessage m) => HasOurVia(m, loopHash: null);

    /// <summary>A Via entry of this edge (any of its transports' ports), whose branch ends with <paramref name="loopHash"/> when one is given.</summary>
    private bool HasOurVia(SipMessage m, ulong? loopHash)
    {
        var s = m.Span;
        foreach (var field in m.Fields)
        {
            if (field.Kind != SipHeaderKind.Via)
            {
                continue;
            }
            foreach (var entry in new SipListEnumerator(s, field.Value))
            {
                if (ViaValue.TryParse(s, entry.Start, entry.End, out var via)
                    && Ascii.EqualsIgnoreCase(via.Host.Of(s), _viaHost)
                    && ((via.Port > 0 ? via.Port : 5060) == _viaPort || (_tls is not null && via.Port == _tls.ViaPort))
                    && (loopHash is not { } hash || TransactionKeys.BranchEndsWithLoopHash(via.Branch.Of(s), hash)))
                {
                    return true;
                }
            }
        }
        return false;
    }

    /// <summary>
    /// RFC 3261 16.4 and 16.5: pops the Route entries naming this edge, then sends to the next Route entry if any,
    /// else to the Request-URI (a static next hop when it names this edge or a host that is not an IP address).
    /// </summary>
    private bool TryRoute(SipMessage m, in SipTarget source, out SipTarget target, out int popRoutes, out TextRange callerTag)
    {
        var s = m.Span;
        popRoutes = 0;
        callerTag = default;
        target = default;
        foreach (var field in m.Fields)
        {
            if (field.Kind != SipHeaderKind.Route)
            {
                continue;
            }
            foreach (var entry in new SipListEnumerator(s, field.Value))
            {
                if (!NameAddress.TryParse(s, entry.Start, entry.End, out var route))
                {
                    return false;
                }
                if (IsSelf(s, route.Uri))
                {
                    popRoutes++;
                    if (SipParameters.TryFindUriParameter(s, route.Uri.Parameters, CallerTagParameter, out var tag) && !tag.IsEmpty)
                    {
                        callerTag = tag;
                    }
                    continue;
                }
                return TryResolve(s, route.Uri, source, allowDefault: true, out target);
            }
        }
        return TryResolve(s, m.RequestUri, source, allowDefault: true, out target);
    }

    private bool TryResolve(ReadOnlySpan<byte> s, in SipUri uri, in SipTarget source, bool allowDefault, out SipTarget target)
    {
        target = default;
        // A request that came over TLS goes on over TCP unless its next hop asks for TLS: the next hop's listener for
        // a plain URI is its UDP/TCP port, where TLS would not be answered.
        var transport = source.Transport == SipTransportKind.Tls ? SipTransportKind.Tcp : source.Transport;
        if (SipParameters.TryFindUriParameter(s, uri.Parameters, "transport"u8, out var t))
        {
            var value = t.Of(s);
            if (Ascii.EqualsIgnoreCase(value, "tcp"u8))
            {
                transport = SipTransportKind.Tcp;
            }
            else if (Ascii.EqualsIgnoreCase(value, "udp"u8))
            {
                transport = SipTransportKind.Udp;
            }
            else if (Ascii.EqualsIgnoreCase(value, "tls"u8))
            {
                transport = SipTransportKind.Tls;
            }
        }
        if (uri.Scheme == SipUriScheme.Sips)
        {
            // RFC 3261 26.2.2: a sips URI is reached over TLS on every hop, whatever transport parameter it carries.
            transport = SipTransportKind.Tls;
        }
        string? serverName = null;
        IPEndPoint? endPoint = null;
        if (uri.Scheme is SipUriScheme.Sip or SipUriScheme.Sips && !IsSelf(s, uri))
        {
            var host = uri.Host.Of(s);
            if (host.Length > 2 && host[0] == '[')
            {
                host = host[1..^1];
            }
            Span<char> chars = stackalloc char[Math.Min(host.Length, 64)];
            if (host.Length <= 64)
            {
                var n = Encoding.ASCII.GetChars(host, chars);
                if (IPAddress.TryParse(chars[..n], out var address))
                {
                    // RFC 3263 4.2: 5061 is the default port of TLS, 5060 of UDP and TCP.
                    endPoint = new IPEndPoint(address, uri.Port > 0 ? uri.Port : transport == SipTransportKind.Tls ? 5061 : 5060);
                }
                else if (_nextHops.Count > 0 && _nextHops.TryGetValue(new string(chars[..n]), out var hop))
                {
                    endPoint = hop;
                    if (transport == SipTransportKind.Tls)
                    {
                        // The next hop's certificate must name the host the URI names (RFC 5922), not the address it maps to.
                        serverName = new string(chars[..n]);
                    }
                }
            }
        }
        if (endPoint is null && (allowDefault || uri.Scheme == SipUriScheme.Tel))
        {
            endPoint = _defaultUpstream;
        }
        if (endPoint is null)
        {
            return false;
        }
        target = new SipTarget(transport, endPoint, ServerName: serverName);
        return true;
    }

    /// <summary>
    /// RFC 3261 26.2.2: a request whose Request-URI is a sips URI is carried over TLS on every hop. <see cref="TryResolve"/>
    /// reaches a sips URI over TLS, but a Route entry with a sip URI (a preloaded route, a next proxy's Record-Route)
    /// resolves to UDP or TCP: such a request is refused rather than sent in the clear.
    /// </summary>
    private static bool IsPlainHopForSips(SipMessage m, in SipTarget target) =>
        m.RequestUri.Scheme == SipUriScheme.Sips && target.Transport != SipTransportKind.Tls;

    /// <summary>
    /// RFC 3261 16.6: the request as forwarded. Our Via on top (branch derived from the request's own), Record-Route
    /// with the advertised address for dialog-creating requests, Max-Forwards decremented (or 70 added), our Route
    /// entries removed, received/rport filled in the sender's Via (RFC 3261 18.2.1, RFC 3581); every other field verbatim.
    /// </summary>
    private byte[] BuildForwardedRequest(SipMessage m, in SipTarget source, in SipTarget target, ReadOnlySpan<byte> branch,
        int popRoutes, bool recordRoute, TextRange callerTag, out CancelInfo cancelInfo)
    {
        var s = m.Span;
        var w = Scratch.Message();
        w.Write(m.MethodToken.Of(s));
        w.Write(" "u8);
        w.Write(m.RequestUriText.Of(s));
        w.Write(" SIP/2.0\r\n"u8);
        var viaStart = w.WrittenCount;
        WriteOwnVia(w, target.Transport, branch);
        var viaEnd = w.WrittenCount;
        if (recordRoute)
        {
            if (target.Transport != source.Transport)
            {
                // Two entries when the transport changes here (RFC 3261 16.6 step 4, RFC 5658 double Record-Route).
                WriteRecordRoute(w, target.Transport, callerTag.Of(s));
            }
            WriteRecordRoute(w, source.Transport, callerTag.Of(s));
        }
        var firstVia = m.IndexOf(SipHeaderKind.Via);
        var routesStart = -1;
        var routesBytes = new List<(int Start, int End)>();
        var skip = popRoutes;
        var fields = m.Fields;
        for (var i = 0; i < fields.Length; i++)
        {
            var field = fields[i];
            switch (field.Kind)
            {
                case SipHeaderKind.Via when i == firstVia:
                    WriteTopVia(w, m, field, source);
                    break;
                case SipHeaderKind.MaxForwards:
                    w.Write("Max-Forwards: "u8);
                    w.WriteNumber(m.MaxForwards - 1);
                    w.WriteCrlf();
                    break;
                case SipHeaderKind.Route:
                    var start = w.WrittenCount;
                    routesStart = routesStart < 0 ? start : routesStart;
                    if (skip == 0)
                    {
                        w.Write(field.Line.Of(s));
                    }
                    else
                    {
                        var wrote = false;
                        foreach (var entry in new SipListEnumerator(s, field.Value))
                        {
                            if (skip > 0)
                            {
                                skip--;
                                continue;
                            }
                            w.Write(wrote ? ", "u8 : "Route: "u8);
                            w.Write(entry.Of(s));
                            wrote = true;
                        }
                        if (wrote)
                        {
                            w.WriteCrlf();
                        }
                    }
                    routesBytes.Add((start, w.WrittenCount));
                    break;
                default:
                    w.Write(field.Line.Of(s));
                    break;
            }
        }
        if (m.MaxForwards < 0)
        {
            w.Write(_maxForwardsLine);
        }
        if (m.ContentLength < 0)
        {
            w.Write("Content-Length: "u8);
            w.WriteNumber(m.Body.Length);
            w.WriteCrlf();
        }
        w.WriteCrlf();
        w.Write(m.Body.Of(s));
        var bytes = w.ToArray();

        cancelInfo = null!;
        if (m.Method == SipMethod.Invite)
        {
            var routes = new byte[routesBytes.Sum(r => r.End - r.Start)];
            var at = 0;
            foreach (var (start, end) in routesBytes)
            {
                bytes.AsSpan(start, end - start).CopyTo(routes.AsSpan(at));
                at += end - start;
            }
            cancelInfo = new CancelInfo(
                m.RequestUriText.Of(s).ToArray(),
                bytes.AsSpan(viaStart, viaEnd - viaStart).ToArray(),
                routes,
                Line(m, SipHeaderKind.From),
                Line(m, SipHeaderKind.To),
                Line(m, SipHeaderKind.CallId),
                m.CSeq);
        }
        return bytes;
    }

    /// <summary>URI parameter of our Record-Route entry carrying the caller's From tag, so any edge can name the call of an in-dialog request.</summary>
    private static ReadOnlySpan<byte> CallerTagParameter => "cs-tag"u8;

    /// <summary>
    /// The caller's tag of an in-dialog request: from our Record-Route entry, with the escapes
    /// <see cref="WriteRecordRoute"/> wrote decoded (a From tag <c>a+b</c> travels as <c>a%2Bb</c>), or else its From tag.
    /// </summary>
    private static string CallerTagOf(SipMessage m, TextRange routeCallerTag)
    {
        if (routeCallerTag.IsEmpty)
        {
            return Encoding.UTF8.GetString(m[m.FromTag]);
        }

        var raw = m[routeCallerTag];
        if (raw.IndexOf((byte)'%') < 0)
        {
            return Encoding.UTF8.GetString(raw);
        }

        Span<byte> decoded = raw.Length <= 256 ? stackalloc byte[raw.Length] : new byte[raw.Length];
        var n = 0;
        for (var i = 0; i < raw.Length; i++)
        {
            if (raw[i] == (byte)'%' && i + 2 < raw.Length && char.IsAsciiHexDigit((char)raw[i + 1]) && char.IsAsciiHexDigit((char)raw[i + 2]))
            {
                decoded[n++] = (byte)((HexValue(raw[i + 1]) << 4) | HexValue(raw[i + 2]));
                i += 2;
            }
            else
            {
                decoded[n++] = raw[i];
            }
        }

        return Encoding.UTF8.GetString(decoded[..n]);

        static int HexValue(byte b) => b <= (byte)'9' ? b - '0' : (b | 0x20) - 'a' + 10;
    }

    /// <summary>This edge's Via for a request it sends over <paramref name="transport"/>, with <paramref name="branch"/>.</summary>
    private void WriteOwnVia(PooledBufferWriter w, SipTransportKind transport, ReadOnlySpan<byte> branch)
    {
        w.Write(transport switch
        {
            SipTransportKind.Tcp => "Via: SIP/2.0/TCP "u8,
            SipTransportKind.Tls => "Via: SIP/2.0/TLS "u8,
            _ => "Via: SIP/2.0/UDP "u8,
        });
        w.Write(_viaHost);
        w.Write(":"u8);
        // RFC 3261 18.2.2: a response that cannot go back on the connection is sent to the Via's port, which for TLS is the TLS listener's.
        w.WriteNumber(transport == SipTransportKind.Tls && _tls is not null ? _tls.ViaPort : _viaPort);
        w.Write(";branch="u8);
        w.Write(branch);
        w.WriteCrlf();
    }

    private void WriteRecordRoute(PooledBufferWriter w, SipTransportKind transport, ReadOnlySpan<byte> callerTag)
    {
        if (transport == SipTransportKind.Tls && _tls is not null)
        {
            // The TLS side of the call comes back to the TLS listener's advertised port (RFC 3261 16.6 step 4).
            w.Write(_tls.RecordRoute);
        }
        else
        {
            w.Write(_recordRoute);
        }
        if (transport == SipTransportKind.Tcp)
        {
            w.Write(";transport=tcp"u8);
        }
        else if (transport == SipTransportKind.Tls)
        {
            w.Write(";transport=tls"u8);
        }
        if (!callerTag.IsEmpty)
        {
            w.Write(";"u8);
            w.Write(CallerTagParameter);
            w.Write("="u8);
            foreach (var b in callerTag)
            {
                // Tags are tokens; the few token characters a URI parameter may not hold are escaped.
                if (SipSyntax.IsAlpha(b) || SipSyntax.IsDigit(b) || b is (byte)'-' or (byte)'_' or (byte)'.' or (byte)'!' or (byte)'~' or (byte)'*' or (byte)'\'')
                {
                    w.Write([b]);
                }
                else
                {
                    w.Write("%"u8);
                    w.Write([(byte)"0123456789ABCDEF"[b >> 4], (byte)"0123456789ABCDEF"[b & 15]]);
                }
            }
        }
        w.Write(">\r\n"u8);
    }

    private static byte[] Line(SipMessage m, SipHeaderKind kind)
    {
        var field = m.Fields[m.IndexOf(kind)];
        var w = Scratch.Small();
        w.WriteHeader(SipHeaderNames.Canonical(kind), field.Value.Of(m.Span));
        return w.ToArray();
    }

    /// <summary>Writes the first Via field with received (and the rport value) added to its top entry when needed.</summary>
    private static void WriteTopVia(PooledBufferWriter w, SipMessage m, in SipHeaderField field, in SipTarget source)
    {
        var s = m.Span;
        var via = m.TopVia;
        Span<char> chars = stackalloc char[64];
        Span<byte> ip = stackalloc byte[64];
        var address = source.EndPoint.Address;
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }
        address.TryFormat(chars, out var n);
        var ipLength = Encoding.ASCII.GetBytes(chars[..n], ip);
        var ipText = ip[..ipLength];
        var host = via.Host.Of(s);
        if (host.Length > 2 && host[0] == '[')
        {
            host = host[1..^1];
        }
        var needReceived = !Ascii.EqualsIgnoreCase(host, ipText) && via.Received.IsEmpty;
        var fillRport = via.HasRport && via.Rport < 0;
        if (!needReceived && !fillRport)
        {
            w.Write(field.Line.Of(s));
            return;
        }
        w.Write(field.Name.Of(s));
        w.Write(": "u8);
        var entry = via.Whole.Of(s);
        if (fillRport && FindBareRport(entry) is var at and >= 0)
        {
            w.Write(entry[..(at + 6)]);
            w.Write("="u8);
            w.WriteNumber(source.EndPoint.Port);
            w.Write(entry[(at + 6)..]);
        }
        else
        {
            w.Write(entry);
        }
        if (needReceived || fillRport)
        {
            w.Write(";received="u8);
            w.Write(ipText);
        }
        var rest = TextRange.FromBounds(via.Whole.End, field.Value.End);
        w.Write(rest.Of(s));
        w.WriteCrlf();
    }

    /// <summary>Index of a <c>;rport</c> without a value in a Via entry, or -1.</summary>
    private static int FindBareRport(ReadOnlySpan<byte> entry)
    {
        for (var i = entry.IndexOf((byte)';'); i >= 0 && i + 6 <= entry.Length; i = NextSemicolon(entry, i))
        {
            if (Ascii.EqualsIgnoreCase(entry.Slice(i, 6), ";rport"u8)
                && (i + 6 == entry.Length || entry[i + 6] is (byte)';' or (byte)' ' or (byte)'\t' or (byte)'\r'))
            {
                return i;
            }
        }
        return -1;
    }

    private static int NextSemicolon(ReadOnlySpan<byte> entry, int i)
    {
        var next = entry[(i + 1)..].IndexOf((byte)';');
        return next < 0 ? -1 : i + 1 + next;
    }

    /// <summary>RFC 3261 16.7 step 3: the response without our Via entry, every other field verbatim.</summary>
    private static byte[] BuildForwardedResponse(SipMessage m)
    {
        var s = m.Span;
        var w = Scratch.Message();
        w.Write(m.StartLine.Of(s));
        w.WriteCrlf();
        var firstVia = m.IndexOf(SipHeaderKind.Via);
        var fields = m.Fields;
        for (var i = 0; i < fields.Length; i++)
        {
            var field = fields[i];
            if (i == firstVia)
            {
                var comma = SipSyntax.IndexOfUnquoted(s, (byte)',', field.Value.Start, field.Value.End);
                if (comma >= 0)
                {
                    w.Write(field.Name.Of(s));
                    w.Write(": "u8);
                    var restStart = SipSyntax.SkipLws(s, comma + 1, field.Value.End);
                    w.Write(s[restStart..field.Value.End]);
                    w.WriteCrlf();
                }
                continue;
            }
            w.Write(field.Line.Of(s));
        }
        if (m.ContentLength < 0)
        {
            w.Write("Content-Length: "u8);
            w.WriteNumber(m.Body.Length);
            w.WriteCrlf();
        }
        w.WriteCrlf();
        w.Write(m.Body.Of(s));
        return w.ToArray();
    }

    /// <summary>Forwards a request without a transaction (the ACK of a 2xx): routed, with our Via, never answered.</summary>
    private void ForwardStateless(SipMessage m, in SipTarget source)
    {
        if (m.MaxForwards == 0 || m.RequestUri.Scheme == SipUriScheme.Other)
        {
            _metrics.Drop("stateless_unroutable");
            return;
        }
        if (!TryRoute(m, source, out var target, out var popRoutes, out var routeCallerTag))
        {
            _metrics.Drop("stateless_no_route");
            return;
        }
        var request = new ProxyRequest(m, source, target, IsConfigured(target), routeCallerTag.IsEmpty ? null : CallerTagOf(m, routeCallerTag),
            IsSpiral(m), stateless: true);
        if (_user is null)
        {
            SendStateless(m, source, popRoutes, request.RouteConfigured ? ForwardDecision.Forward(target) : NotConfigured);
            return;
        }
        if (TryDecide(request, out var decision))
        {
            SendStateless(m, source, popRoutes, decision);
            return;
        }
        _ = DecideLaterAsync(request, tx: null, popRoutes);
    }

    private void SendStateless(SipMessage m, in SipTarget source, int popRoutes, ForwardDecision decision)
    {
        if (!decision.Forwards)
        {
            // An ACK is never answered: one no dialog accounts for is dropped.
            _metrics.Drop("stateless_refused");
            return;
        }
        if (IsPlainHopForSips(m, decision.Target))
        {
            _metrics.Drop("sips_over_plain_hop");
            return;
        }
        var key = Scratch.Key();
        TransactionKeys.ServerKey(m, key, ackAsInvite: false);
        var branch = Scratch.Small();
        TransactionKeys.Branch(key.WrittenSpan, TransactionKeys.LoopHash(m), branch);
        var bytes = BuildForwardedRequest(m, source, decision.Target, branch.ToArray(), popRoutes, recordRoute: false, default, out _);
        _metrics.ForwardedRequest(m.Method, decision.Target.Transport);
        _sender.Send(decision.Target, bytes);
    }

    /// <summary>
    /// A destination this edge is configured to send to: the default upstream, a static next hop, a listed destination,
    /// or one the call policy routes to (docs/security.md, "Forwarding only to configured destinations").
    /// </summary>
    private bool IsConfigured(in SipTarget target)
    {
        var endPoint = target.EndPoint.Address.IsIPv4MappedToIPv6
            ? new IPEndPoint(target.EndPoint.Address.MapToIPv4(), target.EndPoint.Port)
            : target.EndPoint;
        return _configured.Contains(endPoint) || _policy?.AllowsDestination(endPoint) == true;
    }

    /// <summary>A target as dialogs record it: <c>udp:192.0.2.1:5060</c> (IPv4-mapped addresses as IPv4).</summary>
    internal static string Describe(in SipTarget target)
    {
        var endPoint = target.EndPoint.Address.IsIPv4MappedToIPv6
            ? new IPEndPoint(target.EndPoint.Address.MapToIPv4(), target.EndPoint.Port)
            : target.EndPoint;
        return new SipTarget(target.Transport, endPoint).ToString();
    }

    /// <summary>Where the URI of the first entry of <paramref name="kind"/> (Contact, Record-Route) leads, when it names an address; else null.</summary>
    internal string? TargetOfFirst(SipMessage m, SipHeaderKind kind, SipTransportKind transport)
    {
        var index = m.IndexOf(kind);
        if (index < 0)
        {
            return null;
        }
        var s = m.Span;
        foreach (var entry in new SipListEnumerator(s, m.Fields[index].Value))
        {
            return NameAddress.TryParse(s, entry.Start, entry.End, out var value) ? TargetOf(s, value.Uri, transport) : null;
        }
        return null;
    }

    /// <summary>In a response's Record-Route, the entry just above our own: the next proxy toward the callee; null if none.</summary>
    internal string? TargetBelowSelf(SipMessage response, SipTransportKind transport)
    {
        var s = response.Span;
        SipUri? previous = null;
        foreach (var field in response.Fields)
        {
            if (field.Kind != SipHeaderKind.RecordRoute)
            {
                continue;
            }
            foreach (var entry in new SipListEnumerator(s, field.Value))
            {
                if (!NameAddress.TryParse(s, entry.Start, entry.End, out var value))
                {
                    return null;
                }
                if (IsSelf(s, value.Uri))
                {
                    return previous is { } below ? TargetOf(s, below, transport) : null;
                }
                previous = value.Uri;
            }
        }
        return null;
    }

    private string? TargetOf(ReadOnlySpan<byte> s, in SipUri uri, SipTransportKind transport) =>
        TryResolve(s, uri, new SipTarget(transport, _anyEndPoint), allowDefault: false, out var target) ? Describe(target) : null;

    private static readonly IPEndPoint _anyEndPoint = new(IPAddress.Any, 0);

    /// <summary>How long a transaction may live (64*T1): how long the call tracker keeps a dialog it learned.</summary>
    internal TimeSpan TransactionLifetime => _timeout64T1;

    internal void ScheduleOnce(TimeSpan delay, Action<object?> callback, object state) => Schedule(delay, callback, state);

    /// <summary>The clock the proxy's timers run on.</summary>
    internal TimeProvider Time => _wheel.TimeProvider;

    /// <summary>
    /// The longest a call may still be answered after a provisional that (re)started Timer C: Timer C, then the 64*T1 its
    /// CANCEL waits for the 487 while a 2xx may still cross it (RFC 3261 16.7 step 2, 16.6 step 11).
    /// </summary>
    internal TimeSpan AnswerWindow => _options.TimerC + _timeout64T1;
}

/// <summary>The TLS listener's ports and Record-Route entry as the proxy writes and recognizes them (RFC 3261 26.2).</summary>
internal sealed class TlsAddressing
{
    private TlsAddressing(SipProxyOptions options)
    {
        var tls = options.Tls;
        ViaPort = tls.EffectiveViaPort;
        Ports = [tls.Port, tls.EffectiveViaPort, tls.EffectiveAdvertisedPort];
        var host = IPAddress.TryParse(options.EffectiveAdvertisedHost, out var address) && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? $"[{options.EffectiveAdvertisedHost}]"
            : options.EffectiveAdvertisedHost;
        RecordRoute = Encoding.ASCII.GetBytes($"Record-Route: <sip:{host}:{tls.EffectiveAdvertisedPort};lr");
    }

    /// <summary>The port in our Via on requests sent over TLS.</summary>
    public int ViaPort { get; }

    /// <summary>Ports that name this edge's TLS listener in a Route or Request-URI.</summary>
    public int[] Ports { get; }

    /// <summary>The start of our Record-Route entry for the TLS side (the caller tag and <c>;transport=tls</c> follow).</summary>
    public byte[] RecordRoute { get; }

    /// <summary>Null when TLS is off.</summary>
    public static TlsAddressing? From(SipProxyOptions options) => options.Tls.Enabled ? new TlsAddressing(options) : null;
}
