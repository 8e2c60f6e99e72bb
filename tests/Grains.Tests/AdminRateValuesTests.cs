using System.Text.Json;
using CallState.Silo;

namespace CallState.Grains.Tests;

/// <summary>The admin API's reading of call rates in a PATCH or PUT body (docs/policies.md, "Call rates").</summary>
public sealed class AdminRateValuesTests
{
    private static (bool Ok, LimitSettings Values, LimitFields Set, string? Error) Read(string json)
    {
        using var document = JsonDocument.Parse(json);
        var ok = AdminApi.ReadValues(document.RootElement, out var values, out var set, out var error);
        return (ok, values, set, error);
    }

    [Fact]
    public void A_rate_and_its_burst_are_one_field_beside_the_maxima()
    {
        var (ok, values, set, _) = Read("""{"total": 4, "outboundRate": 2.5, "outboundBurst": 3, "inboundRate": null}""");

        Assert.True(ok);
        Assert.Equal(new LimitSettings(Total: 4, OutboundRate: 2.5, OutboundBurst: 3), values);
        Assert.Equal(LimitFields.Total | LimitFields.OutboundRate | LimitFields.InboundRate, set);
    }

    [Fact]
    public void A_rate_that_is_not_a_number_is_refused_naming_it()
    {
        var (ok, _, _, error) = Read("""{"totalRate": "fast"}""");

        Assert.False(ok);
        Assert.Equal("totalRate must be a number of calls per second or null", error);
    }

    [Fact]
    public void A_burst_sent_alone_fails_validation_naming_the_field()
    {
        var (ok, values, set, _) = Read("""{"outboundBurst": 2}""");
        Assert.True(ok);

        var error = Assert.Throws<ArgumentException>(() => LimitGrain.ValidateChange(LimitKey.Parse("user/bob"), new LimitChange(values, set, LimitFields.None)));
        Assert.Contains("user/bob:OutboundBurst is set without user/bob:OutboundRate", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_put_replaces_every_maximum_and_only_the_rates_it_sends()
    {
        var ledger = new LimitLedger(LimitKey.Parse("user/bob"), new LimitGrainState(), new LimitSettings(Total: 9, InboundRate: 7));
        ledger.Change(new LimitChange(new LimitSettings(OutboundRate: 1), LimitFields.OutboundRate, LimitFields.None));

        var (_, values, set, _) = Read("""{"total": 3}""");
        ledger.Change(LimitChange.Replace(values, set));

        Assert.Equal(new LimitSettings(Total: 3, InboundRate: 7, OutboundRate: 1), ledger.Effective);
    }
}
