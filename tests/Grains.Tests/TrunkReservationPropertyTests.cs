using FsCheck;
using FsCheck.Fluent;

namespace CallState.Grains.Tests;

/// <summary>
/// Random admissions, releases, lease ends and reloads on a trunk divided among tenants (docs/policies.md, "Guaranteed
/// reservations"), checked against a reference model written from the rules: no tenant ever takes the unused part of
/// another's guarantee (a tenant below its guarantee is always admitted), and no tenant, nor the trunk, goes over its
/// maximum.
/// </summary>
public sealed class TrunkReservationPropertyTests
{
    public enum OpKind
    {
        Reserve,
        Release,
        Advance,
        Reload,
    }

    public sealed record Op(OpKind Kind, int Call, int Tenant, int Seconds)
    {
        public override string ToString() => Kind switch
        {
            OpKind.Reserve => $"Reserve(c{Call},{TenantName(Tenant) ?? "-"})",
            OpKind.Release => $"Release(c{Call})",
            OpKind.Advance => $"Advance({Seconds}s)",
            _ => "Reload",
        };
    }

    public sealed record Scenario(int Capacity, IReadOnlyList<(int Guaranteed, int? Maximum)> Shares, IReadOnlyList<Op> Ops)
    {
        public override string ToString() =>
            $"capacity {Capacity}, {string.Join(", ", Shares.Select((s, i) => $"{TenantName(i)} {s.Guaranteed}..{s.Maximum?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"}"))} :: {string.Join(", ", Ops)}";
    }

    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(180);

    /// <summary>Tenants 0..2 are listed (when the scenario has that many), 3 is a tenant with no share, 4 is no tenant.</summary>
    private static string? TenantName(int index) => index switch
    {
        4 => null,
        _ => "t" + index.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    private static Gen<Scenario> Scenarios()
    {
        var share =
            from guaranteed in Gen.Choose(0, 5)
            from extra in Gen.Elements<int?>(null, null, 0, 1, 2, 4)
            select (guaranteed, extra is { } e ? guaranteed + e : (int?)null);
        var op =
            from kind in Gen.Elements(OpKind.Reserve, OpKind.Reserve, OpKind.Reserve, OpKind.Reserve, OpKind.Release, OpKind.Release, OpKind.Advance, OpKind.Reload)
            from call in Gen.Choose(0, 14)
            from tenant in Gen.Choose(0, 4)
            from seconds in Gen.Choose(0, 200)
            select new Op(kind, call, tenant, seconds);
        return
            from capacity in Gen.Choose(1, 10)
            from count in Gen.Choose(1, 3)
            from shares in Gen.ListOf(share, count)
            where shares.Sum(s => s.Item1) <= capacity
            from ops in Gen.ListOf(op)
            select new Scenario(capacity, shares.ToList(), ops.ToList());
    }

    [Fact]
    public void No_tenant_takes_another_tenants_unused_guarantee_and_no_maximum_is_passed()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(1500), Prop.ForAll(Arb.From(Scenarios()), Run));
    }

    /// <summary>The reference model: the held calls, each with its tenant and lease end.</summary>
    private sealed class Model(Scenario scenario)
    {
        public Dictionary<string, (string? Tenant, DateTimeOffset LeaseEnd)> Held { get; } = [];

        public (int Guaranteed, int? Maximum) ShareOf(string? tenant)
        {
            for (var i = 0; i < scenario.Shares.Count; i++)
            {
                if (tenant == TenantName(i))
                {
                    return scenario.Shares[i];
                }
            }

            return (0, null);
        }

        public int CountOf(string? tenant) => Held.Values.Count(h => h.Tenant == tenant);

        /// <summary>The slots other tenants' guarantees still keep back from <paramref name="tenant"/>.</summary>
        public int KeptFrom(string? tenant) =>
            Enumerable.Range(0, scenario.Shares.Count)
                .Select(TenantName)
                .Where(other => other != tenant)
                .Sum(other => Math.Max(0, ShareOf(other).Guaranteed - CountOf(other)));

        public bool Admits(string? tenant) =>
            Held.Count < scenario.Capacity
            && (ShareOf(tenant).Maximum is not { } max || CountOf(tenant) < max)
            && Held.Count + 1 + KeptFrom(tenant) <= scenario.Capacity;

        public void Expire(DateTimeOffset now)
        {
            foreach (var key in Held.Where(h => h.Value.LeaseEnd <= now).Select(h => h.Key).ToList())
            {
                Held.Remove(key);
            }
        }
    }

    private static bool Run(Scenario scenario)
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var reservations = new TrunkReservations(
            scenario.Shares.Select((s, i) => (Name: TenantName(i)!, Share: new TenantReservation(s.Guaranteed, s.Maximum)))
                .ToDictionary(x => x.Name, x => x.Share, StringComparer.Ordinal));
        Assert.Empty(reservations.Validate("trunk", scenario.Capacity, null));
        var limits = new LimitSettings(Total: scenario.Capacity);
        var key = LimitKey.Trunk("shared");
        var ledger = new LimitLedger(key, new LimitGrainState(), limits) { ConfiguredReservations = reservations };
        var model = new Model(scenario);

        foreach (var op in scenario.Ops)
        {
            var callKey = "c" + op.Call.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var now = time.GetUtcNow();
            switch (op.Kind)
            {
                case OpKind.Reserve:
                {
                    model.Expire(now);
                    var tenant = TenantName(op.Tenant);
                    var held = model.Held.TryGetValue(callKey, out var h);
                    var expected = held || model.Admits(tenant);
                    var check = ledger.Check(callKey, Direction.Inbound, null, tenant, now);
                    var outcome = ledger.TryReserve(callKey, Direction.Inbound, Lease, null, tenant, now, out _);
                    Assert.True(expected == outcome.Admitted, $"{op}: model {(expected ? "admits" : "refuses")}, ledger {outcome}");
                    Assert.Equal(outcome.Admitted, check.Admitted);
                    if (!outcome.Admitted)
                    {
                        Assert.Contains(outcome.Reason, new[] { RejectReason.TrunkTotalLimitReached, RejectReason.TrunkTenantMaxReached, RejectReason.TrunkReservedForOtherTenants });
                    }
                    else if (!held)
                    {
                        model.Held[callKey] = (tenant, now + Lease);
                    }

                    break;
                }

                case OpKind.Release:
                    model.Expire(now);
                    Assert.Equal(model.Held.Remove(callKey), ledger.Release(callKey));
                    break;
                case OpKind.Advance:
                    time.Advance(TimeSpan.FromSeconds(op.Seconds));
                    break;
                case OpKind.Reload:
                {
                    // What storage holds (the row and one item per call) is all a new activation knows.
                    ledger.ExpireLeases(now);
                    model.Expire(now);
                    var stored = new StoredState(StateSerializer.SerializeLimitRow(ledger.State), 1, null)
                    {
                        Items = ledger.State.Calls.Select(c => new StateItem(c.Key, StateSerializer.SerializeHeldCall(c.Value))).ToList(),
                    };
                    ledger = new LimitLedger(key, StateSerializer.DeserializeLimit(stored, out _), limits) { ConfiguredReservations = reservations };
                    break;
                }
            }

            // The invariants, whatever the model says.
            ledger.ExpireLeases(time.GetUtcNow());
            model.Expire(time.GetUtcNow());
            var snapshot = ledger.Snapshot(includeCalls: false);
            Assert.Equal(model.Held.Count, snapshot.Total);
            Assert.True(snapshot.Total <= scenario.Capacity);
            for (var i = 0; i <= 4; i++)
            {
                var tenant = TenantName(i);
                var count = model.CountOf(tenant);
                if (tenant is not null)
                {
                    Assert.Equal(count, snapshot.TenantCalls!.GetValueOrDefault(tenant));
                }

                var (guaranteed, maximum) = model.ShareOf(tenant);
                Assert.True(maximum is not { } max || count <= max, $"{tenant} holds {count}, over its maximum {maximum}");

                // A tenant below its guarantee always finds a slot: nobody took it.
                if (count < guaranteed)
                {
                    Assert.True(ledger.Check("probe", Direction.Inbound, null, tenant, time.GetUtcNow()).Admitted, $"{tenant} holds {count} of its {guaranteed} guaranteed and is refused");
                }
            }
        }

        return true;
    }
}
