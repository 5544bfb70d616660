import FleetSyncCore

/// Encodes captured values in PostgreSQL's COPY text format, so that new rows can be applied with
/// `COPY FROM STDIN` (as fast as a client COPY) instead of through JSON records.
///
/// A value is encodable when its JSON form is the type's text form: strings (text, enums, dates,
/// timestamps, intervals, uuid, bytea's `\x...`), numbers, booleans, NULL, arrays of those for
/// array columns, and the wrapped values of json/jsonb columns. Anything else (a composite type's
/// object) returns nil and the caller falls back to JSON records.
enum CopyEncoder {
    /// Whether ``append(_:column:to:)`` can encode `value` for `column`.
    static func canEncode(_ value: JSONValue, column: PhysicalColumn) -> Bool {
        if ColumnCodec.isJSON(column.type) {
            switch value {
            case .null: return true
            case .array(let wrapped): return wrapped.count == 1
            default: return false
            }
        }
        switch value {
        case .null, .bool, .number, .string: return true
        case .array(let items): return column.type.hasSuffix("[]") && items.allSatisfy(encodableInArray)
        case .object: return false
        }
    }

    private static func encodableInArray(_ item: JSONValue) -> Bool {
        if case .array(let inner) = item { return inner.allSatisfy(encodableInArray) }
        return true
    }

    /// Appends one field, COPY-escaped.
    static func append(_ value: JSONValue, column: PhysicalColumn, to out: inout String) -> Bool {
        if ColumnCodec.isJSON(column.type) {
            switch value {
            case .null: out += "\\N"
            case .array(let wrapped) where wrapped.count == 1: escape(wrapped[0].serialized, into: &out)
            default: return false
            }
            return true
        }
        switch value {
        case .null: out += "\\N"
        case .bool(let b): out += b ? "t" : "f"
        case .number(let n): out += n
        case .string(let s): escape(s, into: &out)
        case .array(let items):
            guard column.type.hasSuffix("[]") else { return false }
            var literal = ""
            guard arrayLiteral(items, into: &literal) else { return false }
            escape(literal, into: &out)
        case .object:
            return false
        }
        return true
    }

    /// The type's input text of a value that ``canEncode(_:column:)`` accepts (unescaped: what
    /// the type's input function reads); nil for NULL.
    static func inputText(_ value: JSONValue, column: PhysicalColumn) -> String? {
        if ColumnCodec.isJSON(column.type) {
            if case .array(let wrapped) = value, wrapped.count == 1 { return wrapped[0].serialized }
            return nil
        }
        switch value {
        case .null, .object: return nil
        case .bool(let b): return b ? "t" : "f"
        case .number(let n): return n
        case .string(let s): return s
        case .array(let items):
            var literal = ""
            _ = arrayLiteral(items, into: &literal)
            return literal
        }
    }

    /// `{a,"b c",NULL,{1,2}}` from JSON array items.
    private static func arrayLiteral(_ items: [JSONValue], into out: inout String) -> Bool {
        out += "{"
        for (i, item) in items.enumerated() {
            if i > 0 { out += "," }
            switch item {
            case .null: out += "NULL"
            case .bool(let b): out += b ? "t" : "f"
            case .number(let n): out += n
            case .string(let s): quoted(s, into: &out)
            case .array(let inner): guard arrayLiteral(inner, into: &out) else { return false }
            case .object: quoted(item.serialized, into: &out)
            }
        }
        out += "}"
        return true
    }

    /// `s` as a double-quoted element of an array literal.
    static func quoted(_ s: String, into out: inout String) {
        out += "\""
        // Most values hold neither quote nor backslash: appended whole.
        if !s.utf8.contains(where: { $0 == 0x22 || $0 == 0x5C }) {
            out += s
            out += "\""
            return
        }
        for scalar in s.unicodeScalars {
            if scalar == "\"" || scalar == "\\" { out += "\\" }
            out.unicodeScalars.append(scalar)
        }
        out += "\""
    }

    /// COPY text escaping: backslash, and the row and field separators.
    static func escape(_ s: String, into out: inout String) {
        // Most values need no escaping: append them whole.
        if !s.utf8.contains(where: { $0 == 0x5C || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            out += s
            return
        }
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(scalar)
            }
        }
    }
}
