import FleetSyncCore

/// Reads a row's stored clock object as PostgreSQL prints it (`{"name": [counter, "node"], ...}`)
/// straight from its bytes, for a bulk catch-up page: no JSON value or dictionary per row. Keys
/// are matched against the section's columns (rows of a page list them in the same order, which
/// is tried first), node ids are checked once each. Anything it does not read as exactly that
/// (escapes in a key or a node, another shape of value, an unknown or repeated key) fails, and
/// the section goes through the event path, which reads it as the shore's own reader does.
struct ClockText {
    struct Failure: Error {
        var reason: String
    }

    /// One row's clocks: per column (nil: none), and the tombstone's.
    struct Row {
        var clocks: [FieldClock?]
        var tombstone: FieldClock?

        /// The fields as a state with these clocks and no values (for the tombstone rule).
        func fields(_ names: [String], tombstone change: FieldChange) -> [String: FieldChange] {
            var fields: [String: FieldChange] = [ChangeEvent.deletedField: change]
            for (i, clock) in clocks.enumerated() { if let clock { fields[names[i]] = FieldChange(value: .null, clock: clock) } }
            return fields
        }
    }

    let names: [[UInt8]]
    let index: [String: Int]
    let shore: String
    /// Key order of the last row read: the next row's keys are tried in it first.
    private var order: [Int] = []
    private var nodes: [(bytes: [UInt8], name: String)] = []
    static let tombstoneKey = Array(ChangeEvent.deletedField.utf8)

    init(columns: [String], shore: String) {
        names = columns.map { Array($0.utf8) }
        var index: [String: Int] = [:]
        for (i, name) in columns.enumerated() { index[name] = i }
        self.index = index
        self.shore = shore
    }

    mutating func parse(_ b: UnsafeBufferPointer<UInt8>) throws(Failure) -> Row {
        var row = Row(clocks: [FieldClock?](repeating: nil, count: names.count), tombstone: nil)
        var i = 0
        let n = b.count
        func skip() { while i < n && (b[i] == 0x20 || b[i] == 0x09) { i += 1 } }
        func expect(_ c: UInt8, _ what: String) throws(Failure) {
            skip()
            guard i < n, b[i] == c else { throw Failure(reason: "expected \(what) at byte \(i)") }
            i += 1
        }
        /// A string's bytes between quotes (no escapes).
        func string() throws(Failure) -> Range<Int> {
            try expect(0x22, "a string")
            let start = i
            while i < n && b[i] != 0x22 {
                guard b[i] != 0x5C else { throw Failure(reason: "an escaped key or node id") }
                i += 1
            }
            guard i < n else { throw Failure(reason: "a string does not end") }
            i += 1
            return start..<(i - 1)
        }
        try expect(0x7B, "{")
        skip()
        if i < n && b[i] == 0x7D {
            i += 1
        } else {
            var ordinal = 0
            var seen = 0
            while true {
                let key = try string()
                try expect(0x3A, ":")
                try expect(0x5B, "[")
                skip()
                var counter: Int64 = 0
                let digits = i
                while i < n && b[i] >= 0x30 && b[i] <= 0x39 {
                    guard i - digits < 18 else { throw Failure(reason: "a clock counter of more than 18 digits") }
                    counter = counter * 10 + Int64(b[i] - 0x30)
                    i += 1
                }
                guard i > digits else { throw Failure(reason: "a clock counter that is not a whole number") }
                try expect(0x2C, ",")
                let node = try self.node(b, try string())
                try expect(0x5D, "]")
                let clock = FieldClock(counter: counter, node: node)
                if let column = column(b, key, ordinal: ordinal) {
                    guard row.clocks[column] == nil else { throw Failure(reason: "a repeated key") }
                    row.clocks[column] = clock
                    if ordinal < order.count { order[ordinal] = column } else { order.append(column) }
                } else if Self.equal(b, key, Self.tombstoneKey) {
                    guard row.tombstone == nil else { throw Failure(reason: "a repeated key") }
                    row.tombstone = clock
                } else {
                    throw Failure(reason: "a clock for \"\(String(decoding: UnsafeBufferPointer(rebasing: b[key]), as: UTF8.self).prefix(64))\", which is no column of the page")
                }
                ordinal += 1
                seen += 1
                skip()
                guard i < n else { throw Failure(reason: "the object does not end") }
                if b[i] == 0x2C {
                    i += 1
                    continue
                }
                guard b[i] == 0x7D else { throw Failure(reason: "expected , or } at byte \(i)") }
                i += 1
                break
            }
        }
        skip()
        guard i == n else { throw Failure(reason: "bytes after the object") }
        return row
    }

    /// The column `key` names: the one at this place in the last row first.
    private func column(_ b: UnsafeBufferPointer<UInt8>, _ key: Range<Int>, ordinal: Int) -> Int? {
        if ordinal < order.count, Self.equal(b, key, names[order[ordinal]]) { return order[ordinal] }
        return index[String(decoding: UnsafeBufferPointer(rebasing: b[key]), as: UTF8.self)]
    }

    private mutating func node(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) throws(Failure) -> String {
        for known in nodes where Self.equal(b, range, known.bytes) { return known.name }
        let name = String(decoding: UnsafeBufferPointer(rebasing: b[range]), as: UTF8.self)
        guard Identifiers.isValidNodeID(name) else { throw Failure(reason: "clock names no valid node (\"\(name.prefix(64))\")") }
        if nodes.count < 64 { nodes.append((Array(b[range]), name)) }
        return name
    }

    static func equal(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ bytes: [UInt8]) -> Bool {
        guard range.count == bytes.count else { return false }
        var j = range.lowerBound
        for c in bytes {
            if b[j] != c { return false }
            j += 1
        }
        return true
    }
}
