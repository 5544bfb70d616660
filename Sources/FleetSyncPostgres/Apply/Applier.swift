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
    /// Events that wait for a row they reference (``WaitingRoom``), kept and applied by themselves later.
    public var waiting = 0
    /// Earlier waiting events that applied after this batch.
    public var waitingApplied = 0
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
    public var chunkSize = 3_000
    /// On a vessel: the shore's node id, which its own writes' clocks name (the shore sends it in
    /// every response). Shore-owned fields are accepted only from that writer. Nil on the shore,
    /// which is the shore itself, and where the sender is the shore's id.
    public var shoreNode: String?
    /// The receiver's former read of every column of an updated row (benchmark only: TableWriter).
    public var readsEveryColumn = false
    /// The receiver's former update through JSON records with every clock (benchmark only: TableWriter).
    public var updatesThroughJSON = false
    /// Target rows locked as they are read (benchmark only: TableWriter.locksRows).
    public var locksRows = false
    /// Whether a batch that changed something is followed by a retry of the waiting events
    /// (off while retrying them).
    var retriesWaiting = true
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
    /// - Parameter routes: on the shore, the vessel each row is routed to, which owns its `vessel` fields.
    @discardableResult
    public func apply(_ events: [ChangeEvent], from sender: String, cursor: Int64? = nil, routes: [UUID: String] = [:]) async throws -> ApplyReport {
        try await apply(batch: events, from: sender, cursor: cursor, routes: routes)
    }

    /// What one slice of rows became after intake: row groups to write, values set aside, rejections.
    struct PreparedChunk: Sendable {
        var groups: [RowGroup] = []
        /// COPY text for the groups as if all were new rows.
        var copy: TableWriter.CopyPieces?
        var quarantine: [QuarantineEntry] = []
        var rejectedEvents: [JSONValue] = []
        var rejectedFields: [JSONValue] = []
    }

    /// Applies a batch a slice of rows at a time, so that memory is bounded by the slice (and the
    /// batch's own form: its encoded bytes for a ``WireEventBatch``), not by the batch (a table
    /// that references itself is one slice, for parent-first order, and is held whole): a first
    /// read indexes where each row's events are; then, table by table in plan order, each slice's
    /// events are decoded again, compacted per row and written, all in one transaction with the
    /// advanced cursor. The next slice is prepared while the database works on the current one.
    /// When a row fails, the transaction rolls back and the batch is applied again slice by
    /// slice, isolating failing rows (``isolate(_:quarantine:report:)``).
    @discardableResult
    public func apply(batch: some ChangeBatch, from sender: String, cursor: Int64? = nil, routes: [UUID: String] = [:]) async throws -> ApplyReport {
        var index = BatchIndex()
        var refused: [JSONValue] = []
        let role = configuration.role
        try batch.scan { token, row in
            guard index.count < Self.maximumBatchEvents else {
                throw DatabaseError(context: "applying a batch from \(sender)", message: "batch exceeds the limit of \(Self.maximumBatchEvents) events; nothing was applied")
            }
            if row.offboard, let reason = Self.refusal(offboarding: row, role: role) {
                refused.append(.object([
                    "table": .string(String(row.table.prefix(100))), "row_id": .string(row.rowID.lowercasedText),
                    "sender": .string(sender), "reason": .string(reason),
                ]))
                return
            }
            index.add(token: token, event: row)
        }
        let plan = schema.plan
        let chunks = index.takeChunks(tableOrder: plan.tableOrder, whole: Set(plan.selfReferences.keys), size: chunkSize)
        let offboards = Self.orderedOffboards(index.offboards, schema: schema)
        var report = ApplyReport()
        report.offboardedRows = offboards.reduce(0) { $0 + $1.ids.count }
        // A received clock may move the local one only so far (``ClockBound``).
        let clockCeiling = try await ClockBound.ceiling(on: session)
        let prepare: @Sendable (Int) throws -> PreparedChunk? = { [self, index] i in
            i < chunks.count ? try prepareChunk(chunks[i], index: index, batch: batch, sender: sender, routes: routes, clockCeiling: clockCeiling) : nil
        }
        var rejected: [JSONValue]
        do {
            rejected = try await applyInOneTransaction(prepare, offboards: offboards, sender: sender, cursor: cursor, report: &report)
        } catch let error as DatabaseError where Self.isRowError(error) {
            rejected = try await applyIsolating(prepare, count: chunks.count, offboards: offboards, sender: sender, cursor: cursor, report: &report)
        }
        report.rejectedEvents += refused.count
        rejected = refused + rejected
        for rejection in rejected {
            await telemetry.record(kind: "rejected_change", detail: rejection)
        }
        if retriesWaiting && report.appliedRows + report.offboardedRows > 0 {
            report.waitingApplied = try await retryWaiting()
        }
        return report
    }

    /// Applies the waiting events again (``WaitingRoom``), as one batch per sender so that rows
    /// go parent first, pass after pass while some apply; returns how many applied. Those that
    /// still cannot apply stay waiting, with one more attempt counted.
    @discardableResult
    public func retryWaiting(maximumPasses: Int = 16, pageSize: Int = 20_000) async throws -> Int {
        var retrier = self
        retrier.retriesWaiting = false
        var applied = 0
        for _ in 0..<maximumPasses {
            let entries = try await WaitingRoom.list(on: session, limit: pageSize)
            guard !entries.isEmpty else { break }
            let mark = try await WaitingRoom.mark(on: session)
            var bySender: [String: [ChangeEvent]] = [:]
            var order: [String] = []
            for entry in entries {
                let event = try ChangeEvent(json: try JSONParser.parse(entry.event))
                if bySender[entry.sender] == nil { order.append(entry.sender) }
                bySender[entry.sender, default: []].append(event)
            }
            for sender in order {
                try await retrier.apply(batch: bySender[sender]!, from: sender)
            }
            let settled = try await WaitingRoom.settle(retried: entries.map(\.id), mark: mark, on: session)
            applied += settled
            if settled == 0 { break }
        }
        return applied
    }

    /// Why an offboarding is refused, or nil. Only the shore decides that a row leaves a vessel:
    /// a vessel's offboard flag would make the shore forget a row.
    static func refusal(offboarding row: EventRow, role: NodeRole) -> String? {
        if role == .shore { return "only the shore offboards rows; a vessel may not" }
        if !Identifiers.isValidSQLName(row.table) { return "table name is not a valid name (1 to 63 bytes, no control characters)" }
        return nil
    }

    typealias SlicePreparer = @Sendable (Int) throws -> PreparedChunk?

    /// The happy path: every slice, the offboardings, the quarantine and the cursor in one
    /// transaction, the next slice prepared while the current one is written. Returns the rejections.
    private func applyInOneTransaction(_ prepare: SlicePreparer, offboards: [(table: String, ids: [UUID])], sender: String, cursor: Int64?, report: inout ApplyReport) async throws -> [JSONValue] {
        let schema = self.schema
        let (outcome, quarantine, rejected, failedOffboards) = try await session.transaction { db in
            var total = TableWriter.Outcome()
            var quarantine: [QuarantineEntry] = []
            var rejected = ApplyReport.Rejections()
            try await Self.markApplying(on: db)
            let failedOffboards = try await Self.removeOffboarded(offboards, schema: schema, sender: sender, on: db)
            var current = try prepare(0)
            var i = 0
            while let chunk = current {
                // The next slice is decoded and compacted while this one is written.
                let following = i + 1
                async let upcoming = prepare(following)
                total.add(try await writeRows(chunk.groups, prepared: chunk.copy, on: db))
                quarantine += chunk.quarantine
                rejected.add(chunk)
                current = try await upcoming
                i += 1
            }
            try await Self.advanceClock(past: total.highestCounter, on: db)
            try await QuarantineVault.store(quarantine, on: db)
            if let cursor { try await Self.advance(peer: sender, cursor: cursor, on: db) }
            return (total, quarantine, rejected, failedOffboards)
        }
        await recordDeadLettered(offboardings: failedOffboards, report: &report)
        report.add(outcome)
        report.quarantinedFields += quarantine.reduce(0) { $0 + $1.state.fields.count }
        report.add(rejected)
        return rejected.all
    }

    /// After a row error: the batch again, slice by slice, each slice's failing rows isolated
    /// (``isolate(_:quarantine:report:)``); then the quarantine and the cursor. Returns the rejections.
    private func applyIsolating(_ prepare: SlicePreparer, count: Int, offboards: [(table: String, ids: [UUID])], sender: String, cursor: Int64?, report: inout ApplyReport) async throws -> [JSONValue] {
        let schema = self.schema
        let failedOffboards = try await session.transaction { db in try await Self.removeOffboarded(offboards, schema: schema, sender: sender, on: db) }
        await recordDeadLettered(offboardings: failedOffboards, report: &report)
        var quarantine: [QuarantineEntry] = []
        var rejected = ApplyReport.Rejections()
        for i in 0..<count {
            guard var chunk = try prepare(i) else { continue }
            rejected.add(chunk)
            try await isolate(chunk.groups, quarantine: &chunk.quarantine, report: &report)
            quarantine += chunk.quarantine
        }
        let pending = quarantine
        try await session.transaction { db in
            try await QuarantineVault.store(pending, on: db)
            if let cursor { try await Self.advance(peer: sender, cursor: cursor, on: db) }
        }
        report.quarantinedFields += pending.reduce(0) { $0 + $1.state.fields.count }
        report.add(rejected)
        return rejected.all
    }

    /// Decodes one slice's events and runs them through intake.
    func prepareChunk(_ chunk: BatchIndex.Chunk, index: BatchIndex, batch: some ChangeBatch, sender: String, routes: [UUID: String], clockCeiling: Int64 = ClockBound.hardCeiling) throws -> PreparedChunk {
        var intake = Intake(schema: schema, sender: sender, shore: shoreNode)
        intake.routes = routes
        intake.clockCeiling = clockCeiling
        for row in chunk.rows {
            try index.forEachToken(of: row) { token in intake.add(try batch.event(at: token)) }
        }
        let groups = intake.orderedGroups()
        let copy = groups.isEmpty || schema.tables[chunk.table] == nil || groups.areMostlyUpdates ? nil : tableWriter(for: chunk.table, sender: sender).prepareCopy(groups)
        return PreparedChunk(groups: groups, copy: copy, quarantine: intake.quarantine,
                             rejectedEvents: intake.rejectedEvents, rejectedFields: intake.rejectedFields)
    }

    /// Writes `groups`, each attempt in a transaction of its own; on a row error, bisects until
    /// each failing row is alone, moves values that do not fit their columns into `quarantine`
    /// and what else fails into the dead-letter queue (with telemetry), and writes the rest.
    func isolate(_ groups: [RowGroup], quarantine: inout [QuarantineEntry], report: inout ApplyReport) async throws {
        var failures: [(RowGroup, DatabaseError)] = []
        try await bisect(groups[...], failures: &failures, report: &report)
        for (group, error) in failures {
            if let moved = try await quarantineBadValues(group, error: error) {
                quarantine.append(moved.quarantined)
                if let rest = moved.rest { try await isolate([rest], quarantine: &quarantine, report: &report) }
                continue
            }
            // A row that waits for its parent, or a later change of a row whose first change
            // waits (a partial row, which cannot apply alone): it waits too, and they apply
            // together, merged, once the parent is there.
            let waits = try await WaitingRoom.isWaiting(error) ? true : WaitingRoom.holds(group.table, group.rowID, on: session)
            if waits {
                try await WaitingRoom.add(group.event, sender: group.sender, error: error, on: session)
                if retriesWaiting { await recordApplyFailure(group.event, error, kind: "waiting") }
                report.waiting += 1
                continue
            }
            try await DeadLetterQueue.add(group.event, sender: group.sender, error: error, on: session)
            await recordApplyFailure(group.event, error)
            report.deadLettered += 1
        }
    }

    /// Telemetry for an event that went to the dead-letter queue.
    private func recordApplyFailure(_ event: ChangeEvent, _ error: DatabaseError, kind: String = "apply_failure") async {
        await telemetry.record(kind: kind, detail: .object([
            "event": event.json, "table": .string(event.table), "row_id": .string(event.rowID.lowercasedText),
            "constraint": error.constraint.map(JSONValue.string) ?? .null, "sql_state": error.sqlState.map(JSONValue.string) ?? .null,
            "message": .string(error.message),
        ]))
    }

    /// Offboardings that went to the dead-letter queue or wait for a row that references them to
    /// leave first: counted as such, not as offboarded rows.
    private func recordDeadLettered(offboardings failed: [(event: ChangeEvent, error: DatabaseError)], report: inout ApplyReport) async {
        report.offboardedRows -= failed.count
        for (event, error) in failed {
            if WaitingRoom.isWaiting(error) {
                report.waiting += 1
                if retriesWaiting { await recordApplyFailure(event, error, kind: "waiting") }
            } else {
                report.deadLettered += 1
                await recordApplyFailure(event, error)
            }
        }
    }

    /// Offboarded rows by table, children's tables first (the order to delete them in).
    static func orderedOffboards(_ offboards: [String: Set<UUID>], schema: LocalSchema) -> [(table: String, ids: [UUID])] {
        schema.plan.tableOrder.reversed().compactMap { table in
            guard let ids = offboards[table], !ids.isEmpty else { return nil }
            return (table, ids.sorted { $0.uuidString < $1.uuidString })
        }
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
        try await Self.markApplying(on: db)
        let outcome = try await writeRows(groups, on: db)
        try await Self.advanceClock(past: outcome.highestCounter, on: db)
        return outcome
    }

    /// Writes groups in plan order, in a transaction already marked as the sync engine's.
    /// `prepared` is COPY text for all of `groups` as new rows (one table's, at most `chunkSize`).
    func writeRows(_ groups: [RowGroup], prepared: TableWriter.CopyPieces? = nil, on db: DatabaseSession) async throws -> TableWriter.Outcome {
        var total = TableWriter.Outcome()
        var start = 0
        while start < groups.count {
            let table = groups[start].table
            var end = start
            while end < groups.count && groups[end].table == table && end - start < chunkSize { end += 1 }
            let whole = start == 0 && end == groups.count
            total.add(try await tableWriter(for: table, sender: groups[start].sender).write(Array(groups[start..<end]), prepared: whole ? prepared : nil, on: db))
            start = end
        }
        try await ConflictLog.record(total.conflicts, on: db)
        return total
    }

    func tableWriter(for table: String, sender: String) -> TableWriter {
        var writer = TableWriter(configuration: configuration.table(named: table)!, physical: schema.tables[table]!, columns: schema.writableColumns(of: table))
        if configuration.role == .shore { writer.relayFrom = sender }
        writer.readsEveryColumn = readsEveryColumn
        writer.updatesThroughJSON = updatesThroughJSON
        writer.locksRows = locksRows
        return writer
    }

    /// Marks the transaction as the sync engine's: capture triggers let its writes through.
    static func markApplying(on db: DatabaseSession) async throws {
        try await db.execute("SET LOCAL fleetsync.applying = 'on'", context: "marking the transaction as the sync engine's")
    }

    /// Moves the node's Lamport counter past every clock it has seen.
    static func advanceClock(past counter: Int64, on db: DatabaseSession) async throws {
        guard counter > 0 else { return }
        var binds = PostgresBindings()
        binds.append(counter)
        try await db.execute("SELECT setval('fleetsync.lamport', $1) FROM fleetsync.lamport WHERE last_value < $1", binds, context: "advancing the logical clock")
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

    /// Deletes the local copies of rows that left this vessel's partition, children first. A row
    /// that cannot be deleted stays, so that the batch and every later one still apply: a failing
    /// offboarding must not stop the vessel's stream. While a row still references it (a child
    /// whose own offboarding comes in a later batch, or a local row the shore does not know), it
    /// waits (``WaitingRoom``) and is deleted again after later batches; any other error sends it
    /// to the dead-letter queue. Returns the offboardings kept back, with their errors.
    @discardableResult
    static func removeOffboarded(_ offboards: [(table: String, ids: [UUID])], schema: LocalSchema, sender: String, on db: DatabaseSession) async throws -> [(event: ChangeEvent, error: DatabaseError)] {
        guard !offboards.isEmpty else { return [] }
        try await markApplying(on: db)
        var failed: [(event: ChangeEvent, error: DatabaseError)] = []
        for (table, ids) in offboards {
            guard let physical = schema.tables[table] else { continue }
            let delete = "DELETE FROM \(SQL.qualified(physical.schema, physical.name)) WHERE id = ANY($1::uuid[])"
            var binds = PostgresBindings()
            binds.append(ids)
            if try await attempt(delete, binds, context: "removing rows of \(table) that left this vessel", on: db) == nil { continue }
            // One by one, to keep the rows that cannot go and delete the others.
            for id in ids {
                var one = PostgresBindings()
                one.append([id])
                guard let error = try await attempt(delete, one, context: "removing row \(id.lowercasedText) of \(table) that left this vessel", on: db) else { continue }
                let event = ChangeEvent(table: table, rowID: id, fields: [:], origin: sender, offboard: true)
                if WaitingRoom.isWaiting(error) {
                    try await WaitingRoom.add(event, sender: sender, error: error, on: db)
                } else {
                    try await DeadLetterQueue.add(event, sender: sender, error: error, on: db)
                }
                failed.append((event, error))
            }
        }
        return failed
    }

    /// Runs `sql` in a savepoint; a row error rolls back to it and is returned, others are thrown.
    private static func attempt(_ sql: String, _ binds: PostgresBindings, context: String, on db: DatabaseSession) async throws -> DatabaseError? {
        try await db.execute("SAVEPOINT fleetsync_offboard", context: context)
        do {
            try await db.execute(sql, binds, context: context)
            try await db.execute("RELEASE SAVEPOINT fleetsync_offboard", context: context)
            return nil
        } catch {
            guard isRowError(error) else { throw error }
            try await db.execute("ROLLBACK TO SAVEPOINT fleetsync_offboard", context: context)
            return error
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

extension TableWriter.Outcome {
    mutating func add(_ other: TableWriter.Outcome) {
        applied += other.applied
        unchanged += other.unchanged
        conflicts += other.conflicts
        highestCounter = max(highestCounter, other.highestCounter)
    }
}

extension ApplyReport {
    /// Events and fields refused at intake, for telemetry.
    struct Rejections: Sendable {
        var events: [JSONValue] = []
        var fields: [JSONValue] = []
        var all: [JSONValue] { events + fields }

        mutating func add(_ chunk: Applier.PreparedChunk) {
            events += chunk.rejectedEvents
            fields += chunk.rejectedFields
        }
    }

    mutating func add(_ rejected: Rejections) {
        rejectedEvents += rejected.events.count
        rejectedFields += rejected.fields.count
    }

    mutating func add(_ outcome: TableWriter.Outcome) {
        appliedRows += outcome.applied
        unchangedRows += outcome.unchanged
        conflicts += outcome.conflicts.count
    }
}
