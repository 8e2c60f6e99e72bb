using System.Net;
using Microsoft.Extensions.Logging;

namespace CallState.Runtime.Rpc;

internal static partial class Log
{
    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "RPC server listening on {EndPoint}")]
    public static partial void Listening(ILogger logger, EndPoint endPoint);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Warning, Message = "RPC frame from {RemoteEndPoint} rejected ({Reason}); connection closed")]
    public static partial void FrameRejected(ILogger logger, EndPoint? remoteEndPoint, string reason);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Warning, Message = "RPC server could not accept a connection")]
    public static partial void AcceptFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Debug, Message = "RPC connection with {RemoteEndPoint} ended")]
    public static partial void ConnectionEnded(ILogger logger, EndPoint? remoteEndPoint, Exception? exception);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Debug, Message = "RPC handler for method {Method} failed; replying Error")]
    public static partial void HandlerFailed(ILogger logger, ushort method, Exception exception);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Warning, Message = "RPC connect to {Target} failed; calls to it fail fast for {Backoff}")]
    public static partial void ConnectFailed(ILogger logger, EndPoint target, TimeSpan backoff, Exception exception);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Information, Message = "RPC server on {EndPoint} stopped")]
    public static partial void Stopped(ILogger logger, EndPoint endPoint);

    public static string ReasonName(RpcFrameError error) => error == RpcFrameError.Oversized ? "oversized" : "malformed";
}
