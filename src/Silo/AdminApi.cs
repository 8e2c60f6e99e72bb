using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using CallState.Grains;
using CallState.Silo.Admin;
using CallState.Silo.Dashboard;
using CallState.Storage;

namespace CallState.Silo;

/// <summary>A limit request as the admin API takes it.</summary>
public sealed record AdmitLimitDto(string Key, Direction Direction, int? Max);

public sealed record AdmitRequestDto(string CallKey, IReadOnlyList<AdmitLimitDto> Limits);

public sealed record CallKeyDto(string CallKey);

public sealed record LimitValuesDto(int? Total, int? Inbound, int? Outbound);

public sealed record ErrorDto(string Error);

public sealed record BoolResultDto(bool Done);

/// <summary>A call <c>POST /api/calls/end</c> ended: how (<c>bye-sent</c>, <c>released</c>, <c>released-without-bye</c>), and the edge that sent the BYEs.</summary>
public sealed record CallEndDto(bool Done, string Outcome, string? Edge, string Detail);

/// <summary>Where a maximum comes from: a run-time change, configuration, the default user, or the calls (per-key).</summary>
public static class LimitSources
{
    public const string Runtime = "runtime";
    public const string Config = "config";
    public const string Default = "default";
    public const string Call = "call";
}

/// <summary>The source of each maximum of a limit.</summary>
public sealed record LimitSourcesDto(string Total, string Inbound, string Outbound, string TotalRate, string InboundRate, string OutboundRate, string? Shadow = null);

/// <summary>
/// One limit as the admin API lists it, like <c>show voip tags-cac</c>: the maxima in force with their sources, the
/// calls counted, the one maximum that bounds the limit (<see cref="Maximum"/>) and how full it is; calls only on request.
/// <see cref="Refused"/> counts the calls it refused, <see cref="ShadowRefused"/> those it let through in shadow mode that it
/// would have refused (docs/policies.md, "Shadow mode").
/// </summary>
public sealed record LimitEntry(
    string Key,
    LimitKind Kind,
    LimitSettings Limits,
    LimitSourcesDto Sources,
    int Inbound,
    int Outbound,
    int Total,
    int? Maximum,
    double? Utilisation,
    long Reclaimed,
    IReadOnlyList<HeldCallSnapshot>? Calls,
    long Refused = 0,
    long ShadowRefused = 0,
    IReadOnlyList<ReservationDto>? Reservations = null,
    string? ReservationsSource = null);

/// <summary>
/// One tenant's share of a trunk as the admin API shows it (docs/policies.md, "Guaranteed reservations"): its guarantee,
/// its maximum (null: up to the trunk's total) and the calls it holds there now.
/// </summary>
public sealed record ReservationDto(string Tenant, int Guaranteed, int? Maximum, int Calls);

/// <summary>One tenant's share as <c>PUT /api/reservations/{trunk}</c> takes it.</summary>
public sealed record ReservationValuesDto(int? Guaranteed, int? Maximum);

/// <summary>
/// The limits of one kind summed: keys, calls held, the sum of the maxima of the limited ones (<see cref="Capacity"/>),
/// how many are unlimited, and calls held by the limited ones over their capacity.
/// </summary>
public sealed record LimitKindSummary(string Kind, int Keys, int Inbound, int Outbound, int Total, long Capacity, int Unlimited, double? Utilisation);

/// <summary>An audit entry as <c>GET /api/audit</c> lists it (before and after as JSON values).</summary>
public sealed record AuditEntryDto(long Id, DateTimeOffset At, string Actor, string Action, string Target, JsonElement? Before, JsonElement? After);

/// <summary>What a limit change records: the maxima in force and the fields set at run time.</summary>
public sealed record AuditLimitDto(
    int? Total,
    int? Inbound,
    int? Outbound,
    IReadOnlyList<string> Runtime,
    double? TotalRate = null,
    int? TotalBurst = null,
    double? InboundRate = null,
    int? InboundBurst = null,
    double? OutboundRate = null,
    int? OutboundBurst = null,
    bool? Shadow = null);

/// <summary>One silo of the cluster as <c>GET /api/cluster</c> lists it.</summary>
public sealed record SiloDto(string Address, string Name, string Status, int? Activations);

/// <summary>The cluster as <c>GET /api/cluster</c> shows it; <see cref="Edges"/> are the edges that can send an operator's BYEs.</summary>
public sealed record ClusterDto(IReadOnlyList<SiloDto> Silos, int Active, long? Activations, IReadOnlyList<string>? Edges = null);

[JsonSerializable(typeof(AdmitRequestDto))]
[JsonSerializable(typeof(AdmitResult))]
[JsonSerializable(typeof(CallKeyDto))]
[JsonSerializable(typeof(CallSnapshot))]
[JsonSerializable(typeof(LimitSnapshot))]
[JsonSerializable(typeof(IReadOnlyList<LimitSnapshot>))]
[JsonSerializable(typeof(LimitEntry))]
[JsonSerializable(typeof(IReadOnlyList<LimitEntry>))]
[JsonSerializable(typeof(LimitValuesDto))]
[JsonSerializable(typeof(Dictionary<string, ReservationValuesDto>))]
[JsonSerializable(typeof(IReadOnlyList<ReservationDto>))]
[JsonSerializable(typeof(AuditLimitDto))]
[JsonSerializable(typeof(IReadOnlyList<AuditEntryDto>))]
[JsonSerializable(typeof(ClusterDto))]
[JsonSerializable(typeof(ErrorDto))]
[JsonSerializable(typeof(BoolResultDto))]
[JsonSerializable(typeof(CallEndDto))]
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UseStringEnumConverter = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
internal sealed partial class AdminJsonContext : JsonSerializerContext;

/// <summary>
/// The silo's admin API (docs/operations.md, "Admin API"): list limits like <c>show voip tags-cac</c>, inspect and change
/// one limit, the audit trail, the cluster's silos, and call admission for tools and tests. Access control, the probes'
/// own port and ProblemDetails errors come from <see cref="AdminHosting"/>.
/// </summary>
public static partial class AdminApi
{
    /// <summary>Page size of a listing when none is asked for.</summary>
    public const int DefaultPageSize = 100;

    /// <summary>Response header carrying the number of limits a listing matched before paging.</summary>
    public const string TotalCountHeader = "X-Total-Count";

    public static WebApplication MapCallStateAdminApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.UseCallStateAdmin();
        var api = app.MapGroup("/api");

        api.MapGet("/limits", async (HttpContext http, string? kind, string? prefix, int? top, int? offset, int? limit, bool? calls, GrainAccess grains, CancellationToken ct) =>
        {
            LimitKind? filter = null;
            if (kind is not null)
            {
                if (!LimitKinds.TryParse(kind, out var k))
                {
                    return Problem(StatusCodes.Status400BadRequest, $"unknown kind '{kind}' (expected user, trunk, key or tenant)");
                }

                filter = k;
            }

            if (top is < 1 || offset is < 0 || limit is < 1 or > GrainAccess.MaxPageSize)
            {
                return Problem(StatusCodes.Status400BadRequest, $"top and limit must be 1 to {GrainAccess.MaxPageSize}, offset 0 or more");
            }

            var (page, total) = await grains.ListAsync(filter, prefix, top, offset ?? 0, limit ?? DefaultPageSize, calls == true, ct).ConfigureAwait(false);
            http.Response.Headers[TotalCountHeader] = total.ToString(CultureInfo.InvariantCulture);
            return Results.Json(page, AdminJsonContext.Default.IReadOnlyListLimitEntry);
        });

        api.MapGet("/limits/{kind}/{*value}", async (string kind, string value, bool? calls, GrainAccess grains) =>
        {
            if (!ParseKey(kind, value, out var key, out var error))
            {
                return Problem(StatusCodes.Status400BadRequest, error);
            }

            var snapshot = await grains.GetLimitAsync(key).ConfigureAwait(false);
            var unknown = snapshot.Total == 0 && snapshot.Overridden == LimitFields.None && !grains.IsConfigured(key) && !await grains.IsStoredAsync(key).ConfigureAwait(false);
            return unknown
                ? Problem(StatusCodes.Status404NotFound, $"limit {key} is neither configured nor in use nor changed at run time")
                : Results.Json(grains.Entry(snapshot, calls == true), AdminJsonContext.Default.LimitEntry);
        });

        api.MapPut("/limits/{kind}/{*value}", async (HttpContext http, string kind, string value, GrainAccess grains, AdminAudit audit) =>
        {
            var body = await ReadBodyAsync(http).ConfigureAwait(false);
            string? error = null;
            if (body is not { ValueKind: JsonValueKind.Object } json || !ReadValues(json, out var values, out var sent, out error))
            {
                return Problem(StatusCodes.Status400BadRequest, (error is null ? "" : error + ": ") + "expected a JSON object with total, inbound and outbound (a number or null for unlimited)");
            }

            return await ChangeAsync(http, kind, value, LimitChange.Replace(values, sent), "limits.set", grains, audit).ConfigureAwait(false);
        });

        api.MapPatch("/limits/{kind}/{*value}", async (HttpContext http, string kind, string value, GrainAccess grains, AdminAudit audit) =>
        {
            var body = await ReadBodyAsync(http).ConfigureAwait(false);
            string? error = null;
            if (body is not { ValueKind: JsonValueKind.Object } json || !ReadValues(json, out var values, out var set, out error) || !ReadRevert(json, out var revert, out error))
            {
                return Problem(StatusCodes.Status400BadRequest, (error is null ? "" : error + ": ") + "expected a JSON object: total, inbound, outbound (a number, or null for unlimited) and revert (a list of those names, back to configuration); what is not sent is kept");
            }

            return await ChangeAsync(http, kind, value, new LimitChange(values, set, revert), "limits.change", grains, audit).ConfigureAwait(false);
        });

        api.MapDelete("/limits/{kind}/{*value}", (HttpContext http, string kind, string value, GrainAccess grains, AdminAudit audit) =>
            ChangeAsync(http, kind, value, LimitChange.Clear, "limits.clear", grains, audit));

        // A trunk's guaranteed reservations (docs/policies.md, "Guaranteed reservations"): replaced whole, or back to configuration.
        api.MapPut("/reservations/{*trunk}", async (HttpContext http, string trunk, GrainAccess grains, AdminAudit audit) =>
        {
            var body = await ReadBodyAsync(http).ConfigureAwait(false);
            Dictionary<string, ReservationValuesDto>? shares = null;
            try
            {
                shares = body is { ValueKind: JsonValueKind.Object } json ? json.Deserialize(AdminJsonContext.Default.DictionaryStringReservationValuesDto) : null;
            }
            catch (JsonException)
            {
            }

            if (shares is null)
            {
                return Problem(StatusCodes.Status400BadRequest, "expected a JSON object of tenants, each {\"guaranteed\": n, \"maximum\": n or null}");
            }

            var reservations = new TrunkReservations(shares.ToDictionary(
                static s => s.Key, static s => new TenantReservation(s.Value?.Guaranteed ?? 0, s.Value?.Maximum), StringComparer.Ordinal));
            return await SetReservationsAsync(http, trunk, reservations, "reservations.set", grains, audit).ConfigureAwait(false);
        });

        api.MapDelete("/reservations/{*trunk}", (HttpContext http, string trunk, GrainAccess grains, AdminAudit audit) =>
            SetReservationsAsync(http, trunk, null, "reservations.clear", grains, audit));

        api.MapPost("/calls/admit", async (HttpContext http, AdmitRequestDto body, GrainAccess grains, AdminAudit audit, CancellationToken ct) =>
        {
            var requests = (body.Limits ?? []).Select(static l => new LimitRequest(l.Key, l.Direction, l.Max)).ToList();
            var result = await grains.AdmitAsync(body.CallKey, requests, ct).ConfigureAwait(false);
            if (result.Status == AdmitStatus.Admitted)
            {
                await audit.RecordAsync(http, "calls.admit", body.CallKey, null, null).ConfigureAwait(false);
            }

            return result.Status == AdmitStatus.Invalid ? Results.BadRequest(result) : Results.Ok(result);
        });

        api.MapPost("/calls/confirm", async (CallKeyDto body, GrainAccess grains) =>
            Results.Ok(new BoolResultDto(await grains.ConfirmCallAsync(body.CallKey).ConfigureAwait(false))));
        api.MapPost("/calls/renew", async (CallKeyDto body, GrainAccess grains) =>
            Results.Ok(new BoolResultDto(await grains.RenewCallAsync(body.CallKey).ConfigureAwait(false))));
        api.MapPost("/calls/end", async (HttpContext http, CallKeyDto body, CallEnding ending, AdminAudit audit) =>
        {
            var result = await ending.EndAsync(body.CallKey).ConfigureAwait(false);
            if (result.Outcome == CallEndOutcome.Unknown)
            {
                return Problem(StatusCodes.Status404NotFound, $"no call {body.CallKey} is being admitted or up");
            }

            if (result.Outcome == CallEndOutcome.NoEdge)
            {
                return Problem(StatusCodes.Status503ServiceUnavailable,
                    "no edge could send the BYEs (none registered, or each one failed): the call is still up and holds its slots");
            }

            var answer = EndAnswer(result);
            await audit.RecordAsync(http, "calls.end", body.CallKey, null, JsonSerializer.Serialize(answer, AdminJsonContext.Default.CallEndDto)).ConfigureAwait(false);
            return Results.Json(answer, AdminJsonContext.Default.CallEndDto);
        });
        api.MapGet("/calls", async (string? key, GrainAccess grains) =>
            GrainTypes.ValidateCallKey(key) is not null
                ? Problem(StatusCodes.Status400BadRequest, "query parameter 'key' must be a call key")
                : Results.Ok(await grains.GetCallAsync(key!).ConfigureAwait(false)));

        api.MapGet("/audit", async (long? before, int? limit, string? target, AdminAudit audit, CancellationToken ct) =>
            limit is < 1 or > AuditLogFactory.MaxReadLimit
                ? Problem(StatusCodes.Status400BadRequest, $"limit must be 1 to {AuditLogFactory.MaxReadLimit}")
                : Results.Json(await audit.ReadAsync(new AuditQuery(limit ?? DefaultPageSize, before, target), ct).ConfigureAwait(false), AdminJsonContext.Default.IReadOnlyListAuditEntryDto));

        api.MapGet("/cluster", async (IGrainFactory grains, CallEnding ending) =>
            Results.Json(
                await ClusterStatus.ReadAsync(grains).ConfigureAwait(false) with { Edges = await ending.EdgesAsync().ConfigureAwait(false) },
                AdminJsonContext.Default.ClusterDto));
        app.MapCallStateDashboard();
        return app;
    }

    private static async Task<IResult> ChangeAsync(HttpContext http, string kind, string value, LimitChange change, string action, GrainAccess grains, AdminAudit audit)
    {
        if (!ParseKey(kind, value, out var key, out var error))
        {
            return Problem(StatusCodes.Status400BadRequest, error);
        }

        LimitChangeResult result;
        try
        {
            result = await grains.ChangeLimitsAsync(key, change).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            return Problem(StatusCodes.Status400BadRequest, ex.Message);
        }

        await audit.RecordLimitAsync(http, action, key, result).ConfigureAwait(false);
        return Results.Json(grains.Entry(result.After, includeCalls: false), AdminJsonContext.Default.LimitEntry);
    }

    private static async Task<IResult> SetReservationsAsync(HttpContext http, string trunk, TrunkReservations? reservations, string action, GrainAccess grains, AdminAudit audit)
    {
        if (!ParseKey("trunk", trunk, out var key, out var error))
        {
            return Problem(StatusCodes.Status400BadRequest, error);
        }

        LimitChangeResult result;
        try
        {
            result = await grains.SetReservationsAsync(key, reservations).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            return Problem(StatusCodes.Status400BadRequest, ex.Message);
        }

        var before = grains.Entry(result.Before, includeCalls: false).Reservations;
        var after = grains.Entry(result.After, includeCalls: false).Reservations;
        await audit.RecordAsync(
            http,
            action,
            key.ToString(),
            before is null ? null : JsonSerializer.Serialize(before, AdminJsonContext.Default.IReadOnlyListReservationDto),
            after is null ? null : JsonSerializer.Serialize(after, AdminJsonContext.Default.IReadOnlyListReservationDto)).ConfigureAwait(false);
        return Results.Json(grains.Entry(result.After, includeCalls: false), AdminJsonContext.Default.LimitEntry);
    }

    private static async Task<JsonElement?> ReadBodyAsync(HttpContext http)
    {
        try
        {
            using var document = await JsonDocument.ParseAsync(http.Request.Body, default, http.RequestAborted).ConfigureAwait(false);
            return document.RootElement.Clone();
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// total, inbound and outbound of <paramref name="json"/>: each sent one (a number, or null for unlimited) is in
    /// <paramref name="set"/>; so is each rate (totalRate, inboundRate, outboundRate: calls per second, or null for none)
    /// with its burst (totalBurst, …), which is set with its rate (docs/policies.md, "Call rates").
    /// </summary>
    internal static bool ReadValues(JsonElement json, out LimitSettings values, out LimitFields set, out string? error)
    {
        int? total = null, inbound = null, outbound = null;
        double? totalRate = null, inboundRate = null, outboundRate = null;
        int? totalBurst = null, inboundBurst = null, outboundBurst = null;
        bool? shadow = null;
        set = LimitFields.None;
        error = null;
        foreach (var property in json.EnumerateObject())
        {
            LimitFields field;
            var name = property.Name.ToUpperInvariant();
            if (name == "SHADOW")
            {
                // Shadow mode (docs/policies.md, "Shadow mode"): true, false, or null for not shadowed.
                if (property.Value.ValueKind is JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null)
                {
                    shadow = property.Value.ValueKind == JsonValueKind.Null ? null : property.Value.GetBoolean();
                    set |= LimitFields.Shadow;
                    continue;
                }

                error = $"{property.Name} must be true, false or null";
                values = LimitSettings.Unlimited;
                return false;
            }

            if (name is "TOTALRATE" or "INBOUNDRATE" or "OUTBOUNDRATE")
            {
                double? rate;
                if (property.Value.ValueKind == JsonValueKind.Null)
                {
                    rate = null;
                }
                else if (property.Value.ValueKind == JsonValueKind.Number && property.Value.TryGetDouble(out var r))
                {
                    rate = r;
                }
                else
                {
                    error = $"{property.Name} must be a number of calls per second or null";
                    values = LimitSettings.Unlimited;
                    return false;
                }

                switch (name)
                {
                    case "TOTALRATE":
                        (totalRate, set) = (rate, set | LimitFields.TotalRate);
                        break;
                    case "INBOUNDRATE":
                        (inboundRate, set) = (rate, set | LimitFields.InboundRate);
                        break;
                    default:
                        (outboundRate, set) = (rate, set | LimitFields.OutboundRate);
                        break;
                }

                continue;
            }

            switch (name)
            {
                case "TOTALBURST":
                    field = LimitFields.TotalRate;
                    break;
                case "INBOUNDBURST":
                    field = LimitFields.InboundRate;
                    break;
                case "OUTBOUNDBURST":
                    field = LimitFields.OutboundRate;
                    break;
                case "TOTAL":
                    field = LimitFields.Total;
                    break;
                case "INBOUND":
                    field = LimitFields.Inbound;
                    break;
                case "OUTBOUND":
                    field = LimitFields.Outbound;
                    break;
                case "REVERT":
                    continue;
                default:
                    error = $"unknown field '{property.Name}'";
                    values = LimitSettings.Unlimited;
                    return false;
            }

            int? number;
            if (property.Value.ValueKind == JsonValueKind.Null)
            {
                number = null;
            }
            else if (property.Value.ValueKind == JsonValueKind.Number && property.Value.TryGetInt32(out var n))
            {
                number = n;
            }
            else
            {
                error = $"{property.Name} must be a whole number or null";
                values = LimitSettings.Unlimited;
                return false;
            }

            set |= field;
            switch (field)
            {
                case LimitFields.Total:
                    total = number;
                    break;
                case LimitFields.Inbound:
                    inbound = number;
                    break;
                case LimitFields.Outbound:
                    outbound = number;
                    break;
                case LimitFields.TotalRate:
                    totalBurst = number;
                    break;
                case LimitFields.InboundRate:
                    inboundBurst = number;
                    break;
                default:
                    outboundBurst = number;
                    break;
            }
        }

        values = new LimitSettings(total, inbound, outbound, totalRate, totalBurst, inboundRate, inboundBurst, outboundRate, outboundBurst, shadow);
        return true;
    }

    private static bool ReadRevert(JsonElement json, out LimitFields revert, out string? error)
    {
        revert = LimitFields.None;
        error = null;
        if (!json.TryGetProperty("revert", out var list))
        {
            return true;
        }

        if (list.ValueKind != JsonValueKind.Array)
        {
            error = "revert must be a list";
            return false;
        }

        foreach (var item in list.EnumerateArray())
        {
            revert |= item.GetString()?.ToUpperInvariant() switch
            {
                "TOTAL" => LimitFields.Total,
                "INBOUND" => LimitFields.Inbound,
                "OUTBOUND" => LimitFields.Outbound,
                "TOTALRATE" => LimitFields.TotalRate,
                "INBOUNDRATE" => LimitFields.InboundRate,
                "OUTBOUNDRATE" => LimitFields.OutboundRate,
                "SHADOW" => LimitFields.Shadow,
                _ => LimitFields.None,
            };
        }

        return true;
    }

    /// <summary>What <c>POST /api/calls/end</c> answers for a call it ended (docs/operations.md, "Ending a call").</summary>
    internal static CallEndDto EndAnswer(CallEndResult result) => result.Outcome switch
    {
        CallEndOutcome.ByeSent => new CallEndDto(true, "bye-sent", result.Edge, "a BYE was sent to each party, then the call's slots were released"),
        CallEndOutcome.Released => new CallEndDto(true, "released", null, "the call was not answered yet: its slots were released, no BYE or CANCEL was sent"),
        CallEndOutcome.ReleasedWithoutBye => new CallEndDto(true, "released-without-bye", null, "the call's record holds no BYEs: its slots were released, the parties were not told"),
        _ => throw new ArgumentOutOfRangeException(nameof(result), result.Outcome, "not an ended call"),
    };

    internal static IResult Problem(int status, string detail) => Results.Problem(detail: detail, statusCode: status);

    private static bool ParseKey(string kind, string value, out LimitKey key, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error) =>
        LimitKey.TryParse(kind + "/" + value, out key, out error);
}
