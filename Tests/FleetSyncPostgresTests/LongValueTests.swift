import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

/// Issue 15, items 2 and 3, on real PostgreSQL: the longest numbers and the deepest `jsonb`
/// PostgreSQL accepts leave a vessel's outbox, cross the wire and apply on the shore, and come
/// back from the shore's queue; an event that still cannot be read (deeper than the limit, which
/// PostgreSQL accepts once `max_stack_depth` is raised, or not JSON the reader expects) goes to
/// the dead-letter queue with telemetry, and the stream goes on.
final class LongValueTests: DatabaseTestCase {
    static let columns = "ALTER TABLE seafarer ADD COLUMN salary numeric, ADD COLUMN profile jsonb;"

    static func tables() -> [TableConfiguration] {
        [
            TableConfiguration(name: "vessel", route: .broadcast),
            TableConfiguration(name: "certificate_type", route: .broadcast, onDelete: .refuse),
            TableConfiguration(name: "seafarer", route: .column("vessel_code"), owners: ["contact_number": .vessel, "notes": .shared, "salary": .shared, "profile": .shared]),
            TableConfiguration(name: "certificate", route: .parent(table: "seafarer", via: "seafarer_id"), owners: ["status": .shared, "remarks": .shared]),
        ]
    }

    /// `1e1100` as PostgreSQL writes it, and the longest numeric text it writes (147,457 characters).
    static let e1100 = "1" + String(repeating: "0", count: 1_100)
    static let longestNumeric = "-" + String(repeating: "9", count: 131_072) + "." + String(repeating: "9", count: 16_383)

    /// JSON text of `depth` nested arrays around a number (10,000 levels: PostgreSQL accepts it by default).
    static func nested(_ depth: Int, around leaf: String = "1") -> String {
        String(repeating: "[", count: depth) + leaf + String(repeating: "]", count: depth)
    }

    static let rows: [(name: String, salary: String, profile: String)] = [
        ("Ana", e1100, #"{"n": 1e1100}"#),
        ("Bo", longestNumeric, nested(64)),
        ("Cy", "0.5", nested(10_000, around: #"{"deep": 2e1100}"#)),
    ]

    static func insertRows(_ vessel: String, prefix: String) -> String {
        "INSERT INTO seafarer (vessel_code, full_name, salary, profile) VALUES "
            + rows.map { "('\(vessel)', '\(prefix)\($0.name)', \($0.salary), '\($0.profile)')" }.joined(separator: ", ") + ";"
    }

    static let snapshot = "SELECT coalesce(string_agg(full_name || ' ' || salary::text || ' ' || md5(profile::text), E'\\n' ORDER BY full_name), '') FROM seafarer"

    func node(_ role: NodeRole, _ id: String) async throws -> (FleetSyncConfiguration, DatabaseSession) {
        try await installedNode(role: role, nodeID: id, tables: Self.tables(), schema: Self.columns)
    }

    /// Vessel to shore: the outbox read, the request encoded and decoded (as the shore reads it,
    /// left encoded), the shore's apply. Shore to vessel: the shore's queue, the response, the
    /// vessel's apply. Before: "number of 1101 bytes exceeds the limit of 1024" on the wire, and
    /// the shore's queue refused the 64-deep value ("nesting deeper than 64").
    func testLongNumbersAndDeepJSONBCrossBothWays() async throws {
        let (shoreConfiguration, shore) = try await node(.shore, "shore")
        let (vesselConfiguration, vessel) = try await node(.vessel, "aurora")
        // Shore to vessel: the shore's rows for aurora, through its queue and a response.
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A');" + Self.insertRows("aurora", prefix: "s-"), url: shoreConfiguration.databaseURL)
        _ = try await OutboxReader(session: shore).sequence()
        let queued = try await shore.transaction { tx in
            try await tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return try await VesselQueue(configuration: shoreConfiguration, session: tx).page(vessel: "aurora", after: 0, limit: 100, byteBudget: 64 << 20)
        }
        XCTAssertEqual(queued.events.filter { $0.table == "seafarer" }.count, 3)
        let response = WireCodec.encode(ExchangeResponse(shore: "shore", acknowledged: 0, events: queued.events, cursor: queued.cursor, more: false))
        let (_, answer) = try WireEventBatch.response(response)
        let vesselApplier = try await makeApplier(vesselConfiguration, vessel)
        _ = try await vesselApplier.apply(batch: answer, from: "shore")
        let shoreRows: String = try await shore.scalar(Self.snapshot)
        let vesselRows: String = try await vessel.scalar(Self.snapshot)
        XCTAssertEqual(vesselRows, shoreRows)
        XCTAssertTrue(vesselRows.contains("s-Ana " + Self.e1100), String(vesselRows.prefix(200)))
        XCTAssertTrue(vesselRows.contains("s-Bo " + Self.longestNumeric))

        // Vessel to shore: the vessel's rows, through its outbox and a request read as the shore reads it.
        try Fixtures.runScript(Self.insertRows("aurora", prefix: "v-"), url: vesselConfiguration.databaseURL)
        let reader = OutboxReader(session: vessel)
        let changes = try await reader.poll(after: 0, limit: 100).filter { $0.table == "seafarer" }
        XCTAssertEqual(changes.count, 3)
        let table = vesselConfiguration.table(named: "seafarer")!
        let events = changes.map { $0.event(node: "aurora", role: .vessel, table: table) }
        let request = WireCodec.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: events, upTo: changes.last!.position))
        let (_, batch) = try WireEventBatch.request(request)
        let shoreApplier = try await makeApplier(shoreConfiguration, shore)
        let report = try await shoreApplier.apply(batch: batch, from: "aurora")
        XCTAssertEqual(report.deadLettered, 0)
        let sent: String = try await vessel.scalar(Self.snapshot)
        let received: String = try await shore.scalar(Self.snapshot)
        XCTAssertEqual(received, sent)
        XCTAssertEqual(sent.split(separator: "\n").count, 6)
        for db in [shore, vessel] {
            let dead: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.dead_letter")
            XCTAssertEqual(dead, 0)
        }
    }

    /// A value one level past the limit (PostgreSQL takes it with `max_stack_depth` raised) and
    /// a delta that is not a JSON object, in a vessel's outbox: each is moved into the dead-letter
    /// queue with its text and a telemetry row, and the events behind them are read. Before: the
    /// outbox read failed at every exchange (the vessel stopped for good).
    func testUnreadableOutboxEventIsDeadLetteredAndTheOutboxGoesOn() async throws {
        let (configuration, vessel) = try await node(.vessel, "aurora")
        // jsonb values travel wrapped in a one-element array (ColumnCodec): one level past the limit.
        let tooDeep = Self.nested(JSONLimits.maximumDepth)
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A');
            SET max_stack_depth = '7MB';
            INSERT INTO seafarer (vessel_code, full_name, profile) VALUES ('aurora', 'Deep', '\(tooDeep)');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Flat');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Odd');
            INSERT INTO seafarer (vessel_code, full_name, profile) VALUES ('aurora', 'Limit', '\(Self.nested(10_000))');
            """, url: configuration.databaseURL)
        let reader = OutboxReader(session: vessel)
        _ = try await reader.sequence()
        try await vessel.execute("UPDATE fleetsync.outbox SET delta = '[1]'::jsonb WHERE delta->>'full_name' = 'Odd'")
        let deepPosition: Int64 = try await vessel.scalar("SELECT pos FROM fleetsync.outbox WHERE table_name = 'seafarer' ORDER BY pos LIMIT 1")

        // A page of 3 (the vessel row, Deep, Flat; then Odd) comes back full without what was set
        // aside: a short page would tell the caller that nothing more is pending.
        let read = try await reader.read(after: 0, limit: 3, byteBudget: nil)
        XCTAssertEqual(read.count, 3)
        let names = read.compactMap { $0.change.delta["full_name"]?.stringValue }
        XCTAssertEqual(names, ["Flat", "Limit"], "the events behind the unreadable ones are read")
        let left: Int64 = try await vessel.scalar("SELECT count(*) FROM fleetsync.outbox WHERE table_name = 'seafarer'")
        XCTAssertEqual(left, 2, "the unreadable events left the outbox")

        let letters = try await DeadLetterQueue.list(on: vessel)
        XCTAssertEqual(letters.count, 2)
        let deep = try XCTUnwrap(letters.first { $0.message.contains("deeper than \(JSONLimits.maximumDepth)") }, "\(letters.map(\.message))")
        XCTAssertEqual(deep.table, "seafarer")
        XCTAssertTrue(deep.message.contains("outbox position \(deepPosition)"), deep.message)
        // Nothing lost: the stored text is kept whole (a JSON string inside the entry).
        let kept: String = try await vessel.scalar("SELECT event->'unreadable'->>'text' FROM fleetsync.dead_letter WHERE id = \(deep.id)")
        XCTAssertTrue(kept.contains(tooDeep), "the dead letter keeps the delta's text")
        XCTAssertTrue(letters.contains { $0.message.contains("not an object") })
        let telemetry: Int64 = try await vessel.scalar("SELECT count(*) FROM fleetsync.telemetry WHERE kind = 'unreadable_event' AND detail->>'source' = 'outbox'")
        XCTAssertEqual(telemetry, 2)
        // `dlq retry` cannot apply it, and says so (it is not silently dropped as applied).
        XCTAssertThrowsError(try ChangeEvent(json: JSONParser.parse(deep.event))) {
            XCTAssertTrue("\($0)".contains("cannot be applied by retrying"), "\($0)")
        }
        let again = try await reader.read(after: 0, limit: 100, byteBudget: nil)
        XCTAssertEqual(again.count, read.count)
        let stillTwo = try await DeadLetterQueue.list(on: vessel)
        XCTAssertEqual(stillTwo.count, 2)
        // `dlq retry --all` counts them as failed, keeps them, and does not stop at the first.
        let retried = try await DeadLetterQueue.retry(ids: nil, applier: try await makeApplier(configuration, vessel))
        XCTAssertEqual(retried.failed, 2)
        XCTAssertEqual(retried.applied, 0)
        let kept2 = try await DeadLetterQueue.list(on: vessel)
        XCTAssertEqual(kept2.count, 2)
    }

    /// The shore's queue holding an event it cannot read: every vessel's read skips it, it is
    /// recorded once (not once per vessel or per read), and the events behind it are sent.
    /// Before: every exchange that reached it failed with 500, for every vessel.
    func testUnreadableQueuedEventIsDeadLetteredOnceAndSkipped() async throws {
        let (configuration, shore) = try await node(.shore, "shore")
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A'), ('borealis', 'B');
            SET max_stack_depth = '7MB';
            INSERT INTO vessel (code, name, flag) VALUES ('deep', 'D', 'x');
            INSERT INTO seafarer (vessel_code, full_name, profile) VALUES ('aurora', 'Deep', '\(Self.nested(JSONLimits.maximumDepth))');
            INSERT INTO seafarer (vessel_code, full_name, profile) VALUES ('aurora', 'Limit', '\(Self.nested(10_000))');
            UPDATE vessel SET name = 'D2' WHERE code = 'deep';
            """, url: configuration.databaseURL)
        _ = try await OutboxReader(session: shore).sequence()
        // A broadcast event made unreadable: it is in every vessel's queue.
        try await shore.execute("UPDATE fleetsync.outbox SET delta = '\"not an object\"'::jsonb WHERE table_name = 'vessel' AND delta->>'name' = 'D2'")
        func read(_ vessel: String) async throws -> VesselQueue.Batch {
            try await shore.transaction { tx in
                try await tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return try await VesselQueue(configuration: configuration, session: tx).page(vessel: vessel, after: 0, limit: 100, byteBudget: 64 << 20)
            }
        }
        let last: Int64 = try await shore.scalar("SELECT max(pos) FROM fleetsync.outbox")
        for _ in 0..<2 {
            let aurora = try await read("aurora")
            XCTAssertEqual(aurora.events.filter { $0.table == "seafarer" }.compactMap { $0.fields["full_name"]?.value.stringValue }, ["Limit"])
            XCTAssertFalse(aurora.events.contains { $0.table == "vessel" && $0.fields["name"]?.value == .string("D2") })
            XCTAssertEqual(aurora.cursor, last, "the cursor moves past what was set aside")
            let borealis = try await read("borealis")
            XCTAssertEqual(borealis.cursor, last)
        }
        let letters = try await DeadLetterQueue.list(on: shore)
        XCTAssertEqual(letters.count, 2, "\(letters.map(\.message))")
        XCTAssertEqual(Set(letters.map(\.table)), ["seafarer", "vessel"])
        XCTAssertTrue(letters.allSatisfy { $0.message.contains("shore_queue position") })
        let telemetry: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.telemetry WHERE kind = 'unreadable_event' AND detail->>'source' = 'shore_queue'")
        XCTAssertEqual(telemetry, 2)
        let kept: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.outbox WHERE table_name = 'seafarer' AND delta->>'full_name' = 'Deep'")
        XCTAssertEqual(kept, 1, "the shore's outbox row stays (the dead letter records it)")
    }

    /// Quarantined values nested deep (64 and 10,000 levels) drain; a row that cannot be read is
    /// dead-lettered and the drain goes on. Before: `quarantine drain` failed at every start.
    func testQuarantineDrainsDeepValuesAndSetsAsideWhatItCannotRead() async throws {
        let (configuration, vessel) = try await node(.vessel, "aurora")
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A');
            INSERT INTO seafarer (id, vessel_code, full_name) VALUES
              ('0193a000-0000-7000-8000-000000000001', 'aurora', 'One'),
              ('0193a000-0000-7000-8000-000000000002', 'aurora', 'Two'),
              ('0193a000-0000-7000-8000-000000000003', 'aurora', 'Three');
            SET max_stack_depth = '7MB';
            INSERT INTO fleetsync.schema_quarantine (table_name, row_id, fields, clocks, reasons) VALUES
              ('seafarer', '0193a000-0000-7000-8000-000000000001', '{"profile": [\(Self.nested(64))]}', '{"profile": [99, "shore"]}', '{"profile": "t"}'),
              ('seafarer', '0193a000-0000-7000-8000-000000000002', '{"profile": [\(Self.nested(JSONLimits.maximumDepth))]}', '{"profile": [99, "shore"]}', '{"profile": "t"}'),
              ('seafarer', '0193a000-0000-7000-8000-000000000003', '{"profile": [\(Self.nested(10_000))], "salary": \(Self.e1100)}', '{"profile": [99, "shore"], "salary": [99, "shore"]}', '{"profile": "t"}');
            """, url: configuration.databaseURL)
        let applier = try await makeApplier(configuration, vessel)
        let result = try await QuarantineVault.drain(applier: applier)
        XCTAssertEqual(result.drained, 3)
        XCTAssertEqual(result.remaining, 0)
        let applied: String = try await vessel.scalar("""
            SELECT string_agg(full_name || ' ' || coalesce((profile = CASE full_name WHEN 'One' THEN '\(Self.nested(64))'::jsonb
                                                                               WHEN 'Three' THEN '\(Self.nested(10_000))'::jsonb END)::text, '-')
                              || ' ' || coalesce(salary::text, '-'), ',' ORDER BY full_name) FROM seafarer
            """)
        XCTAssertEqual(applied, "One true -,Three true \(Self.e1100),Two - -")
        let letters = try await DeadLetterQueue.list(on: vessel)
        XCTAssertEqual(letters.count, 1)
        XCTAssertEqual(letters.first?.rowID?.lowercasedText, "0193a000-0000-7000-8000-000000000002")
        XCTAssertTrue(letters.first?.message.contains("quarantine") ?? false)
        let telemetry: Int64 = try await vessel.scalar("SELECT count(*) FROM fleetsync.telemetry WHERE kind = 'unreadable_event' AND detail->>'source' = 'quarantine'")
        XCTAssertEqual(telemetry, 1)
        let again = try await QuarantineVault.drain(applier: applier)
        XCTAssertEqual(again.remaining, 0)
    }
}
