import FleetSyncCore
import FleetSyncPostgres
import Foundation
import PostgresNIO

/// `fleetsync status` on a vessel.
public struct VesselStatus: Sendable {
    public var pendingEvents: Int64
    public var cursor: Int64
    public var acknowledged: Int64
    public var lastSuccess: Date?
    public var lastError: String?
    public var lastErrorAt: Date?
    public var deadLetters: Int64
    public var quarantinedRows: Int64
    /// Received changes waiting for a row they reference (they apply by themselves when it comes).
    public var waiting: Int64 = 0
    /// The catch-up progress the shore last reported (``CatchUpProgress``), if any.
    public var catchUp: JSONValue?
    /// The last verify's time and result (``fleetsync verify``), if any.
    public var lastVerify: JSONValue?
    /// The shore identity announced by the shore and trusted since (its text), if any, and how
    /// many announcements were refused (``ShoreTrust``).
    public var announcedShoreIdentity: String? = nil
    public var refusedAnnouncements: Int32 = 0

    public static func read(on db: DatabaseSession) async throws -> VesselStatus {
        let rows = try await db.rows("""
            SELECT (SELECT count(*) FROM fleetsync.outbox WHERE pos IS NULL OR pos > coalesce(s.acknowledged, 0))
                   + (SELECT count(*) FROM fleetsync.capture_log),
                   coalesce(s.cursor, 0), coalesce(s.acknowledged, 0), s.last_success, s.last_error, s.last_error_at,
                   (SELECT count(*) FROM fleetsync.dead_letter), (SELECT count(*) FROM fleetsync.schema_quarantine),
                   (SELECT count(*) FROM fleetsync.waiting), s.catch_up::text, s.last_verify::text,
                   s.shore_identity, coalesce(s.shore_announcements_refused, 0)
            FROM (SELECT 1) one LEFT JOIN fleetsync.sync_state s ON s.peer = 'shore'
            """, context: "reading the vessel status")
        let (pending, cursor, acknowledged, success, error, errorAt, dlq, quarantine, waiting, catchUp, verify, announced, refused) =
            try rows[0].decode((Int64, Int64, Int64, Date?, String?, Date?, Int64, Int64, Int64, String?, String?, String?, Int32).self)
        var status = VesselStatus(pendingEvents: pending, cursor: cursor, acknowledged: acknowledged, lastSuccess: success,
                            lastError: error, lastErrorAt: errorAt, deadLetters: dlq, quarantinedRows: quarantine, waiting: waiting,
                            catchUp: catchUp.flatMap { try? JSONParser.parse($0) }, lastVerify: verify.flatMap { try? JSONParser.parse($0) })
        status.announcedShoreIdentity = announced
        status.refusedAnnouncements = refused
        return status
    }

    public var json: JSONValue {
        .object([
            "role": .string("vessel"), "pending_events": .number(String(pendingEvents)), "cursor": .number(String(cursor)),
            "acknowledged": .number(String(acknowledged)),
            "last_success": lastSuccess.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? .null,
            "last_error": lastError.map(JSONValue.string) ?? .null,
            "last_error_at": lastErrorAt.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? .null,
            "dead_letters": .number(String(deadLetters)), "quarantined_rows": .number(String(quarantinedRows)),
            "waiting": .number(String(waiting)),
            "catch_up": catchUp ?? .null, "last_verify": lastVerify ?? .null,
            "shore_identity_announced": .bool(announcedShoreIdentity != nil), "shore_announcements_refused": .number(String(refusedAnnouncements)),
        ])
    }
}
