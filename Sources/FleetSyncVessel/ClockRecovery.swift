import FleetSyncCore
import FleetSyncPostgres
import Foundation
import PostgresNIO

/// A vessel restored from a backup: the shore holds clocks of this vessel's writes that its
/// database no longer remembers, so its new writes may carry a clock the shore holds for another
/// value (the shore would keep the wrong one, or both sides a different one). When the shore
/// names that floor, the vessel moves its logical clock past it and gives every pending change
/// whose clock is not above it a new clock: in the outbox and in the row's field clocks, in one
/// transaction that holds writers of the synced tables back, so that no write slips between.
public struct ClockRecovery: Sendable {
    public var schema: LocalSchema
    public var session: DatabaseSession
    public var nodeID: String

    public init(schema: LocalSchema, session: DatabaseSession, nodeID: String) {
        self.schema = schema
        self.session = session
        self.nodeID = nodeID
    }

    /// The node's logical clock now (its Lamport counter's last value).
    public static func current(on db: DatabaseSession) async throws -> Int64 {
        try await ClockBound.current(on: db)
    }

    /// Moves the clock past `floor` and re-clocks pending changes at or below it; returns how
    /// many changes got a new clock.
    @discardableResult
    public func moveClocks(past floor: Int64, pendingAfter acknowledged: Int64) async throws -> Int {
        try await OutboxReader(session: session).sequence()
        let schema = self.schema
        let node = nodeID
        return try await session.transaction { db in
            try await db.execute("SET LOCAL fleetsync.applying = 'on'", context: "marking the re-clocking as the sync engine's")
            let tables = schema.tables.values.map { SQL.qualified($0.schema, $0.name) }.sorted()
            if !tables.isEmpty {
                // Writers of synced tables wait until the clocks have moved; writes in flight finish first.
                try await db.execute("LOCK TABLE \(tables.joined(separator: ", ")) IN SHARE ROW EXCLUSIVE MODE", context: "holding writers back while clocks move")
            }
            // Whatever committed meanwhile is sequenced now, under the lock.
            var binds = PostgresBindings()
            binds.append(floor)
            try await db.execute("SELECT setval('fleetsync.lamport', greatest($1, (SELECT last_value FROM fleetsync.lamport)))", binds, context: "moving the logical clock past the shore's floor")
            var pending = PostgresBindings()
            pending.append(acknowledged)
            pending.append(floor)
            let rows = try await db.rows("""
                SELECT seq, table_name, row_id, version FROM fleetsync.outbox
                WHERE (pos IS NULL OR pos > $1) AND version <= $2 AND op IN ('I', 'U') ORDER BY pos NULLS LAST, seq
                """, pending, context: "finding pending changes to re-clock")
            // Changes committed after the sequencing above, before the lock, are still in the
            // capture log (no key there: its rows are named by their physical place).
            let unsequenced = try await db.rows("""
                SELECT ctid::text, table_name, row_id, version FROM fleetsync.capture_log
                WHERE version <= $2 AND op IN ('I', 'U') AND $1 >= 0 ORDER BY seq
                """, pending, context: "finding captured changes to re-clock")
            var changes: [(place: String, table: String, rowID: UUID, old: Int64)] = []
            for row in rows {
                let (seq, table, rowID, old) = try row.decode((Int64, String, UUID, Int64).self)
                changes.append(("outbox:\(seq)", table, rowID, old))
            }
            for row in unsequenced {
                let (ctid, table, rowID, old) = try row.decode((String, String, UUID, Int64).self)
                changes.append(("log:\(ctid)", table, rowID, old))
            }
            var moved = 0
            for (place, table, rowID, old) in changes {
                let new: Int64 = try await db.rows("SELECT nextval('fleetsync.lamport')", context: "taking a new clock")[0].value(0)
                var change = PostgresBindings()
                change.append(new)
                if place.hasPrefix("outbox:") {
                    change.append(Int64(place.dropFirst(7))!)
                    try await db.execute("UPDATE fleetsync.outbox SET version = $1 WHERE seq = $2", change, context: "re-clocking a pending change")
                } else {
                    change.append(String(place.dropFirst(4)))
                    try await db.execute("UPDATE fleetsync.capture_log SET version = $1, seq = $1 WHERE ctid = $2::tid", change, context: "re-clocking a captured change")
                }
                guard let physical = schema.tables[table] else { continue }
                var fields = PostgresBindings()
                fields.append(old)
                fields.append(new)
                fields.append(node)
                fields.append(rowID)
                try await db.execute("""
                    UPDATE \(SQL.qualified(physical.schema, physical.name)) SET
                      sync_clock = (SELECT coalesce(jsonb_object_agg(key, CASE WHEN value = jsonb_build_array($1::bigint, $3::text)
                                    THEN jsonb_build_array($2::bigint, $3::text) ELSE value END), '{}'::jsonb) FROM jsonb_each(sync_clock)),
                      sync_version = greatest(sync_version, $2)
                    WHERE id = $4
                    """, fields, context: "re-clocking the fields of a row of \(table)")
                moved += 1
            }
            return moved
        }
    }
}
