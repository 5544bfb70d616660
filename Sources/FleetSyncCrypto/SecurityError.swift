import Crypto

/// A key file, identity file or token that cannot be used: what, why, and the fix.
public struct SecurityError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Cryptographically secure random bytes (swift-crypto's generator).
public func secureRandomBytes(_ count: Int) -> [UInt8] {
    SymmetricKey(size: SymmetricKeySize(bitCount: count * 8)).withUnsafeBytes { Array($0) }
}

