import Foundation

/// The JSON form of a change event, used where events rest in the database (dead-letter queue)
/// or are written by hand in tests: `{"table", "row_id", "origin", "position", "base_version",
/// "fields": {"column": {"v": value, "c": [counter, "node"]}}}`, and `"offboard": true` on an
/// offboarding.
extension ChangeEvent {
    public var json: JSONValue {
        var fieldObject: [String: JSONValue] = [:]
        for (name, change) in fields {
            fieldObject[name] = .object(["v": change.value, "c": change.clock.json])
        }
        var object: [String: JSONValue] = [
            "table": .string(table), "row_id": .string(rowID.lowercasedText), "origin": .string(origin),
            "position": .number(String(originPosition)), "base_version": .number(String(baseVersion)),
            "fields": .object(fieldObject),
        ]
        if offboard { object["offboard"] = .bool(true) }
        return .object(object)
    }

    /// Reads the JSON form; the error says which part is wrong.
    public init(json: JSONValue) throws(EventDecodingError) {
        guard let object = json.objectValue else { throw EventDecodingError("event is not a JSON object") }
        guard let table = object["table"]?.stringValue, Identifiers.isValidSQLName(table) else {
            throw EventDecodingError("event has no valid table name")
        }
        if let unreadable = object["unreadable"]?.objectValue {
            // Written by the dead-letter queue for an event it could not read (see
            // `DeadLetterQueue.addUnreadable`): there is no event here to apply.
            let source = unreadable["source"]?.stringValue ?? "?"
            throw EventDecodingError("this dead letter holds the text of an event for \(table) that could not be read where it was found (\(source)); "
                + "it cannot be applied by retrying: apply its text (event.unreadable.text) by hand, then discard the entry")
        }
        guard let idText = object["row_id"]?.stringValue, let rowID = UUID(uuidString: idText) else {
            throw EventDecodingError("event for \(table) has no valid row_id (a UUID)")
        }
        guard let origin = object["origin"]?.stringValue, Identifiers.isValidNodeID(origin) else {
            throw EventDecodingError("event for \(table) has no valid origin node id")
        }
        guard let fieldObject = object["fields"]?.objectValue else { throw EventDecodingError("event for \(table) has no fields object") }
        var fields: [String: FieldChange] = [:]
        for (name, entry) in fieldObject {
            guard let pair = entry.objectValue, let value = pair["v"], let clockJSON = pair["c"], let clock = FieldClock(json: clockJSON) else {
                throw EventDecodingError("field \(name.prefix(64)) of an event for \(table) lacks a value or a valid clock")
            }
            fields[name] = FieldChange(value: value, clock: clock)
        }
        let offboard: Bool
        switch object["offboard"] {
        case nil, .bool(false)?: offboard = false
        case .bool(true)?: offboard = true
        default: throw EventDecodingError("event for \(table) has an offboard flag that is not a boolean")
        }
        self.init(
            table: table, rowID: rowID, fields: fields, origin: origin,
            originPosition: object["position"]?.int64Value ?? 0, baseVersion: object["base_version"]?.int64Value ?? 0,
            offboard: offboard)
    }
}

public struct EventDecodingError: Error, Sendable, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
