import FleetSyncCore
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTestSupport
import FleetSyncVessel
import PostgresNIO
import XCTest

/// Issue 19: the two deletes of the outbox that run on every exchange while a backlog drains (the
/// vessel dropping what the shore acknowledged, the shore's pruning) read the position index
/// only from the lowest position still kept. With `pos <= x` alone each delete walked the index
/// from its start, through the entries of every event deleted since the last vacuum, and
/// visited each one's row: while any snapshot older than those deletes is open (another
/// session's transaction), PostgreSQL cannot mark them dead in the index. Each delete then costs
/// as much as all before it: 18.7 ms an exchange on the vessel in the side-by-side benchmark,
/// as long as sequencing the backlog (docs/BENCHMARKS.md, *Outbox deletes*).
final class OutboxDeleteTests: DatabaseTestCase {
    func testAcknowledgedEventsLeaveTheVesselsOutboxWithoutRereadingWhatLeftBefore() async throws {
        let (configuration, db) = try await installedNode(role: .vessel, nodeID: "aurora")
        try await fillOutboxBehindStaleStatistics(db)
        _ = try await openSnapshot(configuration.databaseURL)
        try await db.execute("INSERT INTO fleetsync.sync_state (peer) VALUES ('shore') ON CONFLICT DO NOTHING")
        // Acknowledgements of 1,000 events each, recorded as the daemon records them.
        func acknowledge(_ sql: String, through acknowledged: Int64) async throws -> Int {
            var binds = PostgresBindings()
            binds.append(acknowledged)
            binds.append("shore")
            return try await db.transaction { tx in
                let buffers = try await self.buffers(sql, binds, on: tx)
                try await tx.execute("UPDATE fleetsync.sync_state SET acknowledged = greatest(acknowledged, $1) WHERE peer = $2", binds)
                return buffers
            }
        }
        // The former statement: the 30th delete reads what the 29 before it deleted.
        let former = "DELETE FROM fleetsync.outbox WHERE pos <= $1 AND $2::text IS NOT NULL"
        let formerFirst = try await acknowledge(former, through: 1_000)
        var formerLast = 0
        for k in Int64(2)...30 { formerLast = try await acknowledge(former, through: k * 1_000) }
        let first = try await acknowledge(VesselSync.dropAcknowledgedSQL, through: 31_000)
        var last = 0
        for k in Int64(32)...60 { last = try await acknowledge(VesselSync.dropAcknowledgedSQL, through: k * 1_000) }
        print("buffers of the 1st and 30th delete of 1,000 acknowledged events: former \(formerFirst), \(formerLast); now \(first), \(last)")
        XCTAssertGreaterThan(formerLast - formerFirst, 300, "the former delete rereads what left before")
        XCTAssertLessThan(last - first, 50, "first \(first), 30th \(last)")
        // And it dropped exactly what was acknowledged.
        let (count, lowest): (Int64, Int64) = try await db.rows("SELECT count(*), min(pos) FROM fleetsync.outbox")[0].decode((Int64, Int64).self)
        XCTAssertEqual(count, 40_000)
        XCTAssertEqual(lowest, 60_001)
    }

    func testPruningDoesNotRereadWhatEarlierPrunesDeleted() async throws {
        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore")
        try await fillOutboxBehindStaleStatistics(db)
        try await db.execute("UPDATE fleetsync.outbox_counter SET last_pos = 100000")
        try await db.execute("INSERT INTO fleetsync.vessel (vessel_id) VALUES ('aurora')")
        try await db.execute("INSERT INTO fleetsync.sync_state (peer, acknowledged, last_success) VALUES ('aurora', 0, now())")
        _ = try await openSnapshot(configuration.databaseURL)
        let bounded = "pos > (SELECT pruned_below FROM fleetsync.outbox_counter) AND "
        XCTAssertTrue(Retention.pruneSQL.contains(bounded))
        let former = Retention.pruneSQL.replacingOccurrences(of: bounded, with: "")
        func prune(_ sql: String, after acknowledged: Int64) async throws -> Int {
            var ack = PostgresBindings()
            ack.append(acknowledged)
            try await db.execute("UPDATE fleetsync.sync_state SET acknowledged = $1 WHERE peer = 'aurora'", ack)
            var binds = PostgresBindings()
            binds.append(Int32(30))
            binds.append(Int64(0))
            return try await buffers(sql, binds, on: db)
        }
        let formerFirst = try await prune(former, after: 1_000)
        var formerLast = 0
        for k in Int64(2)...30 { formerLast = try await prune(former, after: k * 1_000) }
        let first = try await prune(Retention.pruneSQL, after: 31_000)
        var last = 0
        for k in Int64(32)...60 { last = try await prune(Retention.pruneSQL, after: k * 1_000) }
        print("buffers of the 1st and 30th prune of 1,000 events: former \(formerFirst), \(formerLast); now \(first), \(last)")
        XCTAssertGreaterThan(formerLast - formerFirst, 300, "the former prune rereads what earlier prunes deleted")
        XCTAssertLessThan(last - first, 50, "first \(first), 30th \(last)")
        let horizon = try await Retention.prune(retentionDays: 30, on: db)
        XCTAssertEqual(horizon, 60_000)
        let (count, lowest): (Int64, Int64) = try await db.rows("SELECT count(*), min(pos) FROM fleetsync.outbox")[0].decode((Int64, Int64).self)
        XCTAssertEqual(count, 40_000)
        XCTAssertEqual(lowest, 60_001)
    }

    /// Another session's transaction holding a snapshot taken now, as a running exchange or
    /// writer does: rows deleted after it cannot be marked dead in the indexes while it lasts.
    func openSnapshot(_ url: String) async throws -> DatabaseSession {
        let session = try await connect(url)
        try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        _ = try await session.rows("SELECT count(*) FROM fleetsync.outbox")
        return session
    }

    /// Runs `sql` under EXPLAIN ANALYZE and returns the buffers its delete of the outbox touched.
    func buffers(_ sql: String, _ binds: PostgresBindings, on db: DatabaseSession) async throws -> Int {
        let lines = try await db.rows("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, binds).map { try $0.decode(String.self, context: .default) }
        guard let delete = lines.firstIndex(where: { $0.contains("Delete on outbox") }),
              let line = lines[delete...].first(where: { $0.contains("Buffers:") }) else {
            XCTFail("no delete of the outbox with its buffers in the plan:\n" + lines.joined(separator: "\n"))
            return 0
        }
        // "Buffers: shared hit=12 read=3 dirtied=4": pages found and read.
        return line.split(separator: " ").reduce(0) { total, word in
            for key in ["hit=", "read="] where word.hasPrefix(key) { return total + (Int(word.dropFirst(key.count)) ?? 0) }
            return total
        }
    }
}
