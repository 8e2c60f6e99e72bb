namespace CallState.Silo.Hosting;

/// <summary>
/// Whether a process exports telemetry over OTLP: only when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set, so a process
/// without a collector neither retries connections forever nor pays for traces nobody receives.
/// </summary>
public static class OtlpExport
{
    public static bool IsOn(IConfiguration configuration) => !string.IsNullOrEmpty(configuration?["OTEL_EXPORTER_OTLP_ENDPOINT"]);
}
