import FleetSyncCore
import Foundation
import PostgresNIO

/// The update path of ``TableWriter``: reading and locking the rows that exist here, and updating
/// the ones the merge changed.
extension TableWriter {
    struct LocalRow {
        /// The fields read, with their values and clocks.
        var state: RowState
        var version: Int64
        /// The clocks of the row's other fields, as stored (only when every clock is read:
        /// ``updatesThroughJSON``).
        var otherClocks: [String: JSONValue]
        /// The row version's `xmin` as read: the update writes the row only if it is still the
        /// version read (a local write in between makes a new one).
        var xmin: String
    }

    /// A row the merge changed: its merged state, version, the stored clocks of fields not read
    /// (``updatesThroughJSON`` only) and the fields that changed.
    struct PendingUpdate {
        var id: UUID
        var state: RowState
        var version: Int64
        var otherClocks: [String: JSONValue]
        var changed: [String]
        var xmin: String
    }

    /// Reads the local rows among `ids`: the values of `columns` in the capture encoding and their
    /// clocks with the tombstone's (every clock with ``updatesThroughJSON``; the update merges the
    /// changed clocks into the stored ones, so no other is needed). Locks them only when
    /// ``locksRows``: else the update checks that each row is still the version read
    /// (``update(_:columns:on:)``), which spares a lock, written to the WAL, per row.
    func readLocal(_ ids: [UUID], columns: Set<String>, on db: DatabaseSession) async throws -> [UUID: LocalRow] {
        let read = physical.syncedColumns.filter { columns.contains($0.name) }
        let values = ColumnCodec.captureObject(read, row: "t")
        let clockNames = Set(read.map(\.name)).union([ChangeEvent.deletedField]).sorted()
        let clocksRead = updatesThroughJSON
            ? "t.sync_clock::text"
            : "(" + SQL.jsonObject(clockNames.map { "\(SQL.literal($0)), t.sync_clock -> \(SQL.literal($0))" }) + ")::text"
        var binds = PostgresBindings()
        binds.append(ids)
        let rows = try await db.rows("""
            SELECT t.id, t.sync_version, t.is_deleted, \(clocksRead), (\(values))::text, t.xmin::text
            FROM \(qualified) t WHERE t.id = ANY($1::uuid[])\(readsLocked ? " ORDER BY t.id FOR UPDATE" : "")
            """, binds, context: "reading local rows of \(configuration.name)")
        var result: [UUID: LocalRow] = [:]
        result.reserveCapacity(rows.count)
        for row in rows {
            let context = "reading local rows of \(configuration.name)"
            let id: UUID = try row.value(0, context: context)
            let version: Int64 = try row.value(1, context: context)
            let deleted: Bool = try row.value(2, context: context)
            let clocks = try JSONParser.parse(try row.value(3, as: String.self, context: context)).objectValue ?? [:]
            let values = try JSONParser.parse(try row.value(4, as: String.self, context: context)).objectValue ?? [:]
            let xmin: String = try row.value(5, context: context)
            let otherClocks = updatesThroughJSON ? clocks.filter { values[$0.key] == nil && $0.key != ChangeEvent.deletedField } : [:]
            var state = RowState()
            // Rows that existed before init have no clocks: the lowest clock, so any sync wins.
            let none = FieldClock(counter: 0, node: "")
            for (name, value) in values {
                state.fields[name] = FieldChange(value: value, clock: clocks[name].flatMap(FieldClock.init(json:)) ?? none)
            }
            if let tombstone = clocks[ChangeEvent.deletedField].flatMap(FieldClock.init(json:)) {
                state.fields[ChangeEvent.deletedField] = FieldChange(value: .bool(deleted), clock: tombstone)
            } else if deleted {
                state.fields[ChangeEvent.deletedField] = FieldChange(value: .bool(true), clock: none)
            }
            result[id] = LocalRow(state: state, version: version, otherClocks: otherClocks, xmin: xmin)
        }
        return result
    }

    /// Updates the changed rows: through ``ArrayUpdate`` when every column it writes has a
    /// built-in type and every value travels as input text, else through JSON records (which
    /// carry the read fields' clocks, merged into the stored ones). Unless ``locksRows``, a row
    /// is written only if it is still the version read; returns the rows that were not (a local
    /// write came in between: the caller merges them again, read and locked).
    func update(_ rows: [PendingUpdate], columns names: Set<String>, on db: DatabaseSession) async throws -> Set<UUID> {
        let columns = orderedColumns(names)
        let checked = !readsLocked
        if !updatesThroughJSON, var arrays = ArrayUpdate(columns: columns) {
            var encodable = true
            for row in rows where encodable {
                encodable = arrays.append(id: row.id, state: row.state, version: row.version,
                                          deleted: row.state.isDeleted(configuration.tombstone), changed: row.changed, xmin: checked ? row.xmin : nil)
            }
            if encodable {
                let (sql, binds) = arrays.statement(table: qualified)
                return try await run(sql, binds, rows: rows, checked: checked, on: db)
            }
        }
        let records = rows.map { record(id: $0.id, state: $0.state, version: $0.version, otherClocks: $0.otherClocks) }
        let clock = updatesThroughJSON ? "r.sync_clock" : "COALESCE(t.sync_clock, '{}'::jsonb) || r.sync_clock"
        let sets = columns.map { "\(SQL.identifier($0.name)) = \(ColumnCodec.applyExpression($0, record: "r"))" }
            + ["sync_version = r.sync_version", "is_deleted = r.is_deleted", "sync_clock = \(clock)"]
        var binds = PostgresBindings()
        binds.append(JSONValue.array(records).serialized)
        var versions = "", check = ""
        if checked {
            // The versions read, joined by id (not a subquery per row, which would scan them all).
            binds.append(rows.map(\.id))
            binds.append("{" + rows.map(\.xmin).joined(separator: ",") + "}")
            versions = " JOIN unnest($2::uuid[], $3::xid[]) AS x(id, xmin) ON x.id = r.id"
            check = " AND t.xmin = x.xmin"
        }
        let sql = """
            UPDATE \(qualified) t SET \(sets.joined(separator: ", "))
            FROM json_populate_recordset(NULL::\(qualified), $1::json) r\(versions) WHERE t.id = r.id\(check)
            """
        return try await run(sql, binds, rows: rows, checked: checked, on: db)
    }

    /// Runs an UPDATE; when it is `checked`, returns the rows it skipped (counted first: the ids
    /// come back only when some are missing).
    private func run(_ sql: String, _ binds: PostgresBindings, rows: [PendingUpdate], checked: Bool, on db: DatabaseSession) async throws -> Set<UUID> {
        let context = "updating rows of \(configuration.name)"
        guard checked else {
            try await db.execute(sql, binds, context: context)
            return []
        }
        var binds = binds
        binds.append(Int64(rows.count))
        let result = try await db.rows("""
            WITH u AS (\(sql) RETURNING t.id)
            SELECT CASE WHEN count(*) = $\(binds.count)::bigint THEN NULL ELSE coalesce(array_agg(u.id), '{}') END FROM u
            """, binds, context: context)
        guard let written = try result.first?.value(0, as: [UUID]?.self, context: context) else { return [] }
        return Set(rows.map(\.id)).subtracting(written)
    }
}
