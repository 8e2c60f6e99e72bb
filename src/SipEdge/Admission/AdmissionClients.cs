using System.Text.Json;
using System.Text.Json.Serialization;
using CallState.Grains;
using CallState.Runtime;
using CallState.Silo;

namespace CallState.SipEdge.Admission;

/// <summary>How the edge reaches the call grains: in the same process (standalone) or over the network.</summary>
public interface IAdmissionClient
{
    Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken);

    Task ConfirmAsync(string callKey, CancellationToken cancellationToken);

    Task RenewAsync(string callKey, CancellationToken cancellationToken);

    Task EndAsync(string callKey, CancellationToken cancellationToken);
}

/// <summary>Standalone mode: the grain runtime lives in this process.</summary>
public sealed class InProcessAdmissionClient(GrainRuntime runtime) : IAdmissionClient
{
    public Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken) =>
        runtime.AdmitAsync(callKey, limits, cancellationToken);

    public Task ConfirmAsync(string callKey, CancellationToken cancellationToken) => runtime.ConfirmCallAsync(callKey, cancellationToken);

    public Task RenewAsync(string callKey, CancellationToken cancellationToken) => runtime.RenewCallAsync(callKey, cancellationToken);

    public Task EndAsync(string callKey, CancellationToken cancellationToken) => runtime.EndCallAsync(callKey, cancellationToken);
}

/// <summary>
/// A silo reached over its HTTP API (<c>CallState:Admission:SiloUrl</c>): the interim transport between an edge and a
/// separate silo process until the binary RPC of the cluster issue replaces it.
/// </summary>
public sealed class HttpAdmissionClient(HttpClient http) : IAdmissionClient
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { Converters = { new JsonStringEnumConverter() } };

    public async Task<AdmitResult> AdmitAsync(string callKey, IReadOnlyList<LimitRequest> limits, CancellationToken cancellationToken)
    {
        var body = new AdmitRequestDto(callKey, limits.Select(l => new AdmitLimitDto(l.Key, l.Direction, l.PerCallMax)).ToList());
        using var response = await http.PostAsJsonAsync("/api/calls/admit", body, Json, cancellationToken).ConfigureAwait(false);
        if ((int)response.StatusCode >= 500)
        {
            throw new HttpRequestException($"silo answered {(int)response.StatusCode}", null, response.StatusCode);
        }
        return await response.Content.ReadFromJsonAsync<AdmitResult>(Json, cancellationToken).ConfigureAwait(false)
            ?? throw new HttpRequestException("silo answered an empty body");
    }

    public Task ConfirmAsync(string callKey, CancellationToken cancellationToken) => PostAsync("/api/calls/confirm", callKey, cancellationToken);

    public Task RenewAsync(string callKey, CancellationToken cancellationToken) => PostAsync("/api/calls/renew", callKey, cancellationToken);

    public Task EndAsync(string callKey, CancellationToken cancellationToken) => PostAsync("/api/calls/end", callKey, cancellationToken);

    private async Task PostAsync(string path, string callKey, CancellationToken cancellationToken)
    {
        using var response = await http.PostAsJsonAsync(path, new CallKeyDto(callKey), Json, cancellationToken).ConfigureAwait(false);
        response.EnsureSuccessStatusCode();
    }
}
