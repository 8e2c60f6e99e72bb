using CallState.Sip.Messages;

namespace CallState.Sip.Proxy;

public sealed partial class SipProxy
{
    /// <summary>
    /// How far past the INVITE's CSeq the BYE toward the callee is numbered: the caller may have sent requests in the
    /// dialog since (PRACK, UPDATE, INFO), and a UAS refuses a CSeq lower than the last it saw (RFC 3261 12.2.2).
    /// </summary>
    private const long TeardownCSeqStep = 100_000;

    /// <summary>
    /// The CSeq of the BYE toward the caller: the callee's numbering is unknown here, so the highest a CSeq may be
    /// (RFC 3261 8.1.1.5: below 2^31) is never lower than what the caller saw from it.
    /// </summary>
    private const long TeardownCalleeCSeq = int.MaxValue;

    /// <summary>The URI of the first Contact of <paramref name="m"/> (copied), or of <paramref name="fallback"/> when it has none.</summary>
    internal static byte[] ContactUriOf(SipMessage m, in NameAddress fallback)
    {
        var s = m.Span;
        var index = m.IndexOf(SipHeaderKind.Contact);
        if (index >= 0)
        {
            foreach (var entry in new SipListEnumerator(s, m.Fields[index].Value))
            {
                if (NameAddress.TryParse(s, entry.Start, entry.End, out var value) && !value.Uri.Whole.IsEmpty)
                {
                    return value.Uri.Whole.Of(s).ToArray();
                }

                break;
            }
        }

        return fallback.Uri.Whole.Of(s).ToArray();
    }

    /// <summary>
    /// The BYEs that end an answered call (RFC 3261 15.1.1, 12.2.1.1), built from its 2xx: toward the callee with the
    /// caller's From, the callee's To and Contact, and the Record-Route entries above ours (nearest first); toward the
    /// caller the other way round, with the entries below ours and the caller's Contact from the INVITE
    /// (<paramref name="callerContact"/>). Each goes where that side's INVITE went or came from: the next hop of the
    /// route set, or the party itself.
    /// </summary>
    internal CallTeardown TeardownOf(SipMessage response, in SipTarget inviteTarget, in SipTarget inviteSource, byte[] callerContact)
    {
        var s = response.Span;
        var above = new List<TextRange>();
        var below = new List<TextRange>();
        var seenSelf = false;
        foreach (var field in response.Fields)
        {
            if (field.Kind != SipHeaderKind.RecordRoute)
            {
                continue;
            }

            foreach (var entry in new SipListEnumerator(s, field.Value))
            {
                if (NameAddress.TryParse(s, entry.Start, entry.End, out var value) && IsSelf(s, value.Uri))
                {
                    // Ours (two entries where the transport changed here, RFC 5658): the split between the two sides.
                    seenSelf = true;
                    continue;
                }

                (seenSelf ? below : above).Add(entry);
            }
        }

        above.Reverse();
        var from = response.Fields[response.IndexOf(SipHeaderKind.From)].Value.Of(s);
        var to = response.Fields[response.IndexOf(SipHeaderKind.To)].Value.Of(s);
        var callId = response[response.CallId];
        var calleeContact = ContactUriOf(response, response.To);
        var calleeCSeq = Math.Min(response.CSeq + TeardownCSeqStep, TeardownCalleeCSeq);
        var towardCallee = OwnRequestOf(inviteTarget, calleeContact, s, above, from, to, callId, calleeCSeq);
        var towardCaller = OwnRequestOf(inviteSource, callerContact, s, below, to, from, callId, TeardownCalleeCSeq);
        return new CallTeardown(this, towardCallee, towardCaller);
    }

    /// <summary>
    /// The teardown of a call answered earlier, from its two BYEs as <see cref="CallTeardown"/> built them then (stored
    /// with the call, sent by whichever edge an operator's end reaches): the ACK has long passed, so
    /// <see cref="CallTeardown.Send"/> sends at once. A stored BYE keeps its CSeq, which no UA of a dialog can have
    /// passed (<see cref="TeardownCSeqStep"/>, <see cref="TeardownCalleeCSeq"/>).
    /// </summary>
    public CallTeardown TeardownOf(OwnRequest towardCallee, OwnRequest towardCaller)
    {
        ArgumentNullException.ThrowIfNull(towardCallee);
        ArgumentNullException.ThrowIfNull(towardCaller);
        return new CallTeardown(this, towardCallee, towardCaller, acknowledged: true);
    }

    private OwnRequest OwnRequestOf(in SipTarget target, byte[] requestUri, ReadOnlySpan<byte> s, List<TextRange> routes,
        ReadOnlySpan<byte> from, ReadOnlySpan<byte> to, ReadOnlySpan<byte> callId, long cseq)
    {
        var w = Scratch.Message();
        w.Write("BYE "u8);
        w.Write(requestUri);
        w.Write(" SIP/2.0\r\n"u8);
        var requestLine = w.ToArray();

        w.Clear();
        if (routes.Count > 0)
        {
            w.Write("Route: "u8);
            for (var i = 0; i < routes.Count; i++)
            {
                if (i > 0)
                {
                    w.Write(", "u8);
                }

                w.Write(routes[i].Of(s));
            }

            w.WriteCrlf();
        }

        w.Write(_maxForwardsLine);
        w.WriteHeader("From"u8, from);
        w.WriteHeader("To"u8, to);
        w.WriteHeader("Call-ID"u8, callId);
        w.Write("CSeq: "u8);
        w.WriteNumber(cseq);
        w.Write(" BYE\r\n"u8);
        w.Write("Content-Length: 0\r\n\r\n"u8);
        return new OwnRequest(target, requestLine, w.ToArray());
    }

    /// <summary>Sends a request this proxy originates on a client transaction of its own (no server transaction above it).</summary>
    internal void SendOwnRequest(OwnRequest request)
    {
        var branch = OwnRequest.NewBranch();
        var target = request.Target;
        var w = Scratch.Message();
        w.Write(request.RequestLine);
        WriteOwnVia(w, target.Transport, branch);
        w.Write(request.Rest);
        var bytes = w.ToArray();
        var key = Scratch.Key();
        TransactionKeys.ClientKey(branch, "BYE"u8, key);
        var client = new ClientTransaction(key.ToArray(), isInvite: false, target, bytes, server: null, cancelInfo: null);
        if (_clients.TryAdd(client.Key, client))
        {
            lock (client)
            {
                StartClient(client);
            }
        }
    }
}
