using FsCheck;
using FsCheck.Fluent;

namespace CallState.Grains.Tests;

/// <summary>
/// Random operation sequences on a trunk limit, checked against a small model: the counts never exceed a
/// configured limit and always equal the calls the model says are held.
/// </summary>
public sealed class LimitLedgerPropertyTests
{
    public enum OpKind
    {
        Reserve,
        Release,
        Confirm,
        Renew,
        Advance,
    }

    public sealed record Op(OpKind Kind, int Call, Direction Direction, int Seconds)
    {
        public override string ToString() => Kind switch
        {
            OpKind.Reserve => $"Reserve(c{Call},{Direction})",
            OpKind.Advance => $"Advance({Seconds}s)",
            _ => $"{Kind}(c{Call})",
        };
    }

    public sealed record Scenario(LimitSettings Limits, IReadOnlyList<Op> Ops)
    {
        public override string ToString() => $"{Limits} :: {string.Join(", ", Ops)}";
    }

    private static readonly TimeSpan EarlyLease = TimeSpan.FromSeconds(180);
    private static readonly TimeSpan ConfirmedLease = TimeSpan.FromSeconds(600);
    private static readonly TimeSpan RenewLease = TimeSpan.FromSeconds(300);

    private static Gen<Scenario> Scenarios()
    {
        var limit = Gen.Elements<int?>(null, null, 0, 1, 2, 3, 4);
        var settings =
            from total in limit
            from inbound in limit
            from outbound in limit
            select new LimitSettings(total, inbound, outbound);
        var op =
            from kind in Gen.Elements(OpKind.Reserve, OpKind.Reserve, OpKind.Reserve, OpKind.Release, OpKind.Release, OpKind.Confirm, OpKind.Renew, OpKind.Advance, OpKind.Advance)
            from call in Gen.Choose(0, 7)
            from direction in Gen.Elements(Direction.Inbound, Direction.Outbound)
            from seconds in Gen.Choose(0, 400)
            select new Op(kind, call, direction, seconds);
        return
            from s in settings
            from ops in Gen.ListOf(op)
            select new Scenario(s, ops.ToList());
    }

    [Fact]
    public void Trunk_counts_never_exceed_a_limit_and_match_the_calls_held()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(1000), Prop.ForAll(Arb.From(Scenarios()), Run));
    }

    /// <summary>The model: which calls hold a slot, with direction and lease end; leases reclaimed when due.</summary>
    private sealed class Model
    {
        public Dictionary<string, (Direction Direction, DateTimeOffset LeaseEnd)> Held { get; } = [];

        public long Reclaimed { get; set; }

        public int Count(Direction direction) => Held.Values.Count(h => h.Direction == direction);
    }

    private static bool Run(Scenario scenario)
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var limits = scenario.Limits;
        var grain = new LimitLedger(LimitKey.Trunk("carrier"), new LimitGrainState(), limits);
        var model = new Model();

        for (var step = 0; step < scenario.Ops.Count; step++)
        {
            var op = scenario.Ops[step];
            var callKey = $"c{op.Call}";
            var now = time.GetUtcNow();
            var where = $"step {step} {op}";
            switch (op.Kind)
            {
                case OpKind.Reserve:
                {
                    var outcome = grain.TryReserve(callKey, op.Direction, EarlyLease, null, now, out _);
                    var expected = Decide(model, limits, callKey, op.Direction);
                    if (outcome.Admitted != (expected == RejectReason.None) || outcome.Reason != expected)
                    {
                        throw new InvalidOperationException($"{where}: expected {expected}, got {outcome}");
                    }

                    if (expected == RejectReason.None && !model.Held.ContainsKey(callKey))
                    {
                        model.Held[callKey] = (op.Direction, now + EarlyLease);
                    }

                    break;
                }

                case OpKind.Release:
                    Expect(grain.Release(callKey) == model.Held.Remove(callKey), where, "release result");
                    break;

                case OpKind.Confirm:
                    Expect(grain.Confirm(callKey, ConfirmedLease, now) == model.Held.ContainsKey(callKey), where, "confirm result");
                    if (model.Held.TryGetValue(callKey, out var confirmed))
                    {
                        model.Held[callKey] = (confirmed.Direction, now + ConfirmedLease);
                    }

                    break;

                case OpKind.Renew:
                    Expect(grain.Renew(callKey, RenewLease, now) == model.Held.ContainsKey(callKey), where, "renew result");
                    if (model.Held.TryGetValue(callKey, out var renewed))
                    {
                        var end = now + RenewLease > renewed.LeaseEnd ? now + RenewLease : renewed.LeaseEnd;
                        model.Held[callKey] = (renewed.Direction, end);
                    }

                    break;

                case OpKind.Advance:
                {
                    time.Advance(TimeSpan.FromSeconds(op.Seconds));
                    now = time.GetUtcNow();

                    // The runtime wakes the grain at its NextDue; here, at the latest when time passes it.
                    var expired = model.Held.Where(h => h.Value.LeaseEnd <= now).Select(h => h.Key).ToList();
                    foreach (var key in expired)
                    {
                        model.Held.Remove(key);
                    }

                    model.Reclaimed += expired.Count;
                    var reclaimed = grain.NextDue is { } due && due <= now ? grain.ExpireLeases(now) : 0;
                    Expect(reclaimed == expired.Count, where, $"reclaimed {reclaimed}, model {expired.Count}");
                    break;
                }
            }

            var snapshot = grain.Snapshot();
            Expect(snapshot.Inbound == model.Count(Direction.Inbound), where, $"inbound {snapshot.Inbound} vs model {model.Count(Direction.Inbound)}");
            Expect(snapshot.Outbound == model.Count(Direction.Outbound), where, $"outbound {snapshot.Outbound} vs model {model.Count(Direction.Outbound)}");
            Expect(snapshot.Total == model.Held.Count, where, "total");
            Expect(snapshot.Reclaimed == model.Reclaimed, where, "reclaimed counter");
            Expect(snapshot.Inbound <= (limits.Inbound ?? int.MaxValue), where, "inbound over its limit");
            Expect(snapshot.Outbound <= (limits.Outbound ?? int.MaxValue), where, "outbound over its limit");
            Expect(snapshot.Total <= (limits.Total ?? int.MaxValue), where, "total over its limit");
            DateTimeOffset? nextDue = model.Held.Count == 0 ? null : model.Held.Values.Min(h => h.LeaseEnd);
            Expect(grain.NextDue == nextDue, where, $"NextDue {grain.NextDue} vs model {nextDue}");
        }

        return true;
    }

    /// <summary>miniSIPServer trunk rules: each limit independent and optional; zero bars the direction.</summary>
    private static RejectReason Decide(Model model, LimitSettings limits, string callKey, Direction direction)
    {
        if (model.Held.ContainsKey(callKey))
        {
            return RejectReason.None;
        }

        var directionLimit = direction == Direction.Inbound ? limits.Inbound : limits.Outbound;
        if (limits.Total == 0 || directionLimit == 0)
        {
            return RejectReason.DirectionBarred;
        }

        if (model.Count(direction) >= directionLimit)
        {
            return direction == Direction.Inbound ? RejectReason.TrunkInLimitReached : RejectReason.TrunkOutLimitReached;
        }

        return model.Held.Count >= limits.Total ? RejectReason.TrunkTotalLimitReached : RejectReason.None;
    }

    private static void Expect(bool condition, string where, string what)
    {
        if (!condition)
        {
            throw new InvalidOperationException($"{where}: {what}");
        }
    }
}
