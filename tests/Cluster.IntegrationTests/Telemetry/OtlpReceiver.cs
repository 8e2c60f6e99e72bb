using System.Globalization;
using System.Net;
using CallState.Cluster.IntegrationTests.Otlp;
using Google.Protobuf;

namespace CallState.Cluster.IntegrationTests.Telemetry;

/// <summary>A metric data point as received: the exporting service, the metric, its attributes and its value.</summary>
public sealed record ReceivedPoint(string Service, string Metric, string Unit, IReadOnlyDictionary<string, string> Attributes, double Value);

/// <summary>A span as received, with the service that exported it.</summary>
public sealed record ReceivedSpan(string Service, string Name, string TraceId, IReadOnlyDictionary<string, string> Attributes);

/// <summary>A log record as received, with the service that exported it.</summary>
public sealed record ReceivedLog(string Service, string Body, IReadOnlyDictionary<string, string> Attributes);

/// <summary>
/// An OTLP/HTTP receiver on loopback (<c>/v1/metrics</c>, <c>/v1/traces</c>, <c>/v1/logs</c>, protobuf bodies), standing in
/// for a collector: it decodes each export with the message subset in Telemetry/otlp.proto and keeps what arrived.
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Task _loop;
    private readonly Lock _sync = new();
    private readonly Dictionary<string, ReceivedPoint> _latest = new(StringComparer.Ordinal);
    private readonly List<ReceivedSpan> _spans = [];
    private readonly List<ReceivedLog> _logs = [];
    private readonly List<string> _errors = [];

    public OtlpReceiver(int port)
    {
        Endpoint = string.Create(CultureInfo.InvariantCulture, $"http://127.0.0.1:{port}");
        _listener.Prefixes.Add(Endpoint + "/");
        _listener.Start();
        _loop = Task.Run(ServeAsync);
    }

    /// <summary>The value of <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> that reaches this receiver.</summary>
    public string Endpoint { get; }

    /// <summary>The environment that points a process at this receiver over OTLP/HTTP, exporting every second.</summary>
    public IReadOnlyDictionary<string, string> Environment => new Dictionary<string, string>
    {
        ["OTEL_EXPORTER_OTLP_ENDPOINT"] = Endpoint,
        ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
        ["OTEL_METRIC_EXPORT_INTERVAL"] = "1000",
        ["OTEL_BSP_SCHEDULE_DELAY"] = "500",
        ["OTEL_BLRP_SCHEDULE_DELAY"] = "500",
    };

    /// <summary>Each metric's latest data point per service and attribute set (counters are cumulative: the total so far).</summary>
    public IReadOnlyList<ReceivedPoint> Points
    {
        get
        {
            lock (_sync)
            {
                return [.. _latest.Values];
            }
        }
    }

    public IReadOnlyList<ReceivedSpan> Spans
    {
        get
        {
            lock (_sync)
            {
                return [.. _spans];
            }
        }
    }

    public IReadOnlyList<ReceivedLog> Logs
    {
        get
        {
            lock (_sync)
            {
                return [.. _logs];
            }
        }
    }

    /// <summary>Bodies that did not decode (the test fails on any).</summary>
    public IReadOnlyList<string> Errors
    {
        get
        {
            lock (_sync)
            {
                return [.. _errors];
            }
        }
    }

    /// <summary>Waits (bounded by <paramref name="timeout"/>) until <paramref name="condition"/> holds; false when it never did.</summary>
    public async Task<bool> WaitForAsync(Func<OtlpReceiver, bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (condition(this))
            {
                return true;
            }

            await Task.Delay(200);
        }

        return condition(this);
    }

    private async Task ServeAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception ex) when (ex is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            try
            {
                await AnswerAsync(context);
            }
            catch (Exception ex) when (!_listener.IsListening && ex is HttpListenerException or ObjectDisposedException or IOException)
            {
                // Stopped (the test is over) while an export was being read or answered: nothing is left to answer.
                return;
            }
        }
    }

    private async Task AnswerAsync(HttpListenerContext context)
    {
        using var body = new MemoryStream();
        await context.Request.InputStream.CopyToAsync(body);
        try
        {
            Accept(context.Request.Url!.AbsolutePath, body.ToArray());
            context.Response.StatusCode = 200;
            context.Response.ContentType = "application/x-protobuf";
        }
        catch (Exception ex) when (ex is InvalidProtocolBufferException or InvalidDataException)
        {
            lock (_sync)
            {
                _errors.Add($"{context.Request.Url!.AbsolutePath}: {ex.Message}");
            }

            context.Response.StatusCode = 400;
        }

        context.Response.Close();
    }

    private void Accept(string path, byte[] body)
    {
        switch (path)
        {
            case "/v1/metrics":
                var metrics = ExportMetricsServiceRequest.Parser.ParseFrom(body);
                lock (_sync)
                {
                    foreach (var resource in metrics.ResourceMetrics)
                    {
                        var service = ServiceOf(resource.Resource);
                        foreach (var metric in resource.ScopeMetrics.SelectMany(s => s.Metrics))
                        {
                            foreach (var (attributes, value) in PointsOf(metric))
                            {
                                var point = new ReceivedPoint(service, metric.Name, metric.Unit, attributes, value);
                                _latest[$"{service}|{metric.Name}|{string.Join(',', attributes.OrderBy(a => a.Key, StringComparer.Ordinal))}"] = point;
                            }
                        }
                    }
                }

                break;
            case "/v1/traces":
                var traces = ExportTraceServiceRequest.Parser.ParseFrom(body);
                lock (_sync)
                {
                    foreach (var resource in traces.ResourceSpans)
                    {
                        var service = ServiceOf(resource.Resource);
                        _spans.AddRange(resource.ScopeSpans.SelectMany(s => s.Spans)
                            .Select(s => new ReceivedSpan(service, s.Name, Convert.ToHexString(s.TraceId.Span), Attributes(s.Attributes))));
                    }
                }

                break;
            case "/v1/logs":
                var logs = ExportLogsServiceRequest.Parser.ParseFrom(body);
                lock (_sync)
                {
                    foreach (var resource in logs.ResourceLogs)
                    {
                        var service = ServiceOf(resource.Resource);
                        _logs.AddRange(resource.ScopeLogs.SelectMany(s => s.LogRecords)
                            .Select(r => new ReceivedLog(service, Text(r.Body), Attributes(r.Attributes))));
                    }
                }

                break;
            default:
                throw new InvalidDataException("unknown OTLP path " + path);
        }
    }

    private static IEnumerable<(IReadOnlyDictionary<string, string>, double)> PointsOf(Metric metric) => metric.DataCase switch
    {
        Metric.DataOneofCase.Sum => metric.Sum.DataPoints.Select(p => ((IReadOnlyDictionary<string, string>)Attributes(p.Attributes), Number(p))),
        Metric.DataOneofCase.Gauge => metric.Gauge.DataPoints.Select(p => ((IReadOnlyDictionary<string, string>)Attributes(p.Attributes), Number(p))),

        // A histogram's value here is its count; its buckets are not needed by the tests.
        Metric.DataOneofCase.Histogram => metric.Histogram.DataPoints.Select(p => ((IReadOnlyDictionary<string, string>)Attributes(p.Attributes), (double)p.Count)),
        _ => [],
    };

    private static double Number(NumberDataPoint point) =>
        point.ValueCase == NumberDataPoint.ValueOneofCase.AsInt ? point.AsInt : point.AsDouble;

    private static string ServiceOf(Resource resource) =>
        resource.Attributes.FirstOrDefault(a => a.Key == "service.name") is { } name ? Text(name.Value) : "";

    private static Dictionary<string, string> Attributes(IEnumerable<KeyValue> attributes)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var attribute in attributes)
        {
            result[attribute.Key] = Text(attribute.Value);
        }

        return result;
    }

    private static string Text(AnyValue? value) => value?.ValueCase switch
    {
        AnyValue.ValueOneofCase.StringValue => value.StringValue,
        AnyValue.ValueOneofCase.BoolValue => value.BoolValue ? "true" : "false",
        AnyValue.ValueOneofCase.IntValue => value.IntValue.ToString(CultureInfo.InvariantCulture),
        AnyValue.ValueOneofCase.DoubleValue => value.DoubleValue.ToString(CultureInfo.InvariantCulture),
        _ => "",
    };

    public async ValueTask DisposeAsync()
    {
        _listener.Stop();
        _listener.Close();
        await _loop;
    }
}
