using System.Reflection;
using Npgsql;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace CallState.Silo.Hosting;

/// <summary>
/// The one OpenTelemetry registration of every CallState process (silo, edge, standalone edge): resource, meters,
/// activity sources and exporters (docs/operations.md, "Metrics"). Metrics are always collected for <c>GET /metrics</c>
/// on the admin listener; each signal goes out over OTLP only when its endpoint is configured (<see cref="OtlpExport"/>).
/// </summary>
public static class Telemetry
{
    /// <summary><c>service.name</c> of a silo.</summary>
    public const string SiloService = "callstate-silo";

    /// <summary><c>service.name</c> of an edge that is an Orleans client of the silos.</summary>
    public const string EdgeService = "callstate-edge";

    /// <summary><c>service.name</c> of an edge hosting its own silo (<c>--standalone</c>).</summary>
    public const string StandaloneService = "callstate-standalone";

    /// <summary>The path of the Prometheus scrape endpoint on the admin listener (a read token needed, like every admin request).</summary>
    public const string MetricsPath = "/metrics";

    /// <summary>
    /// Our meters (<c>CallState.*</c>), Orleans' own and the runtime's (<c>System.Runtime</c>, built into .NET 9 and later:
    /// CPU, GC, heap, thread pool, lock contention).
    /// </summary>
    public static readonly IReadOnlyList<string> Meters =
        ["CallState.Silo", "CallState.Storage", "CallState.Sip", "CallState.SipEdge", "Microsoft.Orleans", "System.Runtime"];

    /// <summary>
    /// Our activity sources (an admission's span on the edge, the storage write it waits for) and Orleans' spans of our
    /// grain calls, which carry the trace from the edge into the silo (activity propagation, on client and silo alike).
    /// Orleans' runtime spans (membership reads, timers every few seconds) are left out: they are not part of a call.
    /// </summary>
    public static readonly IReadOnlyList<string> ActivitySources =
        ["CallState.SipEdge", "CallState.Storage", "Microsoft.Orleans.Application"];

    /// <summary>
    /// Adds metrics (always, for the Prometheus endpoint), and traces and logs when OTLP export of them is configured,
    /// with <c>service.name</c> <paramref name="serviceName"/> unless <c>OTEL_SERVICE_NAME</c> says otherwise.
    /// </summary>
    public static void AddCallStateTelemetry(this IHostApplicationBuilder builder, string serviceName)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var configuration = builder.Configuration;
        var name = configuration["OTEL_SERVICE_NAME"] is { Length: > 0 } configured ? configured : serviceName;
        var version = typeof(Telemetry).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";
        var otel = builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(name, serviceVersion: version, autoGenerateServiceInstanceId: true))
            .WithMetrics(metrics =>
            {
                metrics.AddMeter([.. Meters])
                    .AddAspNetCoreInstrumentation()
                    .AddNpgsqlInstrumentation()
                    .AddPrometheusExporter();
                if (OtlpExport.Metrics(configuration))
                {
                    metrics.AddOtlpExporter();
                }
            });
        if (OtlpExport.Traces(configuration))
        {
            // Only when exported: a listener makes every source create its spans, and Orleans copies the trace context
            // into each grain call (docs/benchmarks.md measures that cost).
            otel.WithTracing(tracing => tracing
                .AddSource([.. ActivitySources])
                // The admin API's requests, not the scrapes and probes that come every few seconds.
                .AddAspNetCoreInstrumentation(o => o.Filter = context =>
                    !context.Request.Path.StartsWithSegments(MetricsPath, StringComparison.Ordinal)
                    && !context.Request.Path.StartsWithSegments("/health", StringComparison.Ordinal))
                .AddNpgsql()
                .AddOtlpExporter());
        }

        if (OtlpExport.Logs(configuration))
        {
            // Each log record's parameters (the call key of an admission, a limit key) become attributes of the record.
            otel.WithLogging(logs => logs.AddOtlpExporter(), options =>
            {
                options.IncludeFormattedMessage = true;
                options.IncludeScopes = true;
            });
        }
    }

    /// <summary>Maps <see cref="MetricsPath"/>: the Prometheus text format of every meter above.</summary>
    public static IEndpointRouteBuilder MapCallStateMetrics(this IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        endpoints.MapPrometheusScrapingEndpoint(MetricsPath);
        return endpoints;
    }
}
