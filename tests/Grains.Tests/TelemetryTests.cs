using System.Diagnostics.Metrics;
using System.Globalization;
using CallState.Silo.Hosting;
using CallState.Testing;
using Microsoft.Extensions.Configuration;

namespace CallState.Grains.Tests;

/// <summary>
/// The capacity gauges read the limits active on a silo when collected (docs/operations.md, "Metrics"), and each OTLP
/// signal is exported only when its endpoint is configured.
/// </summary>
public sealed class TelemetryTests
{
    [Fact]
    public void Capacity_gauges_sum_the_active_limits_per_kind_and_name_only_the_fullest_limited_keys()
    {
        using var factory = new TestMeterFactory();
        using var metrics = new GrainMetrics(factory);
        var alice = new Usage("user/alice", 2, 2);
        var bob = new Usage("user/bob", 1, 4);
        var idle = new Usage("user/idle", 0, 5);
        var trunk = new Usage("trunk/carrier", 3, null);
        foreach (var limit in new[] { alice, bob, idle, trunk })
        {
            metrics.Track(limit);
        }

        var gauges = Collect(factory);
        Assert.Equal(3, gauges["callstate.limit.usage|user"]);
        Assert.Equal(3, gauges["callstate.limit.usage|trunk"]);
        Assert.Equal(0, gauges["callstate.limit.usage|key"]);
        Assert.Equal(11, gauges["callstate.limit.capacity|user"]);
        Assert.Equal(0, gauges["callstate.limit.capacity|trunk"]);
        Assert.Equal(2, gauges["callstate.limit.top.usage|user/alice"]);
        Assert.Equal(1, gauges["callstate.limit.top.utilization|user/alice"]);
        Assert.Equal(0.25, gauges["callstate.limit.top.utilization|user/bob"]);

        // A key that holds nothing, or has no maximum, is never a top key.
        Assert.False(gauges.ContainsKey("callstate.limit.top.usage|user/idle"));
        Assert.False(gauges.ContainsKey("callstate.limit.top.usage|trunk/carrier"));

        // Twelve more limited keys, each fuller than bob: only the ten fullest are named.
        for (var i = 0; i < 12; i++)
        {
            metrics.Track(new Usage(string.Create(CultureInfo.InvariantCulture, $"user/u{i}"), 1, 2));
        }

        metrics.Untrack(alice);
        gauges = Collect(factory);
        Assert.Equal(GrainMetrics.TopKeys, gauges.Keys.Count(k => k.StartsWith("callstate.limit.top.usage|", StringComparison.Ordinal)));
        Assert.False(gauges.ContainsKey("callstate.limit.top.usage|user/alice"));
        Assert.False(gauges.ContainsKey("callstate.limit.top.usage|user/bob"));
        Assert.Equal(1 + 12, gauges["callstate.limit.usage|user"]);
    }

    [Theory]
    [InlineData("OTEL_EXPORTER_OTLP_ENDPOINT", true, true, true)]
    [InlineData("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", true, false, false)]
    [InlineData("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", false, true, false)]
    [InlineData("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", false, false, true)]
    [InlineData("OTEL_SERVICE_NAME", false, false, false)]
    public void Each_signal_is_exported_only_when_its_endpoint_or_the_common_one_is_set(string variable, bool traces, bool metrics, bool logs)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection([new(variable, "http://127.0.0.1:4318")]).Build();
        Assert.Equal((traces, metrics, logs), (OtlpExport.Traces(configuration), OtlpExport.Metrics(configuration), OtlpExport.Logs(configuration)));
    }

    /// <summary>Every observable gauge of the factory's meters, by instrument and its key (or kind) attribute.</summary>
    private static Dictionary<string, double> Collect(TestMeterFactory factory)
    {
        var values = new Dictionary<string, double>(StringComparer.Ordinal);
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (factory.Owns(instrument.Meter))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            string? kind = null, key = null;
            foreach (var tag in tags)
            {
                if (tag.Key == GrainMetrics.KindTag)
                {
                    kind = (string?)tag.Value;
                }
                else if (tag.Key == "callstate.limit.key")
                {
                    key = (string?)tag.Value;
                }
            }

            values[instrument.Name + "|" + (key ?? kind)] = value;
        }
        listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => Record(instrument, value, tags));
        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Record(instrument, value, tags));
        listener.Start();
        listener.RecordObservableInstruments();
        return values;
    }

    private sealed class Usage(string key, int inUse, int? maximum) : ILimitUsage
    {
        public LimitKey Key { get; } = LimitKey.TryParse(key, out var parsed, out _) ? parsed : throw new ArgumentException(key);

        public int InUse { get; } = inUse;

        public int? Maximum { get; } = maximum;
    }
}
