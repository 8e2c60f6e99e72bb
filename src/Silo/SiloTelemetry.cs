using CallState.Grains;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace CallState.Silo;

/// <summary>
/// OpenTelemetry metrics and traces over OTLP, configured by the standard <c>OTEL_*</c> environment
/// variables. Export is on when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set, so a silo without a
/// collector does not retry connections forever.
/// </summary>
internal sealed class SiloTelemetry(IConfiguration configuration) : IHostedService, IDisposable
{
    public const string ActivitySourceName = "CallState.Silo";

    private MeterProvider? _meters;
    private TracerProvider? _tracer;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (!Hosting.OtlpExport.IsOn(configuration))
        {
            return Task.CompletedTask;
        }

        var resource = ResourceBuilder.CreateDefault().AddService(configuration["OTEL_SERVICE_NAME"] ?? "callstate-silo");
        _meters = Sdk.CreateMeterProviderBuilder()
            .SetResourceBuilder(resource)
            // Ours and Orleans' own (messaging, grains, membership, storage).
            .AddMeter(GrainMetrics.MeterName, "CallState.Storage", "Microsoft.Orleans")
            .AddOtlpExporter()
            .Build();
        _tracer = Sdk.CreateTracerProviderBuilder()
            .SetResourceBuilder(resource)
            .AddSource(ActivitySourceName, "Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application")
            .AddOtlpExporter()
            .Build();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        _meters?.ForceFlush(2000);
        _tracer?.ForceFlush(2000);
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        _meters?.Dispose();
        _tracer?.Dispose();
    }
}
