import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

final class ApplierTests: DatabaseTestCase {
    /// Events as the shore would send them.
    func event(_ table: String, _ id: UUID, _ fields: [String: JSONValue], clock: Int64, node: String = "shore", base: Int64 = 0) -> ChangeEvent {
        ChangeEvent(table: table, rowID: id, fields: fields.mapValues { FieldChange(value: $0, clock: FieldClock(counter: clock, node: node)) }, origin: node, baseVersion: base)
    }

    func testBatchFromAnotherNodeAppliesWithoutEchoAdvancingClockAndCursor() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let vesselID = UUID(), seafarerID = UUID(), certID = UUID(), typeID = UUID()
        // Children arrive before their parents, and updates before nothing.
        let events = [
            event("certificate", certID, ["seafarer_id": .string(seafarerID.uuidString), "certificate_type_id": .string(typeID.uuidString), "number": .string("C-1"), "status": .string("valid")], clock: 12),
            event("seafarer", seafarerID, ["full_name": .string("Ana"), "vessel_code": .string("aurora")], clock: 11),
            event("seafarer", seafarerID, ["rank": .string("Master")], clock: 15),
            event("certificate_type", typeID, ["code": .string("BST"), "title": .string("Basic safety")], clock: 10),
            event("vessel", vesselID, ["code": .string("aurora"), "name": .string("MV Aurora")], clock: 9),
        ]
        let report = try await applier.apply(events, from: "shore", cursor: 42)
        XCTAssertEqual(report.appliedRows, 4)
        XCTAssertEqual(report.deadLettered, 0)
        let rank: String = try await db.scalar("SELECT rank FROM seafarer WHERE id = '\(seafarerID)'")
        XCTAssertEqual(rank, "Master")
        let outbox: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM fleetsync.outbox) + (SELECT count(*) FROM fleetsync.capture_log)")
        XCTAssertEqual(outbox, 0, "applied changes are not captured again")
        let cursor: Int64 = try await db.scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        XCTAssertEqual(cursor, 42)
        let version: Int64 = try await db.scalar("SELECT sync_version FROM seafarer")
        XCTAssertEqual(version, 15)
        // The node's clock moved past what it saw: a local write now gets a later clock.
        try await db.execute("UPDATE seafarer SET contact_number = '+1'")
        let local: Int64 = try await db.scalar("SELECT version FROM fleetsync.capture_log")
        XCTAssertGreaterThan(local, 15)

        // The same batch again changes nothing.
        let again = try await applier.apply(events, from: "shore", cursor: 42)
        XCTAssertEqual(again.appliedRows, 0)
        XCTAssertEqual(again.unchangedRows, 4)
        let outboxAfter: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM fleetsync.outbox) + (SELECT count(*) FROM fleetsync.capture_log)")
        XCTAssertEqual(outboxAfter, 1)
    }

    /// The receiver reads only the columns an update touches: the other columns' values and
    /// clocks stay as they were, and a later older write to one of them still loses.
    func testAnUpdateOfOneColumnKeepsTheOtherColumnsAndTheirClocks() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let vesselID = UUID(), seafarerID = UUID()
        _ = try await applier.apply([
            event("vessel", vesselID, ["code": .string("aurora"), "name": .string("MV Aurora")], clock: 9),
            event("seafarer", seafarerID, ["full_name": .string("Ana"), "vessel_code": .string("aurora"), "rank": .string("Mate")], clock: 20),
        ], from: "shore", cursor: 1)
        let one = try await applier.apply([event("seafarer", seafarerID, ["notes": .string("checked")], clock: 30)], from: "shore", cursor: 2)
        XCTAssertEqual(one.appliedRows, 1)
        let row: String = try await db.scalar("SELECT full_name || '/' || rank || '/' || notes FROM seafarer")
        XCTAssertEqual(row, "Ana/Mate/checked")
        let clocks: String = try await db.scalar("SELECT sync_clock::text FROM seafarer")
        for field in ["full_name", "vessel_code", "rank", "notes"] { XCTAssertTrue(clocks.contains("\"\(field)\""), "\(field)'s clock kept: \(clocks)") }
        // rank's clock (20) still decides: an older write of it loses, a newer one wins.
        let older = try await applier.apply([event("seafarer", seafarerID, ["rank": .string("Cook")], clock: 15)], from: "shore", cursor: 3)
        XCTAssertEqual(older.appliedRows, 0)
        _ = try await applier.apply([event("seafarer", seafarerID, ["rank": .string("Master")], clock: 40)], from: "shore", cursor: 4)
        let after: String = try await db.scalar("SELECT full_name || '/' || rank || '/' || notes FROM seafarer")
        XCTAssertEqual(after, "Ana/Master/checked")
    }

    func testSelfReferencingChainDeliveredInReverseApplies() async throws {
        let tables = Fixtures.exampleTables() + [TableConfiguration(name: "task", route: .broadcast)]
        let (configuration, db) = try await installedNode(tables: tables, schema: "CREATE TABLE task (id uuid PRIMARY KEY, parent_id uuid REFERENCES task (id), title text);")
        var applier = try await makeApplier(configuration, db)
        applier.chunkSize = 100  // the chain spans several statements
        let ids = (0..<1000).map { _ in UUID() }
        var events: [ChangeEvent] = []
        for i in (0..<1000).reversed() {
            let parent: JSONValue = i == 0 ? .null : .string(ids[i - 1].uuidString)
            events.append(event("task", ids[i], ["title": .string("task \(i)"), "parent_id": parent], clock: Int64(i + 1)))
        }
        let report = try await applier.apply(events, from: "shore")
        XCTAssertEqual(report.appliedRows, 1000)
        XCTAssertEqual(report.deadLettered, 0)
        let count: Int64 = try await db.scalar("SELECT count(*) FROM task")
        XCTAssertEqual(count, 1000)
    }

    func testForeignKeyCycleStopsStartUpNamingTheCycle() async throws {
        let schema = """
            CREATE TABLE ping (id uuid PRIMARY KEY, pong_id uuid);
            CREATE TABLE pong (id uuid PRIMARY KEY, ping_id uuid REFERENCES ping (id));
            ALTER TABLE ping ADD FOREIGN KEY (pong_id) REFERENCES pong (id);
            """
        var tables = [TableConfiguration(name: "ping", route: .broadcast), TableConfiguration(name: "pong", route: .broadcast)]
        let (configuration, db) = try await installedNode(tables: tables, schema: schema)
        do {
            _ = try await LocalSchema.load(configuration: configuration, session: db)
            XCTFail("a cycle must stop start-up")
        } catch let error as PlanningError {
            XCTAssertEqual(error.cycle, ["ping", "pong", "ping"])
        }
        tables[0].priority = 0
        var fixed = configuration
        fixed.tables = tables
        let schemaLoaded = try await LocalSchema.load(configuration: fixed, session: db)
        XCTAssertEqual(schemaLoaded.plan.tableOrder, ["ping", "pong"])
    }

    func testPoisonRowGoesToDeadLetterQueueRestAppliesAndRetryConverges() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let good = (0..<20).map { _ in UUID() }
        let poison = UUID()
        var events = good.enumerated().map { i, id in event("certificate_type", id, ["code": .string("T\(i)"), "title": .string("ok"), "validity_months": .number("12")], clock: 5) }
        events.insert(event("certificate_type", poison, ["code": .string("BAD"), "title": .string("negative"), "validity_months": .number("-1")], clock: 5), at: 7)
        let report = try await applier.apply(events, from: "shore", cursor: 7)
        XCTAssertEqual(report.appliedRows, 20)
        XCTAssertEqual(report.deadLettered, 1)
        let letters = try await DeadLetterQueue.list(on: db)
        XCTAssertEqual(letters.count, 1)
        XCTAssertEqual(letters.first?.rowID, poison)
        XCTAssertEqual(letters.first?.sqlState, "23514")
        XCTAssertEqual(letters.first?.constraint, "certificate_type_validity_months_check")
        let telemetry: String = try await db.scalar("SELECT detail::text FROM fleetsync.telemetry WHERE kind = 'apply_failure'")
        let detail = try JSONParser.parse(telemetry).objectValue!
        XCTAssertEqual(detail["sql_state"], .string("23514"))
        XCTAssertEqual(detail["constraint"], .string("certificate_type_validity_months_check"))
        XCTAssertEqual(detail["row_id"], .string(poison.uuidString.lowercased()))
        XCTAssertNotNil(detail["event"]?.objectValue)
        let cursor: Int64 = try await db.scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        XCTAssertEqual(cursor, 7, "the batch's cursor advances even though one row was set aside")

        // Retrying before the cause is fixed keeps it, counting the attempt.
        let first = try await DeadLetterQueue.retry(ids: nil, applier: applier)
        XCTAssertEqual(first.failed, 1)
        let attempts: Int32 = try await db.scalar("SELECT attempts FROM fleetsync.dead_letter")
        XCTAssertEqual(attempts, 2)
        // Fix the cause, retry: the row converges and the queue empties.
        try await db.execute("ALTER TABLE certificate_type DROP CONSTRAINT certificate_type_validity_months_check")
        let second = try await DeadLetterQueue.retry(ids: nil, applier: applier)
        XCTAssertEqual(second.applied, 1)
        let months: Int32 = try await db.scalar("SELECT validity_months FROM certificate_type WHERE id = '\(poison)'")
        XCTAssertEqual(months, -1)
        let remaining = try await DeadLetterQueue.list(on: db)
        XCTAssertTrue(remaining.isEmpty)
    }

    /// A row whose parent has not arrived waits (not dead-lettered) and applies by itself with
    /// the batch that brings the parent.
    func testMissingParentWaitsUntilItArrives() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let seafarer = UUID(), type = UUID(), cert = UUID()
        let first = try await applier.apply([
            event("certificate_type", type, ["code": .string("BST"), "title": .string("t")], clock: 1),
            event("certificate", cert, ["seafarer_id": .string(seafarer.uuidString), "certificate_type_id": .string(type.uuidString)], clock: 3),
        ], from: "shore")
        XCTAssertEqual(first.waiting, 1)
        XCTAssertEqual(first.deadLettered, 0)
        let waiting = try await WaitingRoom.list(on: db)
        XCTAssertEqual(waiting.map(\.rowID), [cert])
        let letters = try await DeadLetterQueue.list(on: db)
        XCTAssertTrue(letters.isEmpty)
        let second = try await applier.apply([event("seafarer", seafarer, ["full_name": .string("Ana")], clock: 2)], from: "shore")
        XCTAssertEqual(second.waitingApplied, 1)
        let certs: Int64 = try await db.scalar("SELECT count(*) FROM certificate")
        XCTAssertEqual(certs, 1)
        let left = try await WaitingRoom.count(on: db)
        XCTAssertEqual(left, 0)
    }

    /// A later change of a row whose insert waits for its parent (in another batch: a partial
    /// row that cannot apply alone) waits with it instead of going to the dead-letter queue, and
    /// both apply, merged, when the parent comes.
    func testALaterChangeOfAWaitingRowWaitsWithIt() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let seafarer = UUID(), type = UUID(), cert = UUID()
        _ = try await applier.apply([
            event("certificate_type", type, ["code": .string("BST"), "title": .string("t")], clock: 1),
            event("certificate", cert, ["seafarer_id": .string(seafarer.uuidString), "certificate_type_id": .string(type.uuidString), "number": .string("N")], clock: 3),
        ], from: "shore", cursor: 1)
        let later = try await applier.apply([event("certificate", cert, ["remarks": .string("renewed")], clock: 4)], from: "shore", cursor: 2)
        XCTAssertEqual(later.waiting, 1)
        XCTAssertEqual(later.deadLettered, 0, "not dead-lettered as a partial row")
        _ = try await applier.apply([event("seafarer", seafarer, ["full_name": .string("Ana")], clock: 2)], from: "shore", cursor: 3)
        let row: String = try await db.scalar("SELECT number || ' ' || remarks FROM certificate")
        XCTAssertEqual(row, "N renewed")
        let left: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM fleetsync.waiting) + (SELECT count(*) FROM fleetsync.dead_letter)")
        XCTAssertEqual(left, 0)
    }

    func testUnknownColumnsAndTablesAreQuarantinedThenDrainedAfterUpgrade() async throws {
        let (configuration, db) = try await installedNode()
        var applier = try await makeApplier(configuration, db)
        let vessel = UUID(), ghost = UUID()
        try await applier.apply([
            event("vessel", vessel, ["code": .string("aurora"), "name": .string("MV Aurora"), "call_sign": .string("CSAB1")], clock: 5),
            event("vessel", vessel, ["call_sign": .string("CSAB2"), "gross_tonnage": .number("51000")], clock: 7),
            event("vessel", vessel, ["call_sign": .string("OLDER")], clock: 6),
            event("voyage", ghost, ["destination": .string("Lisbon")], clock: 8),
        ], from: "shore")
        let name: String = try await db.scalar("SELECT name FROM vessel")
        XCTAssertEqual(name, "MV Aurora", "known columns apply")
        let quarantined: String = try await db.scalar("SELECT fields::text FROM fleetsync.schema_quarantine WHERE table_name = 'vessel'")
        XCTAssertEqual(try JSONParser.parse(quarantined), .object(["call_sign": .string("CSAB2"), "gross_tonnage": .number("51000")]), "merged per row, newest clock kept")
        let wholeTable: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.schema_quarantine WHERE table_name = 'voyage'")
        XCTAssertEqual(wholeTable, 1)

        // The upgrade adds one column; a local value newer than the quarantined one must survive.
        try await db.execute("ALTER TABLE vessel ADD COLUMN call_sign text, ADD COLUMN gross_tonnage integer")
        try await db.transaction { tx in
            try await tx.execute("SET LOCAL fleetsync.applying = 'on'")
            try await tx.execute("UPDATE vessel SET gross_tonnage = 60000, sync_clock = sync_clock || '{\"gross_tonnage\": [9, \"shore\"]}'")
        }
        applier = try await makeApplier(configuration, db)  // the next boot reads the new schema
        let drained = try await QuarantineVault.drain(applier: applier)
        XCTAssertEqual(drained.drained, 2)
        XCTAssertEqual(drained.remaining, 1, "the voyage table still does not exist")
        let callSign: String = try await db.scalar("SELECT call_sign FROM vessel")
        XCTAssertEqual(callSign, "CSAB2")
        let tonnage: Int32 = try await db.scalar("SELECT gross_tonnage FROM vessel")
        XCTAssertEqual(tonnage, 60000, "the local value had the newer clock")
        let left: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.schema_quarantine WHERE table_name = 'vessel'")
        XCTAssertEqual(left, 0)
    }

    func testValueThatDoesNotFitIsQuarantinedWithReasonAndRestOfRowApplies() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let id = UUID()
        let report = try await applier.apply([
            event("certificate_type", id, ["code": .string("X"), "title": .string("t"), "validity_months": .string("twelve")], clock: 3),
        ], from: "shore")
        XCTAssertEqual(report.deadLettered, 0)
        XCTAssertEqual(report.quarantinedFields, 1)
        let title: String = try await db.scalar("SELECT title FROM certificate_type WHERE id = '\(id)'")
        XCTAssertEqual(title, "t")
        let reason: String = try await db.scalar("SELECT reasons->>'validity_months' FROM fleetsync.schema_quarantine")
        XCTAssertTrue(reason.contains("does not fit column validity_months (integer)") && reason.contains("twelve"), reason)
    }

    func testHostileInputIsRejectedOrQuarantinedAndTheRestApplies() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let ok = UUID()
        let long = String(repeating: "x", count: 10_000)
        let events = [
            event("vessel\"; DROP TABLE vessel; --", UUID(), ["name": .string("x")], clock: 1),
            event(long, UUID(), ["name": .string("x")], clock: 1),
            event("vessel", UUID(), [long: .string("x"), "code": .string("v1"), "name": .string("n")], clock: 1),
            event("vessel", UUID(), ["code\"; DELETE FROM vessel; --": .string("x"), "code": .string("v2"), "name": .string("n")], clock: 1),
            event("vessel", UUID(), ["code": .array([.number("1")]), "name": .object(["a": .null])], clock: 1),
            event("vessel", UUID(), ["sync_version": .number("999"), "is_deleted": .string("yes"), "code": .string("v3"), "name": .string("n")], clock: 1),
            event("vessel", ok, ["code": .string("ok"), "name": .string("fine")], clock: 1),
        ]
        let report = try await applier.apply(events, from: "shore")
        XCTAssertEqual(report.rejectedEvents, 1, "the 10,000-character table name")
        XCTAssertGreaterThanOrEqual(report.rejectedFields, 3)
        let vessels: Int64 = try await db.scalar("SELECT count(*) FROM vessel")
        XCTAssertGreaterThanOrEqual(vessels, 4)
        let fine: String = try await db.scalar("SELECT name FROM vessel WHERE id = '\(ok)'")
        XCTAssertEqual(fine, "fine")
        let hostileTable: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.schema_quarantine WHERE table_name LIKE 'vessel\"%'")
        XCTAssertEqual(hostileTable, 1, "a table this node lacks is quarantined as data, never interpolated")
        let rejected: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.telemetry WHERE kind = 'rejected_change'")
        XCTAssertEqual(rejected, Int64(report.rejectedEvents + report.rejectedFields))

        // Malformed JSON events: a missing or non-UUID id is refused with a reason.
        XCTAssertThrowsError(try ChangeEvent(json: JSONParser.parse("{\"table\":\"vessel\",\"origin\":\"shore\",\"fields\":{}}"))) { XCTAssertTrue("\($0)".contains("row_id")) }
        XCTAssertThrowsError(try ChangeEvent(json: JSONParser.parse("{\"table\":\"vessel\",\"row_id\":\"42\",\"origin\":\"shore\",\"fields\":{}}"))) { XCTAssertTrue("\($0)".contains("UUID")) }
        // An absurd batch is refused whole.
        let absurd = [ChangeEvent](repeating: events.last!, count: Applier.maximumBatchEvents + 1)
        do {
            try await applier.apply(absurd, from: "shore")
            XCTFail("must refuse")
        } catch {
            XCTAssertTrue("\(error)".contains("exceeds the limit"))
        }
    }

    func testSharedFieldConflictIsResolvedAndRecordedAndNonOwnerWritesAreRejected() async throws {
        let (configuration, shore) = try await installedNode(role: .shore, nodeID: "shore")
        let applier = try await makeApplier(configuration, shore)
        try await shore.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'A')")
        try await shore.execute("INSERT INTO seafarer (vessel_code, full_name, rank) VALUES ('aurora', 'Ana', 'Master')")
        try await shore.execute("UPDATE seafarer SET notes = 'shore note'")
        let id: UUID = try await shore.scalar("SELECT id FROM seafarer")
        let shoreClock: Int64 = try await shore.scalar("SELECT sync_version FROM seafarer")
        // The vessel edited notes concurrently (it had seen the row at version 2, before the shore's
        // note), tried to change the shore-owned rank, and set its own contact number.
        let report = try await applier.apply([
            event("seafarer", id, ["notes": .string("vessel note"), "rank": .string("Captain"), "contact_number": .string("+1")], clock: shoreClock + 5, node: "aurora", base: 2),
        ], from: "aurora")
        XCTAssertEqual(report.conflicts, 1)
        XCTAssertEqual(report.rejectedFields, 1)
        let row = try await shore.rows("SELECT notes, rank, contact_number FROM seafarer")
        let (notes, rank, contact) = try row[0].decode((String, String, String).self)
        XCTAssertEqual(notes, "vessel note", "the later clock wins")
        XCTAssertEqual(rank, "Master", "a vessel's write to a shore-owned field is never applied")
        XCTAssertEqual(contact, "+1")
        let logged: String = try await shore.scalar("SELECT discarded->>'v' FROM fleetsync.conflict_log")
        XCTAssertEqual(logged, "shore note")
    }

    func testTombstoneWinsOverConcurrentUpdate() async throws {
        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore")
        let applier = try await makeApplier(configuration, db)
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'A')")
        try await db.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana')")
        try await db.execute("DELETE FROM seafarer")
        let id: UUID = try await db.scalar("SELECT id FROM seafarer")
        // The vessel, not having seen the delete, edits a shared field with a later clock.
        try await applier.apply([event("seafarer", id, ["notes": .string("edited at sea")], clock: 100, node: "aurora")], from: "aurora")
        let row = try await db.rows("SELECT notes, is_deleted FROM seafarer")
        let (notes, deleted) = try row[0].decode((String, Bool).self)
        XCTAssertEqual(notes, "edited at sea", "the field merges")
        XCTAssertTrue(deleted, "but the row stays deleted")
    }

    /// Capture on one node, read with the outbox reader, apply on another: both hold the same rows.
    func testCapturedChangesOfOneNodeConvergeOnAnother() async throws {
        let (shoreConfiguration, shore) = try await installedNode(role: .shore, nodeID: "shore")
        let (vesselConfiguration, vessel) = try await installedNode(role: .vessel, nodeID: "aurora")
        try await shore.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await shore.execute("INSERT INTO certificate_type (code, title, validity_months) VALUES ('BST', 'Basic', 60)")
        try await shore.execute("INSERT INTO seafarer (vessel_code, full_name, rank, notes) VALUES ('aurora', 'Ana Lima', 'Master', 'n1')")
        try await shore.execute("INSERT INTO certificate (seafarer_id, certificate_type_id, number, issued_on) SELECT s.id, t.id, 'C-1', '2024-01-31' FROM seafarer s, certificate_type t")
        try await shore.execute("UPDATE seafarer SET rank = 'Captain'")
        try await shore.execute("DELETE FROM certificate")
        let changes = try await OutboxReader(session: shore).poll(after: 0, limit: 100)
        let events = changes.map { $0.event(node: "shore", role: .shore, table: shoreConfiguration.table(named: $0.table)!) }
        let applier = try await makeApplier(vesselConfiguration, vessel)
        try await applier.apply(events.shuffled(), from: "shore", cursor: changes.last!.position)
        let digest = """
            SELECT string_agg(r::text, '|' ORDER BY r::text) FROM (
              SELECT id, code, name, is_deleted, sync_version FROM vessel UNION ALL
              SELECT id, full_name, rank, is_deleted, sync_version FROM seafarer UNION ALL
              SELECT id, number, issued_on::text, is_deleted, sync_version FROM certificate) r
            """
        let left: String = try await shore.scalar(digest)
        let right: String = try await vessel.scalar(digest)
        XCTAssertEqual(left, right)
        let clocksLeft: String = try await shore.scalar("SELECT sync_clock::text FROM seafarer")
        let clocksRight: String = try await vessel.scalar("SELECT sync_clock::text FROM seafarer")
        XCTAssertEqual(clocksLeft, clocksRight)
    }

    /// A wire batch applies a slice of rows at a time: a row's events far apart in the batch still
    /// merge, children in a later slice than their parents apply, and a failing row is isolated
    /// slice by slice while the rest applies and the cursor advances.
    func testWireBatchAppliesSliceBySliceAndIsolatesFailures() async throws {
        let (configuration, db) = try await installedNode()
        var applier = try await makeApplier(configuration, db)
        applier.chunkSize = 3
        let vesselID = UUID(), typeID = UUID()
        let seafarers = (0..<10).map { _ in UUID() }
        let certificates = (0..<10).map { _ in UUID() }
        var events: [ChangeEvent] = []
        for i in 0..<10 {
            // Certificates first: children before parents, and one whose seafarer never arrives.
            let owner = i == 7 ? UUID() : seafarers[i]
            events.append(event("certificate", certificates[i], ["seafarer_id": .string(owner.uuidString), "certificate_type_id": .string(typeID.uuidString), "number": .string("C-\(i)"), "status": .string("valid")], clock: 20))
        }
        for i in 0..<10 { events.append(event("seafarer", seafarers[i], ["full_name": .string("Sailor \(i)"), "vessel_code": .string("aurora"), "rank": .string("Cadet")], clock: 11)) }
        events.append(event("certificate_type", typeID, ["code": .string("BST"), "title": .string("Basic safety")], clock: 10))
        events.append(event("vessel", vesselID, ["code": .string("aurora"), "name": .string("MV Aurora")], clock: 9))
        for i in 0..<10 { events.append(event("seafarer", seafarers[i], ["rank": .string("Officer \(i)")], clock: 30)) }
        let bytes = WireCodec.encode(ExchangeRequest(vesselID: "shore", exchangeID: UUID(), cursor: 0, events: events, upTo: 77, status: [:]))
        let (_, batch) = try WireEventBatch.request(bytes)

        let report = try await applier.apply(batch: batch, from: "shore", cursor: 77)
        XCTAssertEqual(report.waiting, 1, "the certificate whose seafarer never arrived waits")
        XCTAssertEqual(report.appliedRows, 1 + 1 + 10 + 9)
        let ranks: String = try await db.scalar("SELECT string_agg(rank, ',' ORDER BY full_name) FROM seafarer")
        XCTAssertEqual(ranks, (0..<10).map { "Officer \($0)" }.joined(separator: ","), "updates at the end of the batch merged into their rows")
        let certificateCount: Int64 = try await db.scalar("SELECT count(*) FROM certificate")
        XCTAssertEqual(certificateCount, 9)
        let dead: String = try await db.scalar("SELECT row_id::text FROM fleetsync.waiting")
        XCTAssertEqual(dead, certificates[7].lowercasedText)
        let cursor: Int64 = try await db.scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        XCTAssertEqual(cursor, 77)

        // Applied again, slice by slice, it changes nothing.
        let again = try await applier.apply(batch: batch, from: "shore", cursor: 77)
        XCTAssertEqual(again.appliedRows, 0)
        XCTAssertEqual(again.unchangedRows, 21)
    }

    /// Two transactions quarantining values of the same new row keep the newest clock, whichever
    /// commits first; a drain removes only what it applied, not a newer value stored since.
    func testQuarantineKeepsTheNewestValueUnderConcurrency() async throws {
        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore")
        let other = try await connect(configuration.databaseURL)
        let row = UUID()
        func entry(_ counter: Int64, _ node: String, _ value: String) -> QuarantineEntry {
            QuarantineEntry(table: "voyage", rowID: row, state: RowState(fields: ["eta": FieldChange(value: .string(value), clock: FieldClock(counter: counter, node: node))]))
        }
        try await db.execute("BEGIN")
        try await QuarantineVault.store([entry(10, "aurora", "newer")], on: db)
        let racing = Task { try await other.transaction { tx in try await QuarantineVault.store([entry(8, "borealis", "older")], on: tx) } }
        try await Task.sleep(nanoseconds: 500_000_000)
        try await db.execute("COMMIT")
        try await racing.value
        let kept: String = try await db.scalar("SELECT fields->>'eta' FROM fleetsync.schema_quarantine")
        XCTAssertEqual(kept, "newer", "the older value, stored second, must not overwrite the newer one")

        // A drain that applied eta@10 while eta@12 was stored keeps eta@12.
        try await db.transaction { tx in try await QuarantineVault.store([entry(12, "borealis", "newest")], on: tx) }
        try await db.transaction { tx in
            try await QuarantineVault.remove(table: "voyage", rowID: row, drained: ["eta": FieldClock(counter: 10, node: "aurora")], on: tx)
        }
        let left: String = try await db.scalar("SELECT fields->>'eta' FROM fleetsync.schema_quarantine")
        XCTAssertEqual(left, "newest")
        try await db.transaction { tx in
            try await QuarantineVault.remove(table: "voyage", rowID: row, drained: ["eta": FieldClock(counter: 12, node: "borealis")], on: tx)
        }
        let gone: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.schema_quarantine")
        XCTAssertEqual(gone, 0)
    }

    /// A new row that does not carry a column gets the column's DEFAULT, whatever other rows
    /// share its batch: a column list made for other rows must not give it NULL.
    func testNewRowWithoutAColumnGetsItsDefaultInAnyBatch() async throws {
        let tables = Fixtures.exampleTables() + [TableConfiguration(name: "memo", route: .broadcast, defaultOwner: .shared)]
        let (configuration, db) = try await installedNode(tables: tables, schema: "CREATE TABLE memo (id uuid PRIMARY KEY, title text, notes text DEFAULT 'none');")
        let applier = try await makeApplier(configuration, db)
        let alone = UUID(), full = UUID(), partial = UUID(), last = UUID()
        _ = try await applier.apply([event("memo", alone, ["title": .string("alone")], clock: 1)], from: "shore")
        _ = try await applier.apply([
            event("memo", full, ["title": .string("full"), "notes": .string("x")], clock: 2),
            event("memo", partial, ["title": .string("partial")], clock: 3),
            event("memo", last, ["title": .string("last"), "notes": .null], clock: 4),
        ], from: "shore")
        let rows: String = try await db.scalar("SELECT string_agg(title || '=' || coalesce(notes, 'NULL'), ',' ORDER BY title) FROM memo")
        XCTAssertEqual(rows, "alone=none,full=x,last=NULL,partial=none")
    }

    /// A row that left the vessel's partition but cannot be deleted yet (a local row still
    /// references it) waits, instead of stopping the batch: the batch and the cursor go on, and
    /// the row is deleted by itself after the batch that removes the row referencing it.
    func testOffboardingThatCannotDeleteYetWaitsAndTheStreamGoesOn() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let seafarer = UUID(), type = UUID(), certificate = UUID(), vessel = UUID()
        let first0 = try await applier.apply([
            event("vessel", UUID(), ["code": .string("aurora"), "name": .string("MV Aurora")], clock: 1),
            event("certificate_type", type, ["code": .string("BST"), "title": .string("Basic safety")], clock: 1),
            event("seafarer", seafarer, ["full_name": .string("Ana"), "vessel_code": .string("aurora")], clock: 2),
        ], from: "shore", cursor: 10)
        XCTAssertEqual(first0.appliedRows, 3)
        // A certificate made on board that the shore has not received yet.
        try await db.execute("INSERT INTO certificate (id, seafarer_id, certificate_type_id, number) VALUES ('\(certificate)', '\(seafarer)', '\(type)', 'local')")

        let report = try await applier.apply([
            ChangeEvent(table: "seafarer", rowID: seafarer, fields: [:], origin: "shore", offboard: true),
            event("vessel", vessel, ["code": .string("borealis"), "name": .string("MV Borealis")], clock: 3),
        ], from: "shore", cursor: 11)
        XCTAssertEqual(report.waiting, 1)
        XCTAssertEqual(report.deadLettered, 0)
        XCTAssertEqual(report.offboardedRows, 0)
        XCTAssertEqual(report.appliedRows, 1, "the rest of the batch applies")
        let cursor: Int64 = try await db.scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        XCTAssertEqual(cursor, 11, "the stream goes on")
        let kept: Int64 = try await db.scalar("SELECT count(*) FROM seafarer")
        XCTAssertEqual(kept, 1)
        let state: String = try await db.scalar("SELECT constraint_name FROM fleetsync.waiting")
        XCTAssertEqual(state, "certificate_seafarer_id_fkey")

        // Once the certificate is offboarded too, the waiting offboarding applies by itself.
        let later = try await applier.apply([ChangeEvent(table: "certificate", rowID: certificate, fields: [:], origin: "shore", offboard: true)], from: "shore", cursor: 12)
        XCTAssertEqual(later.waitingApplied, 1)
        let left: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM seafarer) + (SELECT count(*) FROM fleetsync.waiting) + (SELECT count(*) FROM fleetsync.dead_letter)")
        XCTAssertEqual(left, 0)
    }

    /// Only the shore offboards rows: an offboard flag from a vessel is refused with a reason and
    /// the shore keeps the row; an offboarding that names no valid table is refused too.
    func testShoreRefusesOffboardingsFromVessels() async throws {
        let (configuration, shore) = try await installedNode(role: .shore, nodeID: "shore")
        try await shore.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        let id: UUID = try await shore.scalar("SELECT id FROM vessel")
        let applier = try await makeApplier(configuration, shore)
        let report = try await applier.apply([ChangeEvent(table: "vessel", rowID: id, fields: [:], origin: "aurora", offboard: true)], from: "aurora")
        XCTAssertEqual(report.rejectedEvents, 1)
        XCTAssertEqual(report.offboardedRows, 0)
        let kept: Int64 = try await shore.scalar("SELECT count(*) FROM vessel")
        XCTAssertEqual(kept, 1)

        let (vesselConfiguration, vessel) = try await installedNode()
        let vesselApplier = try await makeApplier(vesselConfiguration, vessel)
        let hostile = try await vesselApplier.apply([ChangeEvent(table: String(repeating: "v", count: 100), rowID: id, fields: [:], origin: "shore", offboard: true)], from: "shore")
        XCTAssertEqual(hostile.rejectedEvents, 1)
        let reason: String = try await vessel.scalar("SELECT detail->>'reason' FROM fleetsync.telemetry WHERE kind = 'rejected_change' ORDER BY id DESC LIMIT 1")
        XCTAssertTrue(reason.contains("not a valid name"), reason)
    }
}
