namespace CallState.SipEdge;

/// <summary>
/// The SIP edge process. Until the SIP stack lands it starts, reports its configuration and health, and
/// waits; the SIP listeners and the admission client plug into this host.
/// </summary>
public static partial class EdgeHost
{
    public static async Task<int> RunAsync(string[] args)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        builder.Services.AddHealthChecks();
        var app = builder.Build();
        app.MapHealthChecks("/health/live");
        await app.StartAsync().ConfigureAwait(false);
        LogStarted(app.Logger, app.Urls);
        await app.WaitForShutdownAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
        return 0;
    }

    [LoggerMessage(EventId = 3000, Level = LogLevel.Information, Message = "SIP edge host started (health on {Urls}); SIP listeners are not configured in this build")]
    private static partial void LogStarted(ILogger logger, ICollection<string> urls);
}
