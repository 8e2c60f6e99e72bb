using System.Buffers;
using System.Data.Common;
using System.Net;
using System.Text;
using System.Text.Json;

namespace CallState.Storage.Membership;

/// <summary>
/// How a <see cref="MembershipEntry"/> is stored: one column per field, times as Unix milliseconds (like the grain
/// tables' due times), the suspicion votes as a small JSON array. Shared by both providers.
/// </summary>
internal static class MembershipRows
{
    /// <summary>The columns a read selects after the table version's two, in this order.</summary>
    public const string SiloColumns =
        "s.address, s.port, s.generation, s.status, s.proxy_port, s.host_name, s.silo_name, s.role_name, "
        + "s.update_zone, s.fault_zone, s.start_at, s.i_am_alive_at, s.suspect_times, s.etag";

    /// <summary>Parameters of every non-key column a write sets (besides <c>@c</c>, the key and the etag).</summary>
    public const string EntryParameters =
        "@status, @proxy_port, @host_name, @silo_name, @role_name, @update_zone, @fault_zone, @start_at, @i_am_alive_at, @last_update_at, @suspect_times";

    /// <summary>The same columns as <see cref="EntryParameters"/>, in the same order.</summary>
    public const string EntryColumns =
        "status, proxy_port, host_name, silo_name, role_name, update_zone, fault_zone, start_at, i_am_alive_at, last_update_at, suspect_times";

    public static void AddKey(DbCommand command, string clusterId, SiloAddress silo)
    {
        Add(command, "@c", clusterId);
        Add(command, "@address", silo.Endpoint.Address.ToString());
        Add(command, "@port", silo.Endpoint.Port);
        Add(command, "@generation", silo.Generation);
    }

    /// <summary>Adds the key and every parameter of <see cref="EntryParameters"/>.</summary>
    public static void AddEntry(DbCommand command, string clusterId, MembershipEntry entry)
    {
        AddKey(command, clusterId, entry.SiloAddress);
        Add(command, "@status", (int)entry.Status);
        Add(command, "@proxy_port", entry.ProxyPort);
        Add(command, "@host_name", entry.HostName);
        Add(command, "@silo_name", entry.SiloName);
        Add(command, "@role_name", entry.RoleName);
        Add(command, "@update_zone", entry.UpdateZone);
        Add(command, "@fault_zone", entry.FaultZone);
        Add(command, "@start_at", ToUnixMilliseconds(entry.StartTime));
        Add(command, "@i_am_alive_at", ToUnixMilliseconds(entry.IAmAliveTime));
        Add(command, "@last_update_at", LastUpdate(entry));
        Add(command, "@suspect_times", WriteSuspectTimes(entry.SuspectTimes));
    }

    public static void Add(DbCommand command, string name, object? value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value ?? DBNull.Value;
        command.Parameters.Add(parameter);
    }

    /// <summary>Reads the entry whose <see cref="SiloColumns"/> start at <paramref name="first"/>; returns it with its row etag.</summary>
    public static Tuple<MembershipEntry, string> ReadEntry(DbDataReader reader, int first)
    {
        var endpoint = new IPEndPoint(IPAddress.Parse(reader.GetString(first)), reader.GetInt32(first + 1));
        var entry = new MembershipEntry
        {
            SiloAddress = SiloAddress.New(endpoint, reader.GetInt32(first + 2)),
            Status = (SiloStatus)reader.GetInt32(first + 3),
            ProxyPort = reader.GetInt32(first + 4),
            HostName = NullableString(reader, first + 5)!,
            SiloName = NullableString(reader, first + 6)!,
            RoleName = NullableString(reader, first + 7)!,
            UpdateZone = reader.GetInt32(first + 8),
            FaultZone = reader.GetInt32(first + 9),
            StartTime = FromUnixMilliseconds(reader.GetInt64(first + 10)),
            IAmAliveTime = FromUnixMilliseconds(reader.GetInt64(first + 11)),
            SuspectTimes = ReadSuspectTimes(reader.GetString(first + 12)),
        };
        return Tuple.Create(entry, reader.GetString(first + 13));
    }

    /// <summary>
    /// The latest time the entry is known to have changed: its start, its last IAmAlive, or the latest vote against it.
    /// Declaring a silo dead adds a vote, so a silo declared dead recently is kept by cleanup even when its own last
    /// heartbeat is old (what Orleans' <c>MembershipEntry.EffectiveUpdateTime</c> measures; it is not public).
    /// </summary>
    public static long LastUpdate(MembershipEntry entry)
    {
        var latest = Math.Max(ToUnixMilliseconds(entry.StartTime), ToUnixMilliseconds(entry.IAmAliveTime));
        if (entry.SuspectTimes is { } votes)
        {
            foreach (var vote in votes)
            {
                latest = Math.Max(latest, ToUnixMilliseconds(vote.Item2));
            }
        }

        return latest;
    }

    /// <summary>Orleans' times are UTC; an unspecified kind is taken as UTC too, never as local time.</summary>
    public static long ToUnixMilliseconds(DateTime time) =>
        new DateTimeOffset(time.Kind == DateTimeKind.Local ? time.ToUniversalTime() : DateTime.SpecifyKind(time, DateTimeKind.Utc))
            .ToUnixTimeMilliseconds();

    public static DateTime FromUnixMilliseconds(long milliseconds) => DateTimeOffset.FromUnixTimeMilliseconds(milliseconds).UtcDateTime;

    /// <summary><c>[{"silo":"&lt;parsable silo address&gt;","at":&lt;Unix ms&gt;}, ...]</c>, in the entry's order.</summary>
    public static string WriteSuspectTimes(List<Tuple<SiloAddress, DateTime>>? votes)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (var (silo, at) in votes ?? [])
            {
                writer.WriteStartObject();
                writer.WriteString("silo", silo.ToParsableString());
                writer.WriteNumber("at", ToUnixMilliseconds(at));
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    public static List<Tuple<SiloAddress, DateTime>> ReadSuspectTimes(string json)
    {
        using var document = JsonDocument.Parse(json);
        var votes = new List<Tuple<SiloAddress, DateTime>>(document.RootElement.GetArrayLength());
        foreach (var vote in document.RootElement.EnumerateArray())
        {
            var silo = SiloAddress.FromParsableString(vote.GetProperty("silo").GetString()!);
            votes.Add(Tuple.Create(silo, FromUnixMilliseconds(vote.GetProperty("at").GetInt64())));
        }

        return votes;
    }

    private static string? NullableString(DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);
}
