/// The events of an exchange message left in their encoded form: a ``ChangeBatch`` whose first
/// scan decodes and checks every event, and whose events are decoded again, one at a time, at
/// the byte offset the scan handed out. A 100,000-event batch then costs its encoded bytes in
/// memory rather than its decoded events.
public struct WireEventBatch: ChangeBatch {
    private let bytes: [UInt8]
    private let strings: [String]
    private let limits: WireLimits
    private let eventsOffset: Int

    /// Reads a request's header and leaves its events encoded; the request returned has none.
    public static func request(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> (ExchangeRequest, WireEventBatch) {
        var reader = WireReader(bytes)
        let strings = try StringTable.read(&reader, limits: limits)
        let request = try WireCodec.decodeRequestHeader(&reader, limits: limits)
        return (request, WireEventBatch(bytes: bytes, strings: strings, limits: limits, eventsOffset: reader.offset))
    }

    /// Decodes and checks every event, in order, and that nothing follows the last one.
    public func scan(_ body: (_ token: Int, _ event: ChangeEvent) throws -> Void) throws {
        var reader = WireReader(bytes, offset: eventsOffset)
        try WireCodec.decodeEvents(&reader, strings: strings, limits: limits) { (offset: Int, event: ChangeEvent) throws(WireError) in
            do { try body(offset, event) } catch let error as WireError { throw error } catch { throw WireError(.internalError, "\(error)") }
        }
        guard reader.isAtEnd else { throw WireError(.malformed, "\(reader.remaining) unexpected bytes after the events") }
    }

    /// The event at byte offset `token`. Its `originPosition` is not restored (positions are sent
    /// as differences from the previous event); applying does not use it.
    public func event(at token: Int) throws -> ChangeEvent {
        guard token >= eventsOffset, token < bytes.count else { throw WireError(.malformed, "no event at byte \(token)") }
        var reader = WireReader(bytes, offset: token)
        var nodes = WireCodec.NodeNames(strings: strings)
        var event = try WireCodec.decodeEvent(&reader, nodes: &nodes, limits: limits, previousPosition: 0)
        event.originPosition = 0
        return event
    }
}
