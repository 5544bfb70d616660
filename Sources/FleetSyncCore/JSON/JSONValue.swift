/// A JSON value that keeps numbers as their exact decimal text.
///
/// PostgreSQL `numeric` values can carry more digits than a `Double` holds; captured values travel
/// as JSON and must come back into their column unchanged, so a number is never converted.
public enum JSONValue: Sendable {
    case null
    case bool(Bool)
    /// The number exactly as written in the source text (validated JSON number syntax).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The members of an object value, or `nil` for any other kind.
    public var objectValue: [String: JSONValue]? {
        if case .object(let members) = self { return members }
        return nil
    }

    /// The items of an array value, or `nil` for any other kind.
    public var arrayValue: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }

    /// The text of a string value, or `nil` for any other kind.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The integer of a number value that fits in `Int64`, or `nil`.
    public var int64Value: Int64? {
        if case .number(let text) = self { return Int64(text) }
        return nil
    }

    /// The value of a boolean, or `nil`.
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// A short name of the value's kind, for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

extension JSONValue {
    /// Serializes the value as compact JSON, object keys sorted so equal values give equal text.
    public var serialized: String {
        var out = ""
        out.reserveCapacity(64)
        write(to: &out)
        return out
    }

    /// Appends the compact JSON text of the value to `out`, iteratively (any depth, no recursion).
    public func write(to out: inout String) {
        /// What remains to write of an open array or object; `started` once an item is written.
        enum Open {
            case array(ArraySlice<JSONValue>, started: Bool)
            case object([String: JSONValue], keys: ArraySlice<String>, started: Bool)
        }
        var open: [Open] = []
        var next: JSONValue? = self
        while true {
            if let value = next {
                next = nil
                switch value {
                case .null: out += "null"
                case .bool(let b): out += b ? "true" : "false"
                case .number(let n): out += n
                case .string(let s): JSONValue.writeString(s, to: &out)
                case .array(let items):
                    out += "["
                    open.append(.array(items[...], started: false))
                case .object(let members):
                    out += "{"
                    open.append(.object(members, keys: members.keys.sorted()[...], started: false))
                }
            }
            guard let top = open.popLast() else { return }
            switch top {
            case .array(var rest, let started):
                guard let item = rest.popFirst() else { out += "]"; continue }
                if started { out += "," }
                open.append(.array(rest, started: true))
                next = item
            case .object(let members, var keys, let started):
                guard let key = keys.popFirst() else { out += "}"; continue }
                if started { out += "," }
                JSONValue.writeString(key, to: &out)
                out += ":"
                open.append(.object(members, keys: keys, started: true))
                next = members[key]!
            }
        }
    }

    public static func writeString(_ s: String, to out: inout String) {
        out += "\""
        // Most strings need no escaping: append them whole.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            out += s
            out += "\""
            return
        }
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

/// Equality and hashing compare values iteratively, so that a value nested to
/// ``JSONLimits/maximumDepth`` costs no stack (the synthesized ones recurse once per level).
extension JSONValue: Hashable {
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        // Scalars (most field values) compare without allocating a stack.
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array, .array), (.object, .object): break
        default: return false
        }
        var pending: [(JSONValue, JSONValue)] = [(lhs, rhs)]
        while let (a, b) = pending.popLast() {
            switch (a, b) {
            case (.null, .null): continue
            case (.bool(let x), .bool(let y)): if x != y { return false }
            case (.number(let x), .number(let y)): if x != y { return false }
            case (.string(let x), .string(let y)): if x != y { return false }
            case (.array(let x), .array(let y)):
                guard x.count == y.count else { return false }
                for i in x.indices { pending.append((x[i], y[i])) }
            case (.object(let x), .object(let y)):
                guard x.count == y.count else { return false }
                for (key, value) in x {
                    guard let other = y[key] else { return false }
                    pending.append((value, other))
                }
            default: return false
            }
        }
        return true
    }

    /// Feeds the value in a canonical order (object members by sorted key), so that equal values
    /// hash equally.
    public func hash(into hasher: inout Hasher) {
        var pending: [JSONValue] = [self]
        while let value = pending.popLast() {
            switch value {
            case .null: hasher.combine(0 as UInt8)
            case .bool(let b): hasher.combine(1 as UInt8); hasher.combine(b)
            case .number(let n): hasher.combine(2 as UInt8); hasher.combine(n)
            case .string(let s): hasher.combine(3 as UInt8); hasher.combine(s)
            case .array(let items):
                hasher.combine(4 as UInt8)
                hasher.combine(items.count)
                pending.append(contentsOf: items.reversed())
            case .object(let members):
                hasher.combine(5 as UInt8)
                hasher.combine(members.count)
                for key in members.keys.sorted().reversed() {
                    pending.append(members[key]!)
                    pending.append(.string(key))
                }
            }
        }
    }
}
