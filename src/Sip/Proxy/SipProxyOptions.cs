using System.Net;
using CallState.Sip.Transport;

namespace CallState.Sip.Proxy;

/// <summary>
/// Settings of the SIP edge's listeners and proxy core (configuration section <c>CallState:Sip</c>).
/// </summary>
public sealed class SipProxyOptions
{
    public const string SectionName = "CallState:Sip";

    /// <summary>
    /// Address the UDP and TCP listeners bind. All addresses (<c>0.0.0.0</c> or <c>::</c>, as in a pod) require
    /// <see cref="ViaHost"/>: an unspecified address in Via or Record-Route reaches no one (docs/operations.md, "Edges in pods").
    /// </summary>
    public string ListenAddress { get; set; } = "127.0.0.1";

    /// <summary>Port of both listeners.</summary>
    public int Port { get; set; } = 5060;

    public bool Udp { get; set; } = true;

    public bool Tcp { get; set; } = true;

    /// <summary>
    /// Host put in this edge's Via (responses come back to it, so it names this instance, not the load balancer).
    /// Defaults to <see cref="ListenAddress"/>.
    /// </summary>
    public string? ViaHost { get; set; }

    /// <summary>Port put in this edge's Via; defaults to <see cref="Port"/>.</summary>
    public int? ViaPort { get; set; }

    /// <summary>
    /// Host put in Record-Route: the load balancer's address, so in-dialog requests may reach any edge.
    /// Defaults to the Via host.
    /// </summary>
    public string? AdvertisedHost { get; set; }

    /// <summary>Port put in Record-Route; defaults to <see cref="Port"/>.</summary>
    public int? AdvertisedPort { get; set; }

    /// <summary>
    /// Next hop (<c>ip:port</c>) for requests whose Request-URI names this edge or a host not in <see cref="NextHops"/>.
    /// Empty: such requests are answered 404.
    /// </summary>
    public string? DefaultUpstream { get; set; }

    /// <summary>Static next hops by Request-URI or Route host (<c>example.com</c> -> <c>192.0.2.1:5060</c>); no DNS is used.</summary>
    public Dictionary<string, string> NextHops { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// Further destinations (<c>ip:port</c>) any request may be forwarded to besides <see cref="DefaultUpstream"/> and
    /// <see cref="NextHops"/> (and, in the edge, trunks' next hops and routes' upstreams). A request whose next hop is none
    /// of these, nor a target recorded for its admitted dialog, is answered 403 (docs/security.md).
    /// </summary>
    public List<string> AllowedDestinations { get; set; } = [];

    /// <summary>
    /// Answer UDP requests to the address and port they came from, as if every Via had <c>rport</c> (RFC 3581);
    /// needed behind NAT and in tests whose clients name other hosts in Via.
    /// </summary>
    public bool SymmetricResponses { get; set; }

    /// <summary>RFC 3261 T1, the round-trip estimate (retransmission start).</summary>
    public TimeSpan T1 { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>RFC 3261 T2, the longest retransmission interval for non-INVITE requests and INVITE responses.</summary>
    public TimeSpan T2 { get; set; } = TimeSpan.FromSeconds(4);

    /// <summary>RFC 3261 T4, how long a message may stay in the network.</summary>
    public TimeSpan T4 { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>RFC 3261 16.6 Timer C: an INVITE ringing longer than this is cancelled and answered 408.</summary>
    public TimeSpan TimerC { get; set; } = TimeSpan.FromMinutes(3);

    /// <summary>RFC 3261 17.1.1.2 Timer D: how long a client INVITE transaction over UDP absorbs retransmitted finals after ACKing one.</summary>
    public TimeSpan TimerD { get; set; } = TimeSpan.FromSeconds(32);

    /// <summary>Max-Forwards of requests this edge originates (CANCEL, the ACK of a non-2xx) and added to a forwarded request that has none (RFC 3261 16.6 step 3).</summary>
    public int MaxForwards { get; set; } = 70;

    /// <summary>
    /// Open transactions at most; a request past it is answered 503 with Retry-After instead of stored. New INVITEs are
    /// shed earlier, at <see cref="SipOverloadOptions.MaxTransactions"/>, so the room between is kept for requests that end calls.
    /// </summary>
    public int MaxTransactions { get; set; } = 200_000;

    /// <summary>Seconds in the Retry-After of an overload 503.</summary>
    public int OverloadRetryAfterSeconds { get; set; } = 5;

    /// <summary>
    /// How long a stopping edge (SIGTERM) drains before it closes its sockets: new INVITEs and OPTIONS are answered 503
    /// with Retry-After while the transactions and in-dialog requests of admitted calls keep flowing; the edge stops
    /// sooner once no call is left (docs/operations.md, "Draining an edge"). The default fits a pod's default
    /// terminationGracePeriodSeconds (30) with room for the rest of the shutdown; zero closes at once.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(25);

    /// <summary>UDP receive loops (each a pending ReceiveFrom).</summary>
    public int UdpReceiveLoops { get; set; } = 2;

    /// <summary>UDP socket receive buffer in bytes (null: the OS default).</summary>
    public int? UdpReceiveBufferSize { get; set; } = 4 * 1024 * 1024;

    /// <summary>Inbound TCP connections at most (and as many TLS ones); outbound ones have their own cap, <see cref="TcpMaxOutboundConnections"/>.</summary>
    public int TcpMaxConnections { get; set; } = 10_000;

    /// <summary>A TCP or TLS connection with no complete message for this long is closed (bytes of an unfinished message do not count).</summary>
    public TimeSpan TcpIdleTimeout { get; set; } = TimeSpan.FromMinutes(2);

    // TCP and TLS overload limits (docs/architecture.md, "TCP and TLS limits").

    /// <summary>Connections this edge dials to next hops, at most, per transport: inbound floods never take their room.</summary>
    public int TcpMaxOutboundConnections { get; set; } = 1_000;

    /// <summary>Inbound connections from one IP address, at most, per transport.</summary>
    public int TcpMaxConnectionsPerSource { get; set; } = 64;

    /// <summary>A message whose first byte arrived must be complete (headers and body) within this, else its connection is closed.</summary>
    public TimeSpan TcpMessageTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>A write the peer does not take within this closes the connection, and the sends waiting on it fail.</summary>
    public TimeSpan TcpSendTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Bytes waiting to be written on one connection, at most; a send past it closes the connection and fails.</summary>
    public int TcpMaxSendQueueBytes { get; set; } = SipTcpTransportOptions.DefaultMaxSendQueueBytes;

    /// <summary>SIP over TLS (section <c>CallState:Sip:Tls</c>): its listener takes the TCP limits and timeouts too.</summary>
    public SipTlsOptions Tls { get; set; } = new();

    /// <summary>Overload control and per-source budgets (section <c>CallState:Sip:Overload</c>).</summary>
    public SipOverloadOptions Overload { get; set; } = new();

    internal string EffectiveViaHost => string.IsNullOrEmpty(ViaHost) ? ListenAddress : ViaHost;

    internal int EffectiveViaPort => ViaPort ?? Port;

    internal string EffectiveAdvertisedHost => string.IsNullOrEmpty(AdvertisedHost) ? EffectiveViaHost : AdvertisedHost;

    internal int EffectiveAdvertisedPort => AdvertisedPort ?? Port;

    /// <summary>Every problem with these settings, each naming its field; empty when valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        var prefix = SectionName + ":";
        if (!IPAddress.TryParse(ListenAddress, out var listen))
        {
            errors.Add($"{prefix}{nameof(ListenAddress)}: '{ListenAddress}' is not an IP address");
        }
        else if ((listen.Equals(IPAddress.Any) || listen.Equals(IPAddress.IPv6Any)) && string.IsNullOrWhiteSpace(ViaHost))
        {
            errors.Add($"{prefix}{nameof(ViaHost)}: required when {nameof(ListenAddress)} is '{ListenAddress}' (all addresses): "
                + "set it to this instance's own address (in a pod, the pod IP), which goes in Via and, without AdvertisedHost, in Record-Route");
        }
        else if (ViaHost is { } via && (via.Trim() is "0.0.0.0" or "::" or "[::]"))
        {
            errors.Add($"{prefix}{nameof(ViaHost)}: '{via}' is not an address anyone can reach");
        }
        if (AdvertisedHost is { } advertised && (advertised.Trim() is "0.0.0.0" or "::" or "[::]"))
        {
            errors.Add($"{prefix}{nameof(AdvertisedHost)}: '{advertised}' is not an address anyone can reach");
        }
        if (DrainTimeout < TimeSpan.Zero)
        {
            errors.Add($"{prefix}{nameof(DrainTimeout)}: must not be negative (was {DrainTimeout:c})");
        }
        CheckPort(errors, prefix + nameof(Port), Port);
        if (ViaPort is { } vp)
        {
            CheckPort(errors, prefix + nameof(ViaPort), vp);
        }
        if (AdvertisedPort is { } ap)
        {
            CheckPort(errors, prefix + nameof(AdvertisedPort), ap);
        }
        if (!Udp && !Tcp && !Tls.Enabled)
        {
            errors.Add($"{prefix}{nameof(Udp)}/{nameof(Tcp)}/{nameof(Tls)}:{nameof(SipTlsOptions.Enabled)}: at least one transport must be enabled");
        }
        if (!string.IsNullOrEmpty(DefaultUpstream) && !TryParseHostPort(DefaultUpstream, out _))
        {
            errors.Add($"{prefix}{nameof(DefaultUpstream)}: '{DefaultUpstream}' is not ip:port");
        }
        foreach (var (host, hop) in NextHops)
        {
            if (!TryParseHostPort(hop, out _))
            {
                errors.Add($"{prefix}{nameof(NextHops)}:{host}: '{hop}' is not ip:port");
            }
        }
        for (var i = 0; i < AllowedDestinations.Count; i++)
        {
            if (!TryParseHostPort(AllowedDestinations[i], out _))
            {
                errors.Add($"{prefix}{nameof(AllowedDestinations)}:{i}: '{AllowedDestinations[i]}' is not ip:port");
            }
        }
        CheckPositive(errors, prefix + nameof(T1), T1);
        CheckPositive(errors, prefix + nameof(T2), T2);
        CheckPositive(errors, prefix + nameof(T4), T4);
        CheckPositive(errors, prefix + nameof(TimerC), TimerC);
        CheckPositive(errors, prefix + nameof(TimerD), TimerD);
        if (MaxForwards is < 1 or > 255)
        {
            errors.Add($"{prefix}{nameof(MaxForwards)}: must be between 1 and 255 (was {MaxForwards})");
        }
        if (T2 < T1)
        {
            errors.Add($"{prefix}{nameof(T2)}: must not be shorter than T1");
        }
        if (TimerC <= T1 * 64)
        {
            errors.Add($"{prefix}{nameof(TimerC)}: must be longer than 64*T1");
        }
        if (MaxTransactions < 1)
        {
            errors.Add($"{prefix}{nameof(MaxTransactions)}: must be at least 1");
        }
        if (OverloadRetryAfterSeconds < 1)
        {
            errors.Add($"{prefix}{nameof(OverloadRetryAfterSeconds)}: must be at least 1");
        }
        if (UdpReceiveLoops is < 1 or > 64)
        {
            errors.Add($"{prefix}{nameof(UdpReceiveLoops)}: must be between 1 and 64");
        }
        if (TcpMaxConnections < 1)
        {
            errors.Add($"{prefix}{nameof(TcpMaxConnections)}: must be at least 1");
        }
        if (TcpIdleTimeout != Timeout.InfiniteTimeSpan)
        {
            CheckPositive(errors, prefix + nameof(TcpIdleTimeout), TcpIdleTimeout);
        }
        if (TcpMaxOutboundConnections < 1)
        {
            errors.Add($"{prefix}{nameof(TcpMaxOutboundConnections)}: must be at least 1");
        }
        if (TcpMaxConnectionsPerSource < 1)
        {
            errors.Add($"{prefix}{nameof(TcpMaxConnectionsPerSource)}: must be at least 1");
        }
        CheckPositive(errors, prefix + nameof(TcpMessageTimeout), TcpMessageTimeout);
        CheckPositive(errors, prefix + nameof(TcpSendTimeout), TcpSendTimeout);
        if (TcpMaxSendQueueBytes < 1)
        {
            errors.Add($"{prefix}{nameof(TcpMaxSendQueueBytes)}: must be at least 1");
        }
        Tls.Validate($"{prefix}{nameof(Tls)}:", errors, Tcp ? Port : null);
        if (Overload is null)
        {
            errors.Add($"{prefix}{nameof(Overload)}: missing");
        }
        else if (Overload.Enabled)
        {
            Overload.Validate($"{prefix}{nameof(Overload)}:", errors, MaxTransactions);
        }
        return errors;
    }

    /// <summary>Parses <c>ip:port</c> or <c>[ipv6]:port</c>.</summary>
    public static bool TryParseHostPort(string? text, out IPEndPoint endPoint)
    {
        endPoint = null!;
        if (string.IsNullOrWhiteSpace(text) || !IPEndPoint.TryParse(text, out var parsed) || parsed.Port == 0)
        {
            return false;
        }
        endPoint = parsed;
        return true;
    }

    private static void CheckPort(List<string> errors, string name, int port)
    {
        if (port is < 1 or > 65535)
        {
            errors.Add($"{name}: {port} is not a port (1-65535)");
        }
    }

    private static void CheckPositive(List<string> errors, string name, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{name}: must be positive");
        }
    }
}
