namespace CallState.Silo.Hosting;

/// <summary>
/// Whether a process exports a signal over OTLP: only when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> or the signal's own
/// endpoint variable (<c>OTEL_EXPORTER_OTLP_TRACES_ENDPOINT</c>, <c>…_METRICS_…</c>, <c>…_LOGS_…</c>) is set, so a
/// process without a collector neither retries connections forever nor pays for traces nobody receives.
/// </summary>
public static class OtlpExport
{
    public static bool Traces(IConfiguration configuration) => Set(configuration, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");

    public static bool Metrics(IConfiguration configuration) => Set(configuration, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");

    public static bool Logs(IConfiguration configuration) => Set(configuration, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT");

    private static bool Set(IConfiguration configuration, string signalVariable) =>
        !string.IsNullOrEmpty(configuration?["OTEL_EXPORTER_OTLP_ENDPOINT"]) || !string.IsNullOrEmpty(configuration?[signalVariable]);
}
