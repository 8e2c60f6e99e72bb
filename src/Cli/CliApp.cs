using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace CallState.Cli;

/// <summary>
/// The <c>callstate</c> command: the admin API of a silo or standalone edge as tables (or <c>--json</c>), with exit codes
/// scripts can use (<see cref="ExitCodes"/>). See docs/operations.md, "CLI".
/// </summary>
public static class CliApp
{
    public const string UrlVariable = "CALLSTATE_URL";
    public const string TokenVariable = "CALLSTATE_TOKEN";
    public const string TokenFileVariable = "CALLSTATE_TOKEN_FILE";
    public const string DefaultUrl = "http://127.0.0.1:8080";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static readonly Option<string?> UrlOption = new("--url")
    {
        Description = $"The admin API (default ${UrlVariable}, else {DefaultUrl})",
        Recursive = true,
    };

    private static readonly Option<string?> TokenOption = new("--token")
    {
        Description = $"Bearer token (default ${TokenVariable}); prefer --token-file or the variable over the command line",
        Recursive = true,
    };

    private static readonly Option<string?> TokenFileOption = new("--token-file")
    {
        Description = $"File holding the token (default ${TokenFileVariable})",
        Recursive = true,
    };

    private static readonly Option<bool> JsonOption = new("--json")
    {
        Description = "Print the API's JSON instead of a table",
        Recursive = true,
    };

    private static readonly Option<int> TimeoutOption = new("--timeout")
    {
        Description = "Seconds to wait for the API",
        Recursive = true,
        DefaultValueFactory = _ => 10,
    };

    public static async Task<int> RunAsync(string[] args, IAnsiConsole console)
    {
        ArgumentNullException.ThrowIfNull(console);
        var root = Build(console);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors)
            {
                await Console.Error.WriteLineAsync("callstate: " + error.Message).ConfigureAwait(false);
            }

            return ExitCodes.Usage;
        }

        return await parsed.InvokeAsync().ConfigureAwait(false);
    }

    private static RootCommand Build(IAnsiConsole console)
    {
        var root = new RootCommand("CallState operations: concurrent-call limits, calls, the cluster and the audit trail");
        root.Options.Add(UrlOption);
        root.Options.Add(TokenOption);
        root.Options.Add(TokenFileOption);
        root.Options.Add(JsonOption);
        root.Options.Add(TimeoutOption);

        // cac show: like `show voip tags-cac`.
        var kind = new Option<string?>("--kind") { Description = "user, trunk, key or tenant" };
        var prefix = new Option<string?>("--prefix") { Description = "Only keys (or key values) starting with this" };
        var top = new Option<int?>("--top") { Description = "The N most used limits (by utilisation, then calls)" };
        var offset = new Option<int?>("--offset") { Description = "Skip this many limits (paging, in key order)" };
        var pageSize = new Option<int?>("--page-size") { Description = "Limits per page (default 100, at most 1000)" };
        var show = new Command("show", "Limits with current calls, maximum, inbound, outbound and where each maximum comes from");
        foreach (var option in new Option[] { kind, prefix, top, offset, pageSize })
        {
            show.Options.Add(option);
        }

        show.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var query = new List<string>();
            Add(query, "kind", parse.GetValue(kind));
            Add(query, "prefix", parse.GetValue(prefix));
            Add(query, "top", parse.GetValue(top)?.ToString(CultureInfo.InvariantCulture));
            Add(query, "offset", parse.GetValue(offset)?.ToString(CultureInfo.InvariantCulture));
            Add(query, "limit", parse.GetValue(pageSize)?.ToString(CultureInfo.InvariantCulture));
            var answer = await client.GetAsync("/api/limits" + (query.Count == 0 ? "" : "?" + string.Join('&', query)), ct).ConfigureAwait(false);
            return Print(console, answer, json, body =>
            {
                // The key and the shadow count never wrap: a narrow terminal (80 columns when the output is not one) wraps the
                // other columns first, and a script that greps a key finds it whole.
                var table = new Table()
                    .AddColumn(new TableColumn("Key").NoWrap())
                    .AddColumns("Current", "Maximum", "In", "Out", "Rate", "Refused")
                    .AddColumn(new TableColumn("Shadow").NoWrap())
                    .AddColumn("Source");
                foreach (var entry in body.AsArray())
                {
                    table.AddRow(
                        Text(entry?["key"]),
                        Text(entry?["total"]),
                        Maximum(entry),
                        Pair(entry?["inbound"], entry?["limits"]?["inbound"]),
                        Pair(entry?["outbound"], entry?["limits"]?["outbound"]),
                        Markup.Escape(Rates(entry?["limits"])),
                        Count(entry?["refused"]),
                        Shadow(entry),
                        Sources(entry?["sources"]));
                }

                console.Write(table);
                PrintReservations(console, body.AsArray());
                if (answer.Response.Headers.TryGetValues("X-Total-Count", out var totals))
                {
                    console.MarkupLine($"[grey]{body.AsArray().Count} of {Markup.Escape(totals.First())} limits[/]");
                }
            });
        }, ct));
        var cac = new Command("cac", "Call admission control: the limits and their use");
        cac.Subcommands.Add(show);
        root.Subcommands.Add(cac);

        root.Subcommands.Add(LimitsCommand(console));
        root.Subcommands.Add(CallsCommand(console));

        var status = new Command("status", "The silos, their state and activations, and the edges that can end calls");
        status.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var answer = await client.GetAsync("/api/cluster", ct).ConfigureAwait(false);
            return Print(console, answer, json, body =>
            {
                var table = new Table().AddColumns("Silo", "Name", "Status", "Activations");
                foreach (var silo in body["silos"]?.AsArray() ?? [])
                {
                    table.AddRow(Text(silo?["address"]), Text(silo?["name"]), Text(silo?["status"]), Text(silo?["activations"]));
                }

                console.Write(table);
                console.MarkupLine($"[grey]{Markup.Escape(Text(body["active"]))} active, {Markup.Escape(Text(body["activations"]))} activations[/]");
                var edges = (body["edges"]?.AsArray() ?? []).Select(e => Text(e)).ToList();
                console.MarkupLine($"[grey]{edges.Count} edge(s) that can end calls{(edges.Count == 0 ? "" : ": " + Markup.Escape(string.Join(", ", edges)))}[/]");
            });
        }, ct));
        var cluster = new Command("cluster", "The cluster");
        cluster.Subcommands.Add(status);
        root.Subcommands.Add(cluster);

        var target = new Option<string?>("--target") { Description = "Only changes of this limit key or call key" };
        var count = new Option<int?>("--count") { Description = "How many entries, newest first (default 100)" };
        var before = new Option<long?>("--before") { Description = "Only entries older than this id (paging)" };
        var audit = new Command("audit", "Admin changes: who, what, the value before and after, when");
        audit.Options.Add(target);
        audit.Options.Add(count);
        audit.Options.Add(before);
        audit.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var query = new List<string>();
            Add(query, "target", parse.GetValue(target));
            Add(query, "limit", parse.GetValue(count)?.ToString(CultureInfo.InvariantCulture));
            Add(query, "before", parse.GetValue(before)?.ToString(CultureInfo.InvariantCulture));
            var answer = await client.GetAsync("/api/audit" + (query.Count == 0 ? "" : "?" + string.Join('&', query)), ct).ConfigureAwait(false);
            return Print(console, answer, json, body =>
            {
                var table = new Table().AddColumns("Id", "At (UTC)", "Who", "Action", "Target", "Before", "After");
                foreach (var entry in body.AsArray())
                {
                    table.AddRow(Text(entry?["id"]), Text(entry?["at"]), Text(entry?["actor"]), Text(entry?["action"]), Text(entry?["target"]),
                        entry?["before"]?.ToJsonString() ?? "", entry?["after"]?.ToJsonString() ?? "");
                }

                console.Write(table);
            });
        }, ct));
        root.Subcommands.Add(audit);
        return root;
    }

    private static Command LimitsCommand(IAnsiConsole console)
    {
        var key = new Argument<string>("key") { Description = "The limit: user/NAME, trunk/ID, key/VALUE or tenant/NAME" };
        var withCalls = new Option<bool>("--calls") { Description = "Also list the calls holding a slot" };
        var get = new Command("get", "One limit: maxima and their sources, current calls");
        get.Arguments.Add(key);
        get.Options.Add(withCalls);
        get.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var answer = await client.GetAsync(AdminClient.LimitPath(parse.GetValue(key)!) + (parse.GetValue(withCalls) ? "?calls=true" : ""), ct).ConfigureAwait(false);
            return Print(console, answer, json, body => PrintLimit(console, body));
        }, ct));

        var total = new Option<string?>("--total") { Description = "Calls in both directions: a number, or 'unlimited'" };
        var inbound = new Option<string?>("--inbound") { Description = "Inbound calls: a number, or 'unlimited'" };
        var outbound = new Option<string?>("--outbound") { Description = "Outbound calls: a number, or 'unlimited'" };
        var totalRate = new Option<string?>("--total-rate") { Description = "Calls per second in both directions: RATE or RATE/BURST, or 'none'" };
        var inboundRate = new Option<string?>("--inbound-rate") { Description = "Inbound calls per second: RATE or RATE/BURST, or 'none'" };
        var outboundRate = new Option<string?>("--outbound-rate") { Description = "Outbound calls per second: RATE or RATE/BURST, or 'none'" };
        var shadow = new Option<string?>("--shadow") { Description = "Shadow mode: 'on' counts the calls the limit would refuse and lets them through, 'off' enforces it" };
        var set = new Command("set", "Set maxima, call rates and shadow mode at run time (persisted; what is not given is kept)");
        set.Arguments.Add(key);
        foreach (var option in new[] { total, inbound, outbound, totalRate, inboundRate, outboundRate, shadow })
        {
            set.Options.Add(option);
        }

        set.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var body = new JsonObject();
            foreach (var (name, option) in new[] { ("total", total), ("inbound", inbound), ("outbound", outbound) })
            {
                if (parse.GetValue(option) is not { } text)
                {
                    continue;
                }

                if (text.Equals("unlimited", StringComparison.OrdinalIgnoreCase))
                {
                    body[name] = null;
                }
                else if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
                {
                    body[name] = value;
                }
                else
                {
                    await Console.Error.WriteLineAsync($"callstate: --{name} must be a whole number or 'unlimited' (was '{text}')").ConfigureAwait(false);
                    return ExitCodes.Usage;
                }
            }

            // A rate with its burst (docs/policies.md, "Call rates"): "10", "10/5", or "none".
            foreach (var (name, option) in new[] { ("total", totalRate), ("inbound", inboundRate), ("outbound", outboundRate) })
            {
                if (parse.GetValue(option) is not { } text)
                {
                    continue;
                }

                var parts = text.Split('/');
                if (text.Equals("none", StringComparison.OrdinalIgnoreCase))
                {
                    body[name + "Rate"] = null;
                }
                else if (parts.Length <= 2
                    && double.TryParse(parts[0], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var rate)
                    && (parts.Length == 1 || int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out _)))
                {
                    body[name + "Rate"] = rate;
                    if (parts.Length == 2)
                    {
                        body[name + "Burst"] = int.Parse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture);
                    }
                }
                else
                {
                    await Console.Error.WriteLineAsync($"callstate: --{name}-rate must be RATE or RATE/BURST (calls per second, a whole burst) or 'none' (was '{text}')").ConfigureAwait(false);
                    return ExitCodes.Usage;
                }
            }

            // Shadow mode (docs/policies.md, "Shadow mode").
            if (parse.GetValue(shadow) is { } mode)
            {
                if (mode.Equals("on", StringComparison.OrdinalIgnoreCase) || mode.Equals("true", StringComparison.OrdinalIgnoreCase))
                {
                    body["shadow"] = true;
                }
                else if (mode.Equals("off", StringComparison.OrdinalIgnoreCase) || mode.Equals("false", StringComparison.OrdinalIgnoreCase))
                {
                    body["shadow"] = false;
                }
                else
                {
                    await Console.Error.WriteLineAsync($"callstate: --shadow must be 'on' or 'off' (was '{mode}')").ConfigureAwait(false);
                    return ExitCodes.Usage;
                }
            }

            if (body.Count == 0)
            {
                await Console.Error.WriteLineAsync("callstate: give at least one of --total, --inbound, --outbound, --total-rate, --inbound-rate, --outbound-rate, --shadow").ConfigureAwait(false);
                return ExitCodes.Usage;
            }

            var answer = await client.SendAsync(HttpMethod.Patch, AdminClient.LimitPath(parse.GetValue(key)!), body, ct).ConfigureAwait(false);
            return Print(console, answer, json, result => PrintLimit(console, result));
        }, ct));

        var fields = new Option<string[]>("--field") { Description = "Only these (total, inbound, outbound, totalRate, inboundRate, outboundRate, shadow) go back to configuration", AllowMultipleArgumentsPerToken = true };
        var clear = new Command("clear", "Back to configuration: every run-time maximum, or only --field ones");
        clear.Arguments.Add(key);
        clear.Options.Add(fields);
        clear.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var path = AdminClient.LimitPath(parse.GetValue(key)!);
            var only = parse.GetValue(fields) ?? [];
            var answer = only.Length == 0
                ? await client.SendAsync(HttpMethod.Delete, path, null, ct).ConfigureAwait(false)
                : await client.SendAsync(HttpMethod.Patch, path, new JsonObject { ["revert"] = new JsonArray([.. only.Select(f => JsonValue.Create(f))]) }, ct).ConfigureAwait(false);
            return Print(console, answer, json, result => PrintLimit(console, result));
        }, ct));

        var limits = new Command("limits", "Inspect and change one limit");
        limits.Subcommands.Add(get);
        limits.Subcommands.Add(set);
        limits.Subcommands.Add(clear);
        return limits;
    }

    private static Command CallsCommand(IAnsiConsole console)
    {
        var limit = new Option<string?>("--limit") { Description = "Only the calls holding a slot on this limit (user/NAME, trunk/ID, key/VALUE, tenant/NAME)" };
        var list = new Command("list", "Calls holding slots, with the limits they hold");
        list.Options.Add(limit);
        list.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var answer = parse.GetValue(limit) is { } key
                ? await client.GetAsync(AdminClient.LimitPath(key) + "?calls=true", ct).ConfigureAwait(false)
                : await client.GetAsync("/api/limits?calls=true&limit=1000", ct).ConfigureAwait(false);
            if (!answer.Ok)
            {
                return Print(console, answer, json, _ => { });
            }

            // One row per call, with every limit it holds.
            var calls = new SortedDictionary<string, (JsonNode Call, List<string> Limits)>(StringComparer.Ordinal);
            foreach (var entry in answer.Body is JsonArray array ? array : new JsonArray(answer.Body?.DeepClone()))
            {
                foreach (var call in entry?["calls"]?.AsArray() ?? [])
                {
                    var callKey = Text(call?["callKey"]);
                    if (!calls.TryGetValue(callKey, out var row))
                    {
                        row = (call!, []);
                        calls[callKey] = row;
                    }

                    row.Limits.Add(Text(entry?["key"]) + " (" + Text(call?["direction"]) + ")");
                }
            }

            if (json)
            {
                var result = new JsonArray([.. calls.Select(c => (JsonNode)new JsonObject
                {
                    ["callKey"] = c.Key,
                    ["phase"] = c.Value.Call["phase"]?.DeepClone(),
                    ["since"] = c.Value.Call["since"]?.DeepClone(),
                    ["leaseEnd"] = c.Value.Call["leaseEnd"]?.DeepClone(),
                    ["limits"] = new JsonArray([.. c.Value.Limits.Select(l => JsonValue.Create(l))]),
                })]);
                WriteJson(console, result.ToJsonString(Indented));
                return ExitCodes.Ok;
            }

            var table = new Table().AddColumns("Call", "Phase", "Since (UTC)", "Lease end (UTC)", "Limits");
            foreach (var (callKey, (call, limits)) in calls)
            {
                table.AddRow(Markup.Escape(callKey), Markup.Escape(Text(call["phase"])), Markup.Escape(Text(call["since"])), Markup.Escape(Text(call["leaseEnd"])), Markup.Escape(string.Join(", ", limits)));
            }

            console.Write(table);
            return ExitCodes.Ok;
        }, ct));

        var callKey = new Argument<string>("call") { Description = "The call key (Call-ID and From-tag, as listed)" };
        var showCall = new Command("show", "One call: its phase, limits and lease");
        showCall.Arguments.Add(callKey);
        showCall.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var answer = await client.GetAsync("/api/calls?key=" + Uri.EscapeDataString(parse.GetValue(callKey)!), ct).ConfigureAwait(false);
            if (answer.Ok && Text(answer.Body?["phase"]) is "None" or "")
            {
                return Print(console, answer with { Status = System.Net.HttpStatusCode.NotFound, Body = new JsonObject { ["detail"] = "no such call" } }, json, _ => { });
            }

            return Print(console, answer, json, body =>
            {
                var grid = new Grid().AddColumns(2);
                foreach (var (name, value) in body.AsObject())
                {
                    grid.AddRow(Markup.Escape(name), Markup.Escape(value is JsonValue ? Text(value) : value?.ToJsonString() ?? ""));
                }

                console.Write(grid);
            });
        }, ct));

        var end = new Command("end",
            "End a call: an answered call gets a BYE to each party from an edge, then its slots are released (exit 1 when no such call is up, 4 when no edge could send the BYEs)");
        end.Arguments.Add(callKey);
        end.SetAction((parse, ct) => ExecuteAsync(parse, console, async (client, json) =>
        {
            var answer = await client.SendAsync(HttpMethod.Post, "/api/calls/end", new JsonObject { ["callKey"] = parse.GetValue(callKey) }, ct).ConfigureAwait(false);
            var code = Print(console, answer, json, body =>
            {
                var edge = Text(body["edge"]);
                console.MarkupLine(Markup.Escape($"{Text(body["outcome"])}{(edge.Length > 0 ? " (by edge " + edge + ")" : "")}: {Text(body["detail"])}"));
            });
            return code == ExitCodes.Ok && answer.Body?["done"]?.GetValue<bool>() != true ? ExitCodes.NotFound : code;
        }, ct));

        var calls = new Command("calls", "Calls holding slots");
        calls.Subcommands.Add(list);
        calls.Subcommands.Add(showCall);
        calls.Subcommands.Add(end);
        return calls;
    }

    /// <summary>Runs one command against the API: the client from the options or environment, connection failures as exit 4.</summary>
    private static async Task<int> ExecuteAsync(ParseResult parse, IAnsiConsole console, Func<AdminClient, bool, Task<int>> action, CancellationToken ct)
    {
        var url = parse.GetValue(UrlOption) ?? Environment.GetEnvironmentVariable(UrlVariable) ?? DefaultUrl;
        if (!Uri.TryCreate(url, UriKind.Absolute, out var address))
        {
            await Console.Error.WriteLineAsync($"callstate: --url '{url}' is not an absolute URL").ConfigureAwait(false);
            return ExitCodes.Usage;
        }

        string? token = parse.GetValue(TokenOption) ?? Environment.GetEnvironmentVariable(TokenVariable);
        var tokenFile = parse.GetValue(TokenFileOption) ?? Environment.GetEnvironmentVariable(TokenFileVariable);
        if (token is null && !string.IsNullOrEmpty(tokenFile))
        {
            try
            {
                token = (await File.ReadAllTextAsync(tokenFile, ct).ConfigureAwait(false)).Trim();
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                await Console.Error.WriteLineAsync($"callstate: cannot read the token file {tokenFile}: {ex.Message}").ConfigureAwait(false);
                return ExitCodes.Usage;
            }
        }

        using var client = AdminClient.Create(address, token, TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(TimeoutOption))));
        try
        {
            return await action(client, parse.GetValue(JsonOption)).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            await Console.Error.WriteLineAsync($"callstate: cannot reach {address}: {ex.Message}").ConfigureAwait(false);
            return ExitCodes.Unavailable;
        }
        catch (TaskCanceledException) when (!ct.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync($"callstate: {address} did not answer in time").ConfigureAwait(false);
            return ExitCodes.Unavailable;
        }
    }

    /// <summary>
    /// JSON as it is, past the console's rendering: a console whose output is redirected is 80 columns wide and would wrap
    /// a long string value (a detail, a long call key) inside its quotes, which no JSON reader accepts.
    /// </summary>
    private static void WriteJson(IAnsiConsole console, string json) => console.Profile.Out.Writer.WriteLine(json);

    /// <summary>The answer as JSON (<c>--json</c>) or through <paramref name="table"/>; errors to stderr. The exit code.</summary>
    private static int Print(IAnsiConsole console, ApiAnswer answer, bool json, Action<JsonNode> table)
    {
        if (!answer.Ok)
        {
            Console.Error.WriteLine($"callstate: {answer.Error}");
            if (json && answer.Body is not null)
            {
                WriteJson(console, answer.Body.ToJsonString(Indented));
            }

            return answer.ExitCode;
        }

        if (json)
        {
            WriteJson(console, answer.Body?.ToJsonString(Indented) ?? "null");
        }
        else if (answer.Body is not null)
        {
            table(answer.Body);
        }

        return ExitCodes.Ok;
    }

    private static void PrintLimit(IAnsiConsole console, JsonNode body)
    {
        var grid = new Grid().AddColumns(2);
        grid.AddRow("key", Markup.Escape(Text(body["key"])));
        grid.AddRow("current", Markup.Escape($"{Text(body["total"])} (in {Text(body["inbound"])}, out {Text(body["outbound"])})"));
        foreach (var field in new[] { "total", "inbound", "outbound" })
        {
            grid.AddRow("max " + field, Markup.Escape($"{Limit(body["limits"]?[field])} ({Text(body["sources"]?[field])})"));
        }

        foreach (var field in new[] { "total", "inbound", "outbound" })
        {
            if (body["limits"]?[field + "Rate"] is { } rate)
            {
                grid.AddRow(
                    "rate " + field,
                    Markup.Escape($"{Text(rate)}/s burst {BurstText(rate, body["limits"]?[field + "Burst"])} ({Text(body["sources"]?[field + "Rate"])})"));
            }
        }

        grid.AddRow("shadow", Markup.Escape($"{(body["limits"]?["shadow"]?.GetValue<bool>() == true ? "on" : "off")} ({Text(body["sources"]?["shadow"])})"));
        grid.AddRow("refused", Markup.Escape(Count(body["refused"])));
        grid.AddRow("shadow refused", Markup.Escape(Count(body["shadowRefused"])));
        foreach (var share in body["reservations"]?.AsArray() ?? [])
        {
            grid.AddRow(
                "tenant " + Markup.Escape(Text(share?["tenant"])),
                Markup.Escape($"{Text(share?["calls"])} calls, guaranteed {Text(share?["guaranteed"])}, max {Limit(share?["maximum"])} ({Text(body["reservationsSource"])})"));
        }

        grid.AddRow("reclaimed", Markup.Escape(Text(body["reclaimed"])));
        console.Write(grid);
        if (body["calls"] is JsonArray calls)
        {
            var table = new Table().AddColumns("Call", "Direction", "Phase", "Since (UTC)", "Lease end (UTC)");
            foreach (var call in calls)
            {
                table.AddRow(Markup.Escape(Text(call?["callKey"])), Text(call?["direction"]), Text(call?["phase"]), Text(call?["since"]), Text(call?["leaseEnd"]));
            }

            console.Write(table);
        }
    }

    /// <summary>The shared trunks' reservations, one row per tenant (docs/policies.md, "Guaranteed reservations"); nothing when none has any.</summary>
    private static void PrintReservations(IAnsiConsole console, JsonArray entries)
    {
        var table = new Table().AddColumns("Trunk", "Tenant", "Current", "Guaranteed", "Maximum", "Source");
        foreach (var entry in entries)
        {
            foreach (var share in entry?["reservations"]?.AsArray() ?? [])
            {
                table.AddRow(
                    Markup.Escape(Text(entry?["key"])),
                    Markup.Escape(Text(share?["tenant"])),
                    Text(share?["calls"]),
                    Text(share?["guaranteed"]),
                    share?["maximum"] is null ? "-" : Text(share["maximum"]),
                    Text(entry?["reservationsSource"]));
            }
        }

        if (table.Rows.Count > 0)
        {
            console.Write(table);
        }
    }

    private static void Add(List<string> query, string name, string? value)
    {
        if (!string.IsNullOrEmpty(value))
        {
            query.Add(name + "=" + Uri.EscapeDataString(value));
        }
    }

    private static string Text(JsonNode? node) => node switch
    {
        null => "",
        JsonValue value when value.TryGetValue<string>(out var s) => s,
        _ => node.ToJsonString(),
    };

    private static string Limit(JsonNode? node) => node is null ? "unlimited" : Text(node);

    private static string Maximum(JsonNode? entry) => entry?["maximum"] is null ? "unlimited" : Text(entry["maximum"]);

    /// <summary>"3/5": calls counted in a direction and its maximum ("-" when unlimited).</summary>
    private static string Pair(JsonNode? current, JsonNode? max) => Text(current) + "/" + (max is null ? "-" : Text(max));

    /// <summary>A count the admin API leaves out when it is 0.</summary>
    private static string Count(JsonNode? count) => count is null ? "0" : Text(count);

    /// <summary>
    /// The calls a limit in shadow mode let through that it would have refused, e.g. "3 (on)": "-" for a limit never in
    /// shadow mode, "3 (off)" for one enforced again (docs/policies.md, "Shadow mode").
    /// </summary>
    private static string Shadow(JsonNode? entry)
    {
        var on = entry?["limits"]?["shadow"]?.GetValue<bool>() == true;
        var count = Count(entry?["shadowRefused"]);
        return on ? $"{count} (on)" : count == "0" ? "-" : $"{count} (off)";
    }

    /// <summary>The call rates with their bursts, e.g. "out 10/s burst 5, total 20/s burst 20"; "-" when none (docs/policies.md, "Call rates").</summary>
    private static string Rates(JsonNode? limits)
    {
        var parts = new List<string>(3);
        foreach (var (field, name) in new[] { ("inbound", "in"), ("outbound", "out"), ("total", "total") })
        {
            if (limits?[field + "Rate"] is { } rate)
            {
                parts.Add($"{name} {Text(rate)}/s burst {BurstText(rate, limits[field + "Burst"])}");
            }
        }

        return parts.Count == 0 ? "-" : string.Join(", ", parts);
    }

    /// <summary>A rate's burst as configured, else the default of one second's worth (at least 1).</summary>
    private static string BurstText(JsonNode rate, JsonNode? burst) =>
        burst is not null ? Text(burst) : Math.Max(1, Math.Ceiling(rate.GetValue<double>())).ToString(CultureInfo.InvariantCulture);

    /// <summary>One word when every maximum has the same source, else each named.</summary>
    private static string Sources(JsonNode? sources)
    {
        var total = Text(sources?["total"]);
        var inbound = Text(sources?["inbound"]);
        var outbound = Text(sources?["outbound"]);
        return total == inbound && inbound == outbound ? total : $"total {total}, in {inbound}, out {outbound}";
    }
}
