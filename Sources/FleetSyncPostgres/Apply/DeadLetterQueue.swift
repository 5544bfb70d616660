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
            // An entry that is no event this node can read (an unreadable stored event, kept
            // whole for the operator) stays and counts as failed; the others are still retried.
            guard let event = try? ChangeEvent(json: try JSONParser.parse(entry.event)) else {
                failed += 1
                continue
            }
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

    /// Where a stored event that could not be read was found (``addUnreadable``).
    public enum UnreadableSource: String, Sendable {
        /// The node's own outbox (a vessel's): the row is moved out of the outbox.
        case outbox
        /// The shore's queue (its outbox, read for each vessel): the row stays, every queue read skips it.
        case shoreQueue = "shore_queue"
        /// The schema quarantine: the row is moved out of the quarantine.
        case quarantine
    }

    /// Records a stored event that cannot be read (a value nested deeper than
    /// `JSONLimits.maximumDepth`, possible where an operator raised PostgreSQL's `max_stack_depth`,
    /// or text that is not the JSON it should be), with a telemetry row of kind `unreadable_event`,
    /// in one statement, so that the stream it blocked can go on without losing it.
    ///
    /// The entry's `event` is `{"table", "row_id", "unreadable": {"source", "position", "key",
    /// "text"}}`: the stored text kept whole as a JSON string. `dlq retry` cannot apply it (it is
    /// no event it can read; `ChangeEvent(json:)` says so); the operator applies the text by hand and
    /// discards the entry. With a `key`, an entry already recorded under it is not recorded again
    /// (the shore's queue meets one bad event once per vessel); returns whether it was recorded.
    @discardableResult
    public static func addUnreadable(table: String, rowID: UUID?, source: UnreadableSource, position: Int64?, key: String?,
                                     text: String, reason: String, on db: DatabaseSession) async throws -> Bool {
        let place = "\(source.rawValue)" + (position.map { " position \($0)" } ?? "")
        var unreadable: [String: JSONValue] = ["source": .string(source.rawValue), "text": .string(text)]
        if let position { unreadable["position"] = .number(String(position)) }
        if let key { unreadable["key"] = .string(key) }
        var event: [String: JSONValue] = ["table": .string(table), "unreadable": .object(unreadable)]
        if let rowID { event["row_id"] = .string(rowID.lowercasedText) }
        var detail: [String: JSONValue] = ["source": .string(source.rawValue), "table": .string(table), "reason": .string(reason), "bytes": .number(String(text.utf8.count))]
        if let rowID { detail["row_id"] = .string(rowID.lowercasedText) }
        if let position { detail["position"] = .number(String(position)) }
        let message = "the event for \(table) row \(rowID?.lowercasedText ?? "?") in the \(place) cannot be read (\(reason)); "
            + "it was set aside so that the events behind it go on. Its stored text is kept whole in this entry (event.unreadable.text); "
            + "dlq retry cannot apply it: apply it by hand, then discard this entry"
        var binds = PostgresBindings()
        binds.append(JSONValue.object(event).serialized)
        binds.append(table)
        binds.append(rowID)
        binds.append(message)
        binds.append(key)
        binds.append(JSONValue.object(detail).serialized)
        let rows = try await db.rows("""
            WITH added AS (
              INSERT INTO fleetsync.dead_letter (event, table_name, row_id, message)
              SELECT $1::jsonb, $2, $3, $4
              WHERE $5::text IS NULL OR NOT EXISTS (SELECT 1 FROM fleetsync.dead_letter WHERE event->'unreadable'->>'key' = $5::text)
              RETURNING id
            ), noted AS (
              INSERT INTO fleetsync.telemetry (kind, detail)
              SELECT 'unreadable_event', $6::jsonb || jsonb_build_object('dead_letter', id) FROM added
              RETURNING 1
            )
            SELECT (SELECT count(*) FROM added) + 0 * (SELECT count(*) FROM noted)
            """, binds, context: "dead-lettering an unreadable event of \(table)")
        return try rows[0].value(0, as: Int64.self) > 0
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
