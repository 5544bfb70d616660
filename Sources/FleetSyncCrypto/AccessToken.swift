import Crypto
import FleetSyncCore
import Foundation

/// The short-lived access token the shore issues after a vessel proved its identity: the
/// vessel's id and the second it was issued, authenticated by HMAC-SHA256 under a shore secret
/// kept in PostgreSQL (every server replica verifies it; no state per token). 48 bytes for a
/// 6-byte vessel id; it travels inside the sealed request, never in clear (docs/SECURITY.md).
///
/// ```
/// version u8 (1) | issued at u64 big-endian (Unix seconds, shore clock) | vessel id length u8 | vessel id | HMAC-SHA256 (32)
/// ```
public struct AccessToken: Sendable, Equatable {
    public var vessel: String
    public var issuedAt: Int64

    public static let version: UInt8 = 1
    /// How long a token is valid, in seconds.
    public static let lifetimeSeconds: Int64 = 900
    /// Clock skew between shore replicas tolerated for a token issued "in the future".
    static let skewSeconds: Int64 = 60
    static let label = Array("FleetSync access token v1".utf8)
    public static let maximumBytes = 1 + 8 + 1 + 63 + 32

    public init(vessel: String, issuedAt: Int64) {
        self.vessel = vessel
        self.issuedAt = issuedAt
    }

    var content: [UInt8] {
        var bytes: [UInt8] = [Self.version]
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: UInt64(bitPattern: issuedAt) >> UInt64(shift))) }
        let id = Array(vessel.utf8)
        bytes.append(UInt8(id.count))
        return bytes + id
    }

    public func encoded(secret: [UInt8]) -> [UInt8] {
        let content = self.content
        return content + Array(HMAC<SHA256>.authenticationCode(for: Self.label + content, using: SymmetricKey(data: secret)))
    }

    /// Verifies a token's MAC and age at `now` (Unix seconds). A token of another form, or one
    /// whose MAC does not verify, is `unauthenticated`; an authentic but old one `tokenExpired`.
    public static func verify(_ bytes: [UInt8], secret: [UInt8], now: Int64) throws(WireError) -> AccessToken {
        guard bytes.count >= 1 + 8 + 1 + 1 + 32, bytes.count <= maximumBytes, bytes[0] == version, Int(bytes[9]) == bytes.count - 10 - 32 else {
            throw WireError(.unauthenticated, "the access token is not one this shore issues; authenticate again")
        }
        let content = Array(bytes[..<(bytes.count - 32)])
        let tag = Array(bytes[(bytes.count - 32)...])
        guard HMAC<SHA256>.isValidAuthenticationCode(tag, authenticating: label + content, using: SymmetricKey(data: secret)) else {
            throw WireError(.unauthenticated, "the access token does not verify (forged, altered, or issued by another shore); authenticate again")
        }
        var issued: UInt64 = 0
        for i in 1...8 { issued = issued << 8 | UInt64(bytes[i]) }
        guard let vessel = String(validating: bytes[10..<(bytes.count - 32)], as: UTF8.self) else {
            throw WireError(.unauthenticated, "the access token is not one this shore issues; authenticate again")
        }
        let token = AccessToken(vessel: vessel, issuedAt: Int64(bitPattern: issued))
        guard token.issuedAt <= now + skewSeconds else {
            throw WireError(.unauthenticated, "the access token was issued in the future (shore replicas' clocks differ?); authenticate again")
        }
        guard now < token.issuedAt + lifetimeSeconds else {
            throw WireError(.tokenExpired, "the access token of vessel \(vessel) expired \(now - token.issuedAt - lifetimeSeconds) s ago (tokens live \(lifetimeSeconds) s); authenticate again")
        }
        return token
    }
}

/// The vessel's proof of identity for a token: an ML-DSA-65 signature over the shore's single-use
/// challenge, bound to both node ids.
public enum ChallengeProof {
    static let context = Data("fleetsync token request".utf8)
    public static let nonceBytes = 32

    public static func message(shore: String, vessel: String, nonce: [UInt8]) -> Data {
        Data("FleetSync token request v2\nshore \(shore)\nvessel \(vessel)\n".utf8) + nonce
    }

    public static func sign(shore: String, vessel: String, nonce: [UInt8], with key: MLDSA65.PrivateKey) throws -> [UInt8] {
        Array(try key.signature(for: message(shore: shore, vessel: vessel, nonce: nonce), context: context))
    }

    public static func verify(_ signature: [UInt8], shore: String, vessel: String, nonce: [UInt8], signingKey: Data) -> Bool {
        guard let key = try? MLDSA65.PublicKey(rawRepresentation: signingKey) else { return false }
        return key.isValidSignature(signature, for: message(shore: shore, vessel: vessel, nonce: nonce), context: context)
    }
}
