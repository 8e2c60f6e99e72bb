using CallState.Sip.Timers;

namespace CallState.Sip.Proxy;

internal enum ServerState : byte
{
    /// <summary>INVITE: Proceeding; non-INVITE: Trying or Proceeding. No final response yet.</summary>
    Proceeding,

    /// <summary>A final response was sent (non-2xx for INVITE); retransmissions of the request get it again.</summary>
    Completed,

    /// <summary>INVITE only: the ACK for the non-2xx came (Timer I absorbs its retransmissions).</summary>
    Confirmed,

    /// <summary>INVITE only: a 2xx was forwarded (RFC 6026); retransmitted 2xx are forwarded, the INVITE absorbed.</summary>
    Accepted,

    Terminated,
}

internal enum ClientState : byte
{
    /// <summary>INVITE: Calling; non-INVITE: Trying.</summary>
    Calling,
    Proceeding,
    Completed,

    /// <summary>INVITE only: a 2xx came (RFC 6026); later 2xx are forwarded too until Timer M.</summary>
    Accepted,
    Terminated,
}

/// <summary>
/// RFC 3261 17.2 server transaction: the request received, the last response sent (for retransmissions), and the
/// client transaction it was forwarded on. <see cref="Sync"/> guards it and its client transactions.
/// </summary>
internal sealed class ServerTransaction
{
    public ServerTransaction(byte[] key, bool isInvite, SipTarget source, ResponseTemplate template, ulong loopHash)
    {
        Key = key;
        IsInvite = isInvite;
        Source = source;
        Template = template;
        LoopHash = loopHash;
    }

    /// <summary>The lock of this transaction and its client branch: the transaction itself (no object of its own to keep).</summary>
    public object Sync => this;

    public byte[] Key { get; }

    public bool IsInvite { get; }

    public SipTarget Source { get; }

    /// <summary>Builds this proxy's own responses; null once a final response went (see <see cref="Settle"/>).</summary>
    public ResponseTemplate? Template { get; private set; }

    public ulong LoopHash { get; }

    public ServerState State { get; set; }

    public byte[]? LastResponse { get; set; }

    public int LastStatus { get; set; }

    public ClientTransaction? Client { get; set; }

    /// <summary>A CANCEL for this INVITE was received.</summary>
    public bool Cancelled { get; set; }

    public TimerHandle RetransmitTimer { get; set; }

    public TimeSpan RetransmitInterval { get; set; }

    public TimerHandle EndTimer { get; set; }

    /// <summary>What the transaction user wants to hear this transaction's final status with, once (<see cref="OutcomeReported"/>).</summary>
    public object? Outcome { get; set; }

    public bool OutcomeReported { get; set; }

    private SourceBudget? _budget;
    private int _inProgress;

    /// <summary>Counted among the proxy's transactions in progress until <see cref="EndProgress"/>.</summary>
    public void BeginProgress() => _inProgress = 1;

    /// <summary>True the first time after <see cref="BeginProgress"/>: the final response went or the transaction ended.</summary>
    public bool EndProgress() => Interlocked.Exchange(ref _inProgress, 0) == 1;

    /// <summary>Counts this transaction in flight on its source's budget until <see cref="ReleaseBudget"/>.</summary>
    public void ChargeTo(SourceBudget budget) => _budget = budget;

    /// <summary>The final response went or the transaction ended: it is no longer in flight for its source (once).</summary>
    public void ReleaseBudget() => Interlocked.Exchange(ref _budget, null)?.Exit();

    /// <summary>
    /// A final response went: what only a transaction in progress needs is let go, so a transaction lingering for its
    /// timers (up to 64*T1) keeps just what absorbs retransmissions. An accepted INVITE never resends its own 2xx
    /// (RFC 6026: every 2xx is forwarded as it comes), so its copy goes too. Long-lived garbage is what makes the
    /// collector's pauses long.
    /// </summary>
    public void Settle()
    {
        Template = null;
        if (State == ServerState.Accepted)
        {
            LastResponse = null;
        }
    }
}

/// <summary>
/// RFC 3261 17.1 client transaction: the request as sent (retransmitted on UDP), where to, and what is needed to
/// build its ACK and CANCEL (RFC 3261 17.1.1.3 and 9.1).
/// </summary>
internal sealed class ClientTransaction
{
    public ClientTransaction(byte[] key, bool isInvite, SipTarget target, byte[] request, ServerTransaction? server, CancelInfo? cancelInfo)
    {
        Key = key;
        IsInvite = isInvite;
        Target = target;
        Request = request;
        Server = server;
        CancelInfo = cancelInfo;
    }

    public byte[] Key { get; }

    public bool IsInvite { get; }

    public SipTarget Target { get; }

    /// <summary>The request as sent, for retransmissions; null once the transaction is past them (see <see cref="Settle"/>).</summary>
    public byte[]? Request { get; private set; }

    /// <summary>The server transaction responses go back to; null for a CANCEL this proxy originated.</summary>
    public ServerTransaction? Server { get; }

    /// <summary>For an INVITE: the pieces of its CANCEL and non-2xx ACK.</summary>
    /// <summary>What a CANCEL or an ACK for a non-2xx is built from; null once a final response came.</summary>
    public CancelInfo? CancelInfo { get; private set; }

    public ClientState State { get; set; }

    public TimerHandle RetransmitTimer { get; set; }

    public TimeSpan RetransmitInterval { get; set; }

    public TimerHandle TimeoutTimer { get; set; }

    public TimerHandle EndTimer { get; set; }

    /// <summary>A CANCEL waits for the first provisional response (RFC 3261 9.1).</summary>
    public bool CancelPending { get; set; }

    public bool CancelSent { get; set; }

    public byte[]? AckForFinal { get; set; }

    /// <summary>A final response came (or the transaction ended): nothing is retransmitted or cancelled any more.</summary>
    public void Settle()
    {
        Request = null;
        CancelInfo = null;
    }
}

/// <summary>The parts of a forwarded INVITE its CANCEL and ACK repeat (RFC 3261 9.1, 17.1.1.3).</summary>
internal sealed record CancelInfo(byte[] RequestUri, byte[] Via, byte[] Routes, byte[] From, byte[] To, byte[] CallId, long CSeq);
