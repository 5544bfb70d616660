import Foundation

/// The binary exchange format, version 2 (docs/PROTOCOL.md; version 2 seals every exchange). The body here is uncompressed;
/// ``WireEnvelope`` frames it and the transport compresses it.
public enum WireCodec {
    public static let version: UInt8 = 2

    // MARK: requests and responses

    public static func encode(_ request: ExchangeRequest) -> [UInt8] {
        var strings = StringTable()
        var body = WireWriter()
        body.string(request.vesselID)
        body.uuid(request.exchangeID)
        body.signed(request.cursor)
        body.signed(request.upTo)
        body.signed(request.clock)
        // Bit 1: a long poll; the seconds the shore may hold the answer follow.
        body.byte((request.holdIncoming ? 1 : 0) | (request.waitSeconds > 0 ? 2 : 0))
        if request.waitSeconds > 0 { body.varint(UInt64(min(request.waitSeconds, ExchangeRequest.maximumWaitSeconds))) }
        var status = request.status
        if let ask = request.readAhead {
            status[ReadAheadAsk.statusKey] = .object(["after": .number(String(ask.after)), "events": .number(String(ask.events)), "bytes": .number(String(ask.bytes))])
        }
        encodeValue(.object(status), into: &body)
        encodeEvents(request.events, strings: &strings, into: &body)
        return strings.prefixed(body.bytes)
    }

    public static func decodeRequest(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> ExchangeRequest {
        var events: [ChangeEvent] = []
        var request = try decodeRequestStreaming(bytes, limits: limits) { events.append($0) }
        request.events = events
        return request
    }

    /// Decodes a request's events one at a time into `body`, without holding them all: for
    /// applying very large batches in bounded memory. Returns the request with no events.
    public static func decodeRequestStreaming(_ bytes: [UInt8], limits: WireLimits = WireLimits(), _ body: (ChangeEvent) -> Void) throws(WireError) -> ExchangeRequest {
        var reader = WireReader(bytes)
        let strings = try StringTable.read(&reader, limits: limits)
        let request = try decodeRequestHeader(&reader, limits: limits)
        try decodeEvents(&reader, strings: strings, limits: limits, body)
        guard reader.isAtEnd else { throw WireError(.malformed, "\(reader.remaining) unexpected bytes after the request") }
        return request
    }

    /// A request's fields before its events; the request returned has no events.
    static func decodeRequestHeader(_ reader: inout WireReader, limits: WireLimits) throws(WireError) -> ExchangeRequest {
        let vessel = try reader.string(limit: 63, what: "vessel id")
        guard Identifiers.isValidNodeID(vessel) else { throw WireError(.malformed, "vessel id \"\(vessel.prefix(64))\" is not a valid node id") }
        let exchangeID = try reader.uuid()
        let cursor = try reader.signed()
        let upTo = try reader.signed()
        let clock = try reader.signed()
        guard cursor >= 0, upTo >= 0, clock >= 0 else { throw WireError(.malformed, "negative cursor, position or clock") }
        let flags = try reader.byte()
        guard flags <= 3 else { throw WireError(.malformed, "request flags are \(flags)") }
        var waitSeconds = 0
        if flags & 2 != 0 {
            let seconds = try reader.varint()
            guard seconds >= 1, seconds <= UInt64(ExchangeRequest.maximumWaitSeconds) else {
                throw WireError(.malformed, "a long poll of \(seconds) s (1 to \(ExchangeRequest.maximumWaitSeconds) s)")
            }
            waitSeconds = Int(seconds)
        }
        guard case .object(let status) = try decodeValue(&reader, depth: 0, limits: limits) else {
            throw WireError(.malformed, "status is not an object")
        }
        var fields = status
        let ask = try fields.removeValue(forKey: ReadAheadAsk.statusKey).map { value throws(WireError) in try readAheadAsk(value, cursor: cursor) }
        var request = ExchangeRequest(vesselID: vessel, exchangeID: exchangeID, cursor: cursor, events: [], upTo: upTo, clock: clock, status: fields)
        request.holdIncoming = flags & 1 != 0
        request.waitSeconds = waitSeconds
        request.readAhead = ask
        return request
    }

    /// A request's ``ReadAheadAsk``, checked: whole numbers in range, reading no earlier than
    /// the cursor (whether it is beyond the shore's last position, only the shore knows).
    static func readAheadAsk(_ value: JSONValue, cursor: Int64) throws(WireError) -> ReadAheadAsk {
        func number(_ name: String, _ range: ClosedRange<Int64>) throws(WireError) -> Int64 {
            guard case .object(let members) = value, members.count == 3 else {
                throw WireError(.malformed, "\(ReadAheadAsk.statusKey) must be an object of after, events and bytes")
            }
            guard case .number(let text)? = members[name], let n = Int64(text), range.contains(n) else {
                throw WireError(.malformed, "\(ReadAheadAsk.statusKey).\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return n
        }
        let after = try number("after", 0...Int64.max)
        guard after >= cursor else {
            throw WireError(.malformed, "\(ReadAheadAsk.statusKey).after \(after) is below the cursor \(cursor): a vessel reads ahead of what it applied, never behind")
        }
        return ReadAheadAsk(after: after, events: Int(try number("events", 1...Int64(WireLimits().maximumEvents))),
                            bytes: Int(try number("bytes", 1...Int64(WireLimits().maximumBodyBytes))))
    }

    public static func encode(_ response: ExchangeResponse) -> [UInt8] {
        var strings = StringTable()
        var body = WireWriter()
        body.string(response.shore)
        body.signed(response.acknowledged)
        body.signed(response.cursor)
        // Bit 1 of the more byte: a catch-up progress object follows the change limit.
        // Bit 2: read-ahead terms follow the catch-up progress (only to a vessel that asked:
        // vessels before them refuse the bit).
        // Bit 3: a bulk catch-up page follows the read-ahead terms (only to a vessel that announced it).
        body.byte((response.more ? 1 : 0) | (response.catchUp == nil ? 0 : 2) | (response.readAhead == nil ? 0 : 4) | (response.bulk == nil ? 0 : 8))
        body.signed(response.clockFloor)
        body.signed(response.maximumChangeBytes)
        if let catchUp = response.catchUp { encodeValue(.object(catchUp), into: &body) }
        if let terms = response.readAhead {
            body.signed(terms.after)
            body.varint(UInt64(terms.maximumEvents))
            body.varint(UInt64(terms.maximumBytes))
        }
        response.bulk?.encode(into: &body)
        encodeEvents(response.events, strings: &strings, into: &body)
        return strings.prefixed(body.bytes)
    }

    public static func decodeResponse(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> ExchangeResponse {
        var reader = WireReader(bytes)
        let strings = try StringTable.read(&reader, limits: limits)
        var response = try decodeResponseHeader(&reader)
        response.events = try decodeEvents(&reader, strings: strings, limits: limits)
        guard reader.isAtEnd else { throw WireError(.malformed, "\(reader.remaining) unexpected bytes after the response") }
        return response
    }

    /// A response's fields before its events; the response returned has no events.
    static func decodeResponseHeader(_ reader: inout WireReader) throws(WireError) -> ExchangeResponse {
        let shore = try reader.string(limit: 63, what: "shore id")
        guard Identifiers.isValidNodeID(shore) else { throw WireError(.malformed, "shore id \"\(shore.prefix(64))\" is not a valid node id") }
        let acknowledged = try reader.signed()
        let cursor = try reader.signed()
        guard acknowledged >= 0, cursor >= 0 else { throw WireError(.malformed, "negative acknowledgement or cursor") }
        let more = try reader.byte()
        guard more <= 15 else { throw WireError(.malformed, "more flag is \(more)") }
        let clockFloor = try reader.signed()
        let maximumChangeBytes = try reader.signed()
        guard clockFloor >= 0, maximumChangeBytes >= 0 else { throw WireError(.malformed, "negative clock floor or change size") }
        var catchUp: [String: JSONValue]?
        if more & 2 != 0 {
            guard case .object(let progress) = try decodeValue(&reader, depth: 0, limits: WireLimits()) else {
                throw WireError(.malformed, "catch-up progress is not an object")
            }
            catchUp = progress
        }
        var response = ExchangeResponse(shore: shore, acknowledged: acknowledged, events: [], cursor: cursor, more: more & 1 == 1,
                                        clockFloor: clockFloor, maximumChangeBytes: maximumChangeBytes, catchUp: catchUp)
        if more & 4 != 0 {
            let after = try reader.signed()
            let events = try reader.varint()
            let bytes = try reader.varint()
            guard after >= 0, (1...UInt64(WireLimits().maximumEvents)).contains(events), (1...UInt64(WireLimits().maximumBodyBytes)).contains(bytes) else {
                throw WireError(.malformed, "read-ahead terms out of range (after \(after), \(events) events, \(bytes) bytes)")
            }
            response.readAhead = ReadAheadTerms(after: after, maximumEvents: Int(events), maximumBytes: Int(bytes))
        }
        if more & 8 != 0 { response.bulk = try CatchUpBulkPage.decode(&reader, limits: WireLimits()) }
        return response
    }

    // MARK: events

    static func encodeEvents(_ events: [ChangeEvent], strings: inout StringTable, into w: inout WireWriter) {
        w.varint(UInt64(events.count))
        var previousPosition: Int64 = 0
        for event in events {
            w.varint(strings.index(event.table))
            w.uuid(event.rowID)
            w.varint(strings.index(event.origin))
            w.signed(event.originPosition - previousPosition)
            previousPosition = event.originPosition
            w.signed(event.baseVersion)
            w.byte(event.offboard ? 1 : 0)
            w.varint(UInt64(event.fields.count))
            for name in event.fields.keys.sorted() {
                let change = event.fields[name]!
                w.varint(strings.index(name))
                w.signed(change.clock.counter)
                w.varint(strings.index(change.clock.node))
                encodeValue(change.value, into: &w)
            }
        }
    }

    /// Decodes the event list into `body`, one event at a time; returns how many there were.
    @discardableResult
    static func decodeEvents(_ r: inout WireReader, strings: [String], limits: WireLimits, _ body: (ChangeEvent) -> Void) throws(WireError) -> Int {
        let raw = try r.varint()
        guard raw <= UInt64(limits.maximumEvents) else {
            throw WireError(.batchTooLarge, "batch of \(raw) events exceeds the limit of \(limits.maximumEvents); send smaller batches")
        }
        guard raw <= UInt64(r.remaining) else { throw WireError(.truncated, "event count \(raw) is more than the \(r.remaining) bytes left") }
        var previousPosition: Int64 = 0
        var nodes = NodeNames(strings: strings)
        for _ in 0..<Int(raw) {
            let event = try decodeEvent(&r, nodes: &nodes, limits: limits, previousPosition: previousPosition)
            previousPosition = event.originPosition
            body(event)
        }
        return Int(raw)
    }

    /// Node ids repeat in every event: each name of the table is checked once.
    struct NodeNames {
        let strings: [String]
        var validity: [UInt8]  // 0 unknown, 1 valid, 2 invalid

        init(strings: [String]) {
            self.strings = strings
            self.validity = [UInt8](repeating: 0, count: strings.count)
        }

        mutating func node(_ index: UInt64, what: String) throws(WireError) -> String {
            let name = try strings.lookup(index, what: what)
            let i = Int(index)
            if validity[i] == 0 { validity[i] = Identifiers.isValidNodeID(name) ? 1 : 2 }
            guard validity[i] == 1 else { throw WireError(.malformed, "\(what) \"\(name.prefix(64))\" is not a valid node id") }
            return name
        }
    }

    /// Reads one event's row and skips the rest, building no values (for messages already checked).
    static func skimEvent(_ r: inout WireReader, nodes: inout NodeNames, limits: WireLimits) throws(WireError) -> EventRow {
        let table = try nodes.strings.lookup(r.varint(), what: "table name")
        let rowID = try r.uuid()
        _ = try nodes.node(r.varint(), what: "origin")
        _ = try r.signed()
        _ = try r.signed()
        let flags = try r.byte()
        guard flags <= 1 else { throw WireError(.malformed, "unknown event flags \(flags)") }
        let fieldCount = try r.count(limit: limits.maximumFieldsPerEvent, what: "field")
        for _ in 0..<fieldCount {
            _ = try nodes.strings.lookup(r.varint(), what: "field name")
            guard try r.signed() >= 0 else { throw WireError(.malformed, "a field has a negative clock") }
            _ = try nodes.node(r.varint(), what: "clock node")
            try skipValue(&r, depth: 0, limits: limits)
        }
        return EventRow(table: table, rowID: rowID, offboard: flags == 1)
    }

    /// Skips one value, checking what ``decodeValue(_:depth:limits:)`` checks of its structure
    /// (tags, counts, lengths, the same depth and number limits), iteratively.
    static func skipValue(_ r: inout WireReader, depth: Int, limits: WireLimits) throws(WireError) {
        // Per open array or object: the items left, and whether they are object members (a key first).
        var open: [(left: Int, members: Bool)] = []
        while true {
            let raw = try r.byte()
            guard let tag = Tag(rawValue: raw) else { throw WireError(.malformed, "unknown value tag \(raw)") }
            switch tag {
            case .null, .false, .true: break
            case .number: try r.skipBytes(limit: JSONLimits.maximumNumberBytes, what: "number")
            case .string: try r.skipBytes(limit: limits.maximumStringBytes, what: "string value")
            case .array, .object:
                try checkDepth(depth + open.count + 1)
                let n = try r.count(limit: limits.maximumBodyBytes, what: tag == .array ? "array element" : "object member")
                open.append((n, tag == .object))
            }
            // Move to the next item, closing the containers that are done.
            while let top = open.last, top.left == 0 { open.removeLast() }
            guard !open.isEmpty else { return }
            open[open.count - 1].left -= 1
            if open[open.count - 1].members { try r.skipBytes(limit: limits.maximumStringBytes, what: "object key") }
        }
    }

    /// Refuses a container at `depth` (counted as ``JSONLimits/maximumDepth`` counts) past the limit.
    static func checkDepth(_ depth: Int) throws(WireError) {
        guard depth <= JSONLimits.maximumDepth else {
            throw WireError(.malformed, "value nested deeper than \(JSONLimits.maximumDepth) levels (the limit, JSONLimits.maximumDepth, is above what PostgreSQL accepts by default)")
        }
    }

    /// Decodes one event at the reader's offset; its position is `previousPosition` plus the delta sent.
    static func decodeEvent(_ r: inout WireReader, nodes: inout NodeNames, limits: WireLimits, previousPosition: Int64) throws(WireError) -> ChangeEvent {
        let strings = nodes.strings
        let table = try strings.lookup(r.varint(), what: "table name")
        let rowID = try r.uuid()
        let origin = try nodes.node(r.varint(), what: "origin")
        let (position, overflow) = previousPosition.addingReportingOverflow(try r.signed())
        guard !overflow else { throw WireError(.malformed, "event position overflows") }
        let base = try r.signed()
        let flags = try r.byte()
        guard flags <= 1 else { throw WireError(.malformed, "unknown event flags \(flags)") }
        let fieldCount = try r.count(limit: limits.maximumFieldsPerEvent, what: "field")
        var fields: [String: FieldChange] = [:]
        fields.reserveCapacity(fieldCount)
        for _ in 0..<fieldCount {
            let name = try strings.lookup(r.varint(), what: "field name")
            let counter = try r.signed()
            let clockNode = try nodes.node(r.varint(), what: "clock node")
            guard counter >= 0 else { throw WireError(.malformed, "field \(name.prefix(64)) has a negative clock") }
            let value = try decodeValue(&r, depth: 0, limits: limits)
            guard fields[name] == nil else { throw WireError(.malformed, "field \(name.prefix(64)) appears twice in one event") }
            fields[name] = FieldChange(value: value, clock: FieldClock(counter: counter, node: clockNode))
        }
        return ChangeEvent(table: table, rowID: rowID, fields: fields, origin: origin, originPosition: position, baseVersion: base, offboard: flags == 1)
    }

    static func decodeEvents(_ r: inout WireReader, strings: [String], limits: WireLimits) throws(WireError) -> [ChangeEvent] {
        var events: [ChangeEvent] = []
        try decodeEvents(&r, strings: strings, limits: limits) { events.append($0) }
        return events
    }

    // MARK: values: tagged binary JSON

    enum Tag: UInt8 { case null = 0, `false`, `true`, number, string, array, object }

    /// Writes one value, iteratively (any depth, no recursion).
    static func encodeValue(_ value: JSONValue, into w: inout WireWriter) {
        enum Pending {
            case value(JSONValue)
            case key(String)
        }
        var pending: [Pending] = [.value(value)]
        while let next = pending.popLast() {
            guard case .value(let value) = next else {
                if case .key(let key) = next { w.string(key) }
                continue
            }
            switch value {
            case .null: w.byte(Tag.null.rawValue)
            case .bool(let b): w.byte(b ? Tag.true.rawValue : Tag.false.rawValue)
            case .number(let n): w.byte(Tag.number.rawValue); w.string(n)
            case .string(let s): w.byte(Tag.string.rawValue); w.string(s)
            case .array(let items):
                w.byte(Tag.array.rawValue)
                w.varint(UInt64(items.count))
                for item in items.reversed() { pending.append(.value(item)) }
            case .object(let members):
                w.byte(Tag.object.rawValue)
                w.varint(UInt64(members.count))
                for key in members.keys.sorted().reversed() {
                    pending.append(.value(members[key]!))
                    pending.append(.key(key))
                }
            }
        }
    }

    /// Reads one value, checking every length and the depth and number limits (``JSONLimits``),
    /// iteratively: a value nested to the limit costs heap, not stack. `depth` is the depth of
    /// the value's place (0 for a field value).
    static func decodeValue(_ r: inout WireReader, depth: Int, limits: WireLimits) throws(WireError) -> JSONValue {
        // Per open container, innermost last: whether it is an object and how many items are
        // left; the items themselves are kept in stacks of their own and appended to in place
        // (never copied), so that decoding stays linear in the message.
        var open: [(object: Bool, left: Int)] = []
        var arrays: [[JSONValue]] = []
        var objects: [[String: JSONValue]] = []
        var keys: [String] = []
        while true {
            let raw = try r.byte()
            guard let tag = Tag(rawValue: raw) else { throw WireError(.malformed, "unknown value tag \(raw)") }
            var value: JSONValue
            switch tag {
            case .null: value = .null
            case .false: value = .bool(false)
            case .true: value = .bool(true)
            case .number:
                let text = try r.string(limit: JSONLimits.maximumNumberBytes, what: "number")
                // Whitespace around a number would parse, but the number's text travels on as it is
                // (into COPY text, where a tab or a newline splits the row): `isNumber` admits none.
                guard JSONParser.isNumber(text) else { throw WireError(.malformed, "\"\(text.prefix(32))\" is not a JSON number") }
                value = .number(text)
            case .string: value = .string(try r.string(limit: limits.maximumStringBytes, what: "string value"))
            case .array:
                try checkDepth(depth + open.count + 1)
                let n = try r.count(limit: limits.maximumBodyBytes, what: "array element")
                if n > 0 {
                    var items: [JSONValue] = []
                    items.reserveCapacity(n)
                    arrays.append(items)
                    open.append((false, n))
                    continue
                }
                value = .array([])
            case .object:
                try checkDepth(depth + open.count + 1)
                let n = try r.count(limit: limits.maximumBodyBytes, what: "object member")
                if n > 0 {
                    keys.append(try r.string(limit: limits.maximumStringBytes, what: "object key"))
                    objects.append([:])
                    open.append((true, n))
                    continue
                }
                value = .object([:])
            }
            // Hand the value to the innermost open container; close those that are complete.
            while let top = open.last {
                open[open.count - 1].left -= 1
                if top.object {
                    let key = keys.removeLast()
                    guard objects[objects.count - 1][key] == nil else { throw WireError(.malformed, "object key appears twice") }
                    objects[objects.count - 1][key] = value
                    if top.left > 1 {
                        keys.append(try r.string(limit: limits.maximumStringBytes, what: "object key"))
                        break
                    }
                    value = .object(objects.removeLast())
                } else {
                    arrays[arrays.count - 1].append(value)
                    if top.left > 1 { break }
                    value = .array(arrays.removeLast())
                }
                open.removeLast()
            }
            if open.isEmpty { return value }
        }
    }
}

/// Names that repeat in a message (tables, fields, nodes) are sent once and referred to by index.
struct StringTable {
    private var indices: [String: UInt64] = [:]
    private var strings: [String] = []

    mutating func index(_ s: String) -> UInt64 {
        if let i = indices[s] { return i }
        let i = UInt64(strings.count)
        indices[s] = i
        strings.append(s)
        return i
    }

    /// The table followed by `body`.
    func prefixed(_ body: [UInt8]) -> [UInt8] {
        var w = WireWriter(capacity: body.count + strings.count * 12 + 8)
        w.varint(UInt64(strings.count))
        for s in strings { w.string(s) }
        w.raw(body)
        return w.bytes
    }

    static func read(_ r: inout WireReader, limits: WireLimits) throws(WireError) -> [String] {
        let n = try r.count(limit: limits.maximumStrings, what: "name")
        var table: [String] = []
        table.reserveCapacity(n)
        for _ in 0..<n { table.append(try r.string(limit: limits.maximumNameBytes, what: "name")) }
        return table
    }
}

extension Array where Element == String {
    func lookup(_ index: UInt64, what: String) throws(WireError) -> String {
        guard index < UInt64(count) else { throw WireError(.malformed, "\(what) refers to name \(index) of \(count)") }
        return self[Int(index)]
    }
}
