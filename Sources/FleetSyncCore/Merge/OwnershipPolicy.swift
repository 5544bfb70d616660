/// Decides which fields of an incoming event a receiver accepts, by field ownership.
///
/// Only the owner's writes to a field are accepted: the shore's for `shore` fields, the routed
/// vessel's for `vessel` fields, anyone's for `shared` ones. The writer of a field is the node in
/// its clock, and a vessel may only send its own writes. Creation values (clock counter 0, written
/// when a non-owner inserts the row) are accepted from anyone: any write by the owner supersedes
/// them. Rejected fields are reported, never applied.
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
        for (name, change) in event.fields {
            let writer = change.clock.node
            var reason: String?
            if !senderIsShore && writer != sender {
                reason = "vessel \(sender) sent a write attributed to \(writer); a vessel may only send its own writes"
            } else if change.clock.counter == 0 || name == ChangeEvent.deletedField {
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
        return (accepted, rejected.sorted { $0.field < $1.field })
    }
}
