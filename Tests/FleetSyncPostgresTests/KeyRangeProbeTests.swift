import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

/// Issue 18, onboarding speed: a slice of new rows whose key range holds no local row is copied
/// in without reading the target rows (``TableWriter/noRowBetween(_:in:on:)``); when the range
/// does hold rows, they are read, locked and merged as before.
final class KeyRangeProbeTests: DatabaseTestCase {
    func event(_ table: String, _ id: UUID, _ fields: [String: JSONValue], clock: Int64) -> ChangeEvent {
        ChangeEvent(table: table, rowID: id, fields: fields.mapValues { FieldChange(value: $0, clock: FieldClock(counter: clock, node: "shore")) }, origin: "shore")
    }

    /// `count` ids in key order.
    static func sortedIDs(_ count: Int) -> [UUID] {
        (0..<count).map { _ in UUID() }.sorted { $0.lowercasedText < $1.lowercasedText }
    }

    func testTheProbeFindsARowBetweenTheKeysAndNoneInAnEmptyRange() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let ids = Self.sortedIDs(201)
        let vesselID = UUID()
        _ = try await applier.apply([
            event("vessel", vesselID, ["code": .string("aurora"), "name": .string("MV Aurora")], clock: 1),
            event("seafarer", ids[100], ["full_name": .string("already here"), "vessel_code": .string("aurora")], clock: 2),
        ], from: "shore", cursor: 1)
        let table = SQL.qualified("public", "seafarer")
        let below = Array(ids[0..<100]), around = ids.filter { $0 != ids[100] }, above = Array(ids[101...])
        let emptyBelow = try await TableWriter.noRowBetween(below, in: table, on: db)
        XCTAssertTrue(emptyBelow, "no local row between the first 100 keys")
        let emptyAbove = try await TableWriter.noRowBetween(above, in: table, on: db)
        XCTAssertTrue(emptyAbove, "no local row between the last 100 keys")
        let emptyAround = try await TableWriter.noRowBetween(around, in: table, on: db)
        XCTAssertFalse(emptyAround, "the local row lies between the keys, though it is not one of them")
        let few = try await TableWriter.noRowBetween(Array(below.prefix(10)), in: table, on: db)
        XCTAssertFalse(few, "small slices are read as they are, without a probe")
    }

    /// A page of 300 rows in key order arrives where the vessel already holds one of them (with a
    /// newer value in one field) and another row between them: the held row is merged by clocks,
    /// the other one is left alone, the rest are inserted; nothing goes to the dead-letter queue.
    func testAPageWhoseRangeHoldsLocalRowsStillMerges() async throws {
        let (configuration, db) = try await installedNode()
        let applier = try await makeApplier(configuration, db)
        let ids = Self.sortedIDs(301)
        let held = ids[150], bystander = ids[75]
        _ = try await applier.apply([
            event("vessel", UUID(), ["code": .string("aurora"), "name": .string("MV Aurora")], clock: 1),
            event("seafarer", held, ["full_name": .string("old name"), "vessel_code": .string("aurora")], clock: 10),
            event("seafarer", held, ["notes": .string("newer note")], clock: 50),
            event("seafarer", bystander, ["full_name": .string("bystander"), "vessel_code": .string("aurora")], clock: 10),
        ], from: "shore", cursor: 1)
        let page = ids.filter { $0 != bystander }.map {
            event("seafarer", $0, ["full_name": .string("page \($0.lowercasedText.prefix(8))"), "vessel_code": .string("aurora"), "notes": .string("older note")], clock: 30)
        }
        let report = try await applier.apply(page, from: "shore", cursor: 2)
        XCTAssertEqual(report.deadLettered, 0)
        XCTAssertEqual(report.appliedRows, 300)
        let count: Int64 = try await db.scalar("SELECT count(*) FROM seafarer")
        XCTAssertEqual(count, 301)
        let merged: String = try await db.scalar("SELECT full_name || ' / ' || notes FROM seafarer WHERE id = '\(held)'")
        XCTAssertEqual(merged, "page \(held.lowercasedText.prefix(8)) / newer note", "the newer clock of notes kept, full_name taken from the page")
        let untouched: String = try await db.scalar("SELECT full_name || ' / ' || coalesce(notes, '-') FROM seafarer WHERE id = '\(bystander)'")
        XCTAssertEqual(untouched, "bystander / -")
        let dead: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.dead_letter")
        XCTAssertEqual(dead, 0)
    }
}
