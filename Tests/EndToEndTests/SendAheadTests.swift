import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
@testable import FleetSyncVessel
import Foundation
import XCTest

/// Issue 19, vessel → shore: while a vessel has more of its own changes than one batch, the next
/// batch is read and encoded while the shore applies the one in flight (send-ahead); with
/// `send_ahead = false`, each batch is read after the one before is acknowledged.
final class SendAheadTests: DatabaseTestCase {
    func testABacklogOfLocalChangesGoesUpSendingAheadAndArrivesWholeAndItCanBeTurnedOff() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], limits: "[limits]\nbatch_events = 100\nmax_batch_events = 100")
        let borealis = fleet.vessels[1]
        let text = try String(contentsOfFile: borealis.configPath, encoding: .utf8)
        let off = text.replacingOccurrences(of: "send_ahead = true", with: "send_ahead = false")
        XCTAssertNotEqual(off, text, "the example configuration names send_ahead")
        try off.write(toFile: borealis.configPath, atomically: true, encoding: .utf8)
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora'), ('borealis', 'MV Borealis');
            INSERT INTO seafarer (vessel_code, full_name) SELECT v, v || '-' || i FROM generate_series(1, 1000) i, (VALUES ('aurora'), ('borealis')) x(v);
            """, url: fleet.shore.url)
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        var counted: [String: (rounds: Int, ahead: Int)] = [:]
        for vessel in fleet.vessels {
            // 2,000 events of the vessel's own: two updates of each of its 1,000 rows.
            try Fixtures.runScript("""
                UPDATE seafarer SET notes = 'one ' || full_name;
                UPDATE seafarer SET contact_number = 'c-' || full_name;
                """, url: vessel.url)
            let run = try fleet.sync(vessel)
            XCTAssertEqual(run.status, 0, run.output + run.error)
            counted[vessel.id] = ReadAheadTests.exchanges(run.output, "sent ahead")
            let arrived: Int64 = try await shore.scalar("""
                SELECT count(*) FROM seafarer WHERE vessel_code = '\(vessel.id)' AND notes = 'one ' || full_name AND contact_number = 'c-' || full_name
                """)
            XCTAssertEqual(arrived, 1_000, "every change of \(vessel.id) reached the shore")
            let db = try await connect(vessel.url)
            let left: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM fleetsync.outbox) + (SELECT count(*) FROM fleetsync.capture_log)")
            XCTAssertEqual(left, 0, "\(vessel.id)'s outbox is empty: everything acknowledged")
            let expected: String = try await shore.scalar(ReadAheadTests.partition(vessel.id))
            let actual: String = try await db.scalar(ReadAheadTests.partition(nil))
            XCTAssertEqual(actual, expected, "\(vessel.id) and the shore hold the same rows")
        }
        let ahead = counted["aurora"]!, plain = counted["borealis"]!
        print("exchanges for 2,000 local events at batch_events = 100: send-ahead \(ahead.rounds) rounds + \(ahead.ahead) sent ahead; off \(plain.rounds)")
        XCTAssertGreaterThanOrEqual(ahead.ahead, 15, "the batches after the first went out as soon as the one before was acknowledged")
        XCTAssertEqual(plain.ahead, 0)
        XCTAssertGreaterThanOrEqual(plain.rounds, 20, "with send-ahead off, one exchange per batch of 100")
    }

    /// A batch read ahead goes only after an answer that took the batch before it whole and
    /// brought nothing back; anything else drops it (its events stay in the outbox).
    func testABatchReadAheadIsDroppedUnlessTheAnswerTookTheOneBeforeWhole() throws {
        let request = ExchangeRequest(vesselID: "aurora", cursor: 10, events: [], upTo: 7, clock: 50)
        let event = ChangeEvent(table: "seafarer", rowID: UUID(), fields: ["notes": FieldChange(value: .string("x"), clock: FieldClock(counter: 51, node: "aurora"))],
                                origin: "aurora", originPosition: 8)
        let current = VesselSync.Upload(pending: ([event], 8, true, 0), clock: 50, request: request, bytes: [], shoreMaximumChangeBytes: 1_000)
        let next = VesselSync.Upload(pending: ([event], 9, false, 0), clock: 52, request: request, bytes: [], shoreMaximumChangeBytes: 1_000)
        let whole = ExchangeResponse(shore: "shore", acknowledged: 8, events: [], cursor: 10, more: false, clockFloor: 51)
        XCTAssertTrue(SendAhead.follows(next, current, answer: whole, received: 0, shoreMaximumChangeBytes: 1_000))
        var part = whole
        part.acknowledged = 7
        XCTAssertFalse(SendAhead.follows(next, current, answer: part, received: 0, shoreMaximumChangeBytes: 1_000), "not acknowledged whole")
        XCTAssertFalse(SendAhead.follows(next, current, answer: whole, received: 3, shoreMaximumChangeBytes: 1_000), "events came back")
        var floor = whole
        floor.clockFloor = 60
        XCTAssertFalse(SendAhead.follows(next, current, answer: floor, received: 0, shoreMaximumChangeBytes: 1_000), "a clock floor above the batch's clock (a restore)")
        XCTAssertFalse(SendAhead.follows(next, current, answer: whole, received: 0, shoreMaximumChangeBytes: 2_000), "read under another change size limit")
        var empty = next
        empty.pending.events = []
        XCTAssertFalse(SendAhead.follows(empty, current, answer: whole, received: 0, shoreMaximumChangeBytes: 1_000), "nothing to send")
    }
}
