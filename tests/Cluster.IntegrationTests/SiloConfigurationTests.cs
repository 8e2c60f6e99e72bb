using System.Net;
using CallState.Cluster.IntegrationTests.Infrastructure;
using CallState.Grains;

namespace CallState.Cluster.IntegrationTests;

/// <summary>Bad input to a silo process: a bad configuration stops start-up; a bad request is an error result.</summary>
public sealed class SiloConfigurationTests
{
    [Fact]
    public async Task A_user_whose_outbound_exceeds_total_stops_start_up_naming_the_field()
    {
        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings.Concat(["--CallState:Limits:Users:alice:Total=2", "--CallState:Limits:Users:alice:Outbound=3"]));

        var exitCode = await silo.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(2, exitCode);
        Assert.Contains("CallState:Limits:Users:alice:Outbound (3) must not exceed CallState:Limits:Users:alice:Total (2)", silo.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_advertised_address_that_is_no_host_stops_start_up_naming_the_field()
    {
        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings.Concat(["--CallState:Orleans:AdvertisedAddress=silo 0:11111"]));

        var exitCode = await silo.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(2, exitCode);
        Assert.Contains("CallState:Orleans:AdvertisedAddress must be the host, host:port or IP address", silo.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("FormatException", silo.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_silo_advertising_a_host_name_resolves_it_and_serves()
    {
        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings.Concat(["--CallState:Orleans:AdvertisedAddress=localhost"]));

        await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));
        Assert.False(silo.HasExited, silo.Output);
    }

    [Fact]
    public async Task A_postgres_provider_without_a_connection_string_stops_start_up_naming_the_field()
    {
        await using var silo = SiloProcess.Start(["--CallState:Storage:Provider=PostgreSql"]);

        var exitCode = await silo.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(2, exitCode);
        Assert.Contains("CallState:Storage:ConnectionString", silo.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_limit_prefix_is_a_400_and_the_silo_keeps_serving()
    {
        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings.Concat(["--CallState:Limits:Users:alice:Total=1"]));
        await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));

        var (status, bad) = await silo.PostAsync<AdmitResult>("/api/calls/admit", new { callKey = "c1", limits = new[] { new { key = "group/sales", direction = "Inbound" } } });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("unknown limit key prefix 'group'", bad!.Error, StringComparison.Ordinal);

        using var badKey = await silo.Http.GetAsync("/api/limits/group/sales");
        Assert.Equal(HttpStatusCode.BadRequest, badKey.StatusCode);

        var (okStatus, ok) = await silo.PostAsync<AdmitResult>("/api/calls/admit", new { callKey = "c2", limits = new[] { new { key = "user/alice", direction = "Outbound" } } });
        Assert.Equal(HttpStatusCode.OK, okStatus);
        Assert.Equal(AdmitStatus.Admitted, ok!.Status);
        var (_, refused) = await silo.PostAsync<AdmitResult>("/api/calls/admit", new { callKey = "c3", limits = new[] { new { key = "user/alice", direction = "Inbound" } } });
        Assert.Equal(RejectReason.UserTotalLimitReached, refused!.Reason);
        Assert.Equal("user/alice", refused.LimitKey);
    }

    [Fact]
    public async Task Listing_per_key_limits_shows_current_and_maximum_like_show_voip_tags_cac()
    {
        await using var db = TestDatabase.Create("sqlite");
        await using var silo = SiloProcess.Start(db.Settings);
        await silo.WaitReadyAsync(TimeSpan.FromSeconds(60));

        for (var i = 0; i < 4; i++)
        {
            var (_, r) = await silo.PostAsync<AdmitResult>("/api/calls/admit", new { callKey = $"k{i}", limits = new[] { new { key = "key/+12345678", direction = "Inbound", max = 3 } } });
            Assert.Equal(i < 3 ? AdmitStatus.Admitted : AdmitStatus.Rejected, r!.Status);
            if (i == 3)
            {
                Assert.Equal(RejectReason.InPerKeyCacLimitReached, r.Reason);
            }
        }

        var listed = await silo.GetAsync<List<LimitSnapshot>>("/api/limits?kind=key");
        var key = Assert.Single(listed);
        Assert.Equal("key/+12345678", key.Key);
        Assert.Equal(3, key.Total);
        Assert.Equal(3, key.Limits.Total);
    }
}
