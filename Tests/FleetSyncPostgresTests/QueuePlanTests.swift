@testable import FleetSyncPostgres
import FleetSyncCore
import FleetSyncTestSupport
import PostgresNIO
import XCTest

/// Issue 19: queue reads must not depend on when the outbox's statistics were last gathered.
/// With statistics from when the outbox was nearly empty, the former single-condition page
/// scanned and sorted the whole backlog (36 ms at 100,000 waiting, here against 2.7 ms).
final class QueuePlanTests: DatabaseTestCase {
    /// With stale statistics the sequencer's statement passed every JIT threshold and was
    /// compiled by LLVM on each call (200-500 ms; docs/BENCHMARKS.md, side by side): FleetSync's
    /// connections run with JIT off, whatever the server's default.
    func testFleetSyncConnectionsNeverCompileWithJIT() async throws {
        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore")
        let serverDefault: String = try await db.scalar("SELECT boot_val FROM pg_settings WHERE name = 'jit'")
        XCTAssertEqual(serverDefault, "on", "the server would compile with JIT by default")
        let session = try await DatabaseSession.connect(url: configuration.databaseURL, logger: Fixtures.logger)
        let jit: String = try await session.rows("SHOW jit")[0].value(0)
        XCTAssertEqual(jit, "off")
        // The sequencer runs on such a session.
        try await db.execute("INSERT INTO vessel (code, name) SELECT 'v' || i, 'V' || i FROM generate_series(1, 2000) i")
        let moved = try await OutboxReader(session: session).sequence()
        XCTAssertEqual(moved, 2_000)
        await session.close()
    }

    /// Every shore exchange sequences; with nothing to move it takes no lock and writes nothing,
    /// so that exchanges do not queue on the sequencer's lock and counter row.
    func testSequencingNothingWritesNothing() async throws {
        let (_, db) = try await installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'A')")
        let first = try await OutboxReader(session: db).sequence()
        XCTAssertEqual(first, 1)
        let before: String = try await db.scalar("SELECT xmin::text FROM fleetsync.outbox_counter")
        let none = try await OutboxReader(session: db).sequence()
        XCTAssertEqual(none, 0)
        let after: String = try await db.scalar("SELECT xmin::text FROM fleetsync.outbox_counter")
        XCTAssertEqual(before, after, "the counter row was not rewritten")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('borealis', 'B')")
        let next = try await OutboxReader(session: db).sequence()
        XCTAssertEqual(next, 1, "a new event is still sequenced")
        let last: Int64 = try await db.scalar("SELECT last_pos FROM fleetsync.outbox_counter")
        XCTAssertEqual(last, 2)
    }

    /// The applier reads a batch's target rows by key (`id = ANY($1)`, TableWriter). With
    /// PostgreSQL's default random_page_cost (4) a read of 1,000 of 100,000 rows is planned as a
    /// sequential scan of the whole table; FleetSync's sessions use 1.1, and read through the key.
    func testTheApplierReadsTargetRowsThroughTheKey() async throws {
        let (configuration, db) = try await installedNode(role: .vessel, nodeID: "aurora")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await db.execute("ALTER TABLE seafarer DISABLE TRIGGER USER")
        try await db.execute("""
            INSERT INTO seafarer (vessel_code, full_name, rank, notes, contact_number)
            SELECT 'aurora', 'Seafarer number ' || i || ' of the long crew list', 'Able seaman', repeat('n', 60), '+351 ' || i FROM generate_series(1, 100000) i
            """)
        try await db.execute("VACUUM ANALYZE seafarer")
        let session = try await DatabaseSession.connect(url: configuration.databaseURL, logger: Fixtures.logger)
        defer { Task { await session.close() } }
        let ids: [UUID] = try await session.rows("SELECT id FROM seafarer ORDER BY random() LIMIT 1000").map { try $0.decode(UUID.self) }
        func plan() async throws -> String {
            var binds = PostgresBindings()
            binds.append(ids)
            return try await session.rows("""
                EXPLAIN SELECT t.id, t.sync_version, t.is_deleted, t.sync_clock::text FROM public.seafarer t WHERE t.id = ANY($1::uuid[]) FOR UPDATE
                """, binds).map { try $0.decode(String.self) }.joined(separator: "\n")
        }
        let fleetSync = try await plan()
        XCTAssertFalse(fleetSync.contains("Seq Scan"), fleetSync)
        XCTAssertTrue(fleetSync.contains("seafarer_pkey"), fleetSync)
        try await session.execute("SET random_page_cost = 4")
        let serverDefault = try await plan()
        XCTAssertTrue(serverDefault.contains("Seq Scan"), "with the server's default the read scans the whole table: \(serverDefault)")
    }

    /// The outbox's own page (what a vessel sends, and the shore's relay reads) goes through
    /// the position index whatever the statistics say. The vessel queue's read is checked the
    /// same way, as the product runs it, in ExchangeRoundTripTests.
    func testOutboxReadUsesItsIndexWithStaleStatistics() async throws {
        let (_, db) = try await installedNode(role: .shore, nodeID: "shore")
        try await fillOutboxBehindStaleStatistics(db)
        var outbox = PostgresBindings()
        outbox.append(Int64(0))
        outbox.append(Int64(1_000))
        outbox.append(Int64(1_048_576))
        let page = OutboxReader.page(columns: "pos, delta_text AS delta", where: "pos > $1", limit: "$2", budget: "$3", overhead: 32)
        let outboxPlan = try await plan(page, outbox, on: db)
        XCTAssertTrue(outboxPlan.contains("Index Scan using outbox_pos"), outboxPlan)
        XCTAssertFalse(outboxPlan.contains("Bitmap Heap Scan") || outboxPlan.contains("Seq Scan") || outboxPlan.contains("external merge"), outboxPlan)

        // And the page is still the first rows in position order, within the limit.
        let rows = try await db.rows(page, outbox)
        let positions = try rows.map { try $0.value(0, as: Int64.self) }
        XCTAssertEqual(positions, Array(1...1_000).map(Int64.init))
    }

    func plan(_ sql: String, _ binds: PostgresBindings, on db: DatabaseSession) async throws -> String {
        let rows = try await db.rows("EXPLAIN (ANALYZE, COSTS OFF) " + sql, binds)
        return try rows.map { try $0.decode(String.self, context: .default) }.joined(separator: "\n")
    }
}
