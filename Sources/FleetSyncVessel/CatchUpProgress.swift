import FleetSyncCore
import FleetSyncPostgres
import PostgresNIO

/// The catch-up progress the shore reported in its last applied response (docs/PROTOCOL.md,
/// *Catch-up*). Kept in `sync_state.catch_up` after the page is applied, and echoed as the
/// `catch_up` status of the next request: that is how the shore knows the page arrived. A
/// vessel that has never stored one asks, with cursor 0, for its whole partition.
public enum CatchUpProgress {
    public static func record(_ progress: [String: JSONValue], on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(JSONValue.object(progress).serialized)
        try await db.execute("""
            UPDATE fleetsync.sync_state SET catch_up = $1::jsonb || jsonb_build_object('at', now()) WHERE peer = 'shore'
            """, binds, context: "recording the catch-up progress")
    }

    /// One line for `fleetsync status`.
    public static func describe(_ progress: JSONValue) -> String {
        guard case .object(let p) = progress else { return "none" }
        let rows = p["rows"]?.int64Value ?? 0, removals = p["removals"]?.int64Value ?? 0, total = p["total"]?.int64Value ?? 0
        let whole = p["whole"] == .bool(true) ? "whole partition" : "changes since position \(p["since"]?.int64Value ?? 0)"
        let at = p["at"]?.stringValue.map { " at \($0)" } ?? ""
        if p["done"] == .bool(true) {
            return "caught up from table state (\(whole)): \(rows) row(s), \(removals) removal(s) in \(p["page"]?.int64Value ?? 0) page(s)\(at)"
        }
        return "catching up from table state (\(whole)): \(rows) of at most \(total) row(s), \(removals) removal(s), page \(p["page"]?.int64Value ?? 0)\(at)"
    }
}
