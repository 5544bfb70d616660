import Foundation

/// A batch of incoming events that can be read twice: once in order, row by row, and then event
/// by event again by the token the first read handed out. The applier indexes a batch in the first
/// read and decodes it again a slice of rows at a time, so that a large batch is never held as
/// decoded events all at once.
public protocol ChangeBatch: Sendable {
    /// Calls `body` with the row of every event, in order, and a token that ``event(at:)`` takes.
    func scan(_ body: (_ token: Int, _ row: EventRow) throws -> Void) throws
    /// The event a scan handed out with `token`.
    func event(at token: Int) throws -> ChangeEvent
}

/// Which row an event is for, as the first read of a batch sees it.
public struct EventRow: Sendable, Hashable {
    public var table: String
    public var rowID: UUID
    /// The row left the receiving vessel's partition.
    public var offboard: Bool

    public init(table: String, rowID: UUID, offboard: Bool) {
        self.table = table
        self.rowID = rowID
        self.offboard = offboard
    }
}

extension Array: ChangeBatch where Element == ChangeEvent {
    public func scan(_ body: (_ token: Int, _ row: EventRow) throws -> Void) throws {
        for (index, event) in enumerated() { try body(index, EventRow(table: event.table, rowID: event.rowID, offboard: event.offboard)) }
    }

    public func event(at token: Int) throws -> ChangeEvent { self[token] }
}
