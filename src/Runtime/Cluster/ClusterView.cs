using System.Net;
using System.Text;

namespace CallState.Runtime.Cluster;

/// <summary>A silo's state in the membership table.</summary>
public enum SiloStatus : byte
{
    /// <summary>Joined and heartbeating.</summary>
    Active = 1,

    /// <summary>Left gracefully.</summary>
    Left = 2,

    /// <summary>Declared dead by another silo after missed heartbeats; it must rejoin with a new epoch.</summary>
    Dead = 3,
}

/// <summary>One membership row: a silo incarnation (<see cref="Epoch"/> grows at each join of the same id).</summary>
public sealed record SiloEntry(string SiloId, string Endpoint, long Epoch, SiloStatus Status, DateTimeOffset HeartbeatAt);

/// <summary>A live silo as placement sees it.</summary>
public sealed class SiloMember
{
    public SiloMember(string siloId, string address, long epoch)
    {
        SiloId = siloId;
        Address = address;
        Epoch = epoch;
        EndPoint = SiloAddress.TryParse(address, out var parsed) ? parsed : null;
        IdHash = RendezvousHash.Of(siloId);
    }

    public string SiloId { get; }

    /// <summary>The RPC address as written in the table (<c>host:port</c>).</summary>
    public string Address { get; }

    public long Epoch { get; }

    /// <summary>The parsed RPC address, or null when the row holds an unusable one.</summary>
    public EndPoint? EndPoint { get; }

    internal ulong IdHash { get; }

    public override string ToString() => $"{SiloId}@{Address}#{Epoch}";
}

/// <summary>
/// The set of live silos one process believes in, and rendezvous placement over it: the owner of a grain is the
/// live silo with the highest hash of (silo id, grain key). When a silo leaves, only its keys move; views of two
/// processes may differ for a while, which costs a redirect, never correctness (storage compare-and-set decides).
/// </summary>
public sealed class ClusterView
{
    public static readonly ClusterView Empty = new([]);

    public ClusterView(IEnumerable<SiloMember> members)
    {
        Members = members.Where(m => m.EndPoint is not null).OrderBy(m => m.SiloId, StringComparer.Ordinal).ToArray();
        var signature = new StringBuilder();
        foreach (var m in Members)
        {
            signature.Append(m.SiloId).Append('#').Append(m.Epoch).Append('@').Append(m.Address).Append(';');
        }

        Signature = signature.ToString();
    }

    /// <summary>Live silos, ordered by id.</summary>
    public IReadOnlyList<SiloMember> Members { get; }

    /// <summary>Equal for equal views (ids, epochs and endpoints).</summary>
    public string Signature { get; }

    public bool IsEmpty => Members.Count == 0;

    /// <summary>The live silos from membership rows: active, with a heartbeat newer than <paramref name="failureTimeout"/>.</summary>
    public static ClusterView FromEntries(IEnumerable<SiloEntry> entries, DateTimeOffset now, TimeSpan failureTimeout) =>
        new(entries.Where(e => e.Status == SiloStatus.Active && now - e.HeartbeatAt <= failureTimeout)
            .Select(e => new SiloMember(e.SiloId, e.Endpoint, e.Epoch)));

    /// <summary>The owner of <paramref name="grainKey"/>, or null when no silo is live.</summary>
    public SiloMember? OwnerOf(string grainKey) => Ranked(grainKey, 0);

    /// <summary>
    /// The silo at <paramref name="rank"/> in the grain's preference order (0 is the owner, 1 the silo that owns it if
    /// the owner goes), or null past the end.
    /// </summary>
    public SiloMember? Ranked(string grainKey, int rank)
    {
        if (rank >= Members.Count)
        {
            return null;
        }

        var keyHash = RendezvousHash.Of(grainKey);
        if (rank == 0)
        {
            SiloMember? best = null;
            var bestScore = 0UL;
            foreach (var member in Members)
            {
                var score = RendezvousHash.Combine(member.IdHash, keyHash);
                if (best is null || score > bestScore)
                {
                    best = member;
                    bestScore = score;
                }
            }

            return best;
        }

        var scored = Members.Select(m => (Member: m, Score: RendezvousHash.Combine(m.IdHash, keyHash))).OrderByDescending(x => x.Score).ToArray();
        return scored[rank].Member;
    }

    /// <summary>This view with <paramref name="member"/> added (or replacing the same silo id).</summary>
    public ClusterView With(SiloMember member) => new(Members.Where(m => m.SiloId != member.SiloId).Append(member));

    public SiloMember? Find(string siloId)
    {
        foreach (var member in Members)
        {
            if (member.SiloId == siloId)
            {
                return member;
            }
        }

        return null;
    }

    public override string ToString() => Members.Count == 0 ? "(no live silo)" : string.Join(", ", Members);
}

/// <summary>64-bit hashes for rendezvous placement: FNV-1a over UTF-16 code units, then a SplitMix64 finalizer.</summary>
internal static class RendezvousHash
{
    public static ulong Of(string text)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in text)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        return Mix(hash);
    }

    /// <summary>The score of a (silo, key) pair: both hashes mixed so that every silo ranks keys independently.</summary>
    public static ulong Combine(ulong siloHash, ulong keyHash) => Mix(siloHash ^ Mix(keyHash + 0x9E3779B97F4A7C15UL));

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
