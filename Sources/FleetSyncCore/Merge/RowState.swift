/// The merged state of one row: for every field, the value of the write with the highest clock.
///
/// Merging is a per-field maximum by clock, so it is commutative, associative and idempotent:
/// any order, duplication or retry of deliveries ends in the same state. The tombstone is the
/// field `is_deleted`; whether the row counts as deleted is derived from the state by the table's
/// ``TombstoneRule``, so it converges as well.
public struct RowState: Sendable, Hashable {
    public var fields: [String: FieldChange]

    public init(fields: [String: FieldChange] = [:]) { self.fields = fields }

    /// The state an event alone describes.
    public init(_ event: ChangeEvent) { self.fields = event.fields }

    /// Whether `candidate` beats `current` for one field. Equal clocks come from one write and
    /// carry one value; should they ever differ, the larger serialized value wins so that the
    /// result still does not depend on order.
    @inlinable
    public static func wins(_ candidate: FieldChange, over current: FieldChange) -> Bool {
        if candidate.clock != current.clock { return candidate.clock > current.clock }
        if candidate.value == current.value { return false }
        return candidate.value.serialized > current.value.serialized
    }

    /// Merges `other` into this state; returns the names of the fields that changed.
    @discardableResult
    public mutating func merge(_ other: [String: FieldChange]) -> [String] {
        var changed: [String] = []
        for (name, incoming) in other {
            if let current = fields[name], !Self.wins(incoming, over: current) { continue }
            fields[name] = incoming
            changed.append(name)
        }
        return changed
    }

    /// This state merged with `other`.
    public func merging(_ other: RowState) -> RowState {
        var copy = self
        copy.merge(other.fields)
        return copy
    }

    /// Whether the row counts as deleted under `rule`.
    public func isDeleted(_ rule: TombstoneRule) -> Bool {
        guard let tombstone = fields[ChangeEvent.deletedField], tombstone.value == .bool(true) else { return false }
        switch rule {
        case .wins:
            return true
        case .revive:
            // A write to any other field with a later clock brings the row back.
            return !fields.contains { $0.key != ChangeEvent.deletedField && $0.value.clock > tombstone.clock }
        }
    }

    /// The highest clock in the state, which becomes the row's `sync_version`.
    public var version: Int64 { fields.values.map(\.clock.counter).max() ?? 0 }
}
