using System.Diagnostics;
using CallState.Cluster.IntegrationTests.Infrastructure;
using Microsoft.Data.Sqlite;
using static CallState.Cluster.IntegrationTests.Infrastructure.SipText;
using static CallState.Cluster.IntegrationTests.Infrastructure.StandaloneEdge;

namespace CallState.Cluster.IntegrationTests;

/// <summary>
/// The admission deadline against storage that does not answer, on a running standalone edge: another process's
/// connection holds SQLite's write lock (the edge would wait 5 s for it), so every admission must be given up at the
/// deadline and the INVITE answered 503 with cause 42 and Retry-After, logged, with nothing left held afterwards.
/// </summary>
[Collection(LoadTests.Name)]
public sealed class StorageFaultTests : IDisposable
{
    private readonly TempDirectory _temp = new("callstate-storage-fault-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task With_the_database_locked_an_invite_gets_503_with_cause_42_at_the_deadline_and_nothing_stays_held()
    {
        var uasPort = SipEdgeProcess.FreeUdpAndTcpPort();
        await using var uas = Sipp.Start("uas", ["-sf", RepoPaths.Scenario("uas_rr.xml"), "-i", "127.0.0.1", "-p", Port(uasPort), "-t", "u1", "-m", "1"]);

        // A deadline the test can tell apart from SQLite's 5 s busy wait (the later command-line value wins).
        await using var edge = await StandaloneEdge.StartAsync(_temp.Path, uasPort, extra: ["--CallState:Admission:Deadline=00:00:01"]);
        using var caller = new RawSipCaller(System.Net.IPAddress.Loopback, edge.SipPort);
        var uri = $"sip:bob@127.0.0.1:{edge.SipPort}";

        // An admission that works first: the storage is up and warm.
        var ok = await caller.SendAsync(caller.Request("INVITE", uri, "before-lock", null, sdp: true), final: true);
        Assert.StartsWith("SIP/2.0 200", ok, StringComparison.Ordinal);
        await caller.SendOnlyAsync(caller.Request("ACK", ContactUri(ok), "before-lock", ToTag(ok), route: RecordRoute(ok)));
        var bye = await caller.SendAsync(caller.Request("BYE", ContactUri(ok), "before-lock", ToTag(ok), route: RecordRoute(ok), cseq: 2), final: true);
        Assert.StartsWith("SIP/2.0 200", bye, StringComparison.Ordinal);
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(10), "the first call");

        await using (var database = new SqliteConnection($"Data Source={Path.Combine(_temp.Path, "callstate.db")};Pooling=False"))
        {
            await database.OpenAsync();
            using (var begin = database.CreateCommand())
            {
                begin.CommandText = "BEGIN IMMEDIATE";
                await begin.ExecuteNonQueryAsync();
            }

            var clock = Stopwatch.StartNew();
            var refused = await caller.SendAsync(caller.Request("INVITE", uri, "while-locked", null, sdp: true), final: true);
            var took = clock.Elapsed;
            Assert.StartsWith("SIP/2.0 503", refused, StringComparison.Ordinal);
            Assert.Contains("Reason: Q.850;cause=42", refused, StringComparison.Ordinal);
            Assert.Contains("Retry-After: 5", refused, StringComparison.Ordinal);

            // Given up at the 1 s deadline, not after SQLite's 5 s busy wait.
            Assert.True(took < TimeSpan.FromSeconds(4), $"answered after {took}");
            await caller.SendOnlyAsync(caller.Request("ACK", uri, "while-locked", ToTag(refused)));

            using var rollback = database.CreateCommand();
            rollback.CommandText = "ROLLBACK";
            await rollback.ExecuteNonQueryAsync();
        }

        Assert.True(await edge.OutputContainsAsync("Call while-locked;from-while-locked refused with 503", TimeSpan.FromSeconds(5)), edge.Output);

        // The abandoned admission may commit once the lock is gone: it is ended, so nothing stays held.
        await WaitForZeroAsync(edge, TimeSpan.FromSeconds(15), "the lock was released");
    }
}
