using System.Text.Json;
using System.Text.Json.Serialization;
using CallState.Grains;

namespace CallState.Runtime;

/// <summary>Grain state as compact UTF-8 JSON: readable in the database, no reflection at run time.</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(LimitGrainState))]
[JsonSerializable(typeof(CallGrainState))]
internal sealed partial class GrainStateJsonContext : JsonSerializerContext;

internal static class GrainStateSerializer
{
    public static byte[] Serialize(LimitGrainState state) =>
        JsonSerializer.SerializeToUtf8Bytes(state, GrainStateJsonContext.Default.LimitGrainState);

    public static byte[] Serialize(CallGrainState state) =>
        JsonSerializer.SerializeToUtf8Bytes(state, GrainStateJsonContext.Default.CallGrainState);

    public static LimitGrainState DeserializeLimit(byte[] data)
    {
        var state = JsonSerializer.Deserialize(data, GrainStateJsonContext.Default.LimitGrainState) ?? new LimitGrainState();
        if (state.Calls.Comparer != StringComparer.Ordinal)
        {
            state.Calls = new Dictionary<string, HeldCall>(state.Calls, StringComparer.Ordinal);
        }

        return state;
    }

    public static CallGrainState DeserializeCall(byte[] data) =>
        JsonSerializer.Deserialize(data, GrainStateJsonContext.Default.CallGrainState) ?? new CallGrainState();
}
