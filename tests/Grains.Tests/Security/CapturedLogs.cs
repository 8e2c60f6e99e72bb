using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace CallState.Grains.Tests.Security;

/// <summary>Keeps every log line of a host (category, event id, level, formatted message) so a test can look at them.</summary>
public sealed class CapturedLogs : ILoggerProvider
{
    private readonly ConcurrentQueue<LogLine> _lines = new();

    private event Action<LogLine>? Logged;

    public IReadOnlyCollection<LogLine> Lines => _lines;

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, this);

    private void Add(LogLine line)
    {
        _lines.Enqueue(line);
        Logged?.Invoke(line);
    }

    /// <summary>The first line <paramref name="match"/> accepts, waiting for it at most <paramref name="timeout"/>; null if none came.</summary>
    public async Task<LogLine?> WaitForAsync(Func<LogLine, bool> match, TimeSpan timeout) =>
        await WaitForAsync(match, 1, timeout) ? _lines.First(match) : null;

    /// <summary>Whether <paramref name="count"/> lines that <paramref name="match"/> accepts came within <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForAsync(Func<LogLine, bool> match, int count, TimeSpan timeout)
    {
        var enough = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnLogged(LogLine line)
        {
            if (match(line) && _lines.Count(match) >= count)
            {
                enough.TrySetResult();
            }
        }

        Logged += OnLogged;
        try
        {
            // Lines logged before the subscription count too.
            if (_lines.Count(match) >= count)
            {
                return true;
            }

            await enough.Task.WaitAsync(timeout);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
        finally
        {
            Logged -= OnLogged;
        }
    }

    public void Dispose()
    {
    }

    private sealed class Logger(string category, CapturedLogs logs) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                logs.Add(new LogLine(category, eventId.Id, logLevel, formatter(state, exception), exception?.ToString()));
            }
        }
    }
}

public sealed record LogLine(string Category, int EventId, LogLevel Level, string Message, string? Exception);
