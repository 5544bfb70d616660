/// Validation of names that come from configuration or the network.
public enum Identifiers {
    /// A node id: 1 to 63 of `a-z 0-9 - _`, starting with a letter or digit.
    public static func isValidNodeID(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        guard (1...63).contains(bytes.count) else { return false }
        for (i, b) in bytes.enumerated() {
            let alnum = (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
            if i == 0 ? !alnum : !(alnum || b == 0x2D || b == 0x5F) { return false }
        }
        return true
    }

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
