import FleetSyncCore
import FleetSyncPostgres
import Foundation
import PostgresNIO

/// `fleetsync status` on the shore: one line per enrolled vessel.
public struct FleetStatus: Sendable {
    public struct Vessel: Sendable {
        public var id: String
        public var lastContact: Date?
        /// Shore events waiting for this vessel after what it has applied.
        public var lagEvents: Int64
        public var cursor: Int64
        public var reported: String
        /// The vessel's catch-up from table state, if one ever ran (``CatchUp``).
        public var catchUp: JSONValue?
        /// When the vessel's current keys were enrolled or rotated in; when its endorsed next keys
        /// arrived (a rotation pending until it authenticates with them), if they did.
        public var keysSince: Date? = nil
        public var nextKeysSince: Date? = nil

        /// A note for the text status: a catch-up running or due.
        public func catchUpNote(prunedBelow: Int64) -> String {
            if case .object(let c)? = catchUp, c["finished"] == .bool(false) {
                return "  CATCHING UP from table state: \(c["rows_confirmed"]?.int64Value ?? 0) of at most \(c["total"]?.int64Value ?? 0) row(s) confirmed"
            }
            return cursor < prunedBelow ? "  behind what is kept: its next exchange catches it up from table state" : ""
        }
    }

    public var vessels: [Vessel]
    public var lastPosition: Int64
    public var prunedBelow: Int64
    /// Events written on the shore (local writes, relayed changes, saga events) that no exchange
    /// has sequenced yet: the next exchange routes and numbers them.
    public var unsequenced: Int64

    public static func read(on db: DatabaseSession) async throws -> FleetStatus {
        let counter = try await db.rows("""
            SELECT last_pos, pruned_below,
                   (SELECT count(*) FROM fleetsync.capture_log) + (SELECT count(*) FROM fleetsync.outbox WHERE pos IS NULL)
            FROM fleetsync.outbox_counter
            """, context: "reading the outbox position")
        let (last, pruned, unsequenced) = try counter[0].decode((Int64, Int64, Int64).self)
        let rows = try await db.rows("""
            SELECT v.vessel_id, s.last_success, coalesce(s.acknowledged, 0),
                   (SELECT count(*) FROM fleetsync.outbox o WHERE o.pos > coalesce(s.acknowledged, 0)
                      AND o.vessel IN (v.vessel_id, '*') AND o.origin IS DISTINCT FROM v.vessel_id),
                   coalesce(s.status, '{}')::text,
                   (SELECT jsonb_build_object('since', c.since, 'target', c.target, 'whole', c.whole, 'total', c.total, 'pages', c.page,
                      'rows_sent', c.sent_rows, 'removals_sent', c.sent_removals, 'rows_confirmed', c.done_rows,
                      'removals_confirmed', c.done_removals, 'started_at', c.started_at, 'updated_at', c.updated_at,
                      'finished', c.finished_at IS NOT NULL, 'finished_at', c.finished_at)::text
                    FROM fleetsync.catch_up c WHERE c.vessel = v.vessel_id),
                   v.keys_since, v.next_since
            FROM fleetsync.vessel v LEFT JOIN fleetsync.sync_state s ON s.peer = v.vessel_id ORDER BY v.vessel_id
            """, context: "reading the fleet status")
        let vessels = try rows.map { row in
            let (id, contact, cursor, lag, reported, catchUp, keysSince, nextSince) = try row.decode((String, Date?, Int64, Int64, String, String?, Date?, Date?).self)
            return Vessel(id: id, lastContact: contact, lagEvents: lag, cursor: cursor, reported: reported, catchUp: catchUp.flatMap { try? JSONParser.parse($0) },
                          keysSince: keysSince, nextKeysSince: nextSince)
        }
        return FleetStatus(vessels: vessels, lastPosition: last, prunedBelow: pruned, unsequenced: unsequenced)
    }

    public var json: JSONValue {
        .object([
            "role": .string("shore"), "last_position": .number(String(lastPosition)), "pruned_below": .number(String(prunedBelow)),
            "unsequenced_events": .number(String(unsequenced)),
            "vessels": .array(vessels.map { v in
                .object([
                    "vessel": .string(v.id), "last_contact": v.lastContact.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? .null,
                    "lag_events": .number(String(v.lagEvents)), "cursor": .number(String(v.cursor)),
                    "behind_retention": .bool(v.cursor < prunedBelow),
                    "catch_up": v.catchUp ?? .null,
                    "keys_since": v.keysSince.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? .null,
                    "key_rotation_pending_since": v.nextKeysSince.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? .null,
                    "reported": (try? JSONParser.parse(v.reported)) ?? .null,
                ])
            }),
        ])
    }

    /// Registers a vessel so that its exchanges are accepted.
    public static func enroll(vessel: String, identity: String?, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(identity)
        try await db.execute("""
            INSERT INTO fleetsync.vessel (vessel_id, identity) VALUES ($1, $2)
            ON CONFLICT (vessel_id) DO UPDATE SET identity = coalesce(EXCLUDED.identity, fleetsync.vessel.identity)
            """, binds, context: "enrolling vessel \(vessel)")
    }
}
