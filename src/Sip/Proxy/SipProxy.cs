using System.Collections.Concurrent;
using System.Net;
using System.Text;
using CallState.Sip.Messages;
using CallState.Sip.Timers;

namespace CallState.Sip.Proxy;

/// <summary>
/// The RFC 3261 section 16 stateful proxy core: validates requests, keeps server and client transactions (section 17,
/// timers on a <see cref="TimerWheel"/>), forwards requests to a static next hop with Via and Record-Route, routes
/// responses back by Via, answers CANCEL and OPTIONS, and absorbs retransmissions. Transports call
/// <see cref="OnMessage"/> with each parsed message; everything it sends goes through an <see cref="ISipSender"/>.
/// </summary>
public sealed partial class SipProxy : IDisposable
{
    private static ReadOnlySpan<byte> Allow => "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY, SUBSCRIBE, MESSAGE\r\n"u8;

    private readonly SipProxyOptions _options;
    private readonly ISipSender _sender;
    private readonly TimerWheel _wheel;

    // Timer callbacks made once: a closure per scheduled timer would be one more object kept for every lingering
    // transaction (up to 64*T1), which is what makes the collector's pauses long.
    private readonly Action<object?> _onRetransmitTimer;
    private readonly Action<object?> _onTimeoutTimer;
    private readonly Action<object?> _onTimerC;
    private readonly Action<object?> _onTimerG;
    private readonly Action<object?> _onTimerH;
    private readonly Action<object?> _terminateClient;
    private readonly Action<object?> _terminateServer;
    private readonly SipProxyMetrics _metrics;
    private readonly Action<SipHandlerError>? _onHandlerError;
    private readonly CallTracker? _user;
    private readonly ICallPolicy? _policy;
    private readonly HashSet<IPEndPoint> _configured = [];
    private readonly ConcurrentDictionary<byte[], ServerTransaction> _servers = new(ByteKeyComparer.Instance);
    private readonly ConcurrentDictionary<byte[], ServerTransaction>.AlternateLookup<ReadOnlySpan<byte>> _serverLookup;
    private readonly ConcurrentDictionary<byte[], ClientTransaction> _clients = new(ByteKeyComparer.Instance);
    private readonly ConcurrentDictionary<byte[], ClientTransaction>.AlternateLookup<ReadOnlySpan<byte>> _clientLookup;

    /// <summary>Makes a branch unique when the one derived from a server transaction's key is still held (<see cref="ForwardBranch"/>).</summary>
    private long _branchSalt;
    private readonly byte[][] _selfHosts;
    private readonly int[] _selfPorts;
    private readonly byte[] _viaHost;
    private readonly int _viaPort;
    private readonly byte[] _recordRoute;
    private readonly IPEndPoint? _defaultUpstream;
    private readonly Dictionary<string, IPEndPoint> _nextHops = new(StringComparer.OrdinalIgnoreCase);
    private readonly byte[] _retryAfterLine;
    private readonly byte[] _maxForwardsLine;
    private readonly ForwardDecision _decisionFailed;
    private readonly TimeSpan _t1;
    private readonly TimeSpan _t2;
    private readonly TimeSpan _t4;
    private readonly TimeSpan _timeout64T1;
    private readonly SipOverloadControl? _overload;

    // Open transactions, counted here: ConcurrentDictionary.Count takes every lock of the table, once per request.
    private int _open;

    // Server transactions still waiting for their final response: the work load new calls are shed by (lingering ones
    // only absorb retransmissions; docs/architecture.md, "Overload control").
    private int _inProgress;

    // 1 once the edge drains before it stops (docs/operations.md, "Draining an edge").
    private int _draining;

    /// <summary>Creates the proxy core; <c>onHandlerError</c> is told of each exception it catches (already counted).</summary>
    /// <remarks>
    /// With <paramref name="overload"/>, new requests are shed past its thresholds and each source is held to its budget
    /// (docs/architecture.md, "Overload control"); without it only <see cref="SipProxyOptions.MaxTransactions"/> applies.
    /// </remarks>
    public SipProxy(SipProxyOptions options, ISipSender sender, TimerWheel wheel, SipProxyMetrics? metrics = null, ICallPolicy? policy = null,
        Action<SipHandlerError>? onHandlerError = null, SipOverloadControl? overload = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        }
        _options = options;
        _sender = sender ?? throw new ArgumentNullException(nameof(sender));
        _wheel = wheel ?? throw new ArgumentNullException(nameof(wheel));
        _metrics = metrics ?? new SipProxyMetrics();
        _policy = policy;
        _onHandlerError = onHandlerError;
        _user = policy is null ? null : new CallTracker(policy, this);
        _metrics.ObserveTransactions(() => Volatile.Read(ref _open));
        _metrics.ObserveInProgress(() => Volatile.Read(ref _inProgress));
        _overload = overload;
        if (overload is not null)
        {
            _metrics.ObserveOverload(overload);
        }
        _serverLookup = _servers.GetAlternateLookup<ReadOnlySpan<byte>>();
        _onRetransmitTimer = ClientTimer(OnRetransmitTimer, "Timer A/E");
        _onTimeoutTimer = ClientTimer(OnTimeoutTimer, "Timer B/F");
        _onTimerC = ClientTimer(OnTimerC, "Timer C");
        _onTimerG = ServerTimer(OnTimerG, "Timer G");
        _onTimerH = ServerTimer(OnTimerH, "Timer H");
        _terminateClient = ClientTimer(TerminateClient, "Timer D/K");
        _terminateServer = ServerTimer(TerminateServer, "Timer I/J");
        _clientLookup = _clients.GetAlternateLookup<ReadOnlySpan<byte>>();
        _viaHost = Encoding.ASCII.GetBytes(BracketIfIPv6(options.EffectiveViaHost));
        _viaPort = options.EffectiveViaPort;
        _selfHosts = new[] { options.ListenAddress, options.EffectiveViaHost, options.EffectiveAdvertisedHost }
            .Select(h => Encoding.ASCII.GetBytes(BracketIfIPv6(h).ToLowerInvariant())).ToArray();
        _selfPorts = [options.Port, options.EffectiveViaPort, options.EffectiveAdvertisedPort];
        _recordRoute = Encoding.ASCII.GetBytes($"Record-Route: <sip:{BracketIfIPv6(options.EffectiveAdvertisedHost)}:{options.EffectiveAdvertisedPort};lr");
        if (SipProxyOptions.TryParseHostPort(options.DefaultUpstream, out var upstream))
        {
            _defaultUpstream = upstream;
        }
        foreach (var (host, hop) in options.NextHops)
        {
            if (SipProxyOptions.TryParseHostPort(hop, out var ep))
            {
                _nextHops[host] = ep;
                _configured.Add(ep);
            }
        }
        if (_defaultUpstream is not null)
        {
            _configured.Add(_defaultUpstream);
        }
        foreach (var destination in options.AllowedDestinations)
        {
            if (SipProxyOptions.TryParseHostPort(destination, out var ep))
            {
                _configured.Add(ep);
            }
        }
        _retryAfterLine = Encoding.ASCII.GetBytes($"Retry-After: {options.OverloadRetryAfterSeconds}\r\n");
        _maxForwardsLine = Encoding.ASCII.GetBytes($"Max-Forwards: {options.MaxForwards}\r\n");

        // A transaction user that fails to decide refuses the request as an overload would (RFC 3261 21.5.4).
        _decisionFailed = ForwardDecision.Reject(503, "Service Unavailable", $"Retry-After: {options.OverloadRetryAfterSeconds}\r\n");
        _t1 = options.T1;
        _t2 = options.T2;
        _t4 = options.T4;
        _timeout64T1 = options.T1 * 64;
        _tls = TlsAddressing.From(options);
    }

    public SipProxyMetrics Metrics => _metrics;

    private static string BracketIfIPv6(string host) =>
        IPAddress.TryParse(host, out var address) && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? $"[{host}]"
            : host;

    /// <summary>The overload control and per-source budgets; null when off.</summary>
    public SipOverloadControl? Overload => _overload;

    /// <summary>Open server transactions.</summary>
    public int ServerTransactionCount => _servers.Count;

    /// <summary>Server transactions still waiting for their final response.</summary>
    public int InProgressCount => Volatile.Read(ref _inProgress);

    /// <summary>True once <see cref="BeginDrain"/> was called.</summary>
    public bool IsDraining => Volatile.Read(ref _draining) != 0;

    /// <summary>
    /// Stops taking anything new (docs/operations.md, "Draining an edge"): every request outside a dialog, a new INVITE or a
    /// load balancer's OPTIONS probe, is answered 503 with Retry-After, so callers and the load balancer move to another
    /// edge, while retransmissions, CANCEL, ACK, requests inside dialogs and every response still flow. Unlike overload
    /// shedding it does not depend on load and is not undone.
    /// </summary>
    public void BeginDrain() => Volatile.Write(ref _draining, 1);

    /// <summary>Open client transactions.</summary>
    public int ClientTransactionCount => _clients.Count;

    /// <summary>The transactions held now (tests look at what a lingering one keeps).</summary>
    internal IEnumerable<ServerTransaction> ServerTransactions => _servers.Values;

    /// <summary>See <see cref="ServerTransactions"/>.</summary>
    internal IEnumerable<ClientTransaction> ClientTransactions => _clients.Values;

    /// <summary>
    /// Handles one parsed (or refused) message from <paramref name="source"/>. Never throws for bad input: a request
    /// whose Via can be read is answered 400 (or 505), anything else unusable is dropped and counted.
    /// </summary>
    public void OnMessage(SipMessage message, in SipTarget source)
    {
        ArgumentNullException.ThrowIfNull(message);
        _metrics.Received(message, source.Transport);
        if (message.IsRequest)
        {
            OnRequest(message, source);
        }
        else if (message.Error == SipParseError.None)
        {
            OnResponse(message);
        }
        else
        {
            _metrics.Drop("malformed_response");
        }
    }

    /// <summary>Counts bytes that could not be parsed far enough to know what they were (dropped unanswered).</summary>
    public void OnUnparsable(string reason) => _metrics.Drop(reason);

    public void Dispose() => _metrics.Dispose();

    private void OnRequest(SipMessage m, in SipTarget source)
    {
        // docs/architecture.md, "Overload control": a source's budget is charged before any work for its request (and
        // a malformed request over budget is not even answered); what is shed allocates nothing but its 503.
        var budget = _overload?.Budgets.Get(source.EndPoint.Address);
        if (m.Error != SipParseError.None)
        {
            if (budget is not null && !budget.TryTakeRequest(_overload!.Now))
            {
                Shed(SipShedReason.SourceRate, answer: false, m, source);
                return;
            }
            RejectMalformed(m, source);
            return;
        }
        if (m.Method == SipMethod.Ack)
        {
            OnAck(m, source, budget);
            return;
        }
        var keyWriter = Scratch.Key();
        TransactionKeys.ServerKey(m, keyWriter);
        var key = keyWriter.WrittenSpan;
        if (_serverLookup.TryGetValue(key, out var existing))
        {
            // Free: a retransmission costs one resend of what the transaction already holds, and the transactions a
            // source can open are what its budget bounds.
            OnRetransmission(existing);
            return;
        }
        if (budget is not null && !budget.TryTakeRequest(_overload!.Now))
        {
            Refuse(budget, SipShedReason.SourceRate, m, source);
            return;
        }
        if (m.Method == SipMethod.Cancel)
        {
            OnCancel(m, source, key);
            return;
        }
        if (m.ToTag.IsEmpty && Volatile.Read(ref _draining) != 0)
        {
            // Draining: nothing new starts here, the probe included, so the load balancer takes this edge out (RFC 3261
            // 21.5.4: 503 with Retry-After, the caller tries elsewhere). Dialogs admitted before keep their requests.
            _metrics.DrainRefused();
            RespondStateless(m, source, 503, "Service Unavailable"u8, RetryAfterLine());
            return;
        }
        var open = Volatile.Read(ref _open);
        if (_overload is not null && m.ToTag.IsEmpty && !IsProbe(m) && _overload.Overloaded(Volatile.Read(ref _inProgress), open) is { } overloaded)
        {
            // A new call (or anything else outside a dialog) past the load thresholds: refused at once, before any
            // admission work, while requests inside dialogs (BYE above all) still get transactions, so calls in
            // progress end and give their slots back (RFC 3261 21.5.4: 503 with Retry-After).
            Shed(overloaded, answer: true, m, source);
            return;
        }
        if (open >= _options.MaxTransactions)
        {
            RespondStateless(m, source, 503, "Service Unavailable"u8, RetryAfterLine());
            return;
        }
        if (budget is not null && !budget.TryEnter())
        {
            Refuse(budget, SipShedReason.SourceTransactions, m, source);
            return;
        }
        var tx = new ServerTransaction(key.ToArray(), m.Method == SipMethod.Invite, ResponseTarget(m, source),
            ResponseTemplate.From(m, key), TransactionKeys.LoopHash(m));
        if (budget is not null)
        {
            tx.ChargeTo(budget);
        }
        if (!_servers.TryAdd(tx.Key, tx))
        {
            tx.ReleaseBudget();

            // Another receive loop took the same request's retransmission first.
            if (_serverLookup.TryGetValue(key, out existing))
            {
                OnRetransmission(existing);
            }
            return;
        }
        Interlocked.Increment(ref _open);
        tx.BeginProgress();
        Interlocked.Increment(ref _inProgress);
        lock (tx.Sync)
        {
            try
            {
                ProcessNewRequest(m, source, tx);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // The caller gets a bare 500 (never the exception's text) and the transaction still ends; the
                // receive loop that called us counts and logs the exception with the message's context.
                Recover(tx);
                throw;
            }
        }
    }

    private void ProcessNewRequest(SipMessage m, in SipTarget source, ServerTransaction tx)
    {
        var s = m.Span;
        if (tx.IsInvite)
        {
            // RFC 3261 16.2: a stateful proxy answers an INVITE with 100 Trying at once.
            SendProvisional(tx, tx.Template!.Build(100, "Trying"u8), 100);
        }
        if (m.MaxForwards == 0)
        {
            if (m.Method == SipMethod.Options)
            {
                Respond(tx, 200, "OK"u8, Allow);
            }
            else
            {
                Respond(tx, 483, "Too Many Hops"u8);
            }
            return;
        }
        if (m.RequestUri.Scheme == SipUriScheme.Other)
        {
            Respond(tx, 416, "Unsupported URI Scheme"u8);
            return;
        }
        var proxyRequire = m.IndexOf(SipHeaderKind.ProxyRequire);
        if (proxyRequire >= 0)
        {
            // RFC 3261 16.3 step 5: this proxy supports no extension, so every Proxy-Require value is unsupported.
            var w = Scratch.Small();
            w.Write("Unsupported: "u8);
            var first = true;
            foreach (var field in m.Fields)
            {
                if (field.Kind != SipHeaderKind.ProxyRequire)
                {
                    continue;
                }
                foreach (var option in new SipListEnumerator(s, field.Value))
                {
                    if (option.IsEmpty)
                    {
                        continue;
                    }
                    if (!first)
                    {
                        w.Write(", "u8);
                    }
                    w.Write(option.Of(s));
                    first = false;
                }
            }
            w.WriteCrlf();
            Respond(tx, 420, "Bad Extension"u8, w.WrittenSpan);
            return;
        }
        if (m.Method == SipMethod.Options && m.RequestUri.User.IsEmpty && IsSelf(s, m.RequestUri))
        {
            // Load-balancer health checks address the edge itself.
            Respond(tx, 200, "OK"u8, Allow);
            return;
        }
        if (IsLoop(m, tx.LoopHash))
        {
            Respond(tx, 482, "Loop Detected"u8);
            return;
        }
        if (!TryRoute(m, source, out var target, out var popRoutes, out var routeCallerTag))
        {
            Respond(tx, 404, "Not Found (no route)"u8);
            return;
        }
        var request = new ProxyRequest(m, source, target, IsConfigured(target), routeCallerTag.IsEmpty ? null : CallerTagOf(m, routeCallerTag),
            IsSpiral(m), stateless: false);
        if (_user is null)
        {
            Apply(m, source, tx, popRoutes, request.RouteConfigured ? ForwardDecision.Forward(target) : NotConfigured);
            return;
        }
        if (TryDecide(request, out var decision))
        {
            Apply(m, source, tx, popRoutes, decision);
            return;
        }
        _ = DecideLaterAsync(request, tx, popRoutes);
    }

    private static readonly ForwardDecision NotConfigured = ForwardDecision.Reject(403, "Forbidden (destination not allowed)");

    /// <summary>An OPTIONS to the edge itself (the load balancer's probe): answered even while new calls are shed.</summary>
    private bool IsProbe(SipMessage m) => m.Method == SipMethod.Options && m.RequestUri.User.IsEmpty && IsSelf(m.Span, m.RequestUri);

    /// <summary>A request from a source over its budget: the first few a second are answered 503, the rest dropped.</summary>
    private void Refuse(SourceBudget budget, SipShedReason reason, SipMessage m, in SipTarget source) =>
        Shed(reason, budget.TryTakeRefusal(_overload!.Now), m, source);

    /// <summary>Counts a shed request (metric with its reason, rate-limited report) and answers it 503 + Retry-After statelessly, or not at all.</summary>
    private void Shed(SipShedReason reason, bool answer, SipMessage m, in SipTarget source)
    {
        _overload!.Count(reason, source);
        _metrics.Shed(reason, answer);
        if (answer)
        {
            RespondStateless(m, source, 503, "Service Unavailable"u8, RetryAfterLine());
        }
    }


    /// <summary>The transaction user's decision when it has one at once; a user that throws refuses the request (503).</summary>
    private bool TryDecide(in ProxyRequest request, out ForwardDecision decision)
    {
        try
        {
            return _user!.TryDecide(request, out decision);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            decision = _decisionFailed;
            return true;
        }
    }

    /// <summary>Asks the transaction user on a private copy of the request; the transaction answers its retransmissions meanwhile.</summary>
    private async Task DecideLaterAsync(ProxyRequest request, ServerTransaction? tx, int popRoutes)
    {
        var copy = new SipMessage();
        copy.Parse(request.Message.Span);
        request = request.With(copy);
        ForwardDecision decision;
        // Only decisions on requests outside a dialog (new calls above all) are what shedding can shorten, so only their
        // delay tells whether they queue (docs/architecture.md, "Overload control").
        var outside = copy.ToTag.IsEmpty;
        var started = _overload?.EnterDecision(outside) ?? 0;
        try
        {
            decision = await _user!.DecideAsync(request, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            decision = _decisionFailed;
        }
        finally
        {
            _overload?.ExitDecision(started, outside);
        }
        using (copy)
        {
            if (tx is null)
            {
                SendStateless(copy, request.Source, popRoutes, decision);
                return;
            }
            lock (tx.Sync)
            {
                try
                {
                    Apply(copy, request.Source, tx, popRoutes, decision);
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // Nobody awaits this task: report here, or the exception would vanish with it.
                    Recover(tx);
                    ReportHandlerError(new SipHandlerError(SipHandlerErrorKind.Message, ex, request.Source, SipHandlerError.FirstLineOf(copy.Span)));
                }
            }
        }
    }

    /// <summary>Forwards the request as decided, or answers it; an INVITE cancelled meanwhile is not forwarded.</summary>
    private void Apply(SipMessage m, in SipTarget source, ServerTransaction tx, int popRoutes, ForwardDecision decision)
    {
        if (!decision.Forwards)
        {
            if (tx.State == ServerState.Proceeding)
            {
                Respond(tx, decision.Status, Encoding.UTF8.GetBytes(decision.Reason), Encoding.UTF8.GetBytes(decision.ExtraHeaders));
            }
            return;
        }
        tx.Outcome = decision.Outcome;
        if (tx.State != ServerState.Proceeding)
        {
            // Cancelled (and answered 487) while the decision was made: the outcome is that final status.
            if (decision.Outcome is { } outcome)
            {
                tx.OutcomeReported = true;
                _user!.OnFinal(outcome, tx.LastStatus, null);
            }
            return;
        }
        Forward(m, source, tx, decision.Target, popRoutes, decision.RecordCallerTag);
    }

    private void Forward(SipMessage m, in SipTarget source, ServerTransaction tx, SipTarget target, int popRoutes, bool recordCallerTag)
    {
        if (IsPlainHopForSips(m, target))
        {
            // RFC 3261 26.2.2: never sent in the clear; 480, as for a callee this edge has no secure way to reach.
            Respond(tx, 480, "Temporarily Unavailable (no TLS next hop for a sips URI)"u8);
            return;
        }
        var s = m.Span;
        var branch = ForwardBranch(tx, m.CSeqMethodToken.Of(s));
        var recordRoute = m.ToTag.IsEmpty && m.Method is SipMethod.Invite or SipMethod.Subscribe or SipMethod.Refer;
        var request = BuildForwardedRequest(m, source, target, branch, popRoutes, recordRoute,
            recordCallerTag ? m.FromTag : default, out var cancelInfo);
        var clientKey = Scratch.Key();
        TransactionKeys.ClientKey(branch, m.CSeqMethodToken.Of(s), clientKey);
        var client = new ClientTransaction(clientKey.ToArray(), tx.IsInvite, target, request, tx, tx.IsInvite ? cancelInfo : null);
        if (!_clients.TryAdd(client.Key, client))
        {
            Respond(tx, 500, "Server Internal Error (branch in use)"u8);
            return;
        }
        Interlocked.Increment(ref _open);
        tx.Client = client;
        _metrics.ForwardedRequest(m.Method, target.Transport);
        StartClient(client);
    }

    /// <summary>
    /// The branch a server transaction is forwarded with: derived from its key (so its retransmissions get the same one),
    /// unless the client transaction of an earlier server transaction with the same key still holds it (that one ended,
    /// its client still absorbs retransmitted finals: Timer D). A new request matching an ended transaction (RFC 3261
    /// 17.2.3: same branch and sent-by) then gets a branch of its own, not a 500 (found by the fuzz run, docs/testing.md
    /// "Fuzzing").
    /// </summary>
    private byte[] ForwardBranch(ServerTransaction tx, ReadOnlySpan<byte> method)
    {
        var writer = Scratch.Small();
        TransactionKeys.Branch(tx.Key, tx.LoopHash, writer);
        var branch = writer.ToArray();
        var key = Scratch.Key();
        TransactionKeys.ClientKey(branch, method, key);
        if (!_clientLookup.TryGetValue(key.WrittenSpan, out var holder) || holder.Server == tx)
        {
            return branch;
        }

        writer = Scratch.Small();
        TransactionKeys.Branch(tx.Key, tx.LoopHash, writer, (ulong)Interlocked.Increment(ref _branchSalt));
        return writer.ToArray();
    }

    private void OnRetransmission(ServerTransaction tx)
    {
        _metrics.Absorbed();
        lock (tx.Sync)
        {
            // RFC 3261 17.2.1 / 17.2.2: a retransmitted request gets the last response again (the last provisional
            // for an INVITE still proceeding, the final once completed); after a 2xx (RFC 6026) it is absorbed.
            if (tx.LastResponse is { } last && tx.State is ServerState.Proceeding or ServerState.Completed)
            {
                _sender.Send(tx.Source, last);
                _metrics.Retransmitted();
            }
        }
    }

    private void OnAck(SipMessage m, in SipTarget source, SourceBudget? budget)
    {
        var keyWriter = Scratch.Key();
        TransactionKeys.ServerKey(m, keyWriter);
        if (_serverLookup.TryGetValue(keyWriter.WrittenSpan, out var tx))
        {
            lock (tx.Sync)
            {
                if (tx.State == ServerState.Completed)
                {
                    // RFC 3261 17.2.1: the ACK of a non-2xx final ends retransmissions; Timer I absorbs its copies.
                    tx.State = ServerState.Confirmed;
                    tx.RetransmitTimer.Cancel();
                    tx.EndTimer.Cancel();
                    tx.EndTimer = Schedule(tx.Source.IsReliable ? TimeSpan.Zero : _t4, _terminateServer, tx);
                    _metrics.Absorbed();
                    return;
                }
                if (tx.State == ServerState.Confirmed)
                {
                    _metrics.Absorbed();
                    return;
                }
            }
        }

        if (AcksStatelessResponse(m, keyWriter.WrittenSpan))
        {
            // The ACK of a final response this proxy sent without a transaction (a new call shed past capacity, or while
            // draining): RFC 3261 17.2.1 ends it here. Forwarding it would cost a dialog look-up in the grains per
            // refused call, exactly when they are busiest (docs/architecture.md, "Overload control").
            _metrics.Absorbed();
            return;
        }

        // The ACK of a 2xx is a transaction of its own: forward it statelessly along the route (RFC 3261 16.11). It
        // costs a dialog look-up, so it is charged to its source (and dropped over budget: an ACK is never answered).
        if (budget is not null && !budget.TryTakeRequest(_overload!.Now))
        {
            Shed(SipShedReason.SourceRate, answer: false, m, source);
            return;
        }
        ForwardStateless(m, source);
    }

    /// <summary>
    /// Whether <paramref name="ack"/> carries the To tag this proxy gives a response it generates to the INVITE whose
    /// server key (<see cref="TransactionKeys.ServerKey"/>, ACK as INVITE) is <paramref name="inviteKey"/>: the ACK of a
    /// non-2xx final response that had no transaction (a 2xx's ACK has a branch of its own, so its key differs).
    /// </summary>
    private static bool AcksStatelessResponse(SipMessage ack, ReadOnlySpan<byte> inviteKey)
    {
        var toTag = ack.ToTag.Of(ack.Span);
        if (!toTag.StartsWith(TransactionKeys.ToTagPrefix))
        {
            return false;
        }
        var tag = Scratch.Small();
        TransactionKeys.ToTag(inviteKey, tag);
        return toTag.SequenceEqual(tag.WrittenSpan);
    }

    private void OnCancel(SipMessage m, in SipTarget source, ReadOnlySpan<byte> cancelKey)
    {
        var inviteKey = Scratch.Small();
        TransactionKeys.ServerKey(m, inviteKey, cancelAsInvite: true);
        if (!_serverLookup.TryGetValue(inviteKey.WrittenSpan, out var invite))
        {
            RespondStateless(m, source, 481, "Call/Transaction Does Not Exist"u8);
            return;
        }
        var cancelTx = new ServerTransaction(cancelKey.ToArray(), isInvite: false, ResponseTarget(m, source),
            ResponseTemplate.From(m, cancelKey), loopHash: 0);
        if (_servers.TryAdd(cancelTx.Key, cancelTx))
        {
            Interlocked.Increment(ref _open);
            lock (cancelTx.Sync)
            {
                Respond(cancelTx, 200, "OK"u8);
            }
        }
        lock (invite.Sync)
        {
            if (invite.State != ServerState.Proceeding || invite.Cancelled)
            {
                return;
            }
            invite.Cancelled = true;
            var client = invite.Client;
            if (client is null)
            {
                Respond(invite, 487, "Request Terminated"u8);
                return;
            }
            if (client.State == ClientState.Proceeding)
            {
                SendCancel(client);
            }
            else if (client.State == ClientState.Calling)
            {
                // RFC 3261 9.1: no CANCEL before a provisional response; it goes when the first one arrives.
                client.CancelPending = true;
            }
        }
    }

    private void OnResponse(SipMessage m)
    {
        var s = m.Span;
        var keyWriter = Scratch.Key();
        TransactionKeys.ClientKey(m.TopVia.Branch.Of(s), m.CSeqMethodToken.Of(s), keyWriter);
        if (!_clientLookup.TryGetValue(keyWriter.WrittenSpan, out var client))
        {
            // A stray response (no transaction of ours, RFC 4475 3.3.10): never sent anywhere.
            _metrics.Drop("no_transaction");
            return;
        }
        var server = client.Server;
        lock (server?.Sync ?? client)
        {
            var status = m.StatusCode;
            try
            {
                if (client.IsInvite)
                {
                    OnInviteResponse(m, client, server!, status);
                }
                else
                {
                    OnNonInviteResponse(m, client, server, status);
                }
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                Recover(client);
                throw;
            }
        }
    }

    private void OnInviteResponse(SipMessage m, ClientTransaction client, ServerTransaction server, int status)
    {
        if (status < 200)
        {
            if (client.State == ClientState.Calling)
            {
                client.State = ClientState.Proceeding;
                client.RetransmitTimer.Cancel();
                client.TimeoutTimer.Cancel();
                client.TimeoutTimer = Schedule(_options.TimerC, _onTimerC, client);
                if (server.Outcome is { } outcome)
                {
                    _user!.OnProvisional(outcome);
                }
            }
            else if (status > 100 && client.State == ClientState.Proceeding && !client.CancelSent)
            {
                // RFC 3261 16.7 step 2: every provisional from 101 to 199 resets Timer C, so a call kept ringing or
                // playing early media past 3 minutes is not cut while the callee keeps saying so. Once a CANCEL is out,
                // the timeout timer is its 64*T1 wait for the 487 and stays.
                client.TimeoutTimer.Cancel();
                client.TimeoutTimer = Schedule(_options.TimerC, _onTimerC, client);
                if (server.Outcome is { } outcome)
                {
                    // The call may now be answered that much later: its early lease is renewed in time (docs/architecture.md, "Leases that fit SIP").
                    _user!.OnProvisional(outcome);
                }
            }
            if (status > 100 && server.State == ServerState.Proceeding && client.State == ClientState.Proceeding)
            {
                SendProvisional(server, BuildForwardedResponse(m), status);
                _metrics.ForwardedResponse(m.CSeqMethod, status, server.Source.Transport);
            }
            if (client.CancelPending && !client.CancelSent)
            {
                SendCancel(client);
            }
            return;
        }
        if (status < 300)
        {
            if (client.State is ClientState.Calling or ClientState.Proceeding)
            {
                client.RetransmitTimer.Cancel();
                client.TimeoutTimer.Cancel();
                client.State = ClientState.Accepted;
                client.Settle();
                client.EndTimer = Schedule(_timeout64T1, _terminateClient, client);
            }
            if (client.State == ClientState.Accepted && server.State is ServerState.Proceeding or ServerState.Accepted)
            {
                // Every 2xx goes upstream, retransmissions included (RFC 6026 7.2).
                SendFinal(server, BuildForwardedResponse(m), status, m);
                _metrics.ForwardedResponse(m.CSeqMethod, status, server.Source.Transport);
            }
            return;
        }
        if (client.State is ClientState.Calling or ClientState.Proceeding)
        {
            client.RetransmitTimer.Cancel();
            client.TimeoutTimer.Cancel();
            client.State = ClientState.Completed;
            client.AckForFinal = BuildAck(client, m);
            client.Settle();
            _sender.Send(client.Target, client.AckForFinal);
            client.EndTimer = Schedule(client.Target.IsReliable ? TimeSpan.Zero : _options.TimerD,
                _terminateClient, client);
            if (server.State == ServerState.Proceeding)
            {
                SendFinal(server, BuildForwardedResponse(m), status, m);
                _metrics.ForwardedResponse(m.CSeqMethod, status, server.Source.Transport);
            }
        }
        else if (client.State == ClientState.Completed && client.AckForFinal is { } ack)
        {
            // A retransmitted final: ACK it again, hop by hop (RFC 3261 17.1.1.2).
            _sender.Send(client.Target, ack);
            _metrics.Absorbed();
        }
    }

    private void OnNonInviteResponse(SipMessage m, ClientTransaction client, ServerTransaction? server, int status)
    {
        if (client.State is not (ClientState.Calling or ClientState.Proceeding))
        {
            _metrics.Absorbed();
            return;
        }
        if (status < 200)
        {
            client.State = ClientState.Proceeding;
            if (status > 100 && server is { State: ServerState.Proceeding })
            {
                SendProvisional(server, BuildForwardedResponse(m), status);
                _metrics.ForwardedResponse(m.CSeqMethod, status, server.Source.Transport);
            }
            return;
        }
        client.RetransmitTimer.Cancel();
        client.TimeoutTimer.Cancel();
        client.State = ClientState.Completed;
        client.Settle();
        client.EndTimer = Schedule(client.Target.IsReliable ? TimeSpan.Zero : _t4, _terminateClient, client);
        if (server is { State: ServerState.Proceeding })
        {
            SendFinal(server, BuildForwardedResponse(m), status, m);
            _metrics.ForwardedResponse(m.CSeqMethod, status, server.Source.Transport);
        }
    }

    private void StartClient(ClientTransaction client)
    {
        _sender.Send(client.Target, client.Request!, () => OnTransportError(client));
        if (!client.Target.IsReliable)
        {
            client.RetransmitInterval = _t1;
            client.RetransmitTimer = Schedule(_t1, _onRetransmitTimer, client);
        }
        client.TimeoutTimer = Schedule(_timeout64T1, _onTimeoutTimer, client);
    }

    /// <summary>Timer A (INVITE, doubling) and Timer E (non-INVITE, doubling up to T2; T2 once proceeding).</summary>
    private void OnRetransmitTimer(ClientTransaction client)
    {
        lock (client.Server?.Sync ?? client)
        {
            var active = client.IsInvite ? client.State == ClientState.Calling : client.State is ClientState.Calling or ClientState.Proceeding;
            if (!active)
            {
                return;
            }
            _sender.Send(client.Target, client.Request!);
            _metrics.Retransmitted();
            var next = client.IsInvite
                ? client.RetransmitInterval * 2
                : client.State == ClientState.Proceeding ? _t2 : TimeSpan.FromTicks(Math.Min((client.RetransmitInterval * 2).Ticks, _t2.Ticks));
            client.RetransmitInterval = next;
            client.RetransmitTimer = Schedule(next, _onRetransmitTimer, client);
        }
    }

    /// <summary>Timer B (INVITE) and Timer F (non-INVITE): no final response in 64*T1.</summary>
    private void OnTimeoutTimer(ClientTransaction client)
    {
        var server = client.Server;
        lock (server?.Sync ?? client)
        {
            if (client.State is not (ClientState.Calling or ClientState.Proceeding))
            {
                return;
            }
            _metrics.TimedOut(client.IsInvite ? "B" : "F");
            client.RetransmitTimer.Cancel();
            TerminateClient(client);
            if (server is { State: ServerState.Proceeding })
            {
                if (server.Cancelled)
                {
                    Respond(server, 487, "Request Terminated"u8);
                }
                else
                {
                    Respond(server, 408, "Request Timeout"u8);
                }
            }
        }
    }

    /// <summary>Timer C (RFC 3261 16.6 step 11): an INVITE still ringing is cancelled and answered 408.</summary>
    private void OnTimerC(ClientTransaction client)
    {
        var server = client.Server!;
        lock (server.Sync)
        {
            if (client.State != ClientState.Proceeding)
            {
                return;
            }
            _metrics.TimedOut("C");
            if (!client.CancelSent)
            {
                SendCancel(client);
            }
            if (server.State == ServerState.Proceeding)
            {
                Respond(server, 408, "Request Timeout"u8);
            }
        }
    }

    private void OnTransportError(ClientTransaction client)
    {
        var server = client.Server;
        lock (server?.Sync ?? client)
        {
            if (client.State is not (ClientState.Calling or ClientState.Proceeding))
            {
                return;
            }
            client.RetransmitTimer.Cancel();
            client.TimeoutTimer.Cancel();
            TerminateClient(client);
            if (server is { State: ServerState.Proceeding })
            {
                // RFC 3261 16.7 step 10 / 18.4: a transport error counts as a 503 from that branch.
                Respond(server, 503, "Service Unavailable (next hop unreachable)"u8);
            }
        }
    }

    private void SendCancel(ClientTransaction invite)
    {
        invite.CancelSent = true;
        if (invite.CancelInfo is not { } info)
        {
            return; // a final response came first: nothing left to cancel
        }

        var w = Scratch.Message();
        w.Write("CANCEL "u8);
        w.Write(info.RequestUri);
        w.Write(" SIP/2.0\r\n"u8);
        w.Write(info.Via);
        w.Write(info.Routes);
        w.Write(info.From);
        w.Write(info.To);
        w.Write(info.CallId);
        w.Write("CSeq: "u8);
        w.WriteNumber(info.CSeq);
        w.Write(" CANCEL\r\n"u8);
        w.Write(_maxForwardsLine);
        w.Write("Content-Length: 0\r\n\r\n"u8);
        var bytes = w.ToArray();
        var branchStart = invite.Key.AsSpan().LastIndexOf((byte)'|');
        var key = Scratch.Key();
        TransactionKeys.ClientKey(invite.Key.AsSpan(0, branchStart), "CANCEL"u8, key);
        var cancel = new ClientTransaction(key.ToArray(), isInvite: false, invite.Target, bytes, server: null, cancelInfo: null);
        if (_clients.TryAdd(cancel.Key, cancel))
        {
            Interlocked.Increment(ref _open);
            StartClient(cancel);
        }

        // If the next hop never answers the INVITE after the CANCEL, answer 487 ourselves after 64*T1.
        invite.TimeoutTimer.Cancel();
        invite.TimeoutTimer = Schedule(_timeout64T1, _onTimeoutTimer, invite);
    }

    private byte[] BuildAck(ClientTransaction invite, SipMessage response)
    {
        var info = invite.CancelInfo!;
        var s = response.Span;
        var w = Scratch.Message();
        w.Write("ACK "u8);
        w.Write(info.RequestUri);
        w.Write(" SIP/2.0\r\n"u8);
        w.Write(info.Via);
        w.Write(info.Routes);
        w.Write(info.From);
        w.Write("To: "u8);
        w.Write(response.Fields[response.IndexOf(SipHeaderKind.To)].Value.Of(s));
        w.WriteCrlf();
        w.Write(info.CallId);
        w.Write("CSeq: "u8);
        w.WriteNumber(info.CSeq);
        w.Write(" ACK\r\n"u8);
        w.Write(_maxForwardsLine);
        w.Write("Content-Length: 0\r\n\r\n"u8);
        return w.ToArray();
    }

    private void SendProvisional(ServerTransaction tx, byte[] response, int status)
    {
        tx.LastResponse = response;
        tx.LastStatus = status;
        _sender.Send(tx.Source, response);
    }

    /// <summary>Answers from this proxy (a final response of its own) on a server transaction.</summary>
    private void Respond(ServerTransaction tx, int status, ReadOnlySpan<byte> reason, ReadOnlySpan<byte> extraHeaders = default)
    {
        _metrics.Generated(status, tx.Source.Transport);
        var template = tx.Template ?? throw new InvalidOperationException("a transaction answers on its own only before its final response");
        SendFinal(tx, template.Build(status, reason, extraHeaders), status);
        if (tx.Client is { } client && client.State is ClientState.Calling && client.IsInvite)
        {
            // Nothing came back from the next hop yet: the branch is given up (its CANCEL is sent if a provisional comes).
            client.CancelPending = true;
        }
    }

    /// <summary>Sends a final response and moves the server transaction on (RFC 3261 17.2.1, 17.2.2; RFC 6026).</summary>
    private void SendFinal(ServerTransaction tx, byte[] response, int status, SipMessage? from = null)
    {
        tx.LastResponse = response;
        tx.LastStatus = status;
        EndProgress(tx);
        if (tx.Outcome is { } outcome && !tx.OutcomeReported)
        {
            // Before the response leaves: the ACK of a 2xx may come back on another thread at once, and it must find
            // the dialog the 2xx set up.
            tx.OutcomeReported = true;
            _user!.OnFinal(outcome, status, from);
        }
        _sender.Send(tx.Source, response);
        if (tx.IsInvite && status < 300)
        {
            if (tx.State != ServerState.Accepted)
            {
                tx.State = ServerState.Accepted;
                tx.EndTimer = Schedule(_timeout64T1, _terminateServer, tx);
            }
            tx.Settle();
            return;
        }
        tx.State = ServerState.Completed;
        tx.Settle();
        if (tx.IsInvite)
        {
            if (!tx.Source.IsReliable)
            {
                tx.RetransmitInterval = _t1;
                tx.RetransmitTimer = Schedule(_t1, _onTimerG, tx);
            }
            tx.EndTimer = Schedule(_timeout64T1, _onTimerH, tx);
        }
        else
        {
            tx.EndTimer = Schedule(tx.Source.IsReliable ? TimeSpan.Zero : _timeout64T1, _terminateServer, tx);
        }
    }

    /// <summary>Timer G: retransmit a non-2xx final to an INVITE until its ACK comes, doubling up to T2.</summary>
    private void OnTimerG(ServerTransaction tx)
    {
        lock (tx.Sync)
        {
            if (tx.State != ServerState.Completed || tx.LastResponse is null)
            {
                return;
            }
            _sender.Send(tx.Source, tx.LastResponse);
            _metrics.Retransmitted();
            tx.RetransmitInterval = TimeSpan.FromTicks(Math.Min((tx.RetransmitInterval * 2).Ticks, _t2.Ticks));
            tx.RetransmitTimer = Schedule(tx.RetransmitInterval, _onTimerG, tx);
        }
    }

    /// <summary>Timer H: the ACK never came.</summary>
    private void OnTimerH(ServerTransaction tx)
    {
        lock (tx.Sync)
        {
            if (tx.State == ServerState.Completed)
            {
                _metrics.TimedOut("H");
                tx.RetransmitTimer.Cancel();
                TerminateServer(tx);
            }
        }
    }

    private void TerminateServer(ServerTransaction tx)
    {
        tx.State = ServerState.Terminated;
        EndProgress(tx);
        if (_servers.TryRemove(new KeyValuePair<byte[], ServerTransaction>(tx.Key, tx)))
        {
            Interlocked.Decrement(ref _open);
        }
    }

    /// <summary>The final response went or the transaction ended: no longer in flight for its source nor in progress here (once).</summary>
    private void EndProgress(ServerTransaction tx)
    {
        tx.ReleaseBudget();
        if (tx.EndProgress())
        {
            Interlocked.Decrement(ref _inProgress);
        }
    }

    private void TerminateClient(ClientTransaction client)
    {
        client.State = ClientState.Terminated;
        if (_clients.TryRemove(new KeyValuePair<byte[], ClientTransaction>(client.Key, client)))
        {
            Interlocked.Decrement(ref _open);
        }
    }

    /// <summary>Counts an exception caught while handling a message or a timer and hands it to the host to log.</summary>
    public void ReportHandlerError(in SipHandlerError error)
    {
        _metrics.HandlerError(error.Kind);
        if (_onHandlerError is null)
        {
            return;
        }
        try
        {
            _onHandlerError(error);
        }
#pragma warning disable CA1031 // The error sink is the last resort; its own failure has nowhere left to go.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    // A timer callback that throws must not leave its transaction in the tables for ever: the exception is counted and
    // reported, and the transaction is made to end (see Recover). The try/catch costs nothing on the normal path.
    private Action<object?> ClientTimer(Action<ClientTransaction> run, string name) => o =>
    {
        var client = (ClientTransaction)o!;
        try
        {
            run(client);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Recover(client);
            ReportHandlerError(new SipHandlerError(SipHandlerErrorKind.Timer, ex, client.Target, name));
        }
    };

    private Action<object?> ServerTimer(Action<ServerTransaction> run, string name) => o =>
    {
        var tx = (ServerTransaction)o!;
        try
        {
            run(tx);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Recover(tx);
            ReportHandlerError(new SipHandlerError(SipHandlerErrorKind.Timer, ex, tx.Source, name));
        }
    };

    /// <summary>
    /// After an exception: a client transaction no pending timer will end is ended now, and if that leaves its server
    /// transaction without anyone to answer it, the server transaction is recovered too.
    /// </summary>
    private void Recover(ClientTransaction client)
    {
        var server = client.Server;
        lock (server?.Sync ?? client)
        {
            if (client.State != ClientState.Terminated && !client.TimeoutTimer.IsPending && !client.EndTimer.IsPending)
            {
                client.RetransmitTimer.Cancel();
                TerminateClient(client);
            }
            if (server is { State: ServerState.Proceeding } && client.State is not (ClientState.Calling or ClientState.Proceeding))
            {
                // No final response will come from this branch any more (RFC 3261 16.7 step 10: the proxy answers itself).
                Recover(server);
            }
        }
    }

    /// <summary>
    /// After an exception: a server transaction still waiting for its final response is answered 500 with no detail
    /// (the exception stays in the log); one that no pending timer will end, because the answer failed too or because
    /// its end timer is the one that threw, is removed now.
    /// </summary>
    private void Recover(ServerTransaction tx)
    {
        lock (tx.Sync)
        {
            if (tx.Client is { State: not ClientState.Terminated } client && !client.TimeoutTimer.IsPending && !client.EndTimer.IsPending)
            {
                // Its request may have failed before the client's timers were set: nothing else would end it.
                client.RetransmitTimer.Cancel();
                TerminateClient(client);
            }
            if (tx.State == ServerState.Proceeding && tx.Template is not null)
            {
                try
                {
                    Respond(tx, 500, "Server Internal Error"u8);
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // The answer failed as well (a broken sender): the transaction is removed below.
                }
            }
            if (tx.State != ServerState.Terminated && !tx.EndTimer.IsPending)
            {
                tx.RetransmitTimer.Cancel();
                TerminateServer(tx);
            }
        }
    }

    private TimerHandle Schedule(TimeSpan delay, Action<object?> callback, object state)
    {
        if (delay <= TimeSpan.Zero)
        {
            // Zero-length timers (reliable transports) fire from the wheel, never inline under the caller's lock.
            delay = TimeSpan.FromTicks(1);
        }
        return _wheel.Schedule(delay, callback, state);
    }

    private ReadOnlySpan<byte> RetryAfterLine() => _retryAfterLine;
}
