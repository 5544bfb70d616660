import Foundation

/// One field's new value and the clock of the write that produced it.
public struct FieldChange: Sendable, Hashable {
    public var value: JSONValue
    public var clock: FieldClock

    public init(value: JSONValue, clock: FieldClock) {
        self.value = value
        self.clock = clock
    }
}

/// A change to one row: the fields a write changed, each with its clock.
///
/// The tombstone travels as the field `is_deleted` with a boolean value, so it merges like any
/// other field and the same rules (clocks, ownership) apply to it.
public struct ChangeEvent: Sendable, Hashable {
    /// The sync name of the table.
    public var table: String
    public var rowID: UUID
    public var fields: [String: FieldChange]
    /// The node that made the write.
    public var origin: String
    /// The position of this event in its origin's outbox, used for acknowledgements.
    public var originPosition: Int64
    /// The row version the writer had seen before this write (for conflict detection).
    public var baseVersion: Int64
    /// The row left the receiving vessel's partition (transfer saga): the vessel removes its copy.
    public var offboard: Bool

    public init(table: String, rowID: UUID, fields: [String: FieldChange], origin: String, originPosition: Int64 = 0, baseVersion: Int64 = 0, offboard: Bool = false) {
        self.table = table
        self.rowID = rowID
        self.fields = fields
        self.origin = origin
        self.originPosition = originPosition
        self.baseVersion = baseVersion
        self.offboard = offboard
    }

    /// The name of the field that carries the tombstone.
    public static let deletedField = "is_deleted"

    /// Whether the event marks the row deleted.
    public var isTombstone: Bool { fields[Self.deletedField]?.value == .bool(true) }

    /// The highest clock among the event's fields.
    public var maximumClock: FieldClock? { fields.values.map(\.clock).max() }
}

/// What a capture trigger wrote to the outbox, before clocks are attached.
public struct CapturedChange: Sendable, Hashable {
    public enum Operation: String, Sendable { case insert = "I", update = "U" }

    public var position: Int64
    public var table: String
    public var rowID: UUID
    public var operation: Operation
    public var version: Int64
    public var baseVersion: Int64
    public var delta: [String: JSONValue]

    public init(position: Int64, table: String, rowID: UUID, operation: Operation, version: Int64, baseVersion: Int64, delta: [String: JSONValue]) {
        self.position = position
        self.table = table
        self.rowID = rowID
        self.operation = operation
        self.version = version
        self.baseVersion = baseVersion
        self.delta = delta
    }

    /// Attaches clocks: every changed field gets `version@node`, except that on an insert a field
    /// this node does not own gets counter 0, so any write by its owner supersedes the initial value.
    public func event(node: String, role: NodeRole, table configuration: TableConfiguration) -> ChangeEvent {
        var fields: [String: FieldChange] = [:]
        fields.reserveCapacity(delta.count)
        let clock = FieldClock(counter: version, node: node)
        let creation = FieldClock(counter: 0, node: node)
        for (column, value) in delta {
            let owned = column == ChangeEvent.deletedField || configuration.owner(of: column).isWritable(by: role)
            fields[column] = FieldChange(value: value, clock: operation == .insert && !owned ? creation : clock)
        }
        return ChangeEvent(table: table, rowID: rowID, fields: fields, origin: node, originPosition: position, baseVersion: baseVersion)
    }
}
