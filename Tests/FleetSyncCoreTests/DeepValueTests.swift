import Foundation
import XCTest
@testable import FleetSyncCore
@testable import FleetSyncTransport

/// Issue 15, items 2 and 3: every parser and decoder accepts the longest number and the deepest
/// nesting PostgreSQL accepts, bounds both by one limit counted the same way, and handles a value
/// nested to the limit without recursing (in an async context, where stacks are a thread's).
final class DeepValueTests: XCTestCase {
    /// A value of `depth` nested arrays and objects (alternating) around a long number.
    static func deepValue(_ depth: Int, leaf: JSONValue = .number("1")) -> JSONValue {
        var value = leaf
        for level in 0..<depth {
            value = level % 2 == 0 ? .array([.null, value, .string("s\(level % 7)")]) : .object(["k": value, "b": .bool(true)])
        }
        return value
    }

    static func event(_ value: JSONValue) -> ChangeEvent {
        ChangeEvent(table: "cargo_manifest", rowID: UUID(), fields: ["attributes": FieldChange(value: value, clock: FieldClock(counter: 3, node: "aurora"))],
                    origin: "aurora", originPosition: 7, baseVersion: 2)
    }

    /// Every way a value enters: the wire decoder (request and response), the decoder of an
    /// encoded batch (its skim and its event read), and the parser of stored forms (a value, an
    /// outbox delta, an event's JSON as the dead-letter queue keeps it).
    static func readEverywhere(_ value: JSONValue) throws -> [JSONValue] {
        let event = event(value)
        var read: [JSONValue] = []
        let request = try MessageFraming.decodeRequest(MessageFraming.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: [event], upTo: 7)))
        read.append(request.events[0].fields["attributes"]!.value)
        let response = ExchangeResponse(shore: "hq", acknowledged: 0, events: [event], cursor: 9, more: false)
        read.append(try MessageFraming.decodeResponse(MessageFraming.encode(response)).events[0].fields["attributes"]!.value)
        let (_, batch) = try MessageFraming.decodeResponseBatch(MessageFraming.encode(response))
        try batch.scan { token, row in
            XCTAssertEqual(row.rowID, event.rowID)
            read.append(try batch.event(at: token).fields["attributes"]!.value)
        }
        read.append(try JSONParser.parse(value.serialized, valuesAt: JSONLimits.Envelope.value))
        let delta = JSONValue.object(["attributes": value]).serialized
        read.append(try JSONParser.parse(delta, valuesAt: JSONLimits.Envelope.members).objectValue!["attributes"]!)
        read.append(try ChangeEvent(json: JSONParser.parse(event.json.serialized, valuesAt: JSONLimits.Envelope.event)).fields["attributes"]!.value)
        return read
    }

    /// `1e1100` (as PostgreSQL writes it: 1,101 digits) and the longest numeric text PostgreSQL
    /// writes (147,457 characters) pass every reader; one character more is refused, naming the limit.
    func testNumbersAsLongAsPostgreSQLsLongestNumericPassEveryReader() throws {
        let e1100 = "1" + String(repeating: "0", count: 1_100)
        let longest = "-" + String(repeating: "9", count: 131_072) + "." + String(repeating: "9", count: 16_383)
        XCTAssertEqual(longest.utf8.count, JSONLimits.maximumNumberBytes)
        for text in [e1100, longest] {
            for value in [JSONValue.number(text), .object(["n": .number(text)])] {
                for read in try Self.readEverywhere(value) { XCTAssertEqual(read, value) }
            }
        }
        let tooLong = JSONValue.number(longest + "9")
        XCTAssertThrowsError(try Self.readEverywhere(tooLong)) { XCTAssertTrue("\($0)".contains("exceeds the limit of 147457"), "\($0)") }
        XCTAssertThrowsError(try JSONParser.parse("[\(longest)9]")) { XCTAssertTrue("\($0)".contains("exceeds the limit of 147457"), "\($0)") }
    }

    /// A value nested to the limit passes every reader, compares, hashes and serializes equal,
    /// and is freed, all in an async task; one level more is refused by every reader alike.
    func testValueNestedToTheLimitPassesEveryReaderInAnAsyncTask() async throws {
        let result = try await Task.detached { try DeepValueTests.checkAtTheLimit() }.value
        XCTAssertEqual(result.0, 6)
        XCTAssertTrue(result.1)
    }

    static func checkAtTheLimit() throws -> (Int, Bool) {
            let value = Self.deepValue(JSONLimits.maximumDepth)
            let copy = Self.deepValue(JSONLimits.maximumDepth)
            XCTAssertEqual(value, copy)
            XCTAssertEqual(value.hashValue, copy.hashValue)
            XCTAssertNotEqual(value, Self.deepValue(JSONLimits.maximumDepth, leaf: .number("2")))
            XCTAssertEqual(Set([value, copy]).count, 1)
            let text = value.serialized
            XCTAssertEqual(text.prefix(8), "{\"b\":tru")
            let read = try Self.readEverywhere(value)
            for each in read { XCTAssertTrue(each == value) }
            return (read.count, text == copy.serialized)
    }

    func testOneLevelPastTheLimitIsRefusedByEveryReaderAlike() async throws {
        await Task.detached { DeepValueTests.checkPastTheLimit() }.value
    }

    static func checkPastTheLimit() {
            let tooDeep = Self.deepValue(JSONLimits.maximumDepth + 1)
            let event = Self.event(tooDeep)
            let request = MessageFraming.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: [event], upTo: 7))
            let response = MessageFraming.encode(ExchangeResponse(shore: "hq", acknowledged: 0, events: [event], cursor: 9, more: false))
            func refused(_ what: String, _ body: () throws -> Void) {
                XCTAssertThrowsError(try body(), what) { XCTAssertTrue("\($0)".contains("deeper than \(JSONLimits.maximumDepth)"), "\(what): \($0)") }
            }
            refused("request") { _ = try MessageFraming.decodeRequest(request) }
            refused("response") { _ = try MessageFraming.decodeResponse(response) }
            refused("encoded batch") { _ = try MessageFraming.decodeResponseBatch(response) }
            refused("value") { _ = try JSONParser.parse(tooDeep.serialized, valuesAt: JSONLimits.Envelope.value) }
            refused("delta") { _ = try JSONParser.parse(JSONValue.object(["a": tooDeep]).serialized, valuesAt: JSONLimits.Envelope.members) }
            refused("event") { _ = try JSONParser.parse(event.json.serialized, valuesAt: JSONLimits.Envelope.event) }
            // The skimmer alone (used on messages already checked) counts the same way.
            var writer = WireWriter()
            WireCodec.encodeValue(tooDeep, into: &writer)
            var reader = WireReader(writer.bytes)
            refused("skip") { try WireCodec.skipValue(&reader, depth: 0, limits: WireLimits()) }
            var atLimit = WireWriter()
            WireCodec.encodeValue(Self.deepValue(JSONLimits.maximumDepth), into: &atLimit)
            var limitReader = WireReader(atLimit.bytes)
            XCTAssertNoThrow(try WireCodec.skipValue(&limitReader, depth: 0, limits: WireLimits()))
            XCTAssertTrue(limitReader.isAtEnd)
    }

    /// The iterative readers append to each open container in place: a wide value (200,000
    /// items, as in a large jsonb array) is read in linear time, not copied once per item.
    func testWideValuesAreReadInLinearTime() throws {
        let n = 200_000
        let array = JSONValue.array((0..<n).map { .number(String($0)) })
        let object = JSONValue.object(Dictionary(uniqueKeysWithValues: (0..<n).map { ("k\($0)", JSONValue.number(String($0))) }))
        let start = Date()
        for value in [array, object] {
            for read in try Self.readEverywhere(value) { XCTAssertEqual(read, value) }
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 60, "reading wide values took quadratic time")
    }

    /// The iterative parser and serializer keep what the recursive ones did: exact numbers,
    /// sorted keys, strict syntax.
    func testIterativeParserKeepsStrictSyntax() throws {
        let text = #"{"b":[1,{"c":[],"d":{}},[[]],"x"],"a":-0.5e+3, "e" : [ true , false , null ] }"#
        let value = try JSONParser.parse(text)
        XCTAssertEqual(value.serialized, #"{"a":-0.5e+3,"b":[1,{"c":[],"d":{}},[[]],"x"],"e":[true,false,null]}"#)
        XCTAssertEqual(try JSONParser.parse(value.serialized), value)
        for bad in ["[1,]", "[,1]", "{\"a\":1,}", "{,}", "[1 2]", "{\"a\" 1}", "{\"a\":1 \"b\":2}", "[", "[[]", "{\"a\":", "[1]]", "{1:2}", "{\"a\":1,\"a\":2}"] {
            XCTAssertThrowsError(try JSONParser.parse(bad), bad)
        }
        var w = WireWriter()
        WireCodec.encodeValue(value, into: &w)
        var r = WireReader(w.bytes)
        XCTAssertEqual(try WireCodec.decodeValue(&r, depth: 0, limits: WireLimits()), value)
        XCTAssertTrue(r.isAtEnd)
    }
}
