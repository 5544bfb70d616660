import XCTest
@testable import FleetSyncCore

final class JSONTests: XCTestCase {
    func testNumbersKeepEveryDigit() throws {
        let text = "{\"n\":123456789012345678901234567890.123456789012345678901234567890,\"e\":-1.5e-300}"
        let value = try JSONParser.parse(text)
        XCTAssertEqual(value.objectValue?["n"], .number("123456789012345678901234567890.123456789012345678901234567890"))
        XCTAssertEqual(value.serialized, "{\"e\":-1.5e-300,\"n\":123456789012345678901234567890.123456789012345678901234567890}")
    }

    func testStringsRoundTripAnyUnicode() throws {
        let s = "ä\u{1F6A2} \"q\" \\ \n\t\u{01} 船"
        let value = JSONValue.string(s)
        XCTAssertEqual(try JSONParser.parse(value.serialized), value)
        XCTAssertEqual(try JSONParser.parse("\"\\ud83d\\udea2\\u00e4\""), .string("\u{1F6A2}ä"))
    }

    func testMalformedInputIsRejectedWithOffset() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "\"\\ud800\"", "tru", "{\"a\":1,\"a\":2}", "[1] x", "\"a\u{01}\""] {
            XCTAssertThrowsError(try JSONParser.parse(bad), bad)
        }
        let deep = String(repeating: "[", count: JSONLimits.maximumDepth + 1) + String(repeating: "]", count: JSONLimits.maximumDepth + 1)
        XCTAssertThrowsError(try JSONParser.parse(deep, valuesAt: JSONLimits.Envelope.value)) { error in
            XCTAssertTrue("\(error)".contains("nesting"))
        }
    }

    func testFieldClockOrdersByCounterThenNode() {
        XCTAssertLessThan(FieldClock(counter: 1, node: "z"), FieldClock(counter: 2, node: "a"))
        XCTAssertLessThan(FieldClock(counter: 2, node: "a"), FieldClock(counter: 2, node: "b"))
        XCTAssertEqual(FieldClock(json: FieldClock(counter: 7, node: "shore").json), FieldClock(counter: 7, node: "shore"))
        XCTAssertNil(FieldClock(json: .array([.number("-1"), .string("a")])))
        XCTAssertNil(FieldClock(json: .array([.number("1"), .string("Bad Node")])))
    }

    func testCapturedInsertGivesUnownedFieldsTheCreationClock() {
        let table = TableConfiguration(name: "seafarer", route: .column("vessel_code"), owners: ["contact_number": .vessel, "notes": .shared])
        let change = CapturedChange(position: 1, table: "seafarer", rowID: UUID(), operation: .insert, version: 9, baseVersion: 0,
                                    delta: ["full_name": .string("A"), "contact_number": .string("1"), "notes": .null])
        let event = change.event(node: "aurora", role: .vessel, table: table)
        XCTAssertEqual(event.fields["full_name"]?.clock, FieldClock(counter: 0, node: "aurora"))
        XCTAssertEqual(event.fields["contact_number"]?.clock, FieldClock(counter: 9, node: "aurora"))
        XCTAssertEqual(event.fields["notes"]?.clock, FieldClock(counter: 9, node: "aurora"))
        var update = change
        update.operation = .update
        XCTAssertEqual(update.event(node: "aurora", role: .vessel, table: table).fields["full_name"]?.clock.counter, 9)
    }
}
