using System.Text.Json;
using System.Text.Json.Serialization;
using CallState.Grains;
using CallState.Storage;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;

namespace CallState.Silo;

/// <summary>A limit request as the admin API takes it.</summary>
public sealed record AdmitLimitDto(string Key, Direction Direction, int? Max);

public sealed record AdmitRequestDto(string CallKey, IReadOnlyList<AdmitLimitDto> Limits);

public sealed record CallKeyDto(string CallKey);

public sealed record LimitValuesDto(int? Total, int? Inbound, int? Outbound);

public sealed record ErrorDto(string Error);

public sealed record BoolResultDto(bool Done);

/// <summary>The storage's group commit since start: what <c>GET /api/storage/commits</c> answers.</summary>
public sealed record StorageCommitsDto(long Batches, long Writes, LatencyHistogramDto CommitDuration, LatencyHistogramDto QueueWait);

[JsonSerializable(typeof(AdmitRequestDto))]
[JsonSerializable(typeof(AdmitResult))]
[JsonSerializable(typeof(CallKeyDto))]
[JsonSerializable(typeof(CallSnapshot))]
[JsonSerializable(typeof(LimitSnapshot))]
[JsonSerializable(typeof(IReadOnlyList<LimitSnapshot>))]
[JsonSerializable(typeof(LimitValuesDto))]
[JsonSerializable(typeof(ErrorDto))]
[JsonSerializable(typeof(BoolResultDto))]
[JsonSerializable(typeof(RuntimeCountersDto))]
[JsonSerializable(typeof(StorageCommitsDto))]
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UseStringEnumConverter = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
internal sealed partial class AdminJsonContext : JsonSerializerContext;

/// <summary>
/// The silo's admin API: list limits like <c>show voip tags-cac</c>, inspect and change one limit,
/// and drive call admission (for tools and tests), plus health probes.
/// </summary>
public static class AdminApi
{
    public static WebApplication MapCallStateAdminApi(this WebApplication app)
    {
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains("ready") });

        app.MapRuntimeCounters();
        var api = app.MapGroup("/api");
        // Group commit since start; a reader takes two snapshots and compares them (bench/admission-latency.py).
        api.MapGet("/storage/commits", (IStateStore store) => store is IGroupCommitStore { GroupCommit: { } commit }
            ? Results.Json(
                new StorageCommitsDto(commit.BatchCount, commit.WriteCount, commit.CommitDurations.Snapshot(), commit.QueueWaits.Snapshot()),
                AdminJsonContext.Default.StorageCommitsDto)
            : Results.NotFound(new ErrorDto("the storage has not started")));
        api.MapGet("/limits", async (string? kind, GrainAccess grains, CancellationToken ct) =>
        {
            LimitKind? filter = null;
            if (kind is not null)
            {
                if (!LimitKinds.TryParse(kind, out var k))
                {
                    return Results.BadRequest(new ErrorDto($"unknown kind '{kind}' (expected user, trunk or key)"));
                }

                filter = k;
            }

            return Results.Ok(await grains.ListLimitsAsync(filter, ct).ConfigureAwait(false));
        });

        api.MapGet("/limits/{kind}/{*value}", async (string kind, string value, GrainAccess grains, CancellationToken ct) =>
            ParseKey(kind, value, out var key, out var error)
                ? Results.Ok(await grains.GetLimitAsync(key).ConfigureAwait(false))
                : Results.BadRequest(new ErrorDto(error)));

        api.MapPut("/limits/{kind}/{*value}", async (string kind, string value, LimitValuesDto body, GrainAccess grains, CancellationToken ct) =>
        {
            if (!ParseKey(kind, value, out var key, out var error))
            {
                return Results.BadRequest(new ErrorDto(error));
            }

            try
            {
                return Results.Ok(await grains.SetLimitsAsync(key, new LimitSettings(body.Total, body.Inbound, body.Outbound)).ConfigureAwait(false));
            }
            catch (ArgumentException ex)
            {
                return Results.BadRequest(new ErrorDto(ex.Message));
            }
        });

        api.MapDelete("/limits/{kind}/{*value}", async (string kind, string value, GrainAccess grains, CancellationToken ct) =>
        {
            if (!ParseKey(kind, value, out var key, out var error))
            {
                return Results.BadRequest(new ErrorDto(error));
            }

            try
            {
                return Results.Ok(await grains.SetLimitsAsync(key, null).ConfigureAwait(false));
            }
            catch (ArgumentException ex)
            {
                return Results.BadRequest(new ErrorDto(ex.Message));
            }
        });

        api.MapPost("/calls/admit", async (AdmitRequestDto body, GrainAccess grains, CancellationToken ct) =>
        {
            var requests = (body.Limits ?? []).Select(static l => new LimitRequest(l.Key, l.Direction, l.Max)).ToList();
            var result = await grains.AdmitAsync(body.CallKey, requests, ct).ConfigureAwait(false);
            return result.Status == AdmitStatus.Invalid ? Results.BadRequest(result) : Results.Ok(result);
        });

        api.MapPost("/calls/confirm", async (CallKeyDto body, GrainAccess grains) =>
            Results.Ok(new BoolResultDto(await grains.ConfirmCallAsync(body.CallKey).ConfigureAwait(false))));
        api.MapPost("/calls/renew", async (CallKeyDto body, GrainAccess grains) =>
            Results.Ok(new BoolResultDto(await grains.RenewCallAsync(body.CallKey).ConfigureAwait(false))));
        api.MapPost("/calls/end", async (CallKeyDto body, GrainAccess grains) =>
            Results.Ok(new BoolResultDto(await grains.EndCallAsync(body.CallKey).ConfigureAwait(false))));
        api.MapGet("/calls", async (string key, GrainAccess grains) =>
            GrainTypes.ValidateCallKey(key) is not null
                ? Results.BadRequest(new ErrorDto("query parameter 'key' must be a call key"))
                : Results.Ok(await grains.GetCallAsync(key).ConfigureAwait(false)));
        return app;
    }

    private static bool ParseKey(string kind, string value, out LimitKey key, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error) =>
        LimitKey.TryParse(kind + "/" + value, out key, out error);
}
