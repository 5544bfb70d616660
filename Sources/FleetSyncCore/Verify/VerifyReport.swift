/// What one `fleetsync verify` found, as the vessel keeps it in `sync_state.last_verify`.
public enum VerifyReport {
    /// One line for `fleetsync status` from the stored result.
    public static func describeStored(_ stored: JSONValue) -> String {
        guard case .object(let r) = stored else { return "never" }
        let at = r["at"]?.stringValue ?? "?"
        let differing = r["differing"]?.int64Value ?? 0
        let repaired = r["repaired"]?.int64Value ?? 0
        let bytes = r["bytes"]?.int64Value ?? 0
        let trips = r["round_trips"]?.int64Value ?? 0
        if let error = r["error"]?.stringValue { return "\(at): failed: \(error)" }
        let result = differing == 0 ? "same as the shore" : "\(differing) differing row(s)\(repaired > 0 ? ", \(repaired) repaired" : "")"
        let by = r["reason"]?.stringValue.map { ", by the daemon (\($0.replacingOccurrences(of: "_", with: " ")))" } ?? ""
        return "\(at): \(result) (\(bytes) bytes, \(trips) round trip(s)\(by))"
    }

    /// Members of a stored result a vessel reports to the shore in its status object.
    static let reportedMembers = ["at", "differing", "repaired", "skipped", "bytes", "round_trips", "repair", "reason", "error"]

    /// The stored result as the vessel reports it in its exchange's status object: its summary
    /// members only (no row lists), strings cut to 400 bytes, so that it stays well inside the
    /// shore's bounds on what a vessel reports (StatusBounds).
    public static func reported(_ stored: JSONValue) -> JSONValue {
        guard case .object(let r) = stored else { return .null }
        var kept: [String: JSONValue] = [:]
        for key in reportedMembers {
            switch r[key] {
            case .string(let text)?: kept[key] = .string(String(decoding: Array(text.utf8.prefix(400)), as: UTF8.self))
            case .number(let n)? where n.utf8.count <= 20: kept[key] = .number(n)
            case .bool(let b)?: kept[key] = .bool(b)
            default: break
            }
        }
        return .object(kept)
    }
}
