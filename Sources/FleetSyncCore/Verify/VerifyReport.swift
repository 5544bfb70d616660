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
        return "\(at): \(result) (\(bytes) bytes, \(trips) round trip(s))"
    }
}
