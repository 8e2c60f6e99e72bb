using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace CallState.Grains;

/// <summary>
/// The row of a limit grain: its state without the held calls, which are stored as items of the row (one
/// per call, so a turn writes what it changed, not every call held).
/// </summary>
internal sealed class LimitRow
{
    public LimitSettings? Override { get; set; }

    public LimitFields? OverrideFields { get; set; }

    public int? LastPerCallMax { get; set; }

    public long Reclaimed { get; set; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long Refused { get; set; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long ShadowRefused { get; set; }

    public TrunkReservations? Reservations { get; set; }
}

/// <summary>Grain state as compact UTF-8 JSON: readable in the database, no reflection at run time.</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(LimitGrainState))]
[JsonSerializable(typeof(LimitRow))]
[JsonSerializable(typeof(CallGrainState))]
internal sealed partial class StateJsonContext : JsonSerializerContext;

/// <summary>
/// How grain state is stored. A call: one JSON row. A limit grain: a JSON row (<see cref="LimitRow"/>)
/// plus one item per held call, keyed by the call key, in a fixed binary layout of <see cref="HeldCallSize"/> bytes:
/// <code>
/// [0]      format, 1
/// [1]      Direction (1 inbound, 2 outbound)
/// [2]      HoldPhase (1 early, 2 confirmed)
/// [3..11)  SinceMs, int64 little endian (Unix milliseconds)
/// [11..19) LeaseEndMs, int64 little endian (Unix milliseconds)
/// </code>
/// A call held for a tenant on a trunk with reservations (docs/policies.md, "Guaranteed reservations") is format 2: the
/// same 19 bytes, then the tenant's name in UTF-8 (at most <see cref="LimitKey.MaxValueLength"/> characters).
/// Rows written before items existed carry the calls in the row's JSON (<c>Calls</c>); they still load, and
/// the next write of that limit moves them into items (<see cref="DeserializeLimit"/> reports them).
/// </summary>
public static class StateSerializer
{
    /// <summary>Bytes of one held call item.</summary>
    public const int HeldCallSize = 19;

    private const byte HeldCallFormat = 1;

    /// <summary>A held call followed by its tenant's name.</summary>
    private const byte HeldCallWithTenantFormat = 2;

    public static byte[] SerializeLimitRow(LimitGrainState state) =>
        JsonSerializer.SerializeToUtf8Bytes(
            new LimitRow { Override = state.Override, OverrideFields = state.OverrideFields, LastPerCallMax = state.LastPerCallMax, Reclaimed = state.Reclaimed, Refused = state.Refused, ShadowRefused = state.ShadowRefused, Reservations = state.Reservations },
            StateJsonContext.Default.LimitRow);

    public static byte[] Serialize(CallGrainState state) =>
        JsonSerializer.SerializeToUtf8Bytes(state, StateJsonContext.Default.CallGrainState);

    public static byte[] SerializeHeldCall(HeldCall call)
    {
        ArgumentNullException.ThrowIfNull(call);
        var tenantBytes = call.Tenant is null ? 0 : System.Text.Encoding.UTF8.GetByteCount(call.Tenant);
        var data = new byte[HeldCallSize + tenantBytes];
        data[0] = call.Tenant is null ? HeldCallFormat : HeldCallWithTenantFormat;
        if (call.Tenant is not null)
        {
            System.Text.Encoding.UTF8.GetBytes(call.Tenant, data.AsSpan(HeldCallSize));
        }

        data[1] = (byte)call.Direction;
        data[2] = (byte)call.Phase;
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(3, 8), call.SinceMs);
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(11, 8), call.LeaseEndMs);
        return data;
    }

    public static HeldCall DeserializeHeldCall(ReadOnlySpan<byte> data)
    {
        var withTenant = data.Length > HeldCallSize && data[0] == HeldCallWithTenantFormat;
        if (!withTenant && (data.Length != HeldCallSize || data[0] != HeldCallFormat))
        {
            throw new InvalidDataException($"A held call item must be {HeldCallSize} bytes of format {HeldCallFormat}; got {data.Length} bytes, format {(data.IsEmpty ? -1 : data[0])}.");
        }

        var direction = (Direction)data[1];
        var phase = (HoldPhase)data[2];
        if (direction is not (Direction.Inbound or Direction.Outbound) || phase is not (HoldPhase.Early or HoldPhase.Confirmed))
        {
            throw new InvalidDataException($"A held call item has direction {data[1]} and phase {data[2]}.");
        }

        return new HeldCall
        {
            Direction = direction,
            Phase = phase,
            SinceMs = BinaryPrimitives.ReadInt64LittleEndian(data.Slice(3, 8)),
            LeaseEndMs = BinaryPrimitives.ReadInt64LittleEndian(data.Slice(11, 8)),
            Tenant = withTenant ? System.Text.Encoding.UTF8.GetString(data[HeldCallSize..]) : null,
        };
    }

    /// <summary>
    /// A limit's state from its row and items. <paramref name="callsInRow"/> is true when the row still carries
    /// calls in the old layout, which the next write must move into items. An item wins over a row entry.
    /// </summary>
    public static LimitGrainState DeserializeLimit(StoredState stored, out bool callsInRow)
    {
        var state = JsonSerializer.Deserialize(stored.Data, StateJsonContext.Default.LimitGrainState) ?? new LimitGrainState();
        callsInRow = state.Calls.Count > 0;
        if (state.Calls.Comparer != StringComparer.Ordinal)
        {
            state.Calls = new Dictionary<string, HeldCall>(state.Calls, StringComparer.Ordinal);
        }

        foreach (var item in stored.Items)
        {
            state.Calls[item.Key] = DeserializeHeldCall(item.Data);
        }

        return state;
    }

    public static CallGrainState DeserializeCall(byte[] data) =>
        JsonSerializer.Deserialize(data, StateJsonContext.Default.CallGrainState) ?? new CallGrainState();
}
