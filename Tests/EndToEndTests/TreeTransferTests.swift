import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest

/// Self-referencing trees larger than a batch (issue 15, item 1): a trip with a chain of steps,
/// each step referencing its trip and its parent step, moved between vessels and inserted
/// children first, with batches of 100 events.
final class TreeTransferTests: DatabaseTestCase {
    static let schema = """
        CREATE TABLE trip (id uuid PRIMARY KEY, vessel_code text, name text);
        CREATE TABLE step (
          id uuid PRIMARY KEY,
          trip_id uuid NOT NULL REFERENCES trip (id),
          parent_id uuid REFERENCES step (id),
          label text
        );
        """
    static let tables = """
        [[table]]
        name = "trip"
        route = { column = "vessel_code" }
        default_owner = "shore"

        [[table]]
        name = "step"
        route = { parent = "trip", via = "trip_id" }
        default_owner = "shore"

        """
    static let limits = "[limits]\nbatch_events = 100\nbatch_bytes = 1048576"

    static func makeFleet() async throws -> Fleet {
        try await Fleet.make(vessels: ["aurora", "borealis"], limits: limits, schema: schema, tables: tables)
    }

    /// SQL inserting a chain of `count` steps under `trip`, each the child of the one before, in
    /// one statement that inserts the children first when `childFirst` (PostgreSQL checks the
    /// foreign keys at the end of the statement).
    static func chain(trip: UUID, count: Int, childFirst: Bool, tag: String) -> (sql: String, ids: [UUID]) {
        let ids = (0..<count).map { _ in UUID() }
        let values = ids.enumerated().map { i, id in
            "('\(id.lowercasedText)'::uuid, \(i == 0 ? "NULL" : "'\(ids[i - 1].lowercasedText)'")::uuid, \(i))"
        }.joined(separator: ", ")
        let sql = """
            INSERT INTO step (id, trip_id, parent_id, label)
            SELECT v.id, '\(trip.lowercasedText)', v.parent, '\(tag)-' || v.n FROM (VALUES \(values)) AS v(id, parent, n)
            ORDER BY v.n \(childFirst ? "DESC" : "ASC");
            """
        return (sql, ids)
    }

    func counts(_ db: DatabaseSession) async throws -> (trips: Int64, steps: Int64, deadLetters: Int64, waiting: Int64) {
        let rows = try await db.rows("""
            SELECT (SELECT count(*) FROM trip WHERE NOT is_deleted), (SELECT count(*) FROM step WHERE NOT is_deleted),
                   (SELECT count(*) FROM fleetsync.dead_letter), (SELECT count(*) FROM fleetsync.waiting)
            """)
        return try rows[0].decode((Int64, Int64, Int64, Int64).self)
    }

    /// A trip with 150 steps moves to another vessel: the old vessel removes all of them, deepest
    /// first across batches, with nothing dead-lettered or waiting; the new one receives them all.
    func testMovingATreeLargerThanABatch() async throws {
        let fleet = try await Self.makeFleet()
        let server = try fleet.serve()
        defer { server.stop() }
        let trip = UUID()
        let (insert, _) = Self.chain(trip: trip, count: 150, childFirst: false, tag: "s")
        try Fixtures.runScript("INSERT INTO trip (id, vessel_code, name) VALUES ('\(trip.lowercasedText)', 'aurora', 'T');\n" + insert, url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        let aurora = try await connect(fleet.vessels[0].url)
        let borealis = try await connect(fleet.vessels[1].url)
        let before = try await counts(aurora)
        XCTAssertEqual(before.steps, 150)

        try Fixtures.runScript("UPDATE trip SET vessel_code = 'borealis';", url: fleet.shore.url)
        let shore = try await connect(fleet.shore.url)
        try await OutboxReader(session: shore).sequence()
        // The offboardings are queued deepest step first, the baseline parents first.
        let offboardOrder: String = try await shore.scalar("""
            SELECT string_agg(coalesce(s.label, 'trip'), ',' ORDER BY o.pos) FROM fleetsync.outbox o LEFT JOIN step s ON s.id = o.row_id WHERE o.op = 'O'
            """)
        XCTAssertEqual(offboardOrder, ((0..<150).reversed().map { "s-\($0)" } + ["trip"]).joined(separator: ","))
        let baselineOrder: String = try await shore.scalar("""
            SELECT string_agg(coalesce(s.label, 'trip'), ',' ORDER BY o.pos) FROM fleetsync.outbox o LEFT JOIN step s ON s.id = o.row_id WHERE o.op = 'B'
            """)
        XCTAssertEqual(baselineOrder, (["trip"] + (0..<150).map { "s-\($0)" }).joined(separator: ","))

        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        let old = try await counts(aurora)
        XCTAssertEqual(old.trips, 0)
        XCTAssertEqual(old.steps, 0, "every step left the old vessel")
        XCTAssertEqual(old.deadLetters, 0)
        XCTAssertEqual(old.waiting, 0)
        let new = try await counts(borealis)
        XCTAssertEqual(new.trips, 1)
        XCTAssertEqual(new.steps, 150)
        XCTAssertEqual(new.deadLetters + new.waiting, 0)
    }

    /// The old vessel removes a tree whatever the order of the offboardings: a row that a row
    /// still to be removed references waits (it is not dead-lettered) and goes when its children
    /// have gone, in a later batch.
    func testOffboardingsParentsFirstWaitForTheirChildren() async throws {
        let (configuration, db) = try await installedNode(role: .vessel, nodeID: "aurora", tables: [
            TableConfiguration(name: "trip", route: .column("vessel_code")),
            TableConfiguration(name: "step", route: .parent(table: "trip", via: "trip_id")),
        ], schema: Self.schema)
        let applier = try await makeApplier(configuration, db)
        let trip = UUID()
        let (insert, ids) = Self.chain(trip: trip, count: 30, childFirst: false, tag: "s")
        try await db.execute("SET fleetsync.applying = 'on'")
        try await db.execute("INSERT INTO trip (id, vessel_code, name) VALUES ('\(trip.lowercasedText)', 'aurora', 'T')")
        try await db.execute(insert)
        try await db.execute("RESET fleetsync.applying")
        // Offboardings parents first, in batches of 10: each batch's deletes fail on the rows
        // that the next batches remove.
        var offboards = [ChangeEvent(table: "trip", rowID: trip, fields: [:], origin: "shore", offboard: true)]
        offboards += ids.map { ChangeEvent(table: "step", rowID: $0, fields: [:], origin: "shore", offboard: true) }
        var cursor: Int64 = 0
        for start in stride(from: 0, to: offboards.count, by: 10) {
            cursor += 1
            let report = try await applier.apply(Array(offboards[start..<min(start + 10, offboards.count)]), from: "shore", cursor: cursor)
            XCTAssertEqual(report.deadLettered, 0)
        }
        let left = try await counts(db)
        XCTAssertEqual(left.trips + left.steps, 0, "the whole tree left")
        XCTAssertEqual(left.deadLetters + left.waiting, 0)
    }

    /// Steps inserted children first by one statement, on the shore and on a vessel, more than a
    /// batch of them: children that arrive before their parents wait and apply when the parents
    /// arrive; nothing is dead-lettered and every node ends with every step.
    func testChildFirstInsertsLargerThanABatch() async throws {
        let fleet = try await Self.makeFleet()
        let server = try fleet.serve()
        defer { server.stop() }
        let trip = UUID()
        let (shoreSteps, _) = Self.chain(trip: trip, count: 150, childFirst: true, tag: "shore")
        try Fixtures.runScript("INSERT INTO trip (id, vessel_code, name) VALUES ('\(trip.lowercasedText)', 'aurora', 'T');\n" + shoreSteps, url: fleet.shore.url)
        let first = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(first.status, 0, first.output + first.error)
        let aurora = try await connect(fleet.vessels[0].url)
        let shore = try await connect(fleet.shore.url)
        var vessel = try await counts(aurora)
        XCTAssertEqual(vessel.steps, 150)
        XCTAssertEqual(vessel.deadLetters + vessel.waiting, 0)

        // The vessel writes its own chain, children first, under the same trip.
        let (vesselSteps, _) = Self.chain(trip: trip, count: 150, childFirst: true, tag: "aurora")
        try Fixtures.runScript(vesselSteps, url: fleet.vessels[0].url)
        let second = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(second.status, 0, second.output + second.error)
        let onShore = try await counts(shore)
        XCTAssertEqual(onShore.steps, 300)
        XCTAssertEqual(onShore.deadLetters + onShore.waiting, 0)
        vessel = try await counts(aurora)
        XCTAssertEqual(vessel.steps, 300)
        XCTAssertEqual(vessel.deadLetters + vessel.waiting, 0)
    }
}
