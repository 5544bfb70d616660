import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTestSupport
import FleetSyncTransport
import Foundation
import PostgresNIO
import XCTest

/// Issues 16 and 19: the shore's cost per exchange is mostly its round trips to PostgreSQL. The
/// statements the shore's database runs for one sealed exchange are counted from its log
/// (`log_statement = all` for the shore's database, set before `serve` starts: every session
/// of the server, its pool and its telemetry writer, logs each statement it runs).
///
/// Before the statements were merged (token secret cached and checked in the standing statement,
/// standing + exchange id + the vessel's lock in one statement, the exchange's start in one, the
/// queue read with its positions in one without a transaction, the contact with the clock floor,
/// retention's three forgetting statements in one): 20 statements for an idle exchange, 39 for
/// one carrying 5 events (pruning after each, as for an exchange running alone). After: 6 and 24
/// (the statements of every exchange are also prepared once per connection: PreparedStatements.swift).
final class ExchangeRoundTripTests: DatabaseTestCase {
    var clients: [SealedClient] = []

    override func tearDown() async throws {
        for client in clients { await client.shutdown() }
        try await super.tearDown()
    }

    /// The statements logged since `offset` in the cluster's log, each its first line.
    static func statements(in path: String, from offset: UInt64) throws -> [String] {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        return text.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: #"LOG:  (statement|execute [^:]*): "#, options: .regularExpression) else { return nil }
            return String(line[range.upperBound...].prefix(110))
        }
    }

    static func size(of path: String) throws -> UInt64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
    }

    func testOneSealedExchangeTakesFewStatements() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A');
            INSERT INTO seafarer (vessel_code, full_name) SELECT 'aurora', 'Crew ' || i FROM generate_series(1, 5) i;
            """, url: fleet.shore.url)
        let shore = try await connect(fleet.shore.url)
        let database: String = try await shore.scalar("SELECT current_database()")
        try await shore.execute("ALTER DATABASE \(SQL.identifier(database)) SET log_statement = 'all'")
        let log = fleet.shore.cluster!.directory + "/server.log"
        let server = try fleet.serve()
        defer { server.stop() }
        let synced = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(synced.status, 0, synced.output + synced.error)
        let cursor: Int64 = try await connect(fleet.vessels[0].url).scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        XCTAssertGreaterThan(cursor, 0)
        let crew: String = try await shore.scalar("SELECT string_agg(id::text, ',' ORDER BY full_name) FROM seafarer WHERE vessel_code = 'aurora'")
        let rows = crew.split(separator: ",").map { UUID(uuidString: String($0))! }
        let floor: Int64 = try await shore.scalar("SELECT coalesce(max(max_clock), 0) FROM fleetsync.sync_state WHERE peer = 'aurora'")
        let client = try SealedClient(fleet.vessels[0], fleet: fleet)
        clients.append(client)
        let token = try await client.token()

        // An idle exchange: nothing sent, nothing waiting.
        var offset = try Self.size(of: log)
        let idle = try await client.exchange(ExchangeRequest(vesselID: "aurora", cursor: cursor, events: [], upTo: 0, clock: floor + 10), token: token)
        XCTAssertTrue(idle.events.isEmpty)
        try await Task.sleep(for: .milliseconds(300))
        let idleStatements = try Self.statements(in: log, from: offset).filter { !$0.hasPrefix("DELETE FROM fleetsync.seen_exchange") }

        // An exchange carrying five of the vessel's writes.
        let events = rows.enumerated().map { i, row in
            ChangeEvent(table: "seafarer", rowID: row, fields: ["contact_number": FieldChange(value: .string("+351 \(i)"), clock: FieldClock(counter: floor + 20 + Int64(i), node: "aurora"))],
                        origin: "aurora", originPosition: Int64(i + 1))
        }
        offset = try Self.size(of: log)
        let busy = try await client.exchange(ExchangeRequest(vesselID: "aurora", cursor: idle.cursor, events: events, upTo: 5, clock: floor + 30), token: token)
        XCTAssertEqual(busy.acknowledged, 5)
        try await Task.sleep(for: .milliseconds(300))
        // (Without the housekeeping one exchange in 64 does: forgetting old exchange ids.)
        let busyStatements = try Self.statements(in: log, from: offset).filter { !$0.hasPrefix("DELETE FROM fleetsync.seen_exchange") }
        let applied: Int64 = try await shore.scalar("SELECT count(*) FROM seafarer WHERE contact_number LIKE '+351 %'")
        XCTAssertEqual(applied, 5, "the writes were applied")
        // The statements are prepared on the server's connections: one first run with a null
        // (no read-ahead) must not fix a parameter's type that later values do not fit.
        var ask = ExchangeRequest(vesselID: "aurora", cursor: busy.cursor, events: [], upTo: 5, clock: floor + 30)
        ask.readAhead = ReadAheadAsk(after: busy.cursor, events: 100, bytes: 65_536)
        let asked = try await client.exchange(ask, token: token)
        XCTAssertEqual(asked.readAhead?.after, busy.cursor)

        print("statements of one idle sealed exchange: \(idleStatements.count)\n  " + idleStatements.joined(separator: "\n  "))
        print("statements of one sealed exchange carrying 5 events: \(busyStatements.count)\n  " + busyStatements.joined(separator: "\n  "))
        // Before: 20 and 39 (see above). The exchange with events also runs the applier's and
        // the sequencer's statements (other files), whose number may change a little.
        XCTAssertLessThanOrEqual(idleStatements.count, 8, idleStatements.joined(separator: "\n"))
        XCTAssertLessThanOrEqual(busyStatements.count, 28, busyStatements.joined(separator: "\n"))
        // No transaction of its own for the queue read; the token secret is not read per exchange.
        XCTAssertFalse(idleStatements.contains { $0.hasPrefix("BEGIN") }, idleStatements.joined(separator: "\n"))
        XCTAssertFalse((idleStatements + busyStatements).contains { $0.contains("auth_secret") && !$0.hasPrefix("WITH standing") })
    }

    /// The token secret cached by each `serve` process is checked against PostgreSQL in the
    /// statement that checks the vessel's standing: replacing it (delete the row) refuses the old
    /// tokens at once on every replica, with nothing recorded; a token made under the new secret
    /// by one replica is accepted by the other; a revoked vessel's valid token is refused at its
    /// next exchange.
    func testAReplacedSecretOrARevokedVesselIsRefusedAtOnceByEveryReplica() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let first = try fleet.serve()
        defer { first.stop() }
        let port = try FreePort.find()
        let second = try fleet.serve(port: port)
        defer { second.stop() }
        let viaFirst = try SealedClient(fleet.vessels[0], fleet: fleet)
        let viaSecond = try SealedClient(vessel: "aurora", keys: viaFirst.keys, shore: viaFirst.shore,
                                         transport: try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(port)"))
        clients += [viaFirst, viaSecond]
        func idle() -> ExchangeRequest { ExchangeRequest(vesselID: "aurora", cursor: 0, events: [], upTo: 0) }
        func code(_ client: SealedClient, _ token: [UInt8]) async throws -> WireError.Code? {
            let (frame, binding) = try client.seal(idle(), token: token)
            return client.code(try await client.transport.send(frame), binding: binding)
        }
        let old = try await viaFirst.token()
        let oldFirst = try await code(viaFirst, old)
        let oldSecond = try await code(viaSecond, old)
        XCTAssertNil(oldFirst)
        XCTAssertNil(oldSecond, "a token of one replica works on the other")
        // The secret is replaced: both replicas hold the old one.
        let shore = try await connect(fleet.shore.url)
        try await shore.execute("DELETE FROM fleetsync.auth_secret")
        let seen: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.seen_exchange")
        let oldOnFirst = try await code(viaFirst, old)
        let oldOnSecond = try await code(viaSecond, old)
        XCTAssertEqual(oldOnFirst, .unauthenticated)
        XCTAssertEqual(oldOnSecond, .unauthenticated)
        let seenAfter: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.seen_exchange")
        XCTAssertEqual(seenAfter, seen, "a refused request records nothing")
        // A token under the new secret, from the second replica, works on both.
        let fresh = try await viaSecond.token()
        let freshFirst = try await code(viaFirst, fresh)
        let freshSecond = try await code(viaSecond, fresh)
        XCTAssertNil(freshFirst, "the first replica read the new secret when the token did not verify with its own")
        XCTAssertNil(freshSecond)
        // Revoked: its valid token is refused at the next exchange, on both.
        let revoke = try FleetSyncBinary.run(["revoke", "--config", fleet.shore.configPath, "--vessel", "aurora"])
        XCTAssertEqual(revoke.status, 0, revoke.error)
        let revokedOnFirst = try await code(viaFirst, fresh)
        let revokedOnSecond = try await code(viaSecond, fresh)
        XCTAssertEqual(revokedOnFirst, .unauthenticated)
        XCTAssertEqual(revokedOnSecond, .unauthenticated)
    }

    /// The queue read with its positions in one statement (``VesselQueue/positionedPageSQL``)
    /// goes through the (vessel, pos) index whatever the outbox's statistics say, as the page
    /// alone does (QueuePlanTests).
    func testTheQueueReadWithItsPositionsUsesTheIndexWithStaleStatistics() async throws {
        let (_, db) = try await installedNode(role: .shore, nodeID: "shore")
        try await fillOutboxBehindStaleStatistics(db)
        try await db.execute("UPDATE fleetsync.outbox_counter SET last_pos = 100000")
        var binds = PostgresBindings()
        binds.append(Int64(0))
        binds.append("aurora")
        binds.append(Int64(1_001))
        binds.append(Int64(1_048_576))
        binds.append(Int64(0))
        let plan = try await db.rows("EXPLAIN (ANALYZE, COSTS OFF) " + VesselQueue.positionedPageSQL, binds).map { try $0.decode(String.self) }.joined(separator: "\n")
        XCTAssertTrue(plan.contains("Index Scan using outbox_vessel_pos"), plan)
        let outboxScans = plan.split(separator: "\n").filter { $0.contains("Seq Scan") && !$0.contains("outbox_counter") }
        XCTAssertTrue(outboxScans.isEmpty, plan)
        XCTAssertFalse(plan.contains("Bitmap Heap Scan") || plan.contains("external merge"), plan)
        // Prepared, PostgreSQL may settle on a generic plan: that one reads through the index too.
        try await db.execute("PREPARE rt_queue(int8, text, int8, int8, int8) AS " + VesselQueue.positionedPageSQL)
        try await db.execute("SET plan_cache_mode = force_generic_plan")
        let generic = try await db.rows("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE rt_queue(0, 'aurora', 1001, 1048576, 0)").map { try $0.decode(String.self) }.joined(separator: "\n")
        try await db.execute("RESET plan_cache_mode")
        XCTAssertTrue(generic.contains("Index Scan using outbox_vessel_pos"), generic)
        XCTAssertTrue(generic.split(separator: "\n").filter { $0.contains("Seq Scan") && !$0.contains("outbox_counter") }.isEmpty, generic)
        XCTAssertFalse(generic.contains("Bitmap Heap Scan") || generic.contains("external merge"), generic)
        print("the queue read's generic plan:\n" + generic)
        let rows = try await db.rows(VesselQueue.positionedPageSQL, binds)
        XCTAssertEqual(try rows.map { try $0.value(2, as: Int64.self) }, Array(1...1_001).map(Int64.init))
        XCTAssertEqual(try rows[0].value(0, as: Int64.self), 100_000)
    }

    /// Pruning after an exchange: every time in a quiet process (a test's syncs see the log pruned
    /// after each, one vessel's many exchanges a second too), at most once per interval when a
    /// fleet exchanges, even when each exchange happens to run alone.
    func testAFleetsExchangesPruneAtMostOncePerIntervalAQuietProcessAfterEveryExchange() async throws {
        let schedule = RetentionSchedule(interval: .milliseconds(400), busyVessels: 8)
        func claim(_ vessel: String) -> Bool {
            let claimed = schedule.claim(othersInProgress: false, vessel: vessel)
            if claimed { schedule.done() }
            return claimed
        }
        // One vessel, twenty exchanges, each alone: each prunes.
        XCTAssertEqual((0..<20).map { _ in claim("aurora") }, Array(repeating: true, count: 20))
        // Eight vessels: still quiet.
        XCTAssertEqual((1...7).map { claim("v\($0)") }, Array(repeating: true, count: 7))
        // A fleet: past eight vessels in the interval, alone or not, at most once per interval.
        XCTAssertEqual((8..<40).map { claim("v\($0)") }.filter { $0 }.count, 0)
        XCTAssertFalse(claim("aurora"))
        XCTAssertFalse(schedule.claim(othersInProgress: true))
        // The next interval starts busy (a fleet goes on), but one prune per interval goes.
        try await Task.sleep(for: .milliseconds(450))
        XCTAssertTrue(claim("aurora"))
        XCTAssertFalse(claim("aurora"), "the interval after a busy one starts busy")
        try await Task.sleep(for: .milliseconds(850))
        XCTAssertTrue(claim("aurora"))
        XCTAssertTrue(claim("aurora"), "quiet again after a quiet interval")
        // One at a time while it runs.
        XCTAssertTrue(schedule.claim(othersInProgress: false))
        XCTAssertFalse(schedule.claim(othersInProgress: false))
        schedule.done()
    }
}
