import FleetSyncCore
import Foundation
import PostgresNIO

/// Values a node received for columns or tables it does not have (or whose values do not fit
/// its column), kept with their clocks until an upgrade adds what is missing.
struct QuarantineEntry: Sendable {
    var table: String
    var rowID: UUID
    var state = RowState()
    var reasons: [String: String] = [:]
}

/// `fleetsync.schema_quarantine`: one row per table and row id, merged with JSONB `||` where the
/// incoming clock is newer, so nothing is ever lost and the newest value is kept.
public enum QuarantineVault {
    /// Stores entries, keeping per field the value with the newest clock. Two transactions storing
    /// values of one row (exchanges of two vessels, or a drain) run one after the other: the row
    /// lock of the read below does not exist before the row does.
    static func store(_ entries: [QuarantineEntry], on db: DatabaseSession) async throws {
        // Sorted, so that transactions storing several rows take their locks in one order.
        let ordered = entries.filter { !$0.state.fields.isEmpty }.sorted { ($0.table, $0.rowID.lowercasedText) < ($1.table, $1.rowID.lowercasedText) }
        for entry in ordered {
            var binds = PostgresBindings()
            binds.append(entry.table)
            binds.append(entry.rowID)
            try await lock(table: entry.table, rowID: entry.rowID, on: db)
            let existing = try await db.rows("SELECT clocks::text FROM fleetsync.schema_quarantine WHERE table_name = $1 AND row_id = $2 FOR UPDATE", binds, context: "reading the quarantine")
            var known: [String: FieldClock] = [:]
            if let row = existing.first {
                for (name, clock) in try JSONParser.parse(try row.value(0, as: String.self)).objectValue ?? [:] {
                    known[name] = FieldClock(json: clock)
                }
            }
            var fields: [String: JSONValue] = [:]
            var clocks: [String: JSONValue] = [:]
            var reasons: [String: JSONValue] = [:]
            for (name, change) in entry.state.fields {
                if let old = known[name], old >= change.clock { continue }
                fields[name] = change.value
                clocks[name] = change.clock.json
                reasons[name] = .string(entry.reasons[name] ?? "quarantined")
            }
            guard !fields.isEmpty else { continue }
            binds.append(JSONValue.object(fields).serialized)
            binds.append(JSONValue.object(clocks).serialized)
            binds.append(JSONValue.object(reasons).serialized)
            try await db.execute("""
                INSERT INTO fleetsync.schema_quarantine AS q (table_name, row_id, fields, clocks, reasons)
                VALUES ($1, $2, $3::jsonb, $4::jsonb, $5::jsonb)
                ON CONFLICT (table_name, row_id) DO UPDATE SET fields = q.fields || EXCLUDED.fields,
                  clocks = q.clocks || EXCLUDED.clocks, reasons = q.reasons || EXCLUDED.reasons
                """, binds, context: "quarantining values of \(entry.table)")
        }
    }
}

extension QuarantineVault {
    /// One quarantined row as `fleetsync quarantine list` shows it.
    public struct Entry: Sendable {
        public var table: String
        public var rowID: UUID
        public var fields: String
        public var reasons: String
    }

    public static func list(on db: DatabaseSession) async throws -> [Entry] {
        let rows = try await db.rows("SELECT table_name, row_id, fields::text, reasons::text FROM fleetsync.schema_quarantine ORDER BY table_name, row_id", context: "listing the quarantine")
        return try rows.map { row in
            let (table, id, fields, reasons) = try row.decode((String, UUID, String, String).self)
            return Entry(table: table, rowID: id, fields: fields, reasons: reasons)
        }
    }

    /// Applies every quarantined value whose table and column now exist, through the normal
    /// merge (so a value only wins where its clock is newer than the local one), and removes it
    /// from the quarantine in the same transaction. Values that still do not fit stay, with the
    /// new reason. Returns how many fields were applied and how many remain.
    public static func drain(applier: Applier) async throws -> (drained: Int, remaining: Int) {
        let db = applier.session
        let rows = try await db.rows("SELECT table_name, row_id, fields::text, clocks::text FROM fleetsync.schema_quarantine ORDER BY table_name, row_id", context: "reading the quarantine")
        var drained = 0
        for row in rows {
            let (table, rowID, fieldsText, clocksText) = try row.decode((String, UUID, String, String).self)
            let columns = applier.schema.writableColumns(of: table)
            guard !columns.isEmpty else { continue }
            let values: [String: JSONValue]
            let clocks: [String: JSONValue]
            do {
                values = try VesselQueue.members(of: fieldsText, what: "quarantined fields")
                clocks = try VesselQueue.members(of: clocksText, what: "quarantined clocks")
            } catch {
                try await setAside(table: table, rowID: rowID, reason: "\(error)", on: db)
                continue
            }
            var group = RowGroup(table: table, rowID: rowID, sender: "quarantine", sequence: 0)
            var fields: [String: FieldChange] = [:]
            for (name, value) in values where columns[name] != nil || name == ChangeEvent.deletedField {
                guard let clock = clocks[name].flatMap(FieldClock.init(json:)) else { continue }
                fields[name] = FieldChange(value: value, clock: clock)
            }
            guard !fields.isEmpty else { continue }
            group.merge(fields, base: 0)
            while !group.state.fields.isEmpty {
                let keys = Array(group.state.fields.keys)
                let drainedClocks = group.state.fields.mapValues(\.clock)
                do {
                    try await db.transaction { tx in
                        try await lock(table: table, rowID: rowID, on: tx)
                        _ = try await applier.write([group], on: tx)
                        try await remove(table: table, rowID: rowID, drained: drainedClocks, on: tx)
                    }
                    drained += keys.count
                    break
                } catch let error as DatabaseError where Applier.isValueError(error) {
                    // Keep the values that still do not fit; apply the others.
                    var stillBad: [String: String] = [:]
                    for name in keys where name != ChangeEvent.deletedField {
                        if let column = applier.schema.tables[table]?.column(name),
                           let failure = await applier.castFailure(column, value: group.state.fields[name]!.value, in: applier.schema.tables[table]!) {
                            stillBad[name] = "value does not fit column \(name) (\(column.type)): \(failure.message)"
                        }
                    }
                    guard !stillBad.isEmpty else { break }
                    var binds = PostgresBindings()
                    binds.append(table)
                    binds.append(rowID)
                    binds.append(JSONValue.object(stillBad.mapValues(JSONValue.string)).serialized)
                    try await db.execute("UPDATE fleetsync.schema_quarantine SET reasons = reasons || $3::jsonb WHERE table_name = $1 AND row_id = $2", binds, context: "updating quarantine reasons")
                    for name in stillBad.keys { group.state.fields[name] = nil }
                } catch let error as DatabaseError where Applier.isRowError(error) {
                    break  // e.g. a constraint: the values stay quarantined until the cause is fixed
                }
            }
        }
        let remaining: Int64 = try await db.rows("SELECT coalesce(sum((SELECT count(*) FROM jsonb_object_keys(fields))), 0)::bigint FROM fleetsync.schema_quarantine", context: "counting the quarantine")[0].value(0)
        return (drained, Int(remaining))
    }

    /// Moves a quarantined row whose stored values cannot be read (a value nested deeper than
    /// `JSONLimits.maximumDepth`, or text that is not a JSON object) into the dead-letter queue,
    /// its text kept whole, with a telemetry row, so that `quarantine drain` (run at every start)
    /// goes on with the other rows instead of failing at every start.
    static func setAside(table: String, rowID: UUID, reason: String, on db: DatabaseSession) async throws {
        try await db.transaction { tx in
            try await lock(table: table, rowID: rowID, on: tx)
            var binds = PostgresBindings()
            binds.append(table)
            binds.append(rowID)
            let stored = try await tx.rows("""
                DELETE FROM fleetsync.schema_quarantine WHERE table_name = $1 AND row_id = $2
                RETURNING fields::text, clocks::text
                """, binds, context: "moving an unreadable quarantined row out of the quarantine")
            guard let row = stored.first else { return }
            // What is stored now (a value may have been added since it was read).
            let (fieldsNow, clocksNow) = try row.decode((String, String).self)
            try await DeadLetterQueue.addUnreadable(
                table: table, rowID: rowID, source: .quarantine, position: nil, key: nil,
                text: "{\"fields\":\(fieldsNow),\"clocks\":\(clocksNow)}", reason: reason, on: tx)
        }
        db.logger.error("a quarantined row could not be read; it is dead-lettered", metadata: [
            "table": "\(table)", "row_id": "\(rowID.lowercasedText)", "reason": "\(reason.prefix(200))"])
    }

    /// Serializes the transactions that store or drain values of one quarantined row.
    static func lock(table: String, rowID: UUID, on db: DatabaseSession) async throws {
        try await db.lockForTransaction("fleetsync.quarantine:" + table + ":" + rowID.lowercasedText, context: "locking a quarantined row")
    }

    /// Removes drained fields: only those still stored with the clock that was drained (a newer
    /// value stored since stays for the next drain).
    static func remove(table: String, rowID: UUID, drained clocks: [String: FieldClock], on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(table)
        binds.append(rowID)
        binds.append(JSONValue.object(clocks.mapValues(\.json)).serialized)
        try await db.execute("""
            UPDATE fleetsync.schema_quarantine q
            SET fields = q.fields - g.keys, clocks = q.clocks - g.keys, reasons = q.reasons - g.keys
            FROM (SELECT ARRAY(SELECT d.k FROM jsonb_each($3::jsonb) d(k, c) WHERE s.clocks -> d.k = d.c) AS keys
                  FROM fleetsync.schema_quarantine s WHERE s.table_name = $1 AND s.row_id = $2) g
            WHERE q.table_name = $1 AND q.row_id = $2
            """, binds, context: "emptying drained quarantine entries")
        var key = PostgresBindings()
        key.append(table)
        key.append(rowID)
        try await db.execute("DELETE FROM fleetsync.schema_quarantine WHERE table_name = $1 AND row_id = $2 AND fields = '{}'::jsonb", key, context: "emptying drained quarantine entries")
    }
}
