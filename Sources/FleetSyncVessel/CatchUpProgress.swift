import FleetSyncCore
import FleetSyncPostgres
import Foundation
import Logging
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

extension CatchUpProgress {
    /// The status member that asks for catch-up pages in bulk form (``CatchUpBulkPage``), sent
    /// in every request; none when `FLEETSYNC_BULK_CATCH_UP=off` (for the onboarding benchmark,
    /// which measures the event pages side by side: what a vessel before bulk pages gets).
    public static var bulkAnnouncement: [String: JSONValue] {
        ProcessInfo.processInfo.environment["FLEETSYNC_BULK_CATCH_UP"] == "off" ? [:] : [CatchUpBulkPage.statusKey: .number(String(CatchUpBulkPage.version))]
    }

    /// Applies a catch-up page in bulk form (``CatchUpBulkWriter``): copied straight in when it
    /// can be, as events otherwise. A bulk page carries no events; one that does is refused.
    static func applyBulk(_ page: CatchUpBulkPage, events: Int, response: ExchangeResponse, schema: LocalSchema, session: DatabaseSession,
                          telemetry: TelemetryWriter, peer: String, logger: Logger) async throws -> ApplyReport {
        guard events == 0, response.catchUp != nil else {
            throw WireError(.malformed, "a bulk catch-up page came with \(events) events\(response.catchUp == nil ? " and no catch-up progress" : ""); nothing was applied")
        }
        let started = ContinuousClock.now
        let outcome = try await CatchUpBulkWriter(schema: schema, session: session, telemetry: telemetry, shore: response.shore, sender: peer)
            .apply(page, cursor: response.cursor)
        var metadata: Logger.Metadata = ["rows": "\(page.rows)", "copied": "\(outcome.copied)", "seconds": "\(started.secondsElapsed)"]
        if let reason = outcome.asEvents { metadata["as_events"] = "\(reason)" }
        logger.info("bulk catch-up page applied", metadata: metadata)
        return outcome.report
    }
}
