/// The events of an exchange message left in their encoded form: a ``ChangeBatch`` checked whole
/// when the message is read, whose scan reads each event's row without building its fields, and
/// whose events are decoded, one at a time, at the byte offset the scan handed out. A
/// 100,000-event batch then costs its encoded bytes in memory rather than its decoded events.
public struct WireEventBatch: ChangeBatch {
    private let bytes: [UInt8]
    private let strings: [String]
    private let limits: WireLimits
    private let eventsOffset: Int
    /// How many events the message says it holds (checked against the limits).
    public let count: Int

    private init(bytes: [UInt8], strings: [String], limits: WireLimits, eventsOffset: Int) throws(WireError) {
        // Every event is checked here by the full decoder (each is built and dropped), so that a
        // message is refused whole before anything of it reaches the database; later reads of
        // the same bytes cannot fail.
        var reader = WireReader(bytes, offset: eventsOffset)
        self.count = try WireCodec.decodeEvents(&reader, strings: strings, limits: limits) { _ in }
        guard reader.isAtEnd else { throw WireError(.malformed, "\(reader.remaining) unexpected bytes after the events") }
        self.bytes = bytes
        self.strings = strings
        self.limits = limits
        self.eventsOffset = eventsOffset
    }

    /// Reads a request's header and leaves its events encoded; the request returned has none.
    public static func request(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> (ExchangeRequest, WireEventBatch) {
        var reader = WireReader(bytes)
        let strings = try StringTable.read(&reader, limits: limits)
        let request = try WireCodec.decodeRequestHeader(&reader, limits: limits)
        return (request, try WireEventBatch(bytes: bytes, strings: strings, limits: limits, eventsOffset: reader.offset))
    }

    /// Reads a response's header and leaves its events encoded; the response returned has none.
    public static func response(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> (ExchangeResponse, WireEventBatch) {
        var reader = WireReader(bytes)
        let strings = try StringTable.read(&reader, limits: limits)
        let response = try WireCodec.decodeResponseHeader(&reader)
        return (response, try WireEventBatch(bytes: bytes, strings: strings, limits: limits, eventsOffset: reader.offset))
    }

    /// Reads every event's row, in order, skipping its fields (the message was checked whole
    /// when it was read).
    public func scan(_ body: (_ token: Int, _ row: EventRow) throws -> Void) throws {
        var reader = WireReader(bytes, offset: eventsOffset)
        _ = try reader.varint()
        var nodes = WireCodec.NodeNames(strings: strings)
        for _ in 0..<count {
            let offset = reader.offset
            let row = try WireCodec.skimEvent(&reader, nodes: &nodes, limits: limits)
            try body(offset, row)
        }
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
