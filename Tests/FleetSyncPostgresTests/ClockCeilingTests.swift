import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

/// A received clock may move the local Lamport clock only within ``ClockBound``: one event with
/// a clock of 2^63-1 must not exhaust the shore's clock (issue 15, item 6).
final class ClockCeilingTests: DatabaseTestCase {
    /// A vessel's creation of a seafarer routed to it, its own field written at `clock`.
    private func creation(_ id: UUID, contact: String, clock: Int64) -> ChangeEvent {
        let creation = FieldClock(counter: 0, node: "aurora")
        return ChangeEvent(table: "seafarer", rowID: id, fields: [
            "full_name": FieldChange(value: .string("Ana"), clock: creation),
            "vessel_code": FieldChange(value: .string("aurora"), clock: creation),
            "contact_number": FieldChange(value: .string(contact), clock: FieldClock(counter: clock, node: "aurora")),
        ], origin: "aurora")
    }

    func testClockAtTheBigintMaximumIsRefusedAndTheShoreKeepsWorking() async throws {
        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        let applier = try await makeApplier(configuration, db)
        let before: Int64 = try await db.scalar("SELECT last_value FROM fleetsync.lamport")

        let hostile = UUID(), fine = UUID()
        let report = try await applier.apply(
            [creation(hostile, contact: "+1", clock: Int64.max), creation(fine, contact: "+2", clock: before + 5)],
            from: "aurora", cursor: 2, routes: [hostile: "aurora", fine: "aurora"])
        XCTAssertEqual(report.rejectedEvents, 1)
        XCTAssertEqual(report.appliedRows, 1, "the event within the bound applies")
        let hostileRows: Int64 = try await db.scalar("SELECT count(*) FROM seafarer WHERE id = '\(hostile)'")
        XCTAssertEqual(hostileRows, 0, "the whole event is refused, not only its field")
        let after: Int64 = try await db.scalar("SELECT last_value FROM fleetsync.lamport")
        XCTAssertEqual(after, before + 5, "the clock moved past the accepted event only")
        let reason: String = try await db.scalar("SELECT detail->>'reason' FROM fleetsync.telemetry WHERE kind = 'rejected_change' AND detail->>'row_id' = '\(hostile.uuidString.lowercased())'")
        XCTAssertTrue(reason.contains("beyond the bound"), reason)

        // Inserts and updates of synced tables still work.
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('borealis', 'MV Borealis')")
        try await db.execute("UPDATE seafarer SET rank = 'Master' WHERE id = '\(fine)'")
        let rank: String = try await db.scalar("SELECT rank FROM seafarer WHERE id = '\(fine)'")
        XCTAssertEqual(rank, "Master")
    }

    func testBoundIsTheLocalClockPlusTwoToTheFortyUnderAHardCeiling() async throws {
        XCTAssertEqual(ClockBound.ceiling(local: 10), 10 + (1 << 40))
        XCTAssertEqual(ClockBound.ceiling(local: (1 << 62) - 5), 1 << 62)
        XCTAssertEqual(ClockBound.ceiling(local: Int64.max), 1 << 62, "no overflow on a clock already exhausted")

        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        let applier = try await makeApplier(configuration, db)
        let local: Int64 = try await db.scalar("SELECT last_value FROM fleetsync.lamport")
        let atBound = UUID(), beyond = UUID()
        let report = try await applier.apply(
            [creation(beyond, contact: "+3", clock: local + (1 << 40) + 1), creation(atBound, contact: "+4", clock: local + (1 << 40))],
            from: "aurora", routes: [atBound: "aurora", beyond: "aurora"])
        XCTAssertEqual(report.rejectedEvents, 1)
        XCTAssertEqual(report.appliedRows, 1)
        let ids: [UUID] = try await db.rows("SELECT id FROM seafarer").map { try $0.decode(UUID.self) }
        XCTAssertEqual(ids, [atBound])
    }
}
