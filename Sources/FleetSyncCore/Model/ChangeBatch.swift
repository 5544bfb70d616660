/// A batch of incoming events that can be read twice: once in order, whole, and then event by
/// event again by the token the first read handed out. The applier indexes a batch in the first
/// read and decodes it again a slice of rows at a time, so that a large batch is never held as
/// decoded events all at once.
public protocol ChangeBatch: Sendable {
    /// Calls `body` with every event in order and a token that ``event(at:)`` takes.
    func scan(_ body: (_ token: Int, _ event: ChangeEvent) throws -> Void) throws
    /// The event a scan handed out with `token`.
    func event(at token: Int) throws -> ChangeEvent
}

extension Array: ChangeBatch where Element == ChangeEvent {
    public func scan(_ body: (_ token: Int, _ event: ChangeEvent) throws -> Void) throws {
        for (index, event) in enumerated() { try body(index, event) }
    }

    public func event(at token: Int) throws -> ChangeEvent { self[token] }
}
