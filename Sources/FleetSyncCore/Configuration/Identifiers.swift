import Foundation

/// Validation of names that come from configuration or the network.
public enum Identifiers {
    /// A node id: any value a routing column can hold that names a node, kept as written (case
    /// included: `IMO9321483`): 1 to 63 bytes of UTF-8, no whitespace or control characters, and
    /// not `*`, which marks broadcast events in the shore's outbox. Letters beyond ASCII must be
    /// in normalization form C: Swift compares strings by canonical equivalence, PostgreSQL by
    /// bytes, and two ids must be equal for both or for neither.
    public static func isValidNodeID(_ id: String) -> Bool {
        guard (1...63).contains(id.utf8.count), id != "*" else { return false }
        if id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { return true }
        if id.unicodeScalars.contains(where: { $0.properties.isWhitespace || [.control, .format, .unassigned, .surrogate].contains($0.properties.generalCategory) }) {
            return false
        }
        return id.unicodeScalars.elementsEqual(id.precomposedStringWithCanonicalMapping.unicodeScalars)
    }

    /// What ``isValidNodeID(_:)`` accepts, for messages.
    public static let nodeIDRule = "1 to 63 bytes, as the routing column holds it (case kept, Unicode in NFC), without whitespace or control characters, and not \"*\""

    /// A PostgreSQL table or column name FleetSync accepts: 1 to 63 bytes, no control characters.
    /// It is always quoted when used in SQL, so other characters are allowed.
    public static func isValidSQLName(_ name: String) -> Bool {
        let count = name.utf8.count
        guard count >= 1, count <= 63 else { return false }
        return !name.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }

    /// `HOST:PORT` with a port in 1...65535.
    public static func isValidListenAddress(_ address: String) -> Bool {
        guard let colon = address.lastIndex(of: ":") else { return false }
        let host = address[..<colon]
        guard let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port) else { return false }
        return !host.isEmpty
    }
}
