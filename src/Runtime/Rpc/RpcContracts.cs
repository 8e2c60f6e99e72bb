using System.Buffers;
using System.Diagnostics;
using System.Net;

namespace CallState.Runtime.Rpc;

/// <summary>Outcome of a call, sent in the Response frame.</summary>
public enum RpcStatus : byte
{
    Ok = 0,
    Error = 1,
    DeadlineExceeded = 2,
    UnknownMethod = 3,
    Unavailable = 4,
    Redirect = 5,
}

/// <summary>What the server hands the handler for one request.</summary>
public readonly struct RpcRequest
{
    internal RpcRequest(ushort method, ReadOnlyMemory<byte> body, DateTimeOffset deadline, ActivityContext traceContext, EndPoint? remoteEndPoint)
    {
        Method = method;
        Body = body;
        Deadline = deadline;
        TraceContext = traceContext;
        RemoteEndPoint = remoteEndPoint;
    }

    public ushort Method { get; }

    /// <summary>The request body; pooled, valid until the handler's task completes.</summary>
    public ReadOnlyMemory<byte> Body { get; }

    /// <summary>Absolute deadline, from the caller's clock.</summary>
    public DateTimeOffset Deadline { get; }

    /// <summary>The W3C trace context sent by the caller (default if none).</summary>
    public ActivityContext TraceContext { get; }

    public EndPoint? RemoteEndPoint { get; }
}

/// <summary>Serves requests; method ids and bodies are the handler's business, the RPC layer never looks inside.</summary>
public interface IRpcHandler
{
    /// <summary>
    /// Writes the reply body into <paramref name="reply"/> and returns the status. Throwing gives
    /// <see cref="RpcStatus.Error"/> with the exception message (UTF-8) as body. <paramref name="cancellationToken"/>
    /// fires at the deadline, on a Cancel frame from the caller, or when the connection closes.
    /// </summary>
    ValueTask<RpcStatus> HandleAsync(RpcRequest request, IBufferWriter<byte> reply, CancellationToken cancellationToken);
}

/// <summary>A reply received by <see cref="RpcClient"/>. The body is pooled: dispose the reply when done with it.</summary>
public sealed class RpcReply : IDisposable
{
    private readonly int _length;
    private byte[]? _buffer;

    internal RpcReply(RpcStatus status, byte[] buffer, int length)
    {
        Status = status;
        _buffer = buffer;
        _length = length;
    }

    public RpcStatus Status { get; }

    /// <summary>The reply body; valid until <see cref="Dispose"/>.</summary>
    public ReadOnlyMemory<byte> Body
    {
        get
        {
            var buffer = Volatile.Read(ref _buffer);
            ObjectDisposedException.ThrowIf(buffer is null, this);
            return buffer.AsMemory(0, _length);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _buffer, null) is { } buffer)
        {
            PooledBufferWriter.ReturnArray(buffer);
        }
    }
}

/// <summary>The connection to the target could not be made, or broke while the call was in flight.</summary>
public sealed class RpcConnectionException : IOException
{
    public RpcConnectionException()
        : base("RPC connection failed")
    {
    }

    public RpcConnectionException(string message)
        : base(message)
    {
    }

    public RpcConnectionException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
