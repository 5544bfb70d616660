import FleetSyncCore
import Foundation
import PostgresNIO

/// Events that violated a local constraint, kept with their context until an operator retries
/// or discards them.
public enum DeadLetterQueue {
    /// One dead letter as `fleetsync dlq list` shows it.
    public struct Entry: Sendable {
        public var id: Int64
        public var table: String
        public var rowID: UUID?
        public var sqlState: String?
        public var constraint: String?
        public var message: String
        public var attempts: Int
        public var sender: String?
        public var event: String
    }

    public static func add(_ event: ChangeEvent, sender: String, error: DatabaseError, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(event.json.serialized)
        binds.append(event.table)
        binds.append(event.rowID)
        binds.append(error.sqlState)
        binds.append(error.constraint)
        binds.append(error.message)
        binds.append(sender)
        try await db.execute("""
            INSERT INTO fleetsync.dead_letter (event, table_name, row_id, sql_state, constraint_name, message, sender)
            VALUES ($1::jsonb, $2, $3, $4, $5, $6, $7)
            """, binds, context: "adding to the dead-letter queue")
    }

    public static func list(on db: DatabaseSession) async throws -> [Entry] {
        let rows = try await db.rows("""
            SELECT id, table_name, row_id, sql_state, constraint_name, message, attempts, sender, event::text
            FROM fleetsync.dead_letter ORDER BY id
            """, context: "listing the dead-letter queue")
        return try rows.map { row in
            let (id, table, rowID, state, constraint, message, attempts, sender, event) =
                try row.decode((Int64, String, UUID?, String?, String?, String, Int32, String?, String).self)
            return Entry(id: id, table: table, rowID: rowID, sqlState: state, constraint: constraint, message: message, attempts: Int(attempts), sender: sender, event: event)
        }
    }

    /// Re-applies dead letters (all, or those in `ids`) through the normal merge and apply path.
    /// Entries that apply are removed; entries that fail again stay, with the new error.
    public static func retry(ids: [Int64]?, applier: Applier) async throws -> (applied: Int, failed: Int) {
        var applied = 0
        var failed = 0
        for entry in try await list(on: applier.session) where ids == nil || ids!.contains(entry.id) {
            let event = try ChangeEvent(json: try JSONParser.parse(entry.event))
            let sender = entry.sender ?? event.origin
            let before = try await count(on: applier.session)
            if event.offboard {
                // An offboarding that failed: delete the row again (it fails again, and is
                // dead-lettered again, while a local row still references it).
                let schema = applier.schema
                _ = try await applier.session.transaction { db in
                    try await Applier.removeOffboarded([(event.table, [event.rowID])], schema: schema, sender: sender, on: db)
                }
            } else {
                var report = ApplyReport()
                var intake = Intake(schema: applier.schema, sender: sender)
                intake.add(event)
                var quarantine = intake.quarantine
                try await applier.isolate(intake.orderedGroups(), quarantine: &quarantine, report: &report)
                if !quarantine.isEmpty {
                    let pending = quarantine
                    try await applier.session.transaction { db in try await QuarantineVault.store(pending, on: db) }
                }
            }
            let after = try await count(on: applier.session)
            var binds = PostgresBindings()
            binds.append(entry.id)
            if after > before {
                // It failed again: keep the original entry with the newest error, drop the copy.
                try await applier.session.execute("""
                    WITH newest AS (DELETE FROM fleetsync.dead_letter WHERE id = (SELECT max(id) FROM fleetsync.dead_letter) AND id <> $1
                                    RETURNING sql_state, constraint_name, message)
                    UPDATE fleetsync.dead_letter d SET attempts = attempts + 1, sql_state = n.sql_state,
                      constraint_name = n.constraint_name, message = n.message FROM newest n WHERE d.id = $1
                    """, binds, context: "recording a failed retry")
                failed += 1
            } else {
                try await applier.session.execute("DELETE FROM fleetsync.dead_letter WHERE id = $1", binds, context: "removing a retried dead letter")
                applied += 1
            }
        }
        return (applied, failed)
    }

    /// Deletes dead letters (all, or those in `ids`); returns how many.
    public static func discard(ids: [Int64]?, on db: DatabaseSession) async throws -> Int {
        var binds = PostgresBindings()
        binds.append(ids ?? [])
        let rows = try await db.rows(
            ids == nil ? "WITH d AS (DELETE FROM fleetsync.dead_letter RETURNING 1) SELECT count(*) FROM d"
                       : "WITH d AS (DELETE FROM fleetsync.dead_letter WHERE id = ANY($1::bigint[]) RETURNING 1) SELECT count(*) FROM d",
            ids == nil ? PostgresBindings() : binds, context: "discarding dead letters")
        return Int(try rows[0].value(0, as: Int64.self))
    }

    static func count(on db: DatabaseSession) async throws -> Int64 {
        try await db.rows("SELECT count(*) FROM fleetsync.dead_letter", context: "counting dead letters")[0].value(0)
    }
}

/// `fleetsync.conflict_log`: every concurrent write to a shared field, with both values.
enum ConflictLog {
    static func record(_ conflicts: [Conflict], on db: DatabaseSession) async throws {
        guard !conflicts.isEmpty else { return }
        let records = conflicts.map { c in
            JSONValue.object([
                "table_name": .string(c.table), "row_id": .string(c.rowID.lowercasedText), "field": .string(c.field),
                "kept": .object(["v": c.kept.value, "c": c.kept.clock.json]),
                "discarded": .object(["v": c.discarded.value, "c": c.discarded.clock.json]),
            ])
        }
        var binds = PostgresBindings()
        binds.append(JSONValue.array(records).serialized)
        try await db.execute("""
            INSERT INTO fleetsync.conflict_log (table_name, row_id, field, kept, discarded)
            SELECT table_name, row_id, field, kept, discarded
            FROM jsonb_to_recordset($1::jsonb) AS r(table_name text, row_id uuid, field text, kept jsonb, discarded jsonb)
            """, binds, context: "recording conflicts")
    }
}
