namespace CallState.Sip.Messages;

/// <summary>
/// A name-addr or addr-spec with its header parameters (From, To, Contact, Route, Record-Route entries; RFC 3261
/// 20.10): display name, the URI, whether it was in angle brackets, and the parameter list after it.
/// </summary>
public readonly struct NameAddress
{
    /// <summary>The display name as written (quotes included when quoted), or empty.</summary>
    public TextRange DisplayName { get; init; }

    public SipUri Uri { get; init; }

    /// <summary>True for the <c>&lt;uri&gt;</c> form.</summary>
    public bool Bracketed { get; init; }

    /// <summary>Header parameters from the first <c>;</c> after the URI, or empty.</summary>
    public TextRange Parameters { get; init; }

    /// <summary>Finds a header parameter such as <c>tag</c>.</summary>
    public bool TryGetParameter(ReadOnlySpan<byte> s, ReadOnlySpan<byte> name, out TextRange value) =>
        SipParameters.TryFind(s, Parameters, name, out value);

    /// <summary>
    /// Parses one entry. Refused: an unterminated quoted display name, a display name with non-token characters
    /// (RFC 4475 3.1.2.15), white space inside the angle brackets (3.1.2.14), malformed parameters.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> s, int start, int end, out NameAddress value)
    {
        value = default;
        var i = SipSyntax.SkipLws(s, start, end);
        end = SipSyntax.TrimLwsEnd(s, i, end);
        if (i >= end)
        {
            return false;
        }
        TextRange display = default;
        int lt;
        if (s[i] == '"')
        {
            var after = SipSyntax.SkipQuoted(s, i, end);
            if (after < 0)
            {
                return false;
            }
            display = TextRange.FromBounds(i, after);
            lt = SipSyntax.SkipLws(s, after, end);
            if (lt >= end || s[lt] != '<')
            {
                return false;
            }
        }
        else
        {
            lt = SipSyntax.IndexOfUnquoted(s, (byte)'<', i, end);
            if (lt >= 0)
            {
                // A display name of tokens: every byte before '<' is a token character or LWS.
                for (var k = i; k < lt; k++)
                {
                    if (!SipSyntax.IsToken(s[k]) && !SipSyntax.IsLws(s[k]))
                    {
                        return false;
                    }
                }
                display = TextRange.FromBounds(i, SipSyntax.TrimLwsEnd(s, i, lt));
            }
        }

        int paramStart;
        SipUri uri;
        if (lt >= 0)
        {
            var gt = s[lt..end].IndexOf((byte)'>');
            if (gt < 0)
            {
                return false;
            }
            gt += lt;
            if (!SipUri.TryParse(s, lt + 1, gt, out uri))
            {
                return false;
            }
            paramStart = gt + 1;
        }
        else
        {
            // addr-spec: the URI runs to the first ';' (RFC 3261 20.10: a URI with ';' must use the bracketed form).
            var uriEnd = i;
            while (uriEnd < end && s[uriEnd] != ';' && !SipSyntax.IsLws(s[uriEnd]))
            {
                uriEnd++;
            }
            if (!SipUri.TryParse(s, i, uriEnd, out uri))
            {
                return false;
            }
            paramStart = uriEnd;
        }
        var parameters = TextRange.FromBounds(paramStart, end);
        if (!SipParameters.Validate(s, parameters))
        {
            return false;
        }
        value = new NameAddress { DisplayName = display, Uri = uri, Bracketed = lt >= 0, Parameters = parameters };
        return true;
    }
}
