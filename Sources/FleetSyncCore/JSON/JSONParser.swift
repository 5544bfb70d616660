/// Why a JSON text was rejected, with the byte offset where parsing stopped.
public struct JSONParseError: Error, Sendable, CustomStringConvertible, Equatable {
    public var offset: Int
    public var reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// A strict RFC 8259 parser that keeps numbers as text and bounds nesting depth and number
/// length (``JSONLimits``). It is iterative: a value nested to the limit costs heap, not stack.
public struct JSONParser {
    /// Deepest nesting of arrays and objects in one value (``JSONLimits/maximumDepth``).
    public static let maximumDepth = JSONLimits.maximumDepth

    private let bytes: [UInt8]
    private var index = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Parses one JSON value that must span the whole text. `valuesAt` is the depth at which the
    /// document holds the values that ``JSONLimits/maximumDepth`` bounds (see
    /// ``JSONLimits/Envelope``): the document may be that much deeper than the limit. The default
    /// fits every stored form; readers that hand values on to another node pass their exact
    /// envelope, so that they accept exactly what the wire decoder accepts.
    public static func parse(_ text: String, valuesAt: Int = JSONLimits.Envelope.event) throws(JSONParseError) -> JSONValue {
        try parse(bytes: Array(text.utf8), valuesAt: valuesAt)
    }

    /// Parses one JSON value that must span all of `bytes` (see ``parse(_:valuesAt:)``).
    public static func parse(bytes: [UInt8], valuesAt: Int = JSONLimits.Envelope.event) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(maximumDepth: JSONLimits.maximumDepth + max(0, valuesAt))
        parser.skipWhitespace()
        guard parser.index == parser.bytes.count else { throw parser.error("unexpected trailing characters") }
        return value
    }

    /// Whether `text` is exactly one JSON number (no whitespace) of at most
    /// ``JSONLimits/maximumNumberBytes``.
    public static func isNumber(_ text: String) -> Bool {
        var parser = JSONParser(Array(text.utf8))
        guard (try? parser.parseNumber()) != nil else { return false }
        return parser.index == parser.bytes.count
    }

    private func error(_ reason: String) -> JSONParseError { JSONParseError(offset: index, reason: reason) }

    private mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
            index += 1
        }
    }

    /// Reads one value with explicit stacks of the arrays and objects open around the current
    /// position (no recursion). Each open container's items are kept in a stack of their own and
    /// appended to in place (never copied), so that reading stays linear in the text.
    private mutating func parseValue(maximumDepth: Int) throws(JSONParseError) -> JSONValue {
        var isObject: [Bool] = []              // per open container, innermost last
        var arrays: [[JSONValue]] = []         // the items of the open arrays
        var objects: [[String: JSONValue]] = []  // the members of the open objects
        var keys: [String] = []                // per open object, the key whose value is being read
        while true {
            // Read a value: a scalar, an empty container, or the start of a container whose
            // first item is read next.
            guard index < bytes.count else { throw error("unexpected end of input") }
            var value: JSONValue
            switch bytes[index] {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let object = bytes[index] == UInt8(ascii: "{")
                guard isObject.count < maximumDepth else {
                    throw error("nesting deeper than \(maximumDepth) levels: a value nested deeper than \(JSONLimits.maximumDepth) (JSONLimits.maximumDepth)")
                }
                index += 1
                skipWhitespace()
                if object {
                    if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                        index += 1
                        value = .object([:])
                    } else {
                        keys.append(try parseKey())
                        objects.append([:])
                        isObject.append(true)
                        continue
                    }
                } else {
                    if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                        index += 1
                        value = .array([])
                    } else {
                        arrays.append([])
                        isObject.append(false)
                        continue
                    }
                }
            case UInt8(ascii: "\""): value = .string(try parseString())
            case UInt8(ascii: "t"): try expectWord("true"); value = .bool(true)
            case UInt8(ascii: "f"): try expectWord("false"); value = .bool(false)
            case UInt8(ascii: "n"): try expectWord("null"); value = .null
            default: value = .number(try parseNumber())
            }
            // Hand the value to the innermost open container; close the containers that end here.
            while true {
                guard let inObject = isObject.last else { return value }
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                let next = bytes[index]
                if inObject {
                    objects[objects.count - 1][keys.removeLast()] = value
                    if next == UInt8(ascii: ",") {
                        index += 1
                        skipWhitespace()
                        let key = try parseKey()
                        guard objects[objects.count - 1][key] == nil else { throw error("duplicate key \"\(key.prefix(64))\"") }
                        keys.append(key)
                        break
                    }
                    guard next == UInt8(ascii: "}") else { throw error("expected ',' or '}'") }
                    index += 1
                    value = .object(objects.removeLast())
                } else {
                    arrays[arrays.count - 1].append(value)
                    if next == UInt8(ascii: ",") {
                        index += 1
                        skipWhitespace()
                        break
                    }
                    guard next == UInt8(ascii: "]") else { throw error("expected ',' or ']'") }
                    index += 1
                    value = .array(arrays.removeLast())
                }
                isObject.removeLast()
            }
        }
    }

    /// Reads `"key" :` and the whitespace after it.
    private mutating func parseKey() throws(JSONParseError) -> String {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a string key") }
        let key = try parseString()
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
        index += 1
        skipWhitespace()
        return key
    }

    private mutating func expectWord(_ word: String) throws(JSONParseError) {
        let expected = Array(word.utf8)
        guard index + expected.count <= bytes.count else { throw error("unexpected end of input") }
        for i in 0..<expected.count where bytes[index + i] != expected[i] { throw error("invalid literal") }
        index += expected.count
    }

    private mutating func parseNumber() throws(JSONParseError) -> String {
        let start = index
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid value") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit after '.'") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit in exponent") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        guard index - start <= JSONLimits.maximumNumberBytes else {
            throw JSONParseError(offset: start, reason: "number of \(index - start) bytes exceeds the limit of \(JSONLimits.maximumNumberBytes) (the longest PostgreSQL numeric)")
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    private mutating func parseString() throws(JSONParseError) -> String {
        index += 1
        var runStart = index
        var out = ""
        func flushRun(_ end: Int) {
            if end > runStart { out += String(decoding: bytes[runStart..<end], as: UTF8.self) }
        }
        while true {
            guard index < bytes.count else { throw error("unterminated string") }
            let b = bytes[index]
            if b == UInt8(ascii: "\"") {
                flushRun(index)
                index += 1
                return out
            }
            if b < 0x20 { throw error("control character in string") }
            if b != UInt8(ascii: "\\") { index += 1; continue }
            flushRun(index)
            index += 1
            guard index < bytes.count else { throw error("unterminated escape") }
            let e = bytes[index]
            index += 1
            switch e {
            case UInt8(ascii: "\""): out += "\""
            case UInt8(ascii: "\\"): out += "\\"
            case UInt8(ascii: "/"): out += "/"
            case UInt8(ascii: "b"): out += "\u{08}"
            case UInt8(ascii: "f"): out += "\u{0C}"
            case UInt8(ascii: "n"): out += "\n"
            case UInt8(ascii: "r"): out += "\r"
            case UInt8(ascii: "t"): out += "\t"
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800...0xDBFF).contains(code) {
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                        throw error("unpaired surrogate")
                    }
                    index += 2
                    let low = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid low surrogate") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(code) {
                    throw error("unpaired surrogate")
                }
                guard let scalar = Unicode.Scalar(code) else { throw error("invalid code point") }
                out.unicodeScalars.append(scalar)
            default:
                throw error("invalid escape")
            }
            runStart = index
        }
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[index]
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value * 16 + digit
            index += 1
        }
        return value
    }
}
