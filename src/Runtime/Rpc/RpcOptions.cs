namespace CallState.Runtime.Rpc;

/// <summary>Settings of the cluster RPC, client and server (configuration section <c>CallState:Cluster:Rpc</c>).</summary>
public sealed class RpcOptions
{
    public const string SectionName = "CallState:Cluster:Rpc";

    /// <summary>The smallest accepted <see cref="MaxFrameBytes"/>: a request's fixed part plus a small body.</summary>
    public const int MinFrameBytes = 64;

    /// <summary>The largest accepted <see cref="MaxFrameBytes"/>.</summary>
    public const int MaxAllowedFrameBytes = 64 * 1024 * 1024;

    /// <summary>
    /// Largest frame (after the length prefix) either side accepts. Protects memory per connection: a peer cannot make
    /// the reader buffer more than this for one frame. A bigger frame closes the connection.
    /// </summary>
    public int MaxFrameBytes { get; set; } = 1024 * 1024;

    /// <summary>How long the client waits for a TCP connection to be made.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Client: connections per target; calls are spread over them round-robin.</summary>
    public int ConnectionsPerEndpoint { get; set; } = 2;

    /// <summary>
    /// Requests in flight on one connection. Server: more are answered <see cref="RpcStatus.Unavailable"/> without running
    /// the handler. Client: a call above it gets an <see cref="RpcStatus.Unavailable"/> reply at once, without being sent.
    /// </summary>
    public int MaxInFlightPerConnection { get; set; } = 4096;

    /// <summary>After a failed connect, calls to that target fail fast until this has passed.</summary>
    public TimeSpan ReconnectBackoff { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Yields one message per bad field, naming its configuration key.</summary>
    /// <summary>Throws <see cref="ArgumentException"/> naming every bad field (for constructors given options directly).</summary>
    internal void ThrowIfInvalid(string paramName)
    {
        var errors = Validate().ToList();
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", errors), paramName);
        }
    }

    public IEnumerable<string> Validate(string path = SectionName)
    {
        if (MaxFrameBytes is < MinFrameBytes or > MaxAllowedFrameBytes)
        {
            yield return $"{path}:MaxFrameBytes must be between {MinFrameBytes} and {MaxAllowedFrameBytes} (was {MaxFrameBytes}).";
        }

        if (ConnectTimeout <= TimeSpan.Zero)
        {
            yield return $"{path}:ConnectTimeout must be positive (was {ConnectTimeout}).";
        }

        if (ConnectionsPerEndpoint is < 1 or > 64)
        {
            yield return $"{path}:ConnectionsPerEndpoint must be between 1 and 64 (was {ConnectionsPerEndpoint}).";
        }

        if (MaxInFlightPerConnection < 1)
        {
            yield return $"{path}:MaxInFlightPerConnection must be at least 1 (was {MaxInFlightPerConnection}).";
        }

        if (ReconnectBackoff < TimeSpan.Zero)
        {
            yield return $"{path}:ReconnectBackoff must not be negative (was {ReconnectBackoff}).";
        }
    }
}
