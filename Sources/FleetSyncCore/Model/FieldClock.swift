/// A Lamport timestamp of one field write: the writer's counter, ties broken by node id.
///
/// No wall clock takes part: `counter` comes from the row's `sync_version` and the node's logical
/// counter, so clocks compare the same on every node whatever their time of day.
public struct FieldClock: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var counter: Int64
    public var node: String

    public init(counter: Int64, node: String) {
        self.counter = counter
        self.node = node
    }

    public static func < (lhs: FieldClock, rhs: FieldClock) -> Bool {
        lhs.counter != rhs.counter ? lhs.counter < rhs.counter : lhs.node < rhs.node
    }

    public var description: String { "\(counter)@\(node)" }

    /// The JSON form stored in `sync_clock`: `[counter, "node"]`.
    public var json: JSONValue { .array([.number(String(counter)), .string(node)]) }

    /// Reads the JSON form `[counter, "node"]`.
    public init?(json: JSONValue) {
        guard case .array(let items) = json, items.count == 2,
              let counter = items[0].int64Value, counter >= 0,
              let node = items[1].stringValue, Identifiers.isValidNodeID(node) else { return nil }
        self.init(counter: counter, node: node)
    }
}

extension FieldOwner {
    /// Whether a node of `role` may write a field of this owner locally.
    public func isWritable(by role: NodeRole) -> Bool {
        switch (self, role) {
        case (.shared, _), (.shore, .shore), (.vessel, .vessel): return true
        default: return false
        }
    }
}
