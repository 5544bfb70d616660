import FleetSyncCore
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTestSupport
import Foundation
import PostgresNIO
import XCTest

/// Pruning keeps a mark per pruned row (`fleetsync.pruned_row`) only where a vessel may still need
/// it for an incremental catch-up: a pruned event every enrolled vessel has applied needs none.
/// (A shore serving one vessel wrote a mark for each row it pruned after every exchange, and
/// deleted it again at once: about a tenth of an upload's time in the side-by-side benchmark.)
final class RetentionMarkTests: DatabaseTestCase {
    /// Inserts five certificate types on the shore and sequences them; returns the last position.
    func writeFive(_ prefix: String, _ fleet: Fleet, _ shore: DatabaseSession) async throws -> Int64 {
        try Fixtures.runScript("INSERT INTO certificate_type (code, title) SELECT '\(prefix)' || i, 't' FROM generate_series(1, 5) i;", url: fleet.shore.url)
        _ = try await OutboxReader(session: shore).sequence()
        return try await shore.scalar("SELECT last_pos FROM fleetsync.outbox_counter")
    }

    /// Prunes in a transaction of its own and returns the rows it inserted into pruned_row.
    func prune(_ shore: DatabaseSession) async throws -> Int64 {
        try await shore.transaction { tx in
            try await Retention.prune(retentionDays: 30, on: tx)
            let inserted: Int64 = try await tx.scalar("SELECT pg_stat_get_xact_tuples_inserted('fleetsync.pruned_row'::regclass)")
            return inserted
        }
    }

    func testPruningWritesNoMarkEveryVesselHasPassedAndKeepsThoseASilentVesselNeeds() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"])
        let shore = try await connect(fleet.shore.url)
        let a = try await writeFive("A", fleet, shore)
        let b = try await writeFive("B", fleet, shore)
        // aurora has applied everything, borealis the first five; both heard from today.
        try await shore.execute("""
            INSERT INTO fleetsync.sync_state (peer, cursor, acknowledged, last_success)
            VALUES ('aurora', \(b), \(b), now()), ('borealis', \(a), \(a), now())
            """)
        let first = try await prune(shore)
        XCTAssertEqual(first, 0, "the events both vessels applied were pruned without a mark")
        var (prunedBelow, trackedFrom, marks): (Int64, Int64, Int64) = try await shore.rows(
            "SELECT pruned_below, tracked_from, (SELECT count(*) FROM fleetsync.pruned_row) FROM fleetsync.outbox_counter")[0].decode((Int64, Int64, Int64).self)
        XCTAssertEqual(prunedBelow, a)
        XCTAssertEqual(trackedFrom, a, "a cursor below what every vessel passed is caught up whole")
        XCTAssertEqual(marks, 0)

        // borealis falls silent past retention: aurora's position is pruned, and the five
        // events borealis has not applied keep their marks for its incremental catch-up.
        try await shore.execute("UPDATE fleetsync.sync_state SET last_success = now() - interval '40 days' WHERE peer = 'borealis'")
        try await shore.execute("UPDATE fleetsync.vessel SET enrolled_at = now() - interval '41 days'")
        let second = try await prune(shore)
        XCTAssertEqual(second, 5)
        (prunedBelow, trackedFrom, marks) = try await shore.rows(
            "SELECT pruned_below, tracked_from, (SELECT count(*) FROM fleetsync.pruned_row WHERE last_pos > \(a)) FROM fleetsync.outbox_counter")[0].decode((Int64, Int64, Int64).self)
        XCTAssertEqual(prunedBelow, b)
        XCTAssertEqual(trackedFrom, a, "borealis, at \(a), still catches up from its cursor")
        XCTAssertEqual(marks, 5)
    }
}
