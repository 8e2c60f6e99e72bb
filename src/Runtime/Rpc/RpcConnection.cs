using System.Buffers;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Rpc;

/// <summary>
/// One TCP connection, either side: a read loop that decodes frames from a <see cref="PipeReader"/> and hands each to
/// <see cref="OnFrame"/> (which must not block), and a single writer loop that drains a queue of frames and flushes
/// once per batch, so concurrent replies or calls never contend on the socket.
/// </summary>
[SuppressMessage("Reliability", "CA1001", Justification = "_closing is cancelled on close and never disposed: in-flight calls register on its token after that; it has no timer.")]
internal abstract class RpcConnection
{
    private readonly Socket _socket;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly Channel<OutgoingFrame> _queue =
        Channel.CreateUnbounded<OutgoingFrame>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = false });

    private readonly CancellationTokenSource _closing = new();
    private readonly KeyValuePair<string, object?> _side;
    private int _closed;

    protected RpcConnection(Socket socket, RpcOptions options, ILogger logger, RpcMetrics metrics, KeyValuePair<string, object?> side)
    {
        _socket = socket;
        var stream = new NetworkStream(socket, ownsSocket: false);
        _input = PipeReader.Create(stream, new StreamPipeReaderOptions(minimumReadSize: 16 * 1024, leaveOpen: true));
        _output = PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true));
        Options = options;
        Logger = logger;
        Metrics = metrics;
        _side = side;
        RemoteEndPoint = socket.RemoteEndPoint;
    }

    public EndPoint? RemoteEndPoint { get; }

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <summary>Fires when the connection closes, for whatever reason.</summary>
    public CancellationToken Closing => _closing.Token;

    /// <summary>Completes when both loops have ended.</summary>
    public Task Completion { get; private set; } = Task.CompletedTask;

    protected RpcOptions Options { get; }

    protected ILogger Logger { get; }

    protected RpcMetrics Metrics { get; }

    public void Start()
    {
        Metrics.ConnectionOpened(_side);
        Completion = Task.WhenAll(ReadLoopAsync(), WriteLoopAsync());
    }

    /// <summary>Queues a frame for the writer loop; false (and the body returned to the pool) once the connection is closed.</summary>
    public bool Send(in OutgoingFrame frame)
    {
        if (_queue.Writer.TryWrite(frame))
        {
            return true;
        }

        frame.ReturnBody();
        return false;
    }

    /// <summary>Closes the socket and fails whatever depends on the connection. Idempotent.</summary>
    public void Close(Exception? reason)
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        _queue.Writer.TryComplete();
        try
        {
            _input.CancelPendingRead();
        }
        catch (ObjectDisposedException)
        {
            // The read loop already completed the reader.
        }

        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
            // Already reset by the peer: nothing left to shut down.
        }

        _socket.Dispose();
        _closing.Cancel();
        Metrics.ConnectionClosed(_side);
        Log.ConnectionEnded(Logger, RemoteEndPoint, reason);
        OnClosed(reason);
    }

    /// <summary>Handles one decoded frame on the read loop; false means a protocol violation (the connection is closed).</summary>
    protected abstract bool OnFrame(in RpcFrame frame);

    protected abstract void OnClosed(Exception? reason);

    private async Task ReadLoopAsync()
    {
        Exception? failure = null;
        try
        {
            var maxFrameBytes = Options.MaxFrameBytes;
            while (true)
            {
                var result = await _input.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                var rejected = RpcFrameError.None;
                while (true)
                {
                    var status = RpcFrameCodec.TryRead(ref buffer, maxFrameBytes, out var frame, out var error);
                    if (status == OperationStatus.Done)
                    {
                        if (OnFrame(in frame))
                        {
                            continue;
                        }

                        error = RpcFrameError.Malformed;
                    }

                    rejected = error;
                    break;
                }

                // Consumed up to the first incomplete frame; examined everything, so the next read waits for new bytes.
                _input.AdvanceTo(buffer.Start, buffer.End);
                if (rejected != RpcFrameError.None)
                {
                    Metrics.FrameRejected(rejected);
                    Log.FrameRejected(Logger, RemoteEndPoint, Log.ReasonName(rejected));
                    failure = new InvalidDataException("RPC frame rejected: " + Log.ReasonName(rejected));
                    return;
                }

                if (result.IsCompleted || result.IsCanceled)
                {
                    return;
                }
            }
        }
#pragma warning disable CA1031 // Whatever ends the loop (socket error, or a bug) closes this connection only; Completion never faults.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            failure = ex;
        }
        finally
        {
            Close(failure);
            await _input.CompleteAsync().ConfigureAwait(false);
        }
    }

    private async Task WriteLoopAsync()
    {
        Exception? failure = null;
        var frames = _queue.Reader;
        try
        {
            while (await frames.WaitToReadAsync().ConfigureAwait(false))
            {
                while (frames.TryRead(out var frame))
                {
                    frame.WriteTo(_output);
                }

                var flush = await _output.FlushAsync().ConfigureAwait(false);
                if (flush.IsCompleted)
                {
                    break;
                }
            }
        }
#pragma warning disable CA1031 // Whatever ends the loop (socket error, or a bug) closes this connection only; Completion never faults.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            failure = ex;
        }
        finally
        {
            Close(failure);
            while (frames.TryRead(out var frame))
            {
                frame.ReturnBody();
            }

            try
            {
                // Completing flushes what is still buffered; Close has disposed the socket by then, and those bytes
                // are lost with the connection like any frame still queued.
                await _output.CompleteAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or SocketException)
            {
            }
        }
    }
}

/// <summary>A frame waiting for the writer loop; owns its pooled body array until written.</summary>
internal readonly struct OutgoingFrame
{
    private readonly byte[]? _body;
    private readonly int _bodyLength;
    private readonly ActivityContext _trace;
    private readonly long _deadlineUnixMs;
    private readonly ulong _requestId;
    private readonly ushort _method;
    private readonly RpcFrameKind _kind;
    private readonly RpcStatus _status;

    private OutgoingFrame(RpcFrameKind kind, ulong requestId, ushort method, RpcStatus status, long deadlineUnixMs, in ActivityContext trace, byte[]? body, int bodyLength)
    {
        _kind = kind;
        _requestId = requestId;
        _method = method;
        _status = status;
        _deadlineUnixMs = deadlineUnixMs;
        _trace = trace;
        _body = body;
        _bodyLength = bodyLength;
    }

    public static OutgoingFrame Request(ulong requestId, ushort method, long deadlineUnixMs, in ActivityContext trace, byte[] body, int bodyLength) =>
        new(RpcFrameKind.Request, requestId, method, RpcStatus.Ok, deadlineUnixMs, trace, body, bodyLength);

    public static OutgoingFrame Response(ulong requestId, RpcStatus status, byte[]? body, int bodyLength) =>
        new(RpcFrameKind.Response, requestId, 0, status, 0, default, body, bodyLength);

    public static OutgoingFrame Cancel(ulong requestId) => new(RpcFrameKind.Cancel, requestId, 0, RpcStatus.Ok, 0, default, null, 0);

    public void WriteTo(IBufferWriter<byte> output)
    {
        try
        {
            var body = _body is null ? default : _body.AsSpan(0, _bodyLength);
            switch (_kind)
            {
                case RpcFrameKind.Request:
                    RpcFrameCodec.WriteRequest(output, _requestId, _method, _deadlineUnixMs, _trace, body);
                    break;
                case RpcFrameKind.Response:
                    RpcFrameCodec.WriteResponse(output, _requestId, _status, body);
                    break;
                default:
                    RpcFrameCodec.WriteCancel(output, _requestId);
                    break;
            }
        }
        finally
        {
            ReturnBody();
        }
    }

    public void ReturnBody()
    {
        if (_body is not null)
        {
            PooledBufferWriter.ReturnArray(_body);
        }
    }
}
