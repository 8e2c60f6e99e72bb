using System.Diagnostics.Metrics;
using CallState.Silo.Admin;
using CallState.Silo.Dashboard;

namespace CallState.Grains.Tests.Hosting;

/// <summary>The dashboard's sessions and the figures it reads from the meters (docs/dashboard.md).</summary>
public sealed class DashboardTests
{
    [Fact]
    public void A_session_stands_for_its_token_until_it_expires_or_is_removed()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-06T08:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var sessions = new DashboardSessions(time);
        var writer = new AdminCredential("ops", AdminRole.Write, AdminCredential.Hash("ops-token-0123456789abcdef"));
        var (id, expires) = sessions.Create(writer);
        var (other, _) = sessions.Create(writer);

        Assert.NotEqual(id, other);
        Assert.Equal(time.GetUtcNow() + DashboardSessions.Lifetime, expires);
        Assert.Same(writer, sessions.Find(id));
        Assert.Null(sessions.Find(id[..^1] + (id[^1] == 'A' ? 'B' : 'A')));
        Assert.Null(sessions.Find(null));

        time.Advance(DashboardSessions.Lifetime - TimeSpan.FromSeconds(1));
        Assert.Same(writer, sessions.Find(id));
        sessions.Remove(other);
        Assert.Null(sessions.Find(other));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Null(sessions.Find(id));
    }

    [Fact]
    public void Sessions_beyond_the_bound_push_out_the_oldest()
    {
        var time = new FakeTimeProvider();
        var sessions = new DashboardSessions(time);
        var reader = new AdminCredential("noc", AdminRole.Read, AdminCredential.Hash("noc-token-0123456789abcdef"));
        var (first, _) = sessions.Create(reader);
        time.Advance(TimeSpan.FromSeconds(1));
        var (second, _) = sessions.Create(reader);
        for (var i = 2; i < DashboardSessions.MaxSessions; i++)
        {
            sessions.Create(reader);
        }

        Assert.Same(reader, sessions.Find(first));
        var (last, _) = sessions.Create(reader);
        Assert.Null(sessions.Find(first));
        Assert.Same(reader, sessions.Find(second));
        Assert.Same(reader, sessions.Find(last));
    }

    [Fact]
    public void Figures_are_admissions_per_second_by_reason_and_latency_percentiles_of_the_last_samples()
    {
        var time = new FakeTimeProvider();
        var name = "CallState.Dashboard.Test." + Guid.NewGuid().ToString("N");
        using var meter = new Meter(name);
        using var figures = new DashboardFigures(time, [name]);
        var admissions = meter.CreateCounter<long>(DashboardFigures.GrainAdmissions);
        var latency = meter.CreateHistogram<double>(DashboardFigures.GrainLatency);
        var commits = meter.CreateHistogram<double>(DashboardFigures.CommitLatency);
        var usage = 7;
        meter.CreateObservableGauge(DashboardFigures.LimitUsage, () => new Measurement<int>(usage, new KeyValuePair<string, object?>(GrainMetrics.KindTag, "user")));

        static KeyValuePair<string, object?>[] Tags(string result, string reason) =>
            [new("callstate.result", result), new("callstate.reason", reason)];

        for (var i = 0; i < 10; i++)
        {
            admissions.Add(1, Tags("admitted", "NONE"));
        }

        admissions.Add(1, Tags("rejected", "USER_OUT_LIMIT_REACHED"));
        for (var i = 1; i <= 100; i++)
        {
            latency.Record(i / 1000.0);
        }

        commits.Record(0.002, new KeyValuePair<string, object?>("callstate.outcome", "committed"));
        commits.Record(5, new KeyValuePair<string, object?>("callstate.outcome", "failed"));
        time.Advance(TimeSpan.FromSeconds(2));
        var first = figures.Sample();

        Assert.Equal(5, first.Admissions.Single(a => a.Result == "admitted").PerSecond);
        var refused = first.Admissions.Single(a => a.Result == "rejected");
        Assert.Equal(("USER_OUT_LIMIT_REACHED", 0.5, 1L), (refused.Reason, refused.PerSecond, refused.Total));
        Assert.Equal(100, first.AdmissionLatency.Count);

        // Bucket upper edges, each within 10% above the value ranked there (50 ms, 90 ms, 99 ms, 100 ms).
        Assert.InRange(first.AdmissionLatency.P50!.Value, 50, 55);
        Assert.InRange(first.AdmissionLatency.P90!.Value, 90, 99);
        Assert.InRange(first.AdmissionLatency.P99!.Value, 99, 109);
        Assert.InRange(first.AdmissionLatency.Max!.Value, 100, 110);

        // Failed commits are not timed; the gauges are read at each sample.
        Assert.Equal(1, first.CommitLatency.Count);
        Assert.Equal(7, first.Active.Single(a => a.Kind == "user").InUse);

        // Nothing new: rates fall to 0, totals stay; the latency window still holds the samples until it moves past them.
        usage = 3;
        time.Advance(TimeSpan.FromSeconds(1));
        var second = figures.Sample();
        Assert.All(second.Admissions, a => Assert.Equal(0, a.PerSecond));
        Assert.Equal(11, second.Admissions.Sum(a => a.Total));
        Assert.Equal(100, second.AdmissionLatency.Count);
        Assert.Equal(3, second.Active.Single().InUse);
        for (var i = 0; i < DashboardFigures.Window; i++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            _ = figures.Sample();
        }

        Assert.Equal(0, figures.Sample().AdmissionLatency.Count);
        Assert.Null(figures.Sample().AdmissionLatency.P50);
    }
}
