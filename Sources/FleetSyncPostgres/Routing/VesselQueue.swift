import FleetSyncCore
import Foundation
import PostgresNIO

/// The events waiting on the shore for one vessel: its partition's changes, broadcast changes,
/// and its transfer-saga events, minus what the vessel itself sent. One write per event however
/// many vessels there are: a broadcast event is stored once with vessel `*`.
public struct VesselQueue: Sendable {
    public var configuration: FleetSyncConfiguration
    public var session: DatabaseSession

    public init(configuration: FleetSyncConfiguration, session: DatabaseSession) {
        self.configuration = configuration
        self.session = session
    }

    public struct Batch: Sendable {
        public var events: [ChangeEvent]
        /// The position the vessel has seen everything up to, once it applies `events`.
        public var cursor: Int64
        public var more: Bool
        /// Rows the database sent to make the batch: at most one more than the batch holds,
        /// however large the rows behind the budget.
        public var fetched = 0
    }

    /// The page of a vessel's queue after `after` (its own partition's events and broadcast ones,
    /// each read on its own in position order through the (vessel, pos) index, without the
    /// vessel's own events), with the outbox's last position and pruning mark, all read in one
    /// statement (one snapshot, so no transaction of its own): one row with nulls for the page's
    /// columns when it is empty. Binds: after, vessel, limit + 1, byte budget, the vessel's cursor
    /// (no event is read when it is below the pruning mark). The byte budget is applied by the
    /// query (``OutboxReader/page``): rows past it are never sent here.
    public static let positionedPageSQL: String = {
        let last = "(SELECT last_pos FROM fleetsync.outbox_counter)"
        let kept = "$5 >= (SELECT pruned_below FROM fleetsync.outbox_counter)"
        let page = OutboxReader.page(
            columns: "pos, table_name, row_id, op::text AS op, version, base_version, delta_text AS delta, clocks::text AS clocks, origin",
            sources: ["vessel = $2 AND pos > $1 AND pos <= \(last) AND origin IS DISTINCT FROM $2 AND \(kept)",
                      "vessel = '*' AND pos > $1 AND pos <= \(last) AND origin IS DISTINCT FROM $2 AND \(kept)"],
            limit: "$3", budget: "$4", overhead: 48)
        return "SELECT c.last_pos, c.pruned_below, q.* FROM fleetsync.outbox_counter c LEFT JOIN (\(page)) q ON true ORDER BY q.pos"
    }()

    /// Events for `vessel` after `after`, up to the outbox's last position, read in one statement
    /// with that position and the pruning mark: nil when `cursor` (the position the vessel has
    /// applied everything up to) is below the mark (events it lacks may be gone: a catch-up
    /// follows). `last`: the outbox's last position that statement saw.
    ///
    /// An event whose stored text cannot be read (a value nested deeper than
    /// `JSONLimits.maximumDepth`, which PostgreSQL accepts only with a raised `max_stack_depth`, or
    /// text that is not the JSON object it should be) is skipped, for this vessel and every other
    /// one, instead of failing every exchange that reaches it: before the batch that passes it is
    /// returned, it is recorded once in the dead-letter queue with its text kept whole and a
    /// telemetry row (``DeadLetterQueue/addUnreadable(table:rowID:source:position:key:text:reason:on:)``,
    /// keyed by its position). It is written through a connection of its own, since the queue may
    /// be read in a read-only transaction; if that fails, the read fails and nothing is skipped. The
    /// row stays in the outbox (other vessels' queues share it) until retention prunes it.
    public func readAtLastPosition(vessel: String, cursor: Int64, after: Int64, limit: Int, byteBudget: Int) async throws -> (batch: Batch?, last: Int64) {
        var binds = PostgresBindings()
        binds.append(after)
        binds.append(vessel)
        binds.append(Int64(limit + 1))
        binds.append(Int64(byteBudget))
        binds.append(cursor)
        // Prepared once per connection: planning was most of this statement's time. Its generic
        // plan reads through the (vessel, pos) index as the custom one does (ExchangeRoundTripTests).
        let logger = session.logger
        var rows = try await session.answered("reading the queue of vessel \(vessel)") { [binds] connection in
            var rows: [PostgresRow] = []
            for try await row in try await connection.execute(PositionedPage(bindings: binds), logger: logger) { rows.append(row) }
            return rows
        }
        guard let first = rows.first else {
            throw DatabaseError(context: "reading the queue of vessel \(vessel)", message: "the outbox counter row is missing", hint: "run fleetsync init on the shore")
        }
        let (last, prunedBelow) = try first.decode((Int64, Int64).self)
        guard cursor >= prunedBelow else { return (nil, last) }
        if try first.value(2, as: Int64?.self, context: "reading the queue of vessel \(vessel)") == nil { rows = [] }
        return (try await batch(of: rows, columnsFrom: 2, vessel: vessel, after: after, through: last, limit: limit, byteBudget: byteBudget), last)
    }

    /// ``positionedPageSQL`` as a prepared statement.
    struct PositionedPage: PostgresPreparedStatement {
        static let sql = VesselQueue.positionedPageSQL
        static let bindingDataTypes: [PostgresDataType] = [.int8, .text, .int8, .int8, .int8]
        var bindings: PostgresBindings
        func makeBindings() -> PostgresBindings { bindings }
        func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
    }

    /// The batch made of a page's rows, whose columns start at `offset`.
    private func batch(of rows: [PostgresRow], columnsFrom offset: Int, vessel: String, after cursor: Int64, through last: Int64, limit: Int, byteBudget: Int) async throws -> Batch {
        var events: [ChangeEvent] = []
        var bytes = 0
        var reached = cursor
        var more = false
        var unreadable: [Unreadable] = []
        for row in rows {
            let context = "decoding a queued event"
            let delta: String = try row.value(offset + 6, context: context)
            let size = Int(try row.value(offset + 9, as: Int32.self, context: context))
            if events.count == limit || (!events.isEmpty && bytes + size > byteBudget) {
                more = true
                break
            }
            let position: Int64 = try row.value(offset + 0, context: context)
            let table: String = try row.value(offset + 1, context: context)
            let op: String = try row.value(offset + 3, context: context)
            let rowID: UUID = try row.value(offset + 2, context: context)
            bytes += size
            reached = position
            guard let tableConfiguration = configuration.table(named: table) else { continue }
            let clocksText: String? = try row.value(offset + 7, context: context)
            let values: [String: JSONValue]
            let clocks: [String: JSONValue]
            do {
                values = try Self.members(of: delta, what: "delta")
                clocks = try clocksText.map { try Self.members(of: $0, what: "clocks") } ?? [:]
            } catch {
                unreadable.append(Unreadable(position: position, table: table, rowID: rowID,
                                             text: clocksText.map { "{\"delta\":\(delta),\"clocks\":\($0)}" } ?? delta, reason: "\(error)"))
                continue
            }
            switch op {
            case "I", "U":
                let change = CapturedChange(
                    position: position, table: table, rowID: rowID, operation: op == "I" ? .insert : .update,
                    version: try row.value(offset + 4, context: context), baseVersion: try row.value(offset + 5, context: context), delta: values)
                events.append(change.event(node: configuration.nodeID, role: .shore, table: tableConfiguration))
            case "O":
                events.append(ChangeEvent(table: table, rowID: rowID, fields: [:], origin: configuration.nodeID, originPosition: position, offboard: true))
            default:  // "R" relayed, "B" baseline: explicit per-field clocks
                var fields: [String: FieldChange] = [:]
                for (name, value) in values {
                    let clock = clocks[name].flatMap(FieldClock.init(json:)) ?? FieldClock(counter: 0, node: configuration.nodeID)
                    fields[name] = FieldChange(value: value, clock: clock)
                }
                let origin: String? = try row.value(offset + 8, context: context)
                events.append(ChangeEvent(table: table, rowID: rowID, fields: fields, origin: origin ?? configuration.nodeID, originPosition: position))
            }
        }
        // Rows of tables this shore does not sync are skipped without counting; when the fetch
        // was full, stop at the last row looked at rather than jump past unread ones.
        if !more && rows.count > limit { more = true }
        if !more { reached = max(reached, last) }
        if !unreadable.isEmpty { try await record(unreadable, vessel: vessel) }
        return Batch(events: events, cursor: reached, more: more, fetched: rows.count)
    }

    /// A queued event that could not be read (see ``readAtLastPosition(vessel:cursor:after:limit:byteBudget:)``).
    struct Unreadable {
        var position: Int64
        var table: String
        var rowID: UUID
        var text: String
        var reason: String
    }

    /// Records unreadable queued events in the dead-letter queue, once each (keyed by position),
    /// through a connection of its own: the queue is read in a read-only transaction, and the
    /// record must stand before the cursor that skips the events is handed out.
    private func record(_ unreadable: [Unreadable], vessel: String) async throws {
        let recorder = try await DatabaseSession.connect(url: configuration.databaseURL, logger: session.logger)
        do {
            for entry in unreadable {
                try await recorder.transaction { tx in
                    try await tx.lockForTransaction("fleetsync.unreadable:\(entry.position)", context: "recording an unreadable queued event")
                    try await DeadLetterQueue.addUnreadable(
                        table: entry.table, rowID: entry.rowID, source: .shoreQueue, position: entry.position, key: "shore_queue:\(entry.position)",
                        text: entry.text, reason: entry.reason, on: tx)
                }
                session.logger.error("a queued event could not be read; it is dead-lettered and skipped", metadata: [
                    "vessel": "\(vessel)", "table": "\(entry.table)", "row_id": "\(entry.rowID.lowercasedText)", "position": "\(entry.position)",
                    "reason": "\(entry.reason.prefix(200))"])
            }
        } catch {
            await recorder.close()
            throw error
        }
        await recorder.close()
    }

    /// The members of a stored JSON object (a delta, clocks), read with the limits the wire applies.
    static func members(of text: String, what: String) throws -> [String: JSONValue] {
        let value = try JSONParser.parse(text, valuesAt: JSONLimits.Envelope.members)
        guard case .object(let members) = value else { throw EventDecodingError("the \(what) is a JSON \(value.kindName), not an object") }
        return members
    }
}
