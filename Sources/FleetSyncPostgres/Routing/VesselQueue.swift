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

    /// The highest position given so far.
    public func lastPosition() async throws -> Int64 {
        try await session.rows("SELECT last_pos FROM fleetsync.outbox_counter", context: "reading the outbox position")[0].value(0)
    }

    /// Events for `vessel` after `cursor`, at most `limit` of them and about `byteBudget` bytes.
    public func read(vessel: String, after cursor: Int64, limit: Int, byteBudget: Int) async throws -> Batch {
        let last = try await lastPosition()
        var binds = PostgresBindings()
        binds.append(cursor)
        binds.append(last)
        binds.append(vessel)
        binds.append(Int64(limit + 1))
        binds.append(Int64(byteBudget))
        // The byte budget is applied by the query (``OutboxReader/page``): rows past it are never sent here.
        let rows = try await session.rows(OutboxReader.page(
            columns: "pos, table_name, row_id, op::text AS op, version, base_version, delta::text AS delta, clocks::text AS clocks, origin",
            where: "pos > $1 AND pos <= $2 AND vessel IN ($3, '*') AND origin IS DISTINCT FROM $3",
            limit: "$4", budget: "$5", overhead: 48), binds, context: "reading the queue of vessel \(vessel)")
        var events: [ChangeEvent] = []
        var bytes = 0
        var reached = cursor
        var more = false
        for row in rows {
            let context = "decoding a queued event"
            let delta: String = try row.value(6, context: context)
            let size = Int(try row.value(9, as: Int32.self, context: context))
            if events.count == limit || (!events.isEmpty && bytes + size > byteBudget) {
                more = true
                break
            }
            let position: Int64 = try row.value(0, context: context)
            let table: String = try row.value(1, context: context)
            let op: String = try row.value(3, context: context)
            let rowID: UUID = try row.value(2, context: context)
            bytes += size
            reached = position
            guard let tableConfiguration = configuration.table(named: table) else { continue }
            let values = try JSONParser.parse(delta).objectValue ?? [:]
            switch op {
            case "I", "U":
                let change = CapturedChange(
                    position: position, table: table, rowID: rowID, operation: op == "I" ? .insert : .update,
                    version: try row.value(4, context: context), baseVersion: try row.value(5, context: context), delta: values)
                events.append(change.event(node: configuration.nodeID, role: .shore, table: tableConfiguration))
            case "O":
                events.append(ChangeEvent(table: table, rowID: rowID, fields: [:], origin: configuration.nodeID, originPosition: position, offboard: true))
            default:  // "R" relayed, "B" baseline: explicit per-field clocks
                let clocksText: String? = try row.value(7, context: context)
                let clocks = try clocksText.map { try JSONParser.parse($0).objectValue ?? [:] } ?? [:]
                var fields: [String: FieldChange] = [:]
                for (name, value) in values {
                    let clock = clocks[name].flatMap(FieldClock.init(json:)) ?? FieldClock(counter: 0, node: configuration.nodeID)
                    fields[name] = FieldChange(value: value, clock: clock)
                }
                let origin: String? = try row.value(8, context: context)
                events.append(ChangeEvent(table: table, rowID: rowID, fields: fields, origin: origin ?? configuration.nodeID, originPosition: position))
            }
        }
        // Rows of tables this shore does not sync are skipped without counting; when the fetch
        // was full, stop at the last row looked at rather than jump past unread ones.
        if !more && rows.count > limit { more = true }
        if !more { reached = max(reached, last) }
        return Batch(events: events, cursor: reached, more: more, fetched: rows.count)
    }
}
