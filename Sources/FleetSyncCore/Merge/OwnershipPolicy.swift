/// Decides which fields of an incoming event a receiver accepts, by field ownership.
///
/// Only the owner's writes to a field are accepted: the shore's for `shore` fields, the routed
/// vessel's for `vessel` fields, anyone's for `shared` ones. The writer of a field is the node in
/// its clock, and a vessel may only send its own writes. Creation values (clock counter 0, written
/// when a non-owner inserts the row) are accepted from anyone: any write by the owner supersedes
/// them. The tombstone (`is_deleted`) is accepted only from the nodes the table's `delete_by`
/// allows, and from no one where `on_delete = "refuse"`. Rejected fields are reported, never applied.
public struct OwnershipPolicy: Sendable {
    public var table: TableConfiguration
    public var shoreID: String

    public init(table: TableConfiguration, shoreID: String) {
        self.table = table
        self.shoreID = shoreID
    }

    /// A field that was not accepted and why.
    public struct Rejection: Sendable, Hashable {
        public var field: String
        public var writer: String
        public var reason: String
    }

    /// Splits `event` into the fields to apply and the fields rejected.
    /// - Parameters:
    ///   - sender: the node the event came from directly.
    ///   - routedVessel: the vessel the row is routed to, if any.
    public func admit(_ event: ChangeEvent, sender: String, routedVessel: String?) -> (accepted: ChangeEvent, rejected: [Rejection]) {
        var accepted = event
        var rejected: [Rejection] = []
        let senderIsShore = sender == shoreID
        for (name, change) in event.fields where name != ChangeEvent.deletedField {
            let writer = change.clock.node
            var reason: String?
            if !senderIsShore && writer != sender {
                reason = "vessel \(sender) sent a write attributed to \(writer); a vessel may only send its own writes"
            } else if change.clock.counter == 0 {
                reason = nil
            } else {
                switch table.owner(of: name) {
                case .shared:
                    reason = nil
                case .shore:
                    if writer != shoreID { reason = "field is owned by the shore" }
                case .vessel:
                    if senderIsShore && writer == shoreID {
                        reason = "field is owned by the vessel the row is routed to, not the shore"
                    } else if !senderIsShore && routedVessel != nil && routedVessel != writer {
                        reason = "field is owned by vessel \(routedVessel!), the row's vessel"
                    }
                }
            }
            if let reason {
                accepted.fields[name] = nil
                rejected.append(Rejection(field: name, writer: writer, reason: reason))
            }
        }
        if let tombstone = event.fields[ChangeEvent.deletedField] {
            let writer = tombstone.clock.node
            let reason: String?
            if !senderIsShore && writer != sender {
                reason = "vessel \(sender) sent a write attributed to \(writer); a vessel may only send its own writes"
            } else {
                let otherWrites = accepted.fields.contains { $0.key != ChangeEvent.deletedField && $0.value.clock.node == writer }
                reason = deletionRefusal(tombstone, routedVessel: routedVessel, otherWrites: otherWrites)
            }
            if let reason {
                accepted.fields[ChangeEvent.deletedField] = nil
                rejected.append(Rejection(field: ChangeEvent.deletedField, writer: writer, reason: reason))
            }
        }
        return (accepted, rejected.sorted { $0.field < $1.field })
    }

    /// Why the tombstone field `change` is not accepted, or nil. A deletion (`true`) is accepted
    /// only from a writer the table's `delete_by` allows (the shore always, unless
    /// `on_delete = "refuse"`, where no one may), whatever its clock: a creation clock does not
    /// make a deletion harmless. Bringing a row back (`false`) is refused where tombstones win;
    /// where updates revive, it is accepted from a writer that may delete, or alongside the same
    /// writer's accepted write to another field (which revives the row anyway).
    /// - Parameter otherWrites: whether the event carries another accepted field of the same writer.
    public func deletionRefusal(_ change: FieldChange, routedVessel: String?, otherWrites: Bool) -> String? {
        let writer = change.clock.node
        guard let deleting = change.value.boolValue else { return "is_deleted must be true or false" }
        let allowed = writer == shoreID ? table.onDelete == .tombstone
            : table.allowsDelete(by: .vessel, routedToWriter: routedVessel.map { $0 == writer })
        if deleting {
            if table.onDelete == .refuse { return "rows of table \(table.name) are never deleted (on_delete = \"refuse\")" }
            return allowed ? nil : "\(writer) may not delete rows of table \(table.name): only \(table.deleters) may"
        }
        if table.tombstone == .wins { return "a deleted row of table \(table.name) cannot be brought back (tombstone = \"wins\")" }
        return allowed || otherWrites ? nil : "\(writer) may not bring back rows of table \(table.name): only \(table.deleters) may delete them"
    }
}
