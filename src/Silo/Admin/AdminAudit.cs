using System.Text.Json;
using CallState.Grains;
using CallState.Storage;

namespace CallState.Silo.Admin;

/// <summary>
/// The audit trail of admin changes: each one logged as a structured event (event 2110) and kept in storage
/// (<see cref="IAuditLog"/>), read back by <c>GET /api/audit</c>. See docs/operations.md, "Audit".
/// </summary>
public sealed partial class AdminAudit(IAuditLog log, TimeProvider time, ILogger<AdminAudit> logger)
{
    public Task RecordLimitAsync(HttpContext http, string action, LimitKey key, LimitChangeResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        return RecordAsync(http, action, key.ToString(), Values(result.Before), Values(result.After));
    }

    /// <summary>Logs and stores one change made by the caller of <paramref name="http"/>.</summary>
    public async Task RecordAsync(HttpContext http, string action, string target, string? before, string? after)
    {
        ArgumentNullException.ThrowIfNull(http);
        var actor = AdminAccess.Actor(http);
        LogChange(logger, actor, action, target, before ?? "", after ?? "");
        await log.AppendAsync(new AuditEntry(0, time.GetUtcNow(), actor, action, target, before, after), CancellationToken.None).ConfigureAwait(false);
    }

    public async Task<IReadOnlyList<AuditEntryDto>> ReadAsync(AuditQuery query, CancellationToken cancellationToken)
    {
        var entries = await log.ReadAsync(query, cancellationToken).ConfigureAwait(false);
        return [.. entries.Select(e => new AuditEntryDto(e.Id, e.At, e.Actor, e.Action, e.Target, Json(e.Before), Json(e.After)))];
    }

    private static JsonElement? Json(string? text)
    {
        if (text is null)
        {
            return null;
        }

        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    private static string Values(LimitSnapshot snapshot)
    {
        var runtime = new List<string>(3);
        foreach (var (field, name) in new[]
        {
            (LimitFields.Total, "total"), (LimitFields.Inbound, "inbound"), (LimitFields.Outbound, "outbound"),
            (LimitFields.TotalRate, "totalRate"), (LimitFields.InboundRate, "inboundRate"), (LimitFields.OutboundRate, "outboundRate"),
            (LimitFields.Shadow, "shadow"),
        })
        {
            if ((snapshot.Overridden & field) != 0)
            {
                runtime.Add(name);
            }
        }

        return JsonSerializer.Serialize(
            new AuditLimitDto(
                snapshot.Limits.Total,
                snapshot.Limits.Inbound,
                snapshot.Limits.Outbound,
                runtime,
                snapshot.Limits.TotalRate,
                snapshot.Limits.TotalBurst,
                snapshot.Limits.InboundRate,
                snapshot.Limits.InboundBurst,
                snapshot.Limits.OutboundRate,
                snapshot.Limits.OutboundBurst,
                snapshot.Limits.Shadow),
            AdminJsonContext.Default.AuditLimitDto);
    }

    [LoggerMessage(EventId = 2110, Level = LogLevel.Information, Message = "Admin change by {Actor}: {Action} {Target} from {Before} to {After}")]
    private static partial void LogChange(ILogger logger, string actor, string action, string target, string before, string after);
}

/// <summary>The cluster's silos as Orleans' management grain reports them.</summary>
internal static class ClusterStatus
{
    public static async Task<ClusterDto> ReadAsync(IGrainFactory grains)
    {
        var management = grains.GetGrain<IManagementGrain>(0);
        var hosts = await management.GetDetailedHosts(onlyActive: false).ConfigureAwait(false);
        var stats = await management.GetSimpleGrainStatistics().ConfigureAwait(false);
        var activations = stats.GroupBy(s => s.SiloAddress).ToDictionary(g => g.Key, g => g.Sum(s => s.ActivationCount));
        var silos = hosts
            .Where(h => h.Status is not Orleans.Runtime.SiloStatus.Dead || h.IAmAliveTime > DateTime.UtcNow.AddHours(-1))
            .OrderBy(h => h.SiloAddress.ToString(), StringComparer.Ordinal)
            .Select(h => new SiloDto(h.SiloAddress.ToString(), h.SiloName ?? "", h.Status.ToString(), activations.TryGetValue(h.SiloAddress, out var n) ? n : null))
            .ToList();
        return new ClusterDto(silos, silos.Count(s => s.Status == nameof(Orleans.Runtime.SiloStatus.Active)), activations.Count == 0 ? null : activations.Values.Sum());
    }
}
