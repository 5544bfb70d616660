import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest

/// Issue 19: a large backlog of captured changes on the shore (one transaction of many rows, or
/// changes written while no vessel exchanged) is moved into the outbox a chunk per exchange; the
/// first batch does not wait until all of it is sequenced, and the answer says `more` while
/// captured changes wait.
final class ChunkedSequencingTests: DatabaseTestCase {
    func testTheFirstBatchOfALargeBacklogGoesBeforeAllOfItIsSequencedAndTheVesselGetsAll() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], limits: "[limits]\nbatch_events = 1000")
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora');", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        // 5,000 captured changes in one transaction, none sequenced yet.
        try Fixtures.runScript("INSERT INTO certificate_type (code, title) SELECT 'K' || i, 'kind ' || i FROM generate_series(1, 5000) i;", url: fleet.shore.url)
        let captured: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(captured, 5_000)
        let sealed = try SealedClient(fleet.vessels[0], fleet: fleet)
        defer { Task { await sealed.shutdown() } }
        let token = try await sealed.token()
        let cursor: Int64 = try await connect(fleet.vessels[0].url).scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        XCTAssertGreaterThan(cursor, 0, "past its first catch-up")
        let first = try await sealed.exchange(ExchangeRequest(vesselID: "aurora", cursor: cursor, events: [], upTo: 0), token: token)
        XCTAssertEqual(first.events.count, 1_000, "a full batch")
        XCTAssertTrue(first.more)
        let waiting: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(waiting, 3_000, "one chunk (twice the batch) was sequenced before the first batch went, not the whole backlog")
        // The vessel's own sync takes the rest, a chunk per exchange, and ends with all of it.
        let run = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(run.status, 0, run.output + run.error)
        let left: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(left, 0)
        let vessel = try await connect(fleet.vessels[0].url)
        let kinds: Int64 = try await vessel.scalar("SELECT count(*) FROM certificate_type WHERE code LIKE 'K%'")
        XCTAssertEqual(kinds, 5_000, "every row of the backlog arrived")
    }
}
