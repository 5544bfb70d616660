import FleetSyncCore
import Foundation
import Logging
import PostgresNIO

/// What applying a batch did.
public struct ApplyReport: Sendable, Equatable {
    public var appliedRows = 0
    public var unchangedRows = 0
    public var deadLettered = 0
    public var quarantinedFields = 0
    public var rejectedFields = 0
    public var rejectedEvents = 0
    public var conflicts = 0
    public var offboardedRows = 0
    public init() {}
}

/// Applies batches of changes from another node: compaction by merge, topological order, one
/// transaction with the advanced cursor, and isolation of failing rows into the dead-letter queue
/// or, for values that do not fit a local column, the schema quarantine.
public struct Applier: Sendable {
    public var schema: LocalSchema
    public var session: DatabaseSession
    public var telemetry: TelemetryWriter
    /// Rows per set-based statement; bounds the memory of one statement.
    public var chunkSize = 5_000
    /// Largest batch accepted; a larger one is refused whole, with nothing applied.
    public static let maximumBatchEvents = 1_000_000

    public init(schema: LocalSchema, session: DatabaseSession, telemetry: TelemetryWriter) {
        self.schema = schema
        self.session = session
        self.telemetry = telemetry
    }

    var configuration: FleetSyncConfiguration { schema.configuration }

    /// Applies `events` received from `sender` and, in the same transaction, records `cursor` as
    /// the position reached in the sender's stream. Applying the same batch twice changes nothing
    /// the second time.
    @discardableResult
    /// - Parameter routes: on the shore, the vessel each row is routed to, which owns its `vessel` fields.
    public func apply(_ events: [ChangeEvent], from sender: String, cursor: Int64? = nil, routes: [UUID: String] = [:]) async throws -> ApplyReport {
        guard events.count <= Self.maximumBatchEvents else {
            throw DatabaseError(context: "applying a batch from \(sender)", message: "batch of \(events.count) events exceeds the limit of \(Self.maximumBatchEvents); nothing was applied")
        }
        return try await apply(from: sender, cursor: cursor, routes: routes) { consume in events.forEach(consume) }
    }

    /// Applies a batch whose events `feed` hands over one at a time, so that a large batch (a
    /// decoded wire message, say) is never held as events all at once: each is compacted into
    /// its row's group as it arrives.
    @discardableResult
    public func apply(from sender: String, cursor: Int64? = nil, routes: [UUID: String] = [:], feed: (_ consume: (ChangeEvent) -> Void) throws -> Void) async throws -> ApplyReport {
        var report = ApplyReport()
        var intake = Intake(schema: schema, sender: sender)
        intake.routes = routes
        var count = 0
        try feed { event in
            count += 1
            if count <= Self.maximumBatchEvents { intake.add(event) }
        }
        guard count <= Self.maximumBatchEvents else {
            throw DatabaseError(context: "applying a batch from \(sender)", message: "batch of \(count) events exceeds the limit of \(Self.maximumBatchEvents); nothing was applied")
        }
        report.rejectedEvents = intake.rejectedEvents.count
        report.rejectedFields = intake.rejectedFields.count
        for rejection in intake.rejectedEvents + intake.rejectedFields {
            await telemetry.record(kind: "rejected_change", detail: rejection)
        }
        let groups = intake.orderedGroups()
        var quarantine = intake.quarantine
        let offboards = intake.orderedOffboards()
        report.offboardedRows = offboards.reduce(0) { $0 + $1.ids.count }
        let schema = self.schema
        try await applyIsolating(groups, quarantine: &quarantine, report: &report, finish: { db, quarantine in
            try await QuarantineVault.store(quarantine, on: db)
            try await Self.removeOffboarded(offboards, schema: schema, on: db)
            if let cursor { try await Self.advance(peer: sender, cursor: cursor, on: db) }
        })
        return report
    }

    /// Applies `groups` in one transaction with `finish`; on a row error, bisects until each
    /// failing row is alone, sends it to the quarantine or the dead-letter queue, and applies the rest.
    func applyIsolating(_ groups: [RowGroup], quarantine: inout [QuarantineEntry], report: inout ApplyReport, finish: @Sendable (DatabaseSession, [QuarantineEntry]) async throws -> Void) async throws {
        let pending = quarantine
        do {
            let outcome = try await session.transaction { db in
                let outcome = try await write(groups, on: db)
                try await finish(db, pending)
                return outcome
            }
            report.add(outcome)
            report.quarantinedFields += pending.reduce(0) { $0 + $1.state.fields.count }
            return
        } catch let error as DatabaseError where Self.isRowError(error) && !groups.isEmpty {
            // Fall through to isolation below.
        }
        var failures: [(RowGroup, DatabaseError)] = []
        try await bisect(groups[...], failures: &failures, report: &report)
        for (group, error) in failures {
            if let moved = try await quarantineBadValues(group, error: error) {
                quarantine.append(moved.quarantined)
                if let rest = moved.rest {
                    var inner: [QuarantineEntry] = []
                    try await applyIsolating([rest], quarantine: &inner, report: &report, finish: { _, _ in })
                    quarantine += inner
                }
                continue
            }
            try await DeadLetterQueue.add(group.event, sender: group.sender, error: error, on: session)
            await telemetry.record(kind: "apply_failure", detail: .object([
                "event": group.event.json, "table": .string(group.table), "row_id": .string(group.rowID.lowercasedText),
                "constraint": error.constraint.map(JSONValue.string) ?? .null, "sql_state": error.sqlState.map(JSONValue.string) ?? .null,
                "message": .string(error.message),
            ]))
            report.deadLettered += 1
        }
        let rest = quarantine
        try await session.transaction { db in try await finish(db, rest) }
        report.quarantinedFields += rest.reduce(0) { $0 + $1.state.fields.count }
    }

    private func bisect(_ groups: ArraySlice<RowGroup>, failures: inout [(RowGroup, DatabaseError)], report: inout ApplyReport) async throws {
        guard !groups.isEmpty else { return }
        do {
            let outcome = try await session.transaction { db in try await write(Array(groups), on: db) }
            report.add(outcome)
        } catch let error as DatabaseError where Self.isRowError(error) {
            if groups.count == 1 {
                failures.append((groups.first!, error))
                return
            }
            let middle = groups.startIndex + groups.count / 2
            try await bisect(groups[..<middle], failures: &failures, report: &report)
            try await bisect(groups[middle...], failures: &failures, report: &report)
        }
    }

    /// Writes groups in plan order inside the caller's transaction.
    func write(_ groups: [RowGroup], on db: DatabaseSession) async throws -> TableWriter.Outcome {
        try await db.execute("SET LOCAL fleetsync.applying = 'on'", context: "marking the transaction as the sync engine's")
        var total = TableWriter.Outcome()
        var start = 0
        while start < groups.count {
            let table = groups[start].table
            var end = start
            while end < groups.count && groups[end].table == table && end - start < chunkSize { end += 1 }
            var writer = TableWriter(configuration: configuration.table(named: table)!, physical: schema.tables[table]!, columns: schema.writableColumns(of: table))
            if configuration.role == .shore { writer.relayFrom = groups[start].sender }
            let outcome = try await writer.write(Array(groups[start..<end]), on: db)
            total.applied += outcome.applied
            total.unchanged += outcome.unchanged
            total.conflicts += outcome.conflicts
            total.highestCounter = max(total.highestCounter, outcome.highestCounter)
            start = end
        }
        if total.highestCounter > 0 {
            var binds = PostgresBindings()
            binds.append(total.highestCounter)
            // The node's Lamport counter moves past every clock it has seen.
            try await db.execute("SELECT setval('fleetsync.lamport', $1) FROM fleetsync.lamport WHERE last_value < $1", binds, context: "advancing the logical clock")
        }
        try await ConflictLog.record(total.conflicts, on: db)
        return total
    }

    /// Moves the fields of a single failing row whose values do not fit their local columns into
    /// the quarantine; returns the rest of the row to retry, or nil when no value was at fault.
    private func quarantineBadValues(_ group: RowGroup, error: DatabaseError) async throws -> (quarantined: QuarantineEntry, rest: RowGroup?)? {
        guard Self.isValueError(error), let physical = schema.tables[group.table] else { return nil }
        var bad = QuarantineEntry(table: group.table, rowID: group.rowID)
        for (name, change) in group.state.fields where name != ChangeEvent.deletedField {
            guard let column = physical.column(name) else { continue }
            if let cast = await castFailure(column, value: change.value, in: physical), Self.isValueError(cast) {
                bad.state.fields[name] = change
                bad.reasons[name] = "value does not fit column \(name) (\(column.type)): \(cast.message)"
            }
        }
        guard !bad.state.fields.isEmpty else { return nil }
        var rest = group
        for name in bad.state.fields.keys { rest.state.fields[name] = nil }
        let remaining = rest.state.fields.keys.contains { $0 != ChangeEvent.deletedField }
        return (bad, remaining ? rest : nil)
    }

    /// The error PostgreSQL gives when `value` is read into `column`, or nil when it fits.
    func castFailure(_ column: PhysicalColumn, value: JSONValue, in physical: PhysicalTable) async -> DatabaseError? {
        var binds = PostgresBindings()
        binds.append(JSONValue.object([column.name: value]).serialized)
        let sql = "SELECT \(ColumnCodec.applyExpression(column, record: "r")) FROM jsonb_populate_record(NULL::\(SQL.qualified(physical.schema, physical.name)), $1::jsonb) r"
        do {
            _ = try await session.rows(sql, binds, context: "checking a value for \(physical.name).\(column.name)")
            return nil
        } catch {
            return error
        }
    }

    /// Deletes the local copies of rows that left this vessel's partition, children first.
    static func removeOffboarded(_ offboards: [(table: String, ids: [UUID])], schema: LocalSchema, on db: DatabaseSession) async throws {
        guard !offboards.isEmpty else { return }
        try await db.execute("SET LOCAL fleetsync.applying = 'on'", context: "marking the transaction as the sync engine's")
        for (table, ids) in offboards {
            guard let physical = schema.tables[table] else { continue }
            var binds = PostgresBindings()
            binds.append(ids)
            try await db.execute("DELETE FROM \(SQL.qualified(physical.schema, physical.name)) WHERE id = ANY($1::uuid[])", binds, context: "removing rows of \(table) that left this vessel")
        }
    }

    static func advance(peer: String, cursor: Int64, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(peer)
        binds.append(cursor)
        try await db.execute("""
            INSERT INTO fleetsync.sync_state (peer, cursor) VALUES ($1, $2)
            ON CONFLICT (peer) DO UPDATE SET cursor = greatest(fleetsync.sync_state.cursor, EXCLUDED.cursor)
            """, binds, context: "advancing the cursor of \(peer)")
    }

    /// Errors caused by the data of a row (constraints, values), which isolation can pin down.
    static func isRowError(_ error: DatabaseError) -> Bool {
        guard let state = error.sqlState else { return false }
        return state.hasPrefix("23") || isValueError(error) || state == "P0001" || state == "42501"
    }

    static func isValueError(_ error: DatabaseError) -> Bool {
        guard let state = error.sqlState else { return false }
        return state.hasPrefix("22") || state == "42804"
    }
}

extension ApplyReport {
    mutating func add(_ outcome: TableWriter.Outcome) {
        appliedRows += outcome.applied
        unchangedRows += outcome.unchanged
        conflicts += outcome.conflicts.count
    }
}
