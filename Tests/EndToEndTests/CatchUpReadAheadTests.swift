import FleetSyncCore
@testable import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncShore

/// The shore reads a vessel's next catch-up page of a whole partition while the vessel applies
/// the one just sent (``CatchUpReadAhead``), bounded in number.
final class CatchUpReadAheadTests: DatabaseTestCase {
    override func setUp() async throws {
        try await super.setUp()
        await CatchUpReadAhead.shared.drop(vessel: "aurora")
    }

    func testTheNextPageOfAWholePartitionIsReadAheadAndIsTheSamePage() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], limits: "[limits]\nbatch_bytes = 32768", schema: try CatchUpTests.preexistingSchema(crew: 600))
        let db = try await connect(fleet.shore.url)
        let configuration = fleet.shore.configuration
        let schema = try await LocalSchema.load(configuration: configuration, session: db)
        let catchUp = CatchUp(configuration: configuration, schema: schema, logger: Fixtures.logger)
        let first = try await catchUp.answer(vessel: "aurora", cursor: 0, echo: nil, force: false, on: db)
        XCTAssertEqual(first?.progress["page"], .number("1"))
        XCTAssertEqual(first?.progress["done"], .bool(false), "more than one page")
        let loaded = try await catchUp.load(vessel: "aurora", on: db)
        let state = try XCTUnwrap(loaded)
        let ahead = await CatchUpReadAhead.shared.take(CatchUpReadAhead.Key(vessel: "aurora", state: state, start: state.sent))
        let page = try XCTUnwrap(ahead, "the second page was read ahead")
        let bounds = CatchUp.pageBounds(configuration.limits)
        let direct = try await CatchUpReader(configuration: configuration, schema: schema, session: db)
            .page(vessel: "aurora", whole: true, from: state.sent, limit: bounds.events, byteBudget: bounds.bytes, position: state.target)
        XCTAssertFalse(page.events.isEmpty)
        XCTAssertEqual(page.events, direct.events, "the page read ahead is the page read when asked")
        XCTAssertEqual(page.next, direct.next)
    }

    func testPagesReadAheadAreBoundedAndDropped() async throws {
        let reads = CatchUpReadAhead.shared
        let state = CatchUp.State(since: 0, target: 9, whole: true, total: 0, page: 1, sent: .end, sentRows: 0, sentRemovals: 0,
                                  done: .end, doneRows: 0, doneRemovals: 0, finished: false)
        let keys = (0..<3).map { CatchUpReadAhead.Key(vessel: "aurora", state: state, start: CatchUpPosition(phase: 1, rank: $0, id: nil)) }
        var started: [Bool] = []
        for key in keys { started.append(await reads.start(key) { CatchUpReader.Page(next: .end) }) }
        XCTAssertEqual(started, [true, true, false], "at most \(CatchUpReadAhead.maximumPages) pages at a time")
        let taken = await reads.take(keys[0])
        XCTAssertNotNil(taken)
        let again = await reads.take(keys[0])
        XCTAssertNil(again, "a page is handed out once")
        await reads.drop(vessel: "aurora")
        let dropped = await reads.take(keys[1])
        XCTAssertNil(dropped, "dropped with its vessel's catch-up")
    }
}
