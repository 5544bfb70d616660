import FleetSyncCore
import Foundation
import NIOCore
import PostgresNIO

/// Applies row groups of one table set-based: one statement reads and locks the local rows, the
/// merge runs in memory, one statement inserts the new rows and one updates the changed ones.
struct TableWriter {
    var configuration: TableConfiguration
    var physical: PhysicalTable
    var columns: [String: PhysicalColumn]
    /// On the shore: the node whose changes these are, so that they are queued for the other
    /// vessels (relayed) with their own clocks.
    var relayFrom: String? = nil
    /// Reads every synced column of the rows an update touches, as before 2026-11 (only for
    /// the side-by-side benchmark, `WORKLOAD=updates fleetsync-apply-benchmark`).
    var readsEveryColumn = false
    /// Updates rows as before 2026-12 (JSON records carrying every clock of the row, read whole;
    /// only for the side-by-side benchmark): ``ArrayUpdate``.
    var updatesThroughJSON = false
    /// Whether the rows read for an update are locked as they are read (SELECT ... FOR UPDATE).
    /// Off by default: the update then writes only rows that are still the version read, and
    /// the rows a local write changed in between are read again, locked, and merged again.
    var locksRows = false
    var readsLocked: Bool { locksRows || updatesThroughJSON }
    /// Runs between the read of the local rows and their update (tests: a local write in between).
    var afterRead: (@Sendable () async throws -> Void)? = nil

    struct Outcome: Sendable {
        var applied = 0
        var unchanged = 0
        var conflicts: [Conflict] = []
        var highestCounter: Int64 = 0
    }

    var qualified: String { SQL.qualified(physical.schema, physical.name) }

    /// New rows as COPY text in pieces, with the columns they fill; nil when a value cannot travel
    /// that way (then rows are inserted from JSON records). Rows are copied in runs that fill the
    /// same columns, so that a column a row does not carry gets its DEFAULT, as it does when the
    /// row arrives alone, not the NULL of a column list made for other rows.
    struct CopyPieces: Sendable {
        struct Run: Sendable {
            var columns: [PhysicalColumn]
            var pieces: [ByteBuffer]
        }
        var runs: [Run]
    }

    /// The columns a new row fills (the tombstone travels in `is_deleted`, not as a column of its own).
    private static func columns(of row: RowGroup) -> Set<String> {
        var names = Set(row.state.fields.keys)
        names.remove(ChangeEvent.deletedField)
        return names
    }

    /// Consecutive new rows that fill the same columns, in order (a table that references itself
    /// comes parents first).
    private static func runs(_ rows: [RowGroup]) -> [(columns: Set<String>, rows: ArraySlice<RowGroup>)] {
        var runs: [(Set<String>, ArraySlice<RowGroup>)] = []
        var start = rows.startIndex
        var current: Set<String>? = nil
        for index in rows.indices {
            let names = columns(of: rows[index])
            if let current, current != names {
                runs.append((current, rows[start..<index]))
                start = index
            }
            current = names
        }
        if let current { runs.append((current, rows[start..<rows.endIndex])) }
        return runs
    }

    func write(_ groups: [RowGroup], prepared: CopyPieces? = nil, on db: DatabaseSession) async throws -> Outcome {
        var outcome = Outcome()
        // Only the columns the incoming changes touch are read (the merge compares no other
        // value, and the update writes no other column); the other fields' clocks are kept whole.
        var touched = Set<String>()
        for group in groups { touched.formUnion(group.state.fields.keys) }
        if readsEveryColumn { touched = Set(physical.syncedColumns.map(\.name)) }
        let ids = groups.map(\.rowID)
        let local = try await Self.noRowBetween(ids, in: qualified, on: db) ? [:] : try await readLocal(ids, columns: touched, on: db)
        if let afterRead { try await afterRead() }
        var newRows: [RowGroup] = []
        var updates: [PendingUpdate] = []
        var updateColumns: Set<String> = []
        var relayed: [(id: UUID, record: JSONValue)] = []
        for group in groups {
            outcome.highestCounter = max(outcome.highestCounter, group.state.version)
            if let existing = local[group.rowID] {
                var merged = existing.state
                let changed = merged.merge(group.state.fields)
                outcome.conflicts += conflicts(group, local: existing.state, merged: merged)
                if changed.isEmpty {
                    outcome.unchanged += 1
                    continue
                }
                updateColumns.formUnion(changed.filter { $0 != ChangeEvent.deletedField })
                updates.append(PendingUpdate(id: group.rowID, state: merged, version: max(existing.version, merged.version), otherClocks: existing.otherClocks,
                                             changed: changed, xmin: existing.xmin))
                if relayFrom != nil { relayed.append((group.rowID, relayRecord(group.rowID, fields: merged.fields.filter { changed.contains($0.key) }))) }
            } else {
                newRows.append(group)
                if relayFrom != nil { relayed.append((group.rowID, relayRecord(group.rowID, fields: group.state.fields))) }
            }
            outcome.applied += 1
        }
        if !newRows.isEmpty {
            if let pieces = newRows.count == groups.count ? prepared : nil {
                try await copy(pieces, on: db)
            } else if let pieces = prepareCopy(newRows) {
                try await copy(pieces, on: db)
            } else {
                for run in Self.runs(newRows) {
                    try await insert(run.rows.map { record(id: $0.rowID, state: $0.state, version: $0.state.version) }, columns: run.columns, on: db)
                }
            }
        }
        var skipped = Set<UUID>()
        if !updates.isEmpty {
            // In key order, the order in which the rows are locked: concurrent appliers (the shore
            // applies several vessels' exchanges at once) then take their locks in one order.
            let ordered = updates.map { ($0.id.lowercasedText, $0) }.sorted { $0.0 < $1.0 }.map(\.1)
            skipped = try await update(ordered, columns: updateColumns, on: db)
        }
        if !skipped.isEmpty {
            // A local write changed these rows after they were read: what was merged for them is
            // dropped, and they are merged again, read and locked this time.
            relayed.removeAll { skipped.contains($0.id) }
            outcome.conflicts.removeAll { skipped.contains($0.rowID) }
            outcome.applied -= skipped.count
        }
        if let origin = relayFrom, !relayed.isEmpty { try await relay(relayed.map(\.record), origin: origin, on: db) }
        if !skipped.isEmpty {
            var locking = self
            locking.locksRows = true
            locking.afterRead = nil
            outcome.add(try await locking.write(groups.filter { skipped.contains($0.rowID) }, on: db))
        }
        return outcome
    }

    /// The JSON record of a row as `jsonb_populate_recordset` reads it.
    /// `otherClocks`: the stored clocks of fields not read (``readLocal(_:columns:on:)``), kept.
    func record(id: UUID, state: RowState, version: Int64, otherClocks: [String: JSONValue] = [:]) -> JSONValue {
        var object: [String: JSONValue] = [:]
        object.reserveCapacity(state.fields.count + 4)
        var clocks = otherClocks
        for (name, change) in state.fields {
            // A field never written through FleetSync has no clock (the lowest): none is stored.
            if !change.clock.node.isEmpty { clocks[name] = change.clock.json }
            if name != ChangeEvent.deletedField { object[name] = change.value }
        }
        object["id"] = .string(id.lowercasedText)
        object["sync_version"] = .number(String(version))
        object["is_deleted"] = .bool(state.isDeleted(configuration.tombstone))
        object["sync_clock"] = .object(clocks)
        return .object(object)
    }

    private func relayRecord(_ id: UUID, fields: [String: FieldChange]) -> JSONValue {
        .object([
            "row_id": .string(id.lowercasedText),
            "version": .number(String(fields.values.map(\.clock.counter).max() ?? 0)),
            "delta": .object(fields.mapValues(\.value)),
            "clocks": .object(fields.mapValues(\.clock.json)),
        ])
    }

    /// Queues applied changes for the other vessels, with their clocks and origin, through the
    /// capture log like local writes, so that all events keep the order of the Lamport counter.
    private func relay(_ records: [JSONValue], origin: String, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(configuration.name)
        binds.append(origin)
        binds.append(JSONValue.array(records).serialized)
        try await db.execute("""
            INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta, clocks, origin)
            SELECT nextval('fleetsync.lamport'), $1, r.row_id, 'R', r.version, 0, r.delta, r.clocks, $2
            FROM jsonb_to_recordset($3::jsonb) AS r(row_id uuid, version bigint, delta jsonb, clocks jsonb)
            """, binds, context: "queueing \(configuration.name) changes for the fleet")
    }

    /// COPY text for `rows` as if every row were new, in pieces of 500 rows; nil when a value
    /// cannot travel that way. The applier builds it before the rows are read and locked, so that
    /// encoding overlaps the database's work on the previous slice; ``write`` uses it when every
    /// row is indeed new.
    func prepareCopy(_ rows: [RowGroup]) -> CopyPieces? {
        var runs: [CopyPieces.Run] = []
        for run in Self.runs(rows) {
            guard let pieces = copyRun(run.rows, columns: orderedColumns(run.columns)) else { return nil }
            runs.append(pieces)
        }
        return CopyPieces(runs: runs)
    }

    private func copyRun(_ rows: ArraySlice<RowGroup>, columns: [PhysicalColumn]) -> CopyPieces.Run? {
        guard rows.allSatisfy({ row in columns.allSatisfy { CopyEncoder.canEncode(row.state.fields[$0.name]?.value ?? .null, column: $0) } }) else {
            return nil
        }
        var pieces: [ByteBuffer] = []
        var text = ""
        var clocks = ""
        for start in stride(from: rows.startIndex, to: rows.endIndex, by: 500) {
            text.removeAll(keepingCapacity: true)
            for row in rows[start..<min(start + 500, rows.endIndex)] {
                let state = row.state
                text += row.rowID.lowercasedText
                for column in columns {
                    text += "\t"
                    _ = CopyEncoder.append(state.fields[column.name]?.value ?? .null, column: column, to: &text)
                }
                text += "\t"
                text += String(state.version)
                text += state.isDeleted(configuration.tombstone) ? "\tt\t" : "\tf\t"
                clocks.removeAll(keepingCapacity: true)
                state.writeClocks(to: &clocks)
                CopyEncoder.escape(clocks, into: &text)
                text += "\n"
            }
            pieces.append(ByteBuffer(string: text))
        }
        return CopyPieces.Run(columns: columns, pieces: pieces)
    }

    /// Copies new rows, run by run, piece by piece.
    private func copy(_ copy: CopyPieces, on db: DatabaseSession) async throws {
        for run in copy.runs {
            let columns = ["id"] + run.columns.map(\.name) + ["sync_version", "is_deleted", "sync_clock"]
            try await db.copy(into: physical.schema, physical.name, columns: columns, context: "copying new rows into \(configuration.name)") { sink in
                for piece in run.pieces { try await sink.write(piece) }
            }
        }
    }

    /// Whether this node holds no row between the least and the greatest of `ids` (a slice of
    /// 64 rows or more; smaller ones are read as they are). Rows of a catch-up or onboarding page
    /// come in key order, so a slice of them spans a narrow key range, which one index probe finds
    /// empty when the rows are new here: then nothing is read and locked, and they are copied
    /// straight in. (``readLocal(_:columns:on:)`` on a large table may scan it whole for every
    /// slice.) A row inserted into the range meanwhile makes the COPY fail on the key, and the
    /// slice is applied again row by row, as when a read finds nothing.
    static func noRowBetween(_ ids: [UUID], in qualified: String, on db: DatabaseSession) async throws -> Bool {
        guard ids.count >= 64, var low = ids.first?.lowercasedText else { return false }
        var high = low
        for id in ids.dropFirst() {
            let text = id.lowercasedText
            if text < low { low = text } else if text > high { high = text }
        }
        var binds = PostgresBindings()
        binds.append(low)
        binds.append(high)
        let rows = try await db.rows("SELECT 1 FROM \(qualified) t WHERE t.id >= $1::uuid AND t.id <= $2::uuid LIMIT 1", binds,
                                     context: "probing for local rows in a key range of \(qualified)")
        return rows.isEmpty
    }

    func orderedColumns(_ names: Set<String>) -> [PhysicalColumn] {
        physical.syncedColumns.filter { names.contains($0.name) }
    }

    private func insert(_ records: [JSONValue], columns names: Set<String>, on db: DatabaseSession) async throws {
        let columns = orderedColumns(names)
        let targets = (["id"] + columns.map(\.name) + ["sync_version", "is_deleted", "sync_clock"]).map(SQL.identifier)
        let sources = ["r.id"] + columns.map { ColumnCodec.applyExpression($0, record: "r") } + ["r.sync_version", "r.is_deleted", "r.sync_clock"]
        var binds = PostgresBindings()
        binds.append(JSONValue.array(records).serialized)
        try await db.execute("""
            INSERT INTO \(qualified) (\(targets.joined(separator: ", ")))
            SELECT \(sources.joined(separator: ", ")) FROM json_populate_recordset(NULL::\(qualified), $1::json) r
            """, binds, context: "inserting rows into \(configuration.name)")
    }

    /// Concurrent writes to shared fields: the writer had not seen the local value it raced with.
    private func conflicts(_ group: RowGroup, local: RowState, merged: RowState) -> [Conflict] {
        var found: [Conflict] = []
        for (name, incoming) in group.state.fields where configuration.owner(of: name) == .shared && name != ChangeEvent.deletedField {
            guard let mine = local.fields[name], mine.clock.node != incoming.clock.node, !mine.clock.node.isEmpty,
                  mine.value != incoming.value, mine.clock.counter > group.base else { continue }
            let kept = merged.fields[name]!
            found.append(Conflict(table: group.table, rowID: group.rowID, field: name, kept: kept, discarded: kept == incoming ? mine : incoming))
        }
        return found
    }
}
