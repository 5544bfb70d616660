import FleetSyncCore
import FleetSyncTestSupport
import XCTest
@testable import FleetSyncPostgres

final class CaptureTests: DatabaseTestCase {
    func outbox(_ db: DatabaseSession) async throws -> [(op: String, table: String, version: Int64, delta: [String: JSONValue])] {
        let rows = try await db.rows("SELECT op::text, table_name, version, delta::text FROM fleetsync.capture_log ORDER BY seq")
        return try rows.map { row in
            let (op, table, version, delta) = try row.decode((String, String, Int64, String).self)
            return (op, table, version, try JSONParser.parse(delta).objectValue!)
        }
    }

    func testInsertAndUpdateCaptureOnlyChangedColumnsAndAdvanceVersion() async throws {
        let (_, db) = try await self.installedNode()
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await db.execute("INSERT INTO seafarer (vessel_code, full_name, rank) VALUES ('aurora', 'Ana Lima', 'Master')")
        try await db.execute("UPDATE seafarer SET contact_number = '+351 1', notes = 'n' WHERE full_name = 'Ana Lima'")
        try await db.execute("UPDATE seafarer SET notes = 'n', contact_number = '+351 1' WHERE full_name = 'Ana Lima'")  // no change
        try await db.execute("UPDATE seafarer SET notes = NULL WHERE full_name = 'Ana Lima'")
        let events = try await outbox(db)
        XCTAssertEqual(events.map(\.op), ["I", "I", "U", "U"])
        XCTAssertEqual(Set(events[1].delta.keys), ["vessel_code", "full_name", "rank", "contact_number", "notes"])
        XCTAssertEqual(events[2].delta, ["contact_number": .string("+351 1"), "notes": .string("n")])
        XCTAssertEqual(events[3].delta, ["notes": .null])
        XCTAssertLessThan(events[1].version, events[2].version)
        XCTAssertLessThan(events[2].version, events[3].version)
        let version: Int64 = try await db.scalar("SELECT sync_version FROM seafarer")
        XCTAssertEqual(version, events[3].version)
        // The row's per-field clocks: the creation clock for shore-owned columns, this vessel's
        // writes for the rest.
        let clocks: String = try await db.scalar("SELECT sync_clock::text FROM seafarer")
        let parsed = try JSONParser.parse(clocks).objectValue!
        XCTAssertEqual(FieldClock(json: parsed["rank"]!), FieldClock(counter: 0, node: "aurora"))
        XCTAssertEqual(FieldClock(json: parsed["notes"]!), FieldClock(counter: events[3].version, node: "aurora"))
        XCTAssertEqual(FieldClock(json: parsed["contact_number"]!), FieldClock(counter: events[2].version, node: "aurora"))
    }

    /// `INSERT ... ON CONFLICT` runs BEFORE INSERT triggers for rows it does not insert: only
    /// what is written may be captured (an insert event for them would make other nodes overwrite
    /// or invent rows).
    func testUpsertCapturesOnlyWhatItWrites() async throws {
        let (_, db) = try await self.installedNode()
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        let id = "0193a000-0000-7000-8000-0000000000a1"
        try await db.execute("INSERT INTO seafarer (id, vessel_code, full_name, notes) VALUES ('\(id)', 'aurora', 'Ana Lima', 'a')")
        let inserted = try await outbox(db)
        XCTAssertEqual(inserted.map(\.op), ["I", "I"])
        let version: Int64 = try await db.scalar("SELECT sync_version FROM seafarer")
        XCTAssertEqual(inserted[1].version, version, "the insert event carries the version the row got")

        try await db.execute("INSERT INTO seafarer (id, vessel_code, full_name, notes) VALUES ('\(id)', 'aurora', 'Ana Lima', 'b') ON CONFLICT (id) DO NOTHING")
        let afterNothing = try await outbox(db)
        XCTAssertEqual(afterNothing.count, 2, "an upsert that inserts nothing captures nothing")
        let notes: String = try await db.scalar("SELECT notes FROM seafarer")
        XCTAssertEqual(notes, "a")

        try await db.execute("INSERT INTO seafarer (id, vessel_code, full_name, notes) VALUES ('\(id)', 'aurora', 'Ana Lima', 'c') ON CONFLICT (id) DO UPDATE SET notes = EXCLUDED.notes")
        let afterUpdate = try await outbox(db)
        XCTAssertEqual(afterUpdate.map(\.op), ["I", "I", "U"], "an upsert that updates captures the update only")
        XCTAssertEqual(afterUpdate[2].delta, ["notes": .string("c")])
        let updatedVersion: Int64 = try await db.scalar("SELECT sync_version FROM seafarer")
        XCTAssertEqual(afterUpdate[2].version, updatedVersion)
    }

    /// Where updates revive (`tombstone = "revive"`), a local write to a deleted row brings it back
    /// locally, as the receivers' merge does (a field clock later than the tombstone), and says so
    /// in its event.
    func testUpdateOfADeletedRowBringsItBackWhereUpdatesRevive() async throws {
        var tables = Fixtures.exampleTables()
        let vessel = tables.firstIndex { $0.name == "vessel" }!
        tables[vessel].tombstone = .revive
        let (_, db) = try await self.installedNode(role: .shore, nodeID: "shore", tables: tables)
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await db.execute("DELETE FROM vessel WHERE code = 'aurora'")
        let deleted: Bool = try await db.scalar("SELECT is_deleted FROM vessel")
        XCTAssertTrue(deleted)
        try await db.execute("UPDATE vessel SET name = 'MV Aurora II'")
        let revived: Bool = try await db.scalar("SELECT is_deleted FROM vessel")
        XCTAssertFalse(revived, "the write brings the row back here too")
        let events = try await outbox(db)
        XCTAssertEqual(events.last?.delta, ["name": .string("MV Aurora II"), "is_deleted": .bool(false)])
        // The row's clocks and the event's agree with what a receiver merges.
        let clocks = try JSONParser.parse(try await db.scalar("SELECT sync_clock::text FROM vessel") as String).objectValue!
        var state = RowState()
        for event in events {
            _ = state.merge(event.delta.mapValues { FieldChange(value: $0, clock: FieldClock(counter: event.version, node: "shore")) })
        }
        XCTAssertFalse(state.isDeleted(.revive))
        XCTAssertEqual(FieldClock(json: clocks["is_deleted"]!), state.fields[ChangeEvent.deletedField]?.clock)
        XCTAssertEqual(FieldClock(json: clocks["name"]!), state.fields["name"]?.clock)
        // A delete after that deletes again.
        try await db.execute("DELETE FROM vessel")
        let deletedAgain: Bool = try await db.scalar("SELECT is_deleted FROM vessel")
        XCTAssertTrue(deletedAgain)
    }

    func testUpdateThatChangesNothingWritesNothing() async throws {
        let (_, db) = try await self.installedNode()
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        let before: Int64 = try await db.scalar("SELECT sync_version FROM vessel")
        try await db.execute("UPDATE vessel SET name = name, flag = NULL")
        let count: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log")
        let after: Int64 = try await db.scalar("SELECT sync_version FROM vessel")
        XCTAssertEqual(count, 1)
        XCTAssertEqual(before, after)
    }

    func testDeleteBecomesTombstoneOrIsRefused() async throws {
        // On the shore: a vessel may not delete broadcast rows (DeleteOwnershipTests).
        let (_, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await db.execute("DELETE FROM vessel WHERE code = 'aurora'")
        let deleted: Bool = try await db.scalar("SELECT is_deleted FROM vessel WHERE code = 'aurora'")
        XCTAssertTrue(deleted, "the row stays, marked deleted")
        let events = try await outbox(db)
        XCTAssertEqual(events.last?.delta, ["is_deleted": .bool(true)])
        // Tombstones win on this table: the row cannot be brought back locally.
        do {
            try await db.execute("UPDATE vessel SET is_deleted = false")
            XCTFail("undelete must be refused")
        } catch {
            XCTAssertTrue("\(error)".contains("cannot be brought back"), "\(error)")
        }
        // certificate_type refuses deletes.
        try await db.execute("INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety')")
        do {
            try await db.execute("DELETE FROM certificate_type")
            XCTFail("delete must be refused")
        } catch {
            XCTAssertEqual(error.sqlState, "42501")
            XCTAssertTrue(error.message.contains("cannot be deleted (on_delete = \"refuse\")"), error.message)
        }
        do {
            try await db.execute("TRUNCATE vessel CASCADE")
            XCTFail("truncate must be refused")
        } catch {
            XCTAssertTrue(error.message.contains("TRUNCATE of synced table"), error.message)
        }
        let rows: Int64 = try await db.scalar("SELECT count(*) FROM vessel")
        XCTAssertEqual(rows, 1)
    }

    func testWriteToColumnOwnedByAnotherNodeIsRefusedNamingColumnAndOwner() async throws {
        let (_, vessel) = try await self.installedNode(role: .vessel, nodeID: "aurora")
        try await vessel.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await vessel.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana')")
        do {
            try await vessel.execute("UPDATE seafarer SET rank = 'Master'")
            XCTFail("a vessel must not write a shore-owned column")
        } catch {
            XCTAssertEqual(error.message, "fleetsync: column \"rank\" of table \"seafarer\" is owned by the shore; this vessel (aurora) may not write it")
        }
        let (_, shore) = try await self.installedNode(role: .shore, nodeID: "shore")
        try await shore.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await shore.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana')")
        try await shore.execute("UPDATE seafarer SET rank = 'Master', notes = 'shared is fine'")
        do {
            try await shore.execute("UPDATE seafarer SET contact_number = '1'")
            XCTFail("the shore must not write a vessel-owned column")
        } catch {
            XCTAssertTrue(error.message.contains("column \"contact_number\" of table \"seafarer\" is owned by the vessel the row is routed to"), error.message)
        }
        let events: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(events, 3, "the refused write left nothing in the outbox")
    }

    func testWritesOfTheSyncEngineAreNotCaptured() async throws {
        let (_, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        try await db.transaction { tx in
            try await tx.execute("SET LOCAL fleetsync.applying = 'on'")
            try await tx.execute("INSERT INTO vessel (code, name, sync_version) VALUES ('aurora', 'MV Aurora', 41)")
            try await tx.execute("UPDATE vessel SET name = 'MV Aurora II'")
        }
        let count: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(count, 0)
        // Outside the engine's transaction, capture is back.
        try await db.execute("UPDATE vessel SET flag = 'PT'")
        let after: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(after, 1)
        let version: Int64 = try await db.scalar("SELECT sync_version FROM vessel")
        XCTAssertGreaterThan(version, 41, "a local write after an applied one gets a later clock")
    }

    func testCaptureRollsBackWithTheBusinessWrite() async throws {
        let (_, db) = try await self.installedNode()
        do {
            try await db.transaction { tx in
                try await tx.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
                try await tx.execute("SELECT 1/0")
            }
        } catch {}
        let count: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(count, 0)
    }
}
