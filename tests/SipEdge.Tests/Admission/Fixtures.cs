using System.Net;
using CallState.Silo.Limits;
using CallState.SipEdge.Admission;

namespace CallState.SipEdge.Tests.Admission;

/// <summary>The issue 4 sample configuration, built in code, and INVITE inputs written the way a person reads them.</summary>
internal static class Fixtures
{
    public static AdmissionOptions SampleAdmission() => new()
    {
        LocalDomains = ["127.0.0.1", "example.com"],
        Trunks =
        {
            ["carrier"] = new AdmissionTrunkOptions { Sources = ["127.0.0.2"], NextHop = "127.0.0.2:5090" },
        },
        Routes =
        [
            new AdmissionRoute { Prefix = "+", Trunk = "carrier" },
            new AdmissionRoute { Prefix = "+123", Upstream = "127.0.0.1:5090" },
            new AdmissionRoute { Prefix = "", Upstream = "127.0.0.1:5090" },
        ],
        DialPlan = [new DialPlanEntry { Prefix = "+123", Tags = "cacMax=3" }],
        SetupRules = [new SetupRule { Prefix = "+123", Key = "FromUser", Max = "tag:cacMax", Direction = "In" }],
        EmergencyNumbers = ["112", "911"],
    };

    public static LimitsOptions SampleLimits() => new()
    {
        DefaultUser = new LimitValues { Total = 10, Outbound = 5, Inbound = 5 },
        Users = { ["alice"] = new LimitValues { Total = 2, Outbound = 1 } },
        Trunks = { ["carrier"] = new LimitValues { Inbound = 3, Outbound = 2, Total = 4 } },
    };

    public static CallClassifier Classifier(AdmissionOptions? admission = null, LimitsOptions? limits = null, params string[] ownHosts) =>
        new(admission ?? SampleAdmission(), limits ?? SampleLimits(), ownHosts);

    /// <summary>An INVITE from <paramref name="from"/> (user@host) to <paramref name="to"/>, sent from <paramref name="source"/>; the Request-URI is the To URI unless given.</summary>
    public static ClassificationInput Invite(string from, string to, string source, string? requestUri = null, string callId = "call-1@host", string fromTag = "tag-1")
    {
        var (fromUser, fromHost) = Split(from);
        var (toUser, toHost) = Split(to);
        var (ruriUser, ruriHost) = Split(requestUri ?? to);
        return new ClassificationInput
        {
            CallId = callId,
            FromTag = fromTag,
            FromUser = fromUser,
            FromHost = fromHost,
            ToUser = toUser,
            ToHost = toHost,
            RequestUser = ruriUser,
            RequestHost = ruriHost,
            Source = IPAddress.Parse(source),
        };
    }

    /// <summary>The limits as <c>key direction [max]</c> strings, in classification order.</summary>
    public static string[] Requests(CallClassification call) =>
        [.. call.Limits.Select(l => $"{l.Key} {(l.Direction == Grains.Direction.Inbound ? "in" : "out")}{(l.PerCallMax is { } m ? $" max {m}" : "")}")];

    private static (string? User, string Host) Split(string uri)
    {
        var at = uri.LastIndexOf('@');
        return at < 0 ? (null, uri) : (uri[..at], uri[(at + 1)..]);
    }
}
