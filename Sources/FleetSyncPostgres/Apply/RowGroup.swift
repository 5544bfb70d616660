import FleetSyncCore
import Foundation

/// The incoming change of one row after compaction: every event for the row merged into one
/// state, with the lowest base version among them (for conflict detection; kept as one number so
/// that a large batch stays small in memory).
struct RowGroup: Sendable {
    var table: String
    var rowID: UUID
    var state: RowState
    var base: Int64
    var sender: String
    /// Arrival index of the row's first event: the sequence order within a table.
    var sequence: Int

    init(table: String, rowID: UUID, sender: String, sequence: Int) {
        self.table = table
        self.rowID = rowID
        self.state = RowState()
        self.base = Int64.max
        self.sender = sender
        self.sequence = sequence
    }

    mutating func merge(_ fields: [String: FieldChange], base: Int64) {
        if state.fields.isEmpty { state.fields = fields } else { state.merge(fields) }
        self.base = min(self.base, base)
    }

    /// The group as one event, for the dead-letter queue.
    var event: ChangeEvent {
        ChangeEvent(table: table, rowID: rowID, fields: state.fields, origin: sender, baseVersion: base == Int64.max ? 0 : base)
    }
}

/// A concurrent write to a shared field: the value kept and the value discarded.
struct Conflict: Sendable {
    var table: String
    var rowID: UUID
    var field: String
    var kept: FieldChange
    var discarded: FieldChange
}

extension Array where Element == RowGroup {
    /// Whether most of these rows were updates where they were written (a base version above 0):
    /// such rows almost always exist here too, so COPY text prepared for them as new rows would
    /// be thrown away (the applier then prepares none; rows that do turn out new are still
    /// copied, encoded when written).
    var areMostlyUpdates: Bool {
        var updates = 0
        for group in self where group.base > 0 && group.base != Int64.max { updates += 1 }
        return updates * 2 > count
    }
}
