import Foundation

/// Why a wire message was refused. `code` is the protocol's error code (docs/PROTOCOL.md).
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let malformed = Code(rawValue: 1)
        public static let truncated = Code(rawValue: 2)
        public static let tooLarge = Code(rawValue: 3)
        public static let unsupportedVersion = Code(rawValue: 4)
        public static let unknownVessel = Code(rawValue: 5)
        public static let cursorFromTheFuture = Code(rawValue: 6)
        public static let batchTooLarge = Code(rawValue: 7)
        public static let busy = Code(rawValue: 8)
        public static let mustRebootstrap = Code(rawValue: 9)
        public static let internalError = Code(rawValue: 10)
        public static let positionsWentBack = Code(rawValue: 11)
        /// No valid identity proof or token (unknown, revoked, bad signature: one answer for all).
        public static let unauthenticated = Code(rawValue: 12)
        /// The access token has expired: authenticate again (challenge, signature, new token).
        public static let tokenExpired = Code(rawValue: 13)
        /// A sealed exchange whose exchange id was already seen: a replay.
        public static let replayed = Code(rawValue: 14)
        /// The authenticated vessel asked for something that is not its own.
        public static let forbidden = Code(rawValue: 15)
        /// A sealed message that does not open: tampered, truncated, or sealed to another key.
        public static let sealBroken = Code(rawValue: 16)

        public var description: String {
            switch self {
            case .malformed: return "malformed"
            case .truncated: return "truncated"
            case .tooLarge: return "too_large"
            case .unsupportedVersion: return "unsupported_version"
            case .unknownVessel: return "unknown_vessel"
            case .cursorFromTheFuture: return "cursor_from_the_future"
            case .batchTooLarge: return "batch_too_large"
            case .busy: return "busy"
            case .mustRebootstrap: return "must_rebootstrap"
            case .internalError: return "internal_error"
            case .positionsWentBack: return "positions_went_back"
            case .unauthenticated: return "unauthenticated"
            case .tokenExpired: return "token_expired"
            case .replayed: return "replayed"
            case .forbidden: return "forbidden"
            case .sealBroken: return "seal_broken"
            default: return "code_\(rawValue)"
            }
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// Appends the protocol's primitive types to a byte array.
public struct WireWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    public mutating func byte(_ b: UInt8) { bytes.append(b) }

    /// Unsigned LEB128.
    public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Signed values, zigzag-encoded then LEB128.
    public mutating func signed(_ value: Int64) { varint(UInt64(bitPattern: (value << 1) ^ (value >> 63))) }

    public mutating func uint32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((value >> UInt32(shift)) & 0xFF)) }
    }

    /// A length-prefixed UTF-8 string.
    public mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        varint(UInt64(utf8.count))
        bytes += utf8
    }

    public mutating func uuid(_ id: UUID) {
        withUnsafeBytes(of: id.uuid) { bytes += $0 }
    }

    public mutating func raw(_ data: [UInt8]) { bytes += data }
}

/// Reads the protocol's primitive types, checking every length against what is left and
/// against explicit limits before allocating anything.
public struct WireReader {
    private let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset == bytes.count }

    public mutating func byte() throws(WireError) -> UInt8 {
        guard offset < bytes.count else { throw WireError(.truncated, "message ends at byte \(offset), expected more") }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func varint() throws(WireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            if shift == 63 && b > 1 { throw WireError(.malformed, "varint at byte \(offset - 1) overflows 64 bits") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw WireError(.malformed, "varint at byte \(offset - 1) is too long") }
        }
    }

    public mutating func signed() throws(WireError) -> Int64 {
        let v = try varint()
        return Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1)
    }

    /// A count, refused when above `limit` or when even one byte per item would not fit.
    public mutating func count(limit: Int, what: String) throws(WireError) -> Int {
        let n = try varint()
        guard n <= UInt64(limit) else { throw WireError(.tooLarge, "\(what) count \(n) exceeds the limit of \(limit)") }
        guard n <= UInt64(remaining) else { throw WireError(.truncated, "\(what) count \(n) is more than the \(remaining) bytes left") }
        return Int(n)
    }

    public mutating func uint32() throws(WireError) -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<4 { v = (v << 8) | UInt32(try byte()) }
        return v
    }

    public mutating func string(limit: Int, what: String) throws(WireError) -> String {
        let n = try varint()
        guard n <= UInt64(limit) else { throw WireError(.tooLarge, "\(what) of \(n) bytes exceeds the limit of \(limit)") }
        guard n <= UInt64(remaining) else { throw WireError(.truncated, "\(what) of \(n) bytes is cut off after \(remaining)") }
        let slice = bytes[offset..<offset + Int(n)]
        offset += Int(n)
        guard let s = String(validating: slice, as: UTF8.self) else { throw WireError(.malformed, "\(what) is not valid UTF-8") }
        return s
    }

    /// Skips a length-prefixed string, checking its length but not its text.
    public mutating func skipBytes(limit: Int, what: String) throws(WireError) {
        let n = try varint()
        guard n <= UInt64(limit) else { throw WireError(.tooLarge, "\(what) of \(n) bytes exceeds the limit of \(limit)") }
        guard n <= UInt64(remaining) else { throw WireError(.truncated, "\(what) of \(n) bytes is cut off after \(remaining)") }
        offset += Int(n)
    }

    public mutating func uuid() throws(WireError) -> UUID {
        guard remaining >= 16 else { throw WireError(.truncated, "a 16-byte id is cut off after \(remaining) bytes") }
        var t: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &t) { target in
            for i in 0..<16 { target[i] = bytes[offset + i] }
        }
        offset += 16
        return UUID(uuid: t)
    }

    /// Exactly `count` raw bytes.
    public mutating func fixed(_ count: Int, what: String) throws(WireError) -> [UInt8] {
        guard remaining >= count else { throw WireError(.truncated, "\(what) of \(count) bytes is cut off after \(remaining)") }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    public mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }
}
