import Foundation
import XCTest
@testable import FleetSyncCore
@testable import FleetSyncTransport

/// Issue 19, part 1: the read-ahead ask and terms on the wire, and the adaptive batch size.
final class ReadAheadWireTests: XCTestCase {
    func testTheAskTravelsInTheStatusAndComesBackOutOfIt() throws {
        var request = ExchangeRequest(vesselID: "aurora", cursor: 40, events: [], upTo: 0, status: ["pending": .number("0")])
        request.readAhead = ReadAheadAsk(after: 90, events: 4_000, bytes: 2_097_152)
        let decoded = try MessageFraming.decodeRequest(MessageFraming.encode(request))
        XCTAssertEqual(decoded, request)
        XCTAssertEqual(decoded.status, ["pending": .number("0")], "the ask is not part of the vessel's status")
    }

    func testABadAskIsRefusedWithWhatIsWrong() {
        func refusal(_ ask: JSONValue, cursor: Int64 = 40) -> String? {
            let request = ExchangeRequest(vesselID: "aurora", cursor: cursor, events: [], upTo: 0, status: [ReadAheadAsk.statusKey: ask])
            do {
                _ = try MessageFraming.decodeRequest(MessageFraming.encode(request))
                return nil
            } catch {
                XCTAssertEqual(error.code, .malformed)
                return error.message
            }
        }
        func ask(_ after: String, _ events: String, _ bytes: String) -> JSONValue {
            .object(["after": .number(after), "events": .number(events), "bytes": .number(bytes)])
        }
        XCTAssertEqual(refusal(ask("39", "10", "4096")).map { $0.contains("below the cursor 40") }, true, "reading behind the cursor")
        XCTAssertEqual(refusal(ask("50", "0", "4096")).map { $0.contains("read_ahead.events must be a whole number from 1") }, true)
        XCTAssertEqual(refusal(ask("50", "100001", "4096")).map { $0.contains("read_ahead.events") }, true)
        XCTAssertEqual(refusal(ask("50", "10", "1.5")).map { $0.contains("read_ahead.bytes") }, true)
        XCTAssertEqual(refusal(.string("ahead")).map { $0.contains("must be an object") }, true)
        XCTAssertEqual(refusal(.object(["after": .number("50")])).map { $0.contains("must be an object of after, events and bytes") }, true)
        XCTAssertNil(refusal(ask("40", "1", "1")))
    }

    func testTermsAreSentOnlyToAVesselThatAsked() throws {
        var response = ExchangeResponse(shore: "hq", acknowledged: 3, events: [], cursor: 120, more: true, catchUp: ["done": .bool(false)])
        let plain = MessageFraming.encode(response)
        XCTAssertEqual(try MessageFraming.decodeResponse(plain), response)
        response.readAhead = ReadAheadTerms(after: 90, maximumEvents: 10_000, maximumBytes: 8_388_608)
        let withTerms = MessageFraming.encode(response)
        XCTAssertEqual(try MessageFraming.decodeResponse(withTerms), response)
        XCTAssertGreaterThan(withTerms.count, plain.count)
        // Terms out of range are refused.
        response.readAhead = ReadAheadTerms(after: 90, maximumEvents: 0, maximumBytes: 10)
        XCTAssertThrowsError(try MessageFraming.decodeResponse(MessageFraming.encode(response))) {
            XCTAssertTrue(($0 as? WireError)?.message.contains("read-ahead terms out of range") == true, "\($0)")
        }
    }

    func testBatchesGrowWhileFullAndQuickAndShrinkWhenSlowOrFailing() {
        var sizer = BatchSizer(events: 1_000, bytes: 1_048_576, maximumEvents: 10_000, maximumBytes: 8_388_608, adaptive: true)
        sizer.observe(seconds: 0.3, full: true)
        XCTAssertEqual(sizer.events, 2_000)
        XCTAssertEqual(sizer.bytes, 2_097_152)
        sizer.observe(seconds: 0.3, full: false)
        XCTAssertEqual(sizer.events, 2_000, "a batch that was not full says nothing about a larger one")
        sizer.observe(seconds: 1.5, full: true)
        XCTAssertEqual(sizer.events, 2_000, "within the target: kept")
        for _ in 0..<10 { sizer.observe(seconds: 0.1, full: true) }
        XCTAssertEqual(sizer.events, 10_000, "never past the ceiling")
        XCTAssertEqual(sizer.bytes, 8_388_608)
        sizer.limit(events: 5_000, bytes: 4_194_304)
        XCTAssertEqual(sizer.events, 5_000, "nor past the shore's")
        sizer.observe(seconds: 4.5, full: true)
        XCTAssertEqual(sizer.events, 2_500, "slow: halved")
        for _ in 0..<20 { sizer.failed() }
        XCTAssertEqual(sizer.events, 16, "failures shrink it to the floor")
        XCTAssertEqual(sizer.bytes, BatchSizer.poorLinkBytes, "a poor link's 20 KB budget")

        var fixed = BatchSizer(events: 1_000, bytes: 1_048_576, maximumEvents: 10_000, maximumBytes: 8_388_608, adaptive: false)
        fixed.observe(seconds: 0.1, full: true)
        fixed.failed()
        XCTAssertEqual(fixed.events, 1_000)
        XCTAssertEqual(fixed.bytes, 1_048_576)
    }

    func testTheCeilingsAreConfiguredAndNeverBelowTheStartingSize() throws {
        func load(vessel: String = "", limits: String) throws -> FleetSyncConfiguration {
            try ConfigurationLoader.load(text: ConfigurationTests.valid
                .replacingOccurrences(of: "interval_seconds = 5\n", with: "interval_seconds = 5\n\(vessel)\n")
                .replacingOccurrences(of: "batch_events = 50\n", with: "\(limits)\n"))
        }
        XCTAssertEqual(try load(limits: "").limits.maximumBatchEvents, 1_000)
        XCTAssertEqual(try load(limits: "batch_events = 20000").limits.maximumBatchEvents, 20_000)
        XCTAssertEqual(try load(limits: "max_batch_events = 3000\nmax_batch_bytes = 65536").limits.maximumBatchBytes, 1_048_576, "at least batch_bytes")
        XCTAssertThrowsError(try load(limits: "max_batch_events = 0"))
        let off = try load(vessel: "read_ahead = false\nadaptive_batch = false", limits: "")
        XCTAssertEqual(off.vessel?.readAhead, false)
        XCTAssertEqual(off.vessel?.adaptiveBatch, false)
        XCTAssertThrowsError(try load(vessel: "read_ahead = \"yes\"", limits: "")) { XCTAssertTrue("\($0)".contains("vessel.read_ahead"), "\($0)") }
    }
}
