import FleetSyncCore

/// Turns exchange messages into framed, compressed bytes and back, refusing anything malformed,
/// truncated, oversized or of another version before it reaches the database.
public enum MessageFraming {
    /// Bodies smaller than this travel uncompressed.
    static let compressionThreshold = 64
    /// Bodies of at least this size (catch-up pages, large batches) are compressed at zlib level
    /// 1 rather than 6: on a 9.6 MB bulk page of 50,000 rows, 101 ms instead of 170 ms of the
    /// shore's time for 2 % more bytes (most of such a page is row ids, which do not compress).
    static let fastCompressionBytes = 1 << 20

    static func frame(_ kind: WireEnvelope.Kind, body: [UInt8]) -> [UInt8] {
        if body.count >= compressionThreshold {
            let packed = Compression.deflate(body, level: body.count >= fastCompressionBytes ? 1 : 6)
            if packed.count < body.count {
                return WireEnvelope(kind: kind, compressed: true, rawLength: body.count, body: packed).encoded()
            }
        }
        return WireEnvelope(kind: kind, compressed: false, rawLength: body.count, body: body).encoded()
    }

    public static func encode(_ request: ExchangeRequest) -> [UInt8] { frame(.request, body: WireCodec.encode(request)) }
    public static func encode(_ response: ExchangeResponse) -> [UInt8] { frame(.response, body: WireCodec.encode(response)) }
    public static func encode(_ error: WireError) -> [UInt8] { frame(.error, body: WireEnvelope.errorBody(error)) }

    static func open(_ bytes: [UInt8], limits: WireLimits) throws(WireError) -> (WireEnvelope.Kind, [UInt8]) {
        let envelope = try WireEnvelope.decode(bytes, limits: limits)
        guard envelope.compressed else {
            guard envelope.rawLength == envelope.body.count else { throw WireError(.malformed, "raw length \(envelope.rawLength) differs from body length \(envelope.body.count)") }
            return (envelope.kind, envelope.body)
        }
        guard let body = Compression.inflate(envelope.body, expectedLength: envelope.rawLength) else {
            throw WireError(.malformed, "compressed body does not inflate to the \(envelope.rawLength) bytes its header announces")
        }
        return (envelope.kind, body)
    }

    public static func decodeRequest(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> ExchangeRequest {
        let (kind, body) = try open(bytes, limits: limits)
        guard kind == .request else { throw WireError(.malformed, "expected a request, got a \(kind) message") }
        return try WireCodec.decodeRequest(body, limits: limits)
    }

    /// A response whose events stay encoded until applied (``WireEventBatch``, checked whole
    /// here): a large batch costs its encoded bytes in memory, not its decoded events. The
    /// shore's error comes as a thrown ``WireError``.
    public static func decodeResponseBatch(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> (ExchangeResponse, WireEventBatch) {
        let (kind, body) = try open(bytes, limits: limits)
        switch kind {
        case .response: return try WireEventBatch.response(body, limits: limits)
        case .error: throw try WireEnvelope.decodeError(body)
        default: throw WireError(.malformed, "expected a response, got a \(kind) message")
        }
    }

    /// A response, or the shore's error as a thrown ``WireError``.
    public static func decodeResponse(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> ExchangeResponse {
        let (kind, body) = try open(bytes, limits: limits)
        switch kind {
        case .response: return try WireCodec.decodeResponse(body, limits: limits)
        case .error: throw try WireEnvelope.decodeError(body)
        default: throw WireError(.malformed, "expected a response, got a \(kind) message")
        }
    }

    /// A frame whose body travels as it is (sealed bodies, authentication messages: nothing to
    /// compress).
    public static func frameRaw(_ kind: WireEnvelope.Kind, body: [UInt8]) -> [UInt8] {
        WireEnvelope(kind: kind, compressed: false, rawLength: body.count, body: body).encoded()
    }

    /// An error frame in protocol `version`: the shore answers a message of an older version
    /// in that version, so that the old sender can read the refusal.
    public static func encode(_ error: WireError, version: UInt8) -> [UInt8] {
        let body = WireEnvelope.errorBody(error)
        return WireEnvelope(version: version, kind: .error, compressed: false, rawLength: body.count, body: body).encoded()
    }
}
