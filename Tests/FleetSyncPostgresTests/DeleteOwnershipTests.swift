import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import PostgresNIO
import XCTest
@testable import FleetSyncPostgres

/// Who may delete a row is part of the table's configuration (`delete_by`, default: the row's
/// owner) and `on_delete = "refuse"` refuses tombstones from everyone: a refused delete is refused
/// by the capture trigger locally and by the receiver, and reported (issue 15, item 8).
final class DeleteOwnershipTests: DatabaseTestCase {
    private func tombstone(_ table: String, _ id: UUID, _ value: Bool = true, clock: Int64, node: String) -> ChangeEvent {
        ChangeEvent(table: table, rowID: id, fields: [ChangeEvent.deletedField: FieldChange(value: .bool(value), clock: FieldClock(counter: clock, node: node))], origin: node)
    }

    private func assertRefused(_ db: DatabaseSession, _ sql: String, containing text: String, file: StaticString = #filePath, line: UInt = #line) async {
        do {
            try await db.execute(sql)
            XCTFail("\(sql) must be refused", file: file, line: line)
        } catch {
            XCTAssertEqual(error.sqlState, "42501", "\(error)", file: file, line: line)
            XCTAssertTrue(error.message.contains(text), error.message, file: file, line: line)
        }
    }

    func testDeleteByIsReadWithTheOwnerAsDefaultAndRefusedBesideOnDeleteRefuse() throws {
        let head = """
            [node]
            role = "shore"
            id = "shore"
            [database]
            url = "postgres://x@localhost/db"
            [shore]
            listen = "0.0.0.0:8080"

            """
        let configuration = try ConfigurationLoader.load(text: head + """
            [[table]]
            name = "vessel"
            route = "broadcast"
            [[table]]
            name = "seafarer"
            route = { column = "vessel_code" }
            delete_by = "shore"
            [[table]]
            name = "note"
            route = "broadcast"
            delete_by = "anyone"
            """)
        XCTAssertEqual(configuration.tables.map(\.deleteBy), [.owner, .shore, .anyone])
        XCTAssertThrowsError(try ConfigurationLoader.load(text: head + """
            [[table]]
            name = "vessel"
            route = "broadcast"
            delete_by = "captain"
            """)) { error in
            XCTAssertTrue("\(error)".contains("table[0].delete_by: \"captain\" is not a known value"), "\(error)")
            XCTAssertTrue("\(error)".contains("\"owner\", \"shore\", \"anyone\""), "\(error)")
        }
        XCTAssertThrowsError(try ConfigurationLoader.load(text: head + """
            [[table]]
            name = "certificate_type"
            route = "broadcast"
            on_delete = "refuse"
            delete_by = "anyone"
            """)) { error in
            XCTAssertTrue("\(error)".contains("table[0].delete_by") && "\(error)".contains("on_delete = \"refuse\" refuses every delete"), "\(error)")
        }
    }

    func testVesselCannotDeleteBroadcastRowsLocallyButItsOwnRoutedRows() async throws {
        let (_, db) = try await installedNode(role: .vessel, nodeID: "aurora")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await db.execute("INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety')")
        try await db.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana')")
        try await db.execute("DELETE FROM fleetsync.capture_log")

        await assertRefused(db, "DELETE FROM vessel", containing: "may be deleted by the shore only")
        await assertRefused(db, "UPDATE vessel SET is_deleted = true", containing: "this vessel (aurora) may not delete them")
        await assertRefused(db, "UPDATE certificate_type SET is_deleted = true", containing: "cannot be deleted (on_delete = \"refuse\")")
        let deletedVessels: Int64 = try await db.scalar("SELECT count(*) FROM vessel WHERE is_deleted")
        XCTAssertEqual(deletedVessels, 0)

        // Its own crew row (routed to it) it may delete: a tombstone, captured.
        try await db.execute("DELETE FROM seafarer")
        let deleted: Bool = try await db.scalar("SELECT is_deleted FROM seafarer")
        XCTAssertTrue(deleted)
        let captured: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log WHERE delta = '{\"is_deleted\": true}'")
        XCTAssertEqual(captured, 1)
    }

    func testDeleteByShoreAndAnyoneDecideTheVesselsLocalDeletes() async throws {
        var tables = Fixtures.exampleTables()
        tables[tables.firstIndex { $0.name == "seafarer" }!].deleteBy = .shore
        tables[tables.firstIndex { $0.name == "vessel" }!].deleteBy = .anyone
        let (_, db) = try await installedNode(role: .vessel, nodeID: "aurora", tables: tables)
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await db.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana')")
        await assertRefused(db, "DELETE FROM seafarer", containing: "the shore only (delete_by = \"shore\")")
        try await db.execute("DELETE FROM vessel")
        let deleted: Bool = try await db.scalar("SELECT is_deleted FROM vessel")
        XCTAssertTrue(deleted)
        // The shore deletes whatever it configures deletable; on_delete = "refuse" holds for it too.
        let (_, shore) = try await installedNode(role: .shore, nodeID: "shore", tables: tables)
        try await shore.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await shore.execute("INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety')")
        try await shore.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana')")
        try await shore.execute("DELETE FROM seafarer")
        await assertRefused(shore, "UPDATE certificate_type SET is_deleted = true", containing: "on_delete = \"refuse\"")
    }

    /// Where updates revive, a vessel that may not delete may not clear the tombstone by hand, but
    /// its write to a column it owns brings the row back, here and on the shore.
    func testVesselThatMayNotDeleteRevivesOnlyByWriting() async throws {
        var tables = Fixtures.exampleTables()
        let index = tables.firstIndex { $0.name == "vessel" }!
        tables[index].tombstone = .revive
        tables[index].owners = ["flag": .shared]
        let (configuration, db) = try await installedNode(role: .vessel, nodeID: "aurora", tables: tables)
        let row = UUID()
        let applier = try await makeApplier(configuration, db)
        let shore = FieldClock(counter: 5, node: "shore")
        try await applier.apply([ChangeEvent(table: "vessel", rowID: row, fields: [
            "code": FieldChange(value: .string("aurora"), clock: shore), "name": FieldChange(value: .string("MV Aurora"), clock: shore),
        ], origin: "shore")], from: "shore")
        try await applier.apply([tombstone("vessel", row, clock: 6, node: "shore")], from: "shore")
        await assertRefused(db, "UPDATE vessel SET is_deleted = false", containing: "may not bring back a deleted row of table \"vessel\"")
        try await db.execute("UPDATE vessel SET flag = 'PT'")
        let deleted: Bool = try await db.scalar("SELECT is_deleted FROM vessel")
        XCTAssertFalse(deleted)
        let delta: String = try await db.scalar("SELECT delta::text FROM fleetsync.capture_log")
        XCTAssertEqual(delta, #"{"flag": "PT", "is_deleted": false}"#)

        // The shore accepts that revival with the write it came with, and not alone.
        let (shoreConfiguration, shoreDB) = try await installedNode(role: .shore, nodeID: "shore", tables: tables)
        try await shoreDB.execute("INSERT INTO vessel (id, code, name) VALUES ('\(row)', 'aurora', 'MV Aurora')")
        try await shoreDB.execute("DELETE FROM vessel")
        let shoreApplier = try await makeApplier(shoreConfiguration, shoreDB)
        let alone = try await shoreApplier.apply([tombstone("vessel", row, false, clock: 50, node: "aurora")], from: "aurora")
        XCTAssertEqual(alone.rejectedFields, 1)
        let stillDeleted: Bool = try await shoreDB.scalar("SELECT is_deleted FROM vessel")
        XCTAssertTrue(stillDeleted)
        let clock = FieldClock(counter: 51, node: "aurora")
        let withWrite = try await shoreApplier.apply([ChangeEvent(table: "vessel", rowID: row, fields: [
            "flag": FieldChange(value: .string("PT"), clock: clock), ChangeEvent.deletedField: FieldChange(value: .bool(false), clock: clock),
        ], origin: "aurora")], from: "aurora")
        XCTAssertEqual(withWrite.rejectedFields, 0)
        let revived: Bool = try await shoreDB.scalar("SELECT is_deleted FROM vessel")
        XCTAssertFalse(revived)
    }

    func testShoreRejectsTombstonesTheirWriterMayNotSend() async throws {
        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await db.execute("INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety')")
        try await db.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana'), ('aurora', 'Bo')")
        let vesselRow: UUID = try await db.scalar("SELECT id FROM vessel")
        let typeRow: UUID = try await db.scalar("SELECT id FROM certificate_type")
        let ana: UUID = try await db.scalar("SELECT id FROM seafarer WHERE full_name = 'Ana'")
        let bo: UUID = try await db.scalar("SELECT id FROM seafarer WHERE full_name = 'Bo'")
        try await db.execute("DELETE FROM seafarer WHERE full_name = 'Bo'")
        let applier = try await makeApplier(configuration, db)

        let report = try await applier.apply([
            tombstone("vessel", vesselRow, clock: 100, node: "aurora"),           // a broadcast row: the shore's
            tombstone("certificate_type", typeRow, clock: 100, node: "aurora"),   // on_delete = "refuse"
            tombstone("seafarer", bo, false, clock: 100, node: "aurora"),        // an undelete where tombstones win
            tombstone("seafarer", ana, clock: 100, node: "aurora"),              // its own crew row: allowed
        ], from: "aurora", cursor: 4, routes: [ana: "aurora", bo: "aurora"])
        XCTAssertEqual(report.rejectedFields, 3)
        XCTAssertEqual(report.appliedRows, 1)
        let state: String = try await db.scalar("""
            SELECT format('%s %s %s %s', (SELECT is_deleted FROM vessel), (SELECT is_deleted FROM certificate_type),
              (SELECT is_deleted FROM seafarer WHERE full_name = 'Bo'), (SELECT is_deleted FROM seafarer WHERE full_name = 'Ana'))
            """)
        XCTAssertEqual(state, "f f t t")
        let reasons: [String] = try await db.rows("SELECT detail->>'reason' FROM fleetsync.telemetry WHERE kind = 'rejected_change' AND detail->>'field' = 'is_deleted' ORDER BY detail->>'table'")
            .map { try $0.decode(String.self) }
        XCTAssertEqual(reasons.count, 3)
        XCTAssertTrue(reasons.contains { $0.contains("rows of table certificate_type are never deleted") }, "\(reasons)")
        XCTAssertTrue(reasons.contains { $0.contains("cannot be brought back") }, "\(reasons)")
        XCTAssertTrue(reasons.contains { $0.contains("aurora may not delete rows of table vessel") }, "\(reasons)")
        // Only the accepted tombstone is relayed to the fleet.
        let relayed: [UUID] = try await db.rows("SELECT row_id FROM fleetsync.capture_log WHERE op = 'R'").map { try $0.decode(UUID.self) }
        XCTAssertEqual(relayed, [ana])

        // A creation clock does not make a deletion harmless.
        let again = try await applier.apply([tombstone("vessel", vesselRow, clock: 0, node: "aurora")], from: "aurora")
        XCTAssertEqual(again.rejectedFields, 1)
        let stillThere: Bool = try await db.scalar("SELECT is_deleted FROM vessel")
        XCTAssertFalse(stillThere)
    }

    func testVesselRejectsTombstonesOnRefuseTablesAndRelayedOnesOnBroadcastRows() async throws {
        let (configuration, db) = try await installedNode(role: .vessel, nodeID: "aurora")
        let typeRow = UUID(), vesselRow = UUID()
        let creation = FieldClock(counter: 5, node: "shore")
        let applier = try await makeApplier(configuration, db)
        try await applier.apply([
            ChangeEvent(table: "certificate_type", rowID: typeRow, fields: ["code": FieldChange(value: .string("BST"), clock: creation), "title": FieldChange(value: .string("Basic"), clock: creation)], origin: "shore"),
            ChangeEvent(table: "vessel", rowID: vesselRow, fields: ["code": FieldChange(value: .string("borealis"), clock: creation), "name": FieldChange(value: .string("MV Borealis"), clock: creation)], origin: "shore"),
        ], from: "shore")
        let report = try await applier.apply([
            tombstone("certificate_type", typeRow, clock: 9, node: "shore"),
            tombstone("vessel", vesselRow, clock: 9, node: "borealis"),
        ], from: "shore")
        XCTAssertEqual(report.rejectedFields, 2)
        let deleted: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM certificate_type WHERE is_deleted) + (SELECT count(*) FROM vessel WHERE is_deleted)")
        XCTAssertEqual(deleted, 0)
        // The shore's own tombstone on a broadcast row applies.
        try await applier.apply([tombstone("vessel", vesselRow, clock: 10, node: "shore")], from: "shore")
        let gone: Bool = try await db.scalar("SELECT is_deleted FROM vessel")
        XCTAssertTrue(gone)
    }
}
