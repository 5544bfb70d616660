import Foundation
import FleetSyncTestSupport
import XCTest
@testable import FleetSyncCore
@testable import FleetSyncTransport

final class WireCodecTests: XCTestCase {
    func sampleEvents(_ count: Int, seed: UInt64 = 1) -> [ChangeEvent] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { i in
            let clock = FieldClock(counter: Int64(i + 1), node: ["shore", "aurora"].randomElement(using: &rng)!)
            let values: [JSONValue] = [.null, .bool(true), .number("-12.50e3"), .string("Ana \u{1F6A2} \"q\""), .array([.number("1"), .null]), .object(["k": .array([]), "é": .bool(false)])]
            return ChangeEvent(table: "seafarer", rowID: UUID(), fields: [
                "notes": FieldChange(value: values.randomElement(using: &rng)!, clock: clock),
                ChangeEvent.deletedField: FieldChange(value: .bool(Bool.random(using: &rng)), clock: clock),
            ], origin: "aurora", originPosition: Int64(100 + i), baseVersion: Int64(i))
        }
    }

    func testRequestAndResponseRoundTrip() throws {
        let request = ExchangeRequest(vesselID: "aurora", cursor: 77, events: sampleEvents(50), upTo: 149, status: ["pending": .number("3")])
        XCTAssertEqual(try MessageFraming.decodeRequest(MessageFraming.encode(request)), request)
        let response = ExchangeResponse(shore: "hq", acknowledged: 149, events: sampleEvents(20, seed: 2), cursor: 900, more: true)
        XCTAssertEqual(try MessageFraming.decodeResponse(MessageFraming.encode(response)), response)
        let error = WireError(.unknownVessel, "vessel nobody is not enrolled")
        XCTAssertThrowsError(try MessageFraming.decodeResponse(MessageFraming.encode(error))) { XCTAssertEqual($0 as? WireError, error) }
    }

    func testLongPollFlagCarriesItsWaitAndIsBounded() throws {
        var request = ExchangeRequest(vesselID: "aurora", cursor: 5, events: [], upTo: 0, holdIncoming: true)
        request.waitSeconds = 30
        let decoded = try WireCodec.decodeRequest(WireCodec.encode(request))
        XCTAssertEqual(decoded.waitSeconds, 30)
        XCTAssertTrue(decoded.holdIncoming)
        XCTAssertEqual(decoded, request)
        request.waitSeconds = 0
        XCTAssertEqual(try WireCodec.decodeRequest(WireCodec.encode(request)).waitSeconds, 0)
        // The flags byte follows the vessel id, exchange id and three signed numbers.
        var plain = WireCodec.encode(ExchangeRequest(vesselID: "aurora", cursor: 5, events: [], upTo: 0))
        let flagsAt = try Self.flagsOffset(plain)
        for (flags, tail, why) in [(UInt8(4), [UInt8](), "unknown flag"), (2, [0], "a wait of 0 s"), (2, [0x91, 0x1c], "a wait of 3,601 s")] {
            var bad = plain
            bad[flagsAt] = flags
            bad.insert(contentsOf: tail, at: flagsAt + 1)
            XCTAssertThrowsError(try WireCodec.decodeRequest(bad), why) { XCTAssertEqual(($0 as? WireError)?.code, .malformed, why) }
        }
        plain[flagsAt] = 2
        plain.insert(contentsOf: [0x90, 0x1c], at: flagsAt + 1)
        XCTAssertEqual(try WireCodec.decodeRequest(plain).waitSeconds, 3_600)
    }

    func testBadMessagesAreRefusedWithCodes() {
        let good = MessageFraming.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: sampleEvents(30), upTo: 1))
        func code(_ bytes: [UInt8], limits: WireLimits = WireLimits()) -> WireError.Code? {
            do { _ = try MessageFraming.decodeRequest(bytes, limits: limits); return nil } catch { return error.code }
        }
        XCTAssertEqual(code(Array(good.prefix(10))), .truncated)
        XCTAssertEqual(code(Array(good.dropLast(5))), .truncated)
        var wrongVersion = good
        wrongVersion[4] = 9
        XCTAssertEqual(code(wrongVersion), .unsupportedVersion)
        var badMagic = good
        badMagic[0] = 0
        XCTAssertEqual(code(badMagic), .malformed)
        var limits = WireLimits()
        limits.maximumBodyBytes = 100
        XCTAssertEqual(code(good, limits: limits), .tooLarge)
        limits = WireLimits()
        limits.maximumEvents = 10
        XCTAssertEqual(code(good, limits: limits), .batchTooLarge)
        // A raw length that lies about the inflated size is refused (no bomb).
        var lying = good
        lying[15] = lying[15] &+ 1
        XCTAssertEqual(code(lying), .malformed)
        XCTAssertEqual(code(MessageFraming.encode(ExchangeResponse(shore: "hq", acknowledged: 0, events: [], cursor: 0, more: false))), .malformed)
        // A response names its shore with a valid node id.
        func responseCode(_ response: ExchangeResponse) -> WireError.Code? {
            do { _ = try MessageFraming.decodeResponse(MessageFraming.encode(response)); return nil } catch { return error.code }
        }
        XCTAssertNil(responseCode(ExchangeResponse(shore: "hq", acknowledged: 0, events: [], cursor: 0, more: false)))
        XCTAssertEqual(responseCode(ExchangeResponse(shore: "H Q", acknowledged: 0, events: [], cursor: 0, more: false)), .malformed)
        XCTAssertEqual(responseCode(ExchangeResponse(shore: String(repeating: "s", count: 64), acknowledged: 0, events: [], cursor: 0, more: false)), .tooLarge)
    }

    /// A batch left encoded gives, event by event at the offsets its scan handed out, the events
    /// the full decoder gives (positions aside); reading it refuses, whole, what is cut off, too
    /// large, followed by stray bytes, or holds text that is not UTF-8.
    /// A number value must be a bare JSON number: its text is written into COPY as it is.
    func testNumberWithWhitespaceIsRefused() throws {
        func event(_ number: String) -> ChangeEvent {
            ChangeEvent(table: "t", rowID: UUID(), fields: ["n": FieldChange(value: .number(number), clock: FieldClock(counter: 1, node: "aurora"))],
                        origin: "aurora", originPosition: 1, baseVersion: 0)
        }
        func code(_ number: String) -> WireError.Code? {
            let bytes = MessageFraming.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: [event(number)], upTo: 1))
            do { _ = try MessageFraming.decodeRequest(bytes); return nil } catch { return error.code }
        }
        XCTAssertNil(code("-12.5e3"))
        for bad in ["5\t", "5\n", " 5", "5 ", "\r5", "five"] {
            XCTAssertEqual(code(bad), .malformed, "number text \(bad.debugDescription)")
        }
    }

    func testEncodedBatchDecodesEventsAtScannedOffsets() throws {
        let events = sampleEvents(40, seed: 3)
        let response = ExchangeResponse(shore: "hq", acknowledged: 5, events: events, cursor: 600, more: true)
        let (header, batch) = try MessageFraming.decodeResponseBatch(MessageFraming.encode(response))
        XCTAssertEqual(header.shore, "hq")
        XCTAssertEqual(header.acknowledged, 5)
        XCTAssertEqual(header.cursor, 600)
        XCTAssertTrue(header.more)
        XCTAssertEqual(batch.count, 40)
        var rows: [EventRow] = []
        var decoded: [ChangeEvent] = []
        try batch.scan { token, row in
            rows.append(row)
            decoded.append(try batch.event(at: token))
        }
        XCTAssertEqual(rows, events.map { EventRow(table: $0.table, rowID: $0.rowID, offboard: $0.offboard) })
        XCTAssertEqual(decoded, events.map { var e = $0; e.originPosition = 0; return e })

        let body = WireCodec.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: events, upTo: 1))
        XCTAssertThrowsError(try WireEventBatch.request(Array(body.dropLast(7)))) {
            XCTAssertEqual(($0 as? WireError)?.code, .truncated)
        }
        XCTAssertThrowsError(try WireEventBatch.request(body + [0])) { XCTAssertEqual(($0 as? WireError)?.code, .malformed) }
        var limits = WireLimits()
        limits.maximumEvents = 10
        XCTAssertThrowsError(try WireEventBatch.request(body, limits: limits)) { XCTAssertEqual(($0 as? WireError)?.code, .batchTooLarge) }

        // One string value made invalid UTF-8 (its structure intact): the message is refused when
        // read, before anything of it could be applied.
        let text = ChangeEvent(table: "seafarer", rowID: UUID(), fields: ["notes": FieldChange(value: .string("zzzz"), clock: FieldClock(counter: 1, node: "aurora"))], origin: "aurora")
        var bytes = WireCodec.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: [text], upTo: 1))
        let at = bytes.lastIndex(of: UInt8(ascii: "z"))!
        bytes[at] = 0xFF
        XCTAssertThrowsError(try WireEventBatch.request(bytes)) { XCTAssertEqual(($0 as? WireError)?.code, .malformed) }
    }

    /// Random corruption never crashes the decoder: every input is either a message or an error.
    func testFuzzedInputNeverCrashes() {
        let good = WireCodec.encode(ExchangeRequest(vesselID: "aurora", cursor: 5, events: sampleEvents(8), upTo: 9))
        var rng = SplitMix64(seed: 42)
        for _ in 0..<5_000 {
            var bytes = good
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[i] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng))) }
            _ = try? WireCodec.decodeRequest(bytes)
            let framed = WireEnvelope(kind: .request, compressed: false, rawLength: bytes.count, body: bytes).encoded()
            _ = try? MessageFraming.decodeRequest(framed)
        }
    }

    func testCompressedSingleColumnUpdatesAreSmall() {
        var events: [ChangeEvent] = []
        for i in 0..<1000 {
            let value = JSONValue.string("+351 91\(i % 10) 000 \(1000 + i)")
            let clock = FieldClock(counter: Int64(5000 + i), node: "aurora")
            events.append(ChangeEvent(table: "seafarer", rowID: UUID(), fields: ["contact_number": FieldChange(value: value, clock: clock)],
                                      origin: "aurora", originPosition: Int64(5000 + i), baseVersion: Int64(4990 + i)))
        }
        let bytes = MessageFraming.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: events, upTo: 6000)).count
        print("wire bytes per single-column update at batch 1,000: \(Double(bytes) / 1000)")
        XCTAssertLessThan(Double(bytes) / 1000, 60)
    }

    /// Where a request's flags byte is: re-read the fields before it.
    static func flagsOffset(_ bytes: [UInt8]) throws -> Int {
        var reader = WireReader(bytes)
        _ = try StringTable.read(&reader, limits: WireLimits())
        _ = try reader.string(limit: 63, what: "vessel id")
        _ = try reader.uuid()
        for _ in 0..<3 { _ = try reader.signed() }
        return bytes.count - reader.remaining
    }
}
