/// The frame around every message: magic, version, kind, flags and lengths, so that a receiver
/// can refuse a wrong version or an oversized body before reading it.
///
/// ```
/// "FSYN" | version u8 | kind u8 | flags u8 | reserved u8 | body length u32 | raw length u32 | body
/// ```
/// `flags` bit 0: the body is zlib-compressed; `raw length` is then its size after inflating.
public struct WireEnvelope: Sendable, Equatable {
    /// Kinds 1-3 carry a (compressed) exchange message; since version 2 they travel only inside
    /// a sealed message (4, 5). Kinds 6-9 obtain an access token (docs/PROTOCOL.md, Security).
    public enum Kind: UInt8, Sendable {
        case request = 1, response = 2, error = 3
        case sealedRequest = 4, sealedResponse = 5
        case challengeRequest = 6, challenge = 7, tokenRequest = 8, token = 9
    }

    public static let magic: [UInt8] = Array("FSYN".utf8)
    public static let headerSize = 16

    public var version: UInt8
    public var kind: Kind
    public var compressed: Bool
    public var rawLength: Int
    public var body: [UInt8]

    public init(version: UInt8 = WireCodec.version, kind: Kind, compressed: Bool, rawLength: Int, body: [UInt8]) {
        self.version = version
        self.kind = kind
        self.compressed = compressed
        self.rawLength = rawLength
        self.body = body
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: Self.headerSize + body.count)
        w.raw(Self.magic)
        w.byte(version)
        w.byte(kind.rawValue)
        w.byte(compressed ? 1 : 0)
        w.byte(0)
        w.uint32(UInt32(body.count))
        w.uint32(UInt32(rawLength))
        w.raw(body)
        return w.bytes
    }

    /// Parses a frame; refuses other versions and bodies over `limits.maximumBodyBytes`.
    public static func decode(_ bytes: [UInt8], limits: WireLimits = WireLimits()) throws(WireError) -> WireEnvelope {
        guard bytes.count >= headerSize else { throw WireError(.truncated, "message of \(bytes.count) bytes is shorter than the \(headerSize)-byte header") }
        guard Array(bytes[0..<4]) == magic else { throw WireError(.malformed, "not a FleetSync message (bad magic)") }
        var r = WireReader(bytes, offset: 4)
        let version = try r.byte()
        guard version == WireCodec.version else {
            throw WireError(.unsupportedVersion, Self.versionRefusal(received: version))
        }
        guard let kind = Kind(rawValue: try r.byte()) else { throw WireError(.malformed, "unknown message kind") }
        let flags = try r.byte()
        guard flags & ~1 == 0 else { throw WireError(.malformed, "unknown flags \(flags)") }
        _ = try r.byte()
        let length = Int(try r.uint32())
        let raw = Int(try r.uint32())
        guard length <= limits.maximumBodyBytes, raw <= limits.maximumBodyBytes else {
            throw WireError(.tooLarge, "body of \(max(length, raw)) bytes exceeds the limit of \(limits.maximumBodyBytes)")
        }
        guard r.remaining == length else {
            throw WireError(r.remaining < length ? .truncated : .malformed, "body is \(r.remaining) bytes, header says \(length)")
        }
        return WireEnvelope(version: version, kind: kind, compressed: flags & 1 == 1, rawLength: raw, body: r.rest())
    }

    /// The refusal of a message of another protocol version, naming both versions and the fix.
    public static func versionRefusal(received: UInt8) -> String {
        let upgrade = received < WireCodec.version ? "upgrade the sender (a fleet upgrades its shore first, then its vessels)" : "upgrade this node"
        return "the message speaks protocol version \(received), this node speaks version \(WireCodec.version) (FleetSync serves no older version: version 1 had no authentication); \(upgrade)"
    }

    /// The version byte of a message, if it has a FleetSync header.
    public static func version(of bytes: [UInt8]) -> UInt8? {
        guard bytes.count >= 5, Array(bytes[0..<4]) == magic else { return nil }
        return bytes[4]
    }

    /// An error message body: code, then text.
    public static func errorBody(_ error: WireError) -> [UInt8] {
        var w = WireWriter()
        w.byte(error.code.rawValue)
        w.string(error.message)
        return w.bytes
    }

    public static func decodeError(_ body: [UInt8]) throws(WireError) -> WireError {
        var r = WireReader(body)
        let code = try r.byte()
        return WireError(WireError.Code(rawValue: code), try r.string(limit: 4_096, what: "error message"))
    }
}
