using System.Text;

namespace CallState.Sip.Messages;

public sealed partial class SipMessage
{
    private static ReadOnlySpan<byte> Crlf => "\r\n"u8;

    private SipParseError ParseBuffer(int length)
    {
        Reset(length);
        var s = _buffer.AsSpan(0, length);

        // RFC 3261 7.5: CRLFs before the start line are ignored (keep-alives on streams).
        var p = 0;
        while (p + 1 < length && s[p] == '\r' && s[p + 1] == '\n')
        {
            p += 2;
        }
        if (p >= length)
        {
            return Error = SipParseError.Empty;
        }
        var lineEnd = s[p..].IndexOf(Crlf);
        if (lineEnd < 0)
        {
            return Error = SipParseError.BadStartLine;
        }
        lineEnd += p;
        StartLine = TextRange.FromBounds(p, lineEnd);
        var startError = s.Length - p >= 4 && Ascii.EqualsIgnoreCase(s.Slice(p, 4), "SIP/"u8) ? ParseStatusLine(s, p, lineEnd) : ParseRequestLine(s, p, lineEnd);

        var headerError = SplitHeaders(s, lineEnd + 2);
        if (headerError is SipParseError.TooManyHeaders or SipParseError.HeaderTooLong or SipParseError.BadHeaderLine)
        {
            return Error = startError != SipParseError.None ? startError : headerError;
        }
        HeadersReadable = true;
        if (startError != SipParseError.None)
        {
            return Error = startError;
        }
        if (headerError != SipParseError.None)
        {
            return Error = headerError;
        }
        return Error = ParseKnownHeaders(s);
    }

    private SipParseError ParseRequestLine(ReadOnlySpan<byte> s, int p, int end)
    {
        IsRequest = true;
        var methodEnd = SipSyntax.SkipToken(s, p, end);
        if (methodEnd == p || methodEnd >= end || s[methodEnd] != ' ')
        {
            return SipParseError.BadStartLine;
        }
        MethodToken = TextRange.FromBounds(p, methodEnd);
        Method = SipMethods.Parse(s[p..methodEnd]);
        var uriStart = methodEnd + 1;
        var sp = s[uriStart..end].IndexOf((byte)' ');
        if (sp <= 0)
        {
            return SipParseError.BadStartLine;
        }
        var uriEnd = uriStart + sp;
        RequestUriText = TextRange.FromBounds(uriStart, uriEnd);
        var version = s[(uriEnd + 1)..end];
        var versionError = CheckVersion(version);
        if (versionError != SipParseError.None)
        {
            return versionError;
        }
        if (!SipUri.TryParse(s, uriStart, uriEnd, out var uri) || uri.HasHeaders)
        {
            return SipParseError.BadRequestUri;
        }
        RequestUri = uri;
        return SipParseError.None;
    }

    private SipParseError ParseStatusLine(ReadOnlySpan<byte> s, int p, int end)
    {
        IsRequest = false;
        var sp = s[p..end].IndexOf((byte)' ');
        if (sp < 0)
        {
            return SipParseError.BadStartLine;
        }
        var versionError = CheckVersion(s.Slice(p, sp));
        if (versionError != SipParseError.None)
        {
            return versionError;
        }
        var codeStart = p + sp + 1;
        var codeEnd = codeStart;
        while (codeEnd < end && SipSyntax.IsDigit(s[codeEnd]))
        {
            codeEnd++;
        }
        if (codeEnd - codeStart != 3 || (codeEnd < end && s[codeEnd] != ' '))
        {
            return SipParseError.BadStatusCode;
        }
        var code = ((s[codeStart] - '0') * 100) + ((s[codeStart + 1] - '0') * 10) + (s[codeStart + 2] - '0');
        if (code is < 100 or > 699)
        {
            return SipParseError.BadStatusCode;
        }
        StatusCode = code;
        ReasonPhrase = codeEnd < end ? TextRange.FromBounds(codeEnd + 1, end) : new TextRange(end, 0);
        return SipParseError.None;
    }

    /// <summary><c>SIP/2.0</c> (any case) is ours; <c>SIP/x.y</c> is a version we do not speak (505); anything else is malformed.</summary>
    private static SipParseError CheckVersion(ReadOnlySpan<byte> version)
    {
        if (version.Length == 7 && Ascii.EqualsIgnoreCase(version, "SIP/2.0"u8))
        {
            return SipParseError.None;
        }
        if (version.Length < 7 || !Ascii.EqualsIgnoreCase(version[..4], "SIP/"u8))
        {
            return SipParseError.BadStartLine;
        }
        var dot = version.IndexOf((byte)'.');
        return dot > 4 && dot < version.Length - 1
            && SipSyntax.TryParseNumber(version[4..dot], int.MaxValue, out _)
            && SipSyntax.TryParseNumber(version[(dot + 1)..], int.MaxValue, out _)
            ? SipParseError.UnsupportedVersion
            : SipParseError.BadStartLine;
    }

    private SipParseError SplitHeaders(ReadOnlySpan<byte> s, int p)
    {
        var length = s.Length;
        while (true)
        {
            if (p >= length)
            {
                HeadersEnd = length;
                Body = new TextRange(length, 0);
                return SipParseError.MissingHeaderTerminator;
            }
            if (p + 1 < length && s[p] == '\r' && s[p + 1] == '\n')
            {
                HeadersEnd = p;
                Body = TextRange.FromBounds(p + 2, length);
                return SipParseError.None;
            }
            if (_fieldCount == SipLimits.MaxHeaderFields)
            {
                return SipParseError.TooManyHeaders;
            }
            var nameEnd = SipSyntax.SkipToken(s, p, length);
            if (nameEnd == p)
            {
                return SipParseError.BadHeaderLine;
            }
            var colon = nameEnd;
            while (colon < length && s[colon] is (byte)' ' or (byte)'\t')
            {
                colon++;
            }
            if (colon >= length || s[colon] != ':')
            {
                return SipParseError.BadHeaderLine;
            }

            // The field ends at the first CR LF not followed by SP or HT (RFC 3261 7.3.1 folding).
            var search = colon + 1;
            int fieldEnd, next;
            while (true)
            {
                var crlf = s[search..].IndexOf(Crlf);
                if (crlf < 0)
                {
                    fieldEnd = length;
                    next = length;
                    break;
                }
                var at = search + crlf;
                if (at + 2 < length && s[at + 2] is (byte)' ' or (byte)'\t')
                {
                    search = at + 2;
                    continue;
                }
                fieldEnd = at;
                next = at + 2;
                break;
            }
            if (next - p > SipLimits.MaxHeaderFieldLength)
            {
                return SipParseError.HeaderTooLong;
            }
            var valueStart = SipSyntax.SkipLws(s, colon + 1, fieldEnd);
            var valueEnd = SipSyntax.TrimLwsEnd(s, valueStart, fieldEnd);
            var kind = SipHeaderNames.Lookup(s[p..nameEnd]);
            if (_fieldCount == _fields.Length)
            {
                Array.Resize(ref _fields, _fields.Length * 2);
            }
            _fields[_fieldCount] = new SipHeaderField(
                kind, TextRange.FromBounds(p, nameEnd), TextRange.FromBounds(valueStart, valueEnd), TextRange.FromBounds(p, next));
            if (_first[(int)kind] < 0)
            {
                _first[(int)kind] = (short)_fieldCount;
            }
            else if (SipHeaderNames.IsSingleValued(kind) && Error == SipParseError.None)
            {
                Error = SipParseError.DuplicateHeader;
            }
            _fieldCount++;
            p = next;
        }
    }

    private SipParseError ParseKnownHeaders(ReadOnlySpan<byte> s)
    {
        if (Error != SipParseError.None)
        {
            return Error;
        }
        if (!Has(SipHeaderKind.Via) || !Has(SipHeaderKind.From) || !Has(SipHeaderKind.To)
            || !Has(SipHeaderKind.CallId) || !Has(SipHeaderKind.CSeq))
        {
            return SipParseError.MissingRequiredHeader;
        }

        var fields = Fields;
        var vias = 0;
        for (var f = _first[(int)SipHeaderKind.Via]; f < fields.Length; f++)
        {
            if (fields[f].Kind != SipHeaderKind.Via)
            {
                continue;
            }
            foreach (var entry in new SipListEnumerator(s, fields[f].Value))
            {
                if (++vias > SipLimits.MaxViaValues)
                {
                    return SipParseError.TooManyVias;
                }
                if (!ViaValue.TryParse(s, entry.Start, entry.End, out var via))
                {
                    return SipParseError.BadVia;
                }
                if (vias == 1)
                {
                    TopVia = via;
                }
            }
        }
        ViaCount = vias;

        var fromField = fields[_first[(int)SipHeaderKind.From]].Value;
        if (!NameAddress.TryParse(s, fromField.Start, fromField.End, out var from))
        {
            return SipParseError.BadFrom;
        }
        From = from;
        FromTag = from.TryGetParameter(s, "tag"u8, out var fromTag) ? fromTag : default;
        var toField = fields[_first[(int)SipHeaderKind.To]].Value;
        if (!NameAddress.TryParse(s, toField.Start, toField.End, out var to))
        {
            return SipParseError.BadTo;
        }
        To = to;
        ToTag = to.TryGetParameter(s, "tag"u8, out var toTag) ? toTag : default;

        var callId = fields[_first[(int)SipHeaderKind.CallId]].Value;
        if (callId.IsEmpty)
        {
            return SipParseError.BadCallId;
        }
        foreach (var b in callId.Of(s))
        {
            if (!SipSyntax.IsWordChar(b) && b != '@')
            {
                return SipParseError.BadCallId;
            }
        }
        CallId = callId;

        var cseqError = ParseCSeq(s, fields[_first[(int)SipHeaderKind.CSeq]].Value);
        if (cseqError != SipParseError.None)
        {
            return cseqError;
        }

        var mf = _first[(int)SipHeaderKind.MaxForwards];
        if (mf >= 0)
        {
            if (!SipSyntax.TryParseNumber(fields[mf].Value.Of(s), 255, out var maxForwards))
            {
                return SipParseError.BadMaxForwards;
            }
            MaxForwards = (int)maxForwards;
        }

        var bodyStart = Body.Start;
        var available = s.Length - bodyStart;
        var cl = _first[(int)SipHeaderKind.ContentLength];
        if (cl >= 0)
        {
            if (!SipSyntax.TryParseNumber(fields[cl].Value.Of(s), SipLimits.MaxMessageSize, out var contentLength))
            {
                return SipParseError.BadContentLength;
            }
            if (contentLength > available)
            {
                return SipParseError.ContentLengthExceedsMessage;
            }
            ContentLength = (int)contentLength;

            // Octets past Content-Length in a datagram are ignored (RFC 3261 18.3, RFC 4475 3.1.1.8).
            Body = new TextRange(bodyStart, ContentLength);
        }
        return SipParseError.None;
    }

    private SipParseError ParseCSeq(ReadOnlySpan<byte> s, TextRange value)
    {
        var i = value.Start;
        var end = value.End;
        var digitsEnd = i;
        while (digitsEnd < end && SipSyntax.IsDigit(s[digitsEnd]))
        {
            digitsEnd++;
        }
        if (!SipSyntax.TryParseNumber(s[i..digitsEnd], SipLimits.MaxCSeq, out var number)
            || digitsEnd >= end || !SipSyntax.IsLws(s[digitsEnd]))
        {
            return SipParseError.BadCSeq;
        }
        var methodStart = SipSyntax.SkipLws(s, digitsEnd, end);
        var methodEnd = SipSyntax.SkipToken(s, methodStart, end);
        if (methodEnd == methodStart || methodEnd != end)
        {
            return SipParseError.BadCSeq;
        }
        CSeq = number;
        CSeqMethodToken = TextRange.FromBounds(methodStart, methodEnd);
        CSeqMethod = SipMethods.Parse(s[methodStart..methodEnd]);
        if (IsRequest && !s[methodStart..methodEnd].SequenceEqual(MethodToken.Of(s)))
        {
            return SipParseError.CSeqMethodMismatch;
        }
        return SipParseError.None;
    }
}
