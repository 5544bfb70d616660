import FleetSyncCore
import Foundation
import PostgresNIO

/// Events that cannot apply *yet*: a row whose parent (through a foreign key) has not arrived,
/// because a batch ended between them or the writer inserted children first; or an offboarding
/// of a row that a row still to be offboarded references. Unlike the dead-letter queue, which
/// waits for an operator, these apply by themselves: the applier tries them again, as one batch
/// in parent-first order, after every batch that changed something (``Applier/retryWaiting()``).
/// They never hold up the events behind them: the batch and its cursor go on without them.
public enum WaitingRoom {
    /// One waiting event as `fleetsync dlq list` and status show it.
    public struct Entry: Sendable {
        public var id: Int64
        public var table: String
        public var rowID: UUID
        public var sender: String
        public var message: String
        public var attempts: Int
        public var event: String
    }

    /// Whether `error` means that the row waits for another row to arrive or to leave.
    static func isWaiting(_ error: DatabaseError) -> Bool { error.sqlState == "23503" }

    static func add(_ event: ChangeEvent, sender: String, error: DatabaseError, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(event.json.serialized)
        binds.append(event.table)
        binds.append(event.rowID)
        binds.append(sender)
        binds.append(error.constraint)
        binds.append(error.message)
        try await db.execute("""
            INSERT INTO fleetsync.waiting (event, table_name, row_id, sender, constraint_name, message)
            VALUES ($1::jsonb, $2, $3, $4, $5, $6)
            """, binds, context: "keeping an event that waits for another row")
    }

    /// Whether changes of the row wait already.
    static func holds(_ table: String, _ rowID: UUID, on db: DatabaseSession) async throws -> Bool {
        var binds = PostgresBindings()
        binds.append(table)
        binds.append(rowID)
        return try await db.rows("SELECT EXISTS (SELECT 1 FROM fleetsync.waiting WHERE table_name = $1 AND row_id = $2)", binds, context: "looking for waiting changes of a row")[0].value(0)
    }

    /// Rows among `ids` with changes from `sender` waiting (for a row they reference).
    public static func rows(from sender: String, among ids: [UUID], on db: DatabaseSession) async throws -> Set<UUID> {
        guard !ids.isEmpty else { return [] }
        var binds = PostgresBindings()
        binds.append(sender)
        binds.append(ids)
        let rows = try await db.rows("SELECT DISTINCT row_id FROM fleetsync.waiting WHERE sender = $1 AND row_id = ANY($2::uuid[])", binds, context: "finding rows whose changes wait")
        return Set(try rows.map { try $0.decode(UUID.self) })
    }

    public static func count(on db: DatabaseSession) async throws -> Int64 {
        try await db.rows("SELECT count(*) FROM fleetsync.waiting", context: "counting waiting events")[0].value(0)
    }

    public static func list(on db: DatabaseSession, limit: Int = 10_000) async throws -> [Entry] {
        var binds = PostgresBindings()
        binds.append(Int64(limit))
        let rows = try await db.rows("""
            SELECT id, table_name, row_id, sender, message, attempts, event::text
            FROM fleetsync.waiting ORDER BY id LIMIT $1
            """, binds, context: "listing waiting events")
        return try rows.map { row in
            let (id, table, rowID, sender, message, attempts, event) = try row.decode((Int64, String, UUID, String, String, Int32, String).self)
            return Entry(id: id, table: table, rowID: rowID, sender: sender, message: message, attempts: Int(attempts), event: event)
        }
    }

    /// After a retry of the entries `ids` (all below `mark`): entries added since `mark` are the
    /// retried rows that failed again; their originals stay (one more attempt, the newest error)
    /// and the copies go; the originals whose rows did not fail again are removed. Returns how
    /// many entries applied.
    static func settle(retried ids: [Int64], mark: Int64, on db: DatabaseSession) async throws -> Int {
        var binds = PostgresBindings()
        binds.append(ids)
        binds.append(mark)
        let rows = try await db.rows("""
            WITH again AS (
              DELETE FROM fleetsync.waiting WHERE id > $2 RETURNING table_name, row_id, message
            ), bumped AS (
              UPDATE fleetsync.waiting w SET attempts = w.attempts + 1, message = a.message
              FROM (SELECT DISTINCT ON (table_name, row_id) table_name, row_id, message FROM again) a
              WHERE w.id = ANY($1::bigint[]) AND w.table_name = a.table_name AND w.row_id = a.row_id
              RETURNING w.id
            ), done AS (
              DELETE FROM fleetsync.waiting WHERE id = ANY($1::bigint[]) AND id NOT IN (SELECT id FROM bumped) RETURNING 1
            )
            SELECT count(*) FROM done
            """, binds, context: "settling retried waiting events")
        return Int(try rows[0].value(0, as: Int64.self))
    }

    /// The highest entry id so far (0 when empty).
    static func mark(on db: DatabaseSession) async throws -> Int64 {
        try await db.rows("SELECT coalesce(max(id), 0) FROM fleetsync.waiting", context: "reading the waiting mark")[0].value(0)
    }
}
