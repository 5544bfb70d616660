import FleetSyncCore
import Foundation

/// How far a clock received from another node may move this node's Lamport clock
/// (`fleetsync.lamport`, a bigint sequence that every local write and every applied change
/// advances). Without a bound, one field clock of 2^63-1 would set the sequence to its maximum:
/// every later insert into a synced table would fail, and so would every update of that row.
///
/// A received counter may be at most the local clock plus ``maximumAdvance`` (2^40, about 10^12
/// writes ahead of what this node has seen), and never above ``hardCeiling`` (2^62), which
/// leaves the local clock 2^62 values of headroom. An event with a field clock beyond the bound
/// is refused whole and reported (telemetry `rejected_change`); the local clock does not move.
public enum ClockBound {
    public static let maximumAdvance: Int64 = 1 << 40
    public static let hardCeiling: Int64 = 1 << 62

    /// The highest counter accepted when the local clock's last value is `local`.
    public static func ceiling(local: Int64) -> Int64 {
        let (advanced, overflow) = max(local, 0).addingReportingOverflow(maximumAdvance)
        return overflow ? hardCeiling : min(advanced, hardCeiling)
    }

    /// The highest counter accepted now, from the local clock's last value (read once per batch).
    static func ceiling(on db: DatabaseSession) async throws -> Int64 {
        ceiling(local: try await current(on: db))
    }

    /// This node's logical clock: its Lamport counter's last value, at or above every clock it
    /// gave or accepted.
    public static func current(on db: DatabaseSession) async throws -> Int64 {
        try await db.rows("SELECT last_value FROM fleetsync.lamport", context: "reading the logical clock")[0].value(0, context: "reading the logical clock")
    }

    static func refusal(counter: Int64, ceiling: Int64) -> String {
        "field clock \(counter) is beyond the bound \(ceiling) (this node's clock + 2^40, at most 2^62); the event is refused so that this node's clock keeps its headroom"
    }
}

/// Sorts the events of a slice of rows: rejects what is malformed or not allowed, sets aside what
/// this node's schema lacks, and compacts the rest into one group per row. It runs for the next
/// slice while the current one is written.
struct Intake {
    let schema: LocalSchema
    let sender: String
    let policies: [String: OwnershipPolicy]
    /// Writable columns per table, computed once per batch rather than per event.
    let columnsByTable: [String: [String: PhysicalColumn]]
    /// The vessel each row is routed to, where the caller knows it (the shore).
    var routes: [UUID: String] = [:]
    /// The highest clock counter a received field may carry (``ClockBound``); an event with a
    /// higher one is refused whole, so that applying it cannot exhaust this node's clock.
    var clockCeiling: Int64 = ClockBound.hardCeiling
    private(set) var groups: [String: [UUID: RowGroup]] = [:]
    private(set) var quarantineByRow: [String: [UUID: QuarantineEntry]] = [:]
    private(set) var rejectedEvents: [JSONValue] = []
    private(set) var rejectedFields: [JSONValue] = []
    private var sequence = 0
    private var nameValidity: [String: Bool] = [:]
    private var nodeValidity: [String: Bool] = [:]

    /// - Parameter shore: on a vessel, the shore's node id (the sender is then the shore);
    ///   nil means the sender's name is the shore's id.
    init(schema: LocalSchema, sender: String, shore: String? = nil) {
        self.schema = schema
        self.sender = shore ?? sender
        let shoreID = schema.configuration.role == .shore ? schema.configuration.nodeID : self.sender
        var policies: [String: OwnershipPolicy] = [:]
        for table in schema.configuration.tables { policies[table.name] = OwnershipPolicy(table: table, shoreID: shoreID) }
        self.policies = policies
        var columns: [String: [String: PhysicalColumn]] = [:]
        for table in schema.tables.keys { columns[table] = schema.writableColumns(of: table) }
        self.columnsByTable = columns
    }

    var quarantine: [QuarantineEntry] { quarantineByRow.values.flatMap(\.values) }

    private mutating func rejectEvent(_ event: ChangeEvent, _ reason: String) {
        rejectedEvents.append(.object([
            "table": .string(String(event.table.prefix(100))), "row_id": .string(event.rowID.lowercasedText),
            "sender": .string(sender), "reason": .string(reason),
        ]))
    }

    private mutating func rejectField(_ event: ChangeEvent, _ field: String, _ reason: String) {
        rejectedFields.append(.object([
            "table": .string(event.table), "row_id": .string(event.rowID.lowercasedText),
            "field": .string(String(field.prefix(100))), "sender": .string(sender), "reason": .string(reason),
        ]))
    }

    mutating func add(_ event: ChangeEvent) {
        sequence += 1
        guard isValidName(event.table) else {
            return rejectEvent(event, "table name is not a valid name (1 to 63 bytes, no control characters)")
        }
        // Offboardings are the applier's (``BatchIndex``): they never reach intake.
        guard !event.offboard else { return }
        if let highest = event.fields.values.lazy.map(\.clock.counter).max(), highest > clockCeiling {
            return rejectEvent(event, ClockBound.refusal(counter: highest, ceiling: clockCeiling))
        }
        // Most events are clean: check each field, and copy the fields only when one is dropped.
        var fields = event.fields
        for (name, change) in event.fields {
            var reason: String?
            if !isValidName(name) {
                reason = "field name is not a valid name (1 to 63 bytes, no control characters)"
            } else if FleetSyncConfiguration.trackingColumns.contains(name) && name != ChangeEvent.deletedField {
                reason = "\(name) is a tracking column only FleetSync writes"
            } else if name == ChangeEvent.deletedField && change.value.boolValue == nil {
                reason = "is_deleted must be true or false, not a \(change.value.kindName)"
            } else if !isValidNode(change.clock.node) {
                reason = "clock names no valid node"
            }
            if let reason {
                rejectField(event, name, reason)
                fields[name] = nil
            }
        }
        var admitted = event
        admitted.fields = fields
        if let policy = policies[event.table] {
            let (accepted, rejected) = policy.admit(admitted, sender: sender, routedVessel: routes[event.rowID])
            for rejection in rejected { rejectField(event, rejection.field, rejection.reason) }
            admitted = accepted
        }
        guard !admitted.fields.isEmpty else { return }
        let columns = columnsByTable[event.table] ?? [:]
        if columns.isEmpty {
            setAside(admitted, fields: admitted.fields, reason: "table \(event.table) is not present on this node")
            return
        }
        var known = admitted.fields
        if !known.keys.allSatisfy({ $0 == ChangeEvent.deletedField || columns[$0] != nil }) {
            var unknown: [String: FieldChange] = [:]
            for (name, change) in admitted.fields where name != ChangeEvent.deletedField && columns[name] == nil {
                unknown[name] = change
                known[name] = nil
            }
            setAside(admitted, fields: unknown, reason: "column not present on this node")
        }
        guard !known.isEmpty else { return }
        groups[event.table, default: [:]][event.rowID, default: RowGroup(table: event.table, rowID: event.rowID, sender: sender, sequence: sequence)]
            .merge(known, base: event.baseVersion)
    }

    /// Names repeat in every event: each is checked once.
    private mutating func isValidName(_ name: String) -> Bool {
        if let known = nameValidity[name] { return known }
        let valid = Identifiers.isValidSQLName(name)
        nameValidity[name] = valid
        return valid
    }

    private mutating func isValidNode(_ node: String) -> Bool {
        if let known = nodeValidity[node] { return known }
        let valid = Identifiers.isValidNodeID(node)
        nodeValidity[node] = valid
        return valid
    }

    private mutating func setAside(_ event: ChangeEvent, fields: [String: FieldChange], reason: String) {
        var entry = quarantineByRow[event.table]?[event.rowID] ?? QuarantineEntry(table: event.table, rowID: event.rowID)
        for name in entry.state.merge(fields) { entry.reasons[name] = reason }
        quarantineByRow[event.table, default: [:]][event.rowID] = entry
    }

    /// All row groups in apply order: tables by plan, rows by sequence, parents before children.
    func orderedGroups() -> [RowGroup] {
        var ordered: [RowGroup] = []
        for table in schema.plan.tableOrder {
            guard let rows = groups[table] else { continue }
            var list = rows.values.sorted { $0.sequence < $1.sequence }
            if let selfColumns = schema.plan.selfReferences[table] {
                let refs = list.map { group in
                    (id: group.rowID, parents: selfColumns.compactMap { group.state.fields[$0]?.value.stringValue.flatMap(UUID.init(uuidString:)) })
                }
                list = BatchPlanner.parentFirst(refs).map { list[$0] }
            }
            ordered += list
        }
        return ordered
    }
}
