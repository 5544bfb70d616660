import Foundation

extension UUID {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// The canonical lowercase text form, built without formatting calls (hot in bulk apply).
    public var lowercasedText: String {
        let u = uuid
        return withUnsafeBytes(of: u) { raw -> String in
            String(unsafeUninitializedCapacity: 36) { out in
                var o = 0
                for (i, byte) in raw.enumerated() {
                    if i == 4 || i == 6 || i == 8 || i == 10 { out[o] = UInt8(ascii: "-"); o += 1 }
                    out[o] = UUID.hexDigits[Int(byte >> 4)]
                    out[o + 1] = UUID.hexDigits[Int(byte & 0x0F)]
                    o += 2
                }
                return 36
            }
        }
    }
}

extension RowState {
    /// Appends the `sync_clock` JSON of this state (`{"field": [counter, "node"], ...}`) straight
    /// to `out`, without building intermediate values. Keys come in dictionary order: the text
    /// only feeds a jsonb column, which orders keys itself. Fields never written through FleetSync
    /// (the lowest clock, no node) get no entry.
    public func writeClocks(to out: inout String) {
        out += "{"
        var first = true
        for (name, change) in fields where !change.clock.node.isEmpty {
            if !first { out += "," }
            first = false
            JSONValue.writeString(name, to: &out)
            let clock = change.clock
            out += ":["
            out += String(clock.counter)
            out += ","
            JSONValue.writeString(clock.node, to: &out)
            out += "]"
        }
        out += "}"
    }
}
