import Crypto
import FleetSyncCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A node's new public identity endorsed by its current (old) identity key: an ML-DSA-65
/// signature by the old key over both old public keys and the new identity's signed bytes. The
/// shore accepts a vessel's new keys only with an endorsement by the enrolled key; a vessel trusts
/// the shore's announced keys only with an endorsement by the shore key it trusts.
public enum KeyEndorsement {
    static let context = Data("fleetsync key endorsement".utf8)

    static func message(oldSigningKey: Data, oldSealingKey: Data, new: PublicIdentity) -> Data {
        Data("FleetSync key endorsement v1\nold signing ML-DSA-65 \(oldSigningKey.base64EncodedString())\nold sealing X-Wing \(oldSealingKey.base64EncodedString())\n".utf8)
            + new.signedBytes
    }

    public static func sign(new: PublicIdentity, by old: NodeKeys) throws -> Data {
        try old.identity.signature(for: message(oldSigningKey: old.identity.publicKey.rawRepresentation,
                                                oldSealingKey: old.sealing.publicKey.rawRepresentation, new: new), context: context)
    }

    /// True when `signature` is the holder of `oldSigningKey`'s endorsement of `new`.
    public static func verify(_ signature: Data, new: PublicIdentity, oldSigningKey: Data, oldSealingKey: Data) -> Bool {
        guard let key = try? MLDSA65.PublicKey(rawRepresentation: oldSigningKey) else { return false }
        return key.isValidSignature(signature, for: message(oldSigningKey: oldSigningKey, oldSealingKey: oldSealingKey, new: new), context: context)
    }
}

/// The shore's next (or newly promoted) public identity with its endorsement by the key before
/// it, carried in token answers (docs/PROTOCOL.md, *Key rotation*).
public struct ShoreAnnouncement: Sendable, Equatable {
    public var identity: PublicIdentity
    public var endorsement: Data
    public static let maximumBytes = 65_536

    public init(identity: PublicIdentity, endorsement: Data) {
        self.identity = identity
        self.endorsement = endorsement
    }

    public var encoded: [UInt8] {
        var w = WireWriter(capacity: 12_000)
        w.string(identity.text)
        w.varint(UInt64(endorsement.count))
        w.raw(Array(endorsement))
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws -> ShoreAnnouncement {
        var r = WireReader(bytes)
        let text = try r.string(limit: maximumBytes, what: "announced identity")
        let endorsement = try r.fixed(try r.count(limit: 8_192, what: "endorsement byte"), what: "endorsement")
        guard r.isAtEnd else { throw WireError(.malformed, "\(r.remaining) unexpected bytes after the shore's key announcement") }
        return ShoreAnnouncement(identity: try PublicIdentity.parse(text, source: "the shore's announced identity"), endorsement: Data(endorsement))
    }

    /// What a vessel does with an announcement, given the shore identity it trusts now.
    public enum Verdict: Equatable, Sendable {
        /// The announced identity is the one already trusted.
        case known
        /// Endorsed by the trusted key: trust it from now on.
        case accept
        /// Not endorsed by the trusted key (forged, or endorsed by a key this vessel never trusted).
        case refuse(String)
    }

    public func verdict(trusting trusted: PublicIdentity) -> Verdict {
        if identity.signingKey == trusted.signingKey && identity.sealingKey == trusted.sealingKey { return .known }
        guard identity.role == "shore", identity.node == trusted.node else {
            return .refuse("it announces \(identity.role) \(identity.node), not shore \(trusted.node)")
        }
        guard KeyEndorsement.verify(endorsement, new: identity, oldSigningKey: trusted.signingKey, oldSealingKey: trusted.sealingKey) else {
            return .refuse("its endorsement is not signed by the trusted shore key \(trusted.fingerprint)")
        }
        return .accept
    }
}

/// The crash-safe key rotation as a pure state machine: from what is on disk (and, for a vessel,
/// what this run has learnt from the shore) to the one next step. Every step is idempotent, so a
/// run killed after any step and started again takes up where the files say it stopped
/// (docs/SECURITY.md, *Key rotation*).
public enum KeyRotationStep: String, CaseIterable, Sendable {
    /// New keys written as `next/` key files, the endorsement last (it marks them complete).
    case writePending = "pending-written"
    /// (vessel) The endorsed new identity sent sealed; the shore answered that it keeps it as next.
    case sendEndorsement = "endorsement-sent"
    /// (vessel) The token obtained with the old key dropped.
    case forgetToken = "token-forgotten"
    /// `next/promote` written: from here the promotion only goes forward.
    case markPromotion = "promotion-marked"
    /// (shore) The current sealing key, identity and the endorsement kept in `previous/`.
    case keepPrevious = "previous-kept"
    case promoteIdentityKey = "identity-key-promoted"
    case promoteSealingKey = "sealing-key-promoted"
    case promotePublicIdentity = "public-identity-promoted"
    /// (vessel) A token obtained with the new key: the shore has dropped the old one.
    case confirmNewKey = "new-key-confirmed"
    /// `next/` removed: the rotation is over.
    case finish = "finished"
}

public struct KeyRotationMachine: Sendable {
    public enum Role: Sendable { case vessel, shore }

    /// What the driver observes before each step.
    public struct Observed: Sendable, Equatable {
        public var nextComplete = false
        public var promotionMarked = false
        public var previousKept = false
        /// Key files still in `next/` (`identity.key`, `sealing.key`, `identity.pub`).
        public var filesInNext: Set<String> = []
        /// (vessel, this run) the shore answered that it keeps the new keys as next.
        public var shoreConfirmed = false
        public var tokenForgotten = false
        public var newKeyConfirmed = false
        public init() {}
    }

    public var role: Role
    public init(role: Role) { self.role = role }

    /// The next step, or nil when the rotation is over. A shore's run promotes only when asked
    /// (`promote`); a vessel's always goes through.
    public func next(_ o: Observed, promote: Bool = true) -> KeyRotationStep? {
        if o.promotionMarked {
            if role == .shore, !o.previousKept { return .keepPrevious }
            if o.filesInNext.contains(NodeKeys.identityFile) { return .promoteIdentityKey }
            if o.filesInNext.contains(NodeKeys.sealingFile) { return .promoteSealingKey }
            if o.filesInNext.contains(NodeKeys.publicFile) { return .promotePublicIdentity }
            if role == .vessel, !o.newKeyConfirmed { return .confirmNewKey }
            return .finish
        }
        if !o.nextComplete { return .writePending }
        switch role {
        case .vessel:
            if !o.shoreConfirmed { return .sendEndorsement }
            if !o.tokenForgotten { return .forgetToken }
            return .markPromotion
        case .shore:
            return promote ? .markPromotion : nil
        }
    }
}

/// The message a vessel sends the shore (`POST /v1/keys`, sealed, after its token) to rotate its
/// keys, and the shore's confirmation.
public enum KeyRotationMessage {
    public static let requestLabel = "FleetSync key rotation v1"
    public static let confirmedLabel = "FleetSync key rotation confirmed v1"

    public static func request(identity: PublicIdentity, endorsement: Data) -> [UInt8] {
        var w = WireWriter(capacity: 12_000)
        w.string(requestLabel)
        w.string(identity.text)
        w.varint(UInt64(endorsement.count))
        w.raw(Array(endorsement))
        return w.bytes
    }

    public static func confirmed(_ identity: PublicIdentity) -> [UInt8] {
        var w = WireWriter()
        w.string(confirmedLabel)
        w.string(identity.fingerprint)
        return w.bytes
    }

    /// The fingerprint the shore confirmed, or nil when the answer is not a confirmation.
    public static func confirmation(_ answer: [UInt8]) -> String? {
        var r = WireReader(answer)
        guard (try? r.string(limit: 64, what: "label")) == confirmedLabel, let fingerprint = try? r.string(limit: 64, what: "fingerprint"), r.isAtEnd else { return nil }
        return fingerprint
    }
}

/// The test hook of the rotation drivers: with `FLEETSYNC_CRASH_AT=<step>` in the environment,
/// the driver kills its own process with SIGKILL right after that step (``KeyRotationStep``'s raw
/// values), so that a test can check every crash point. Read by nothing else.
public enum KeyRotationCrashHook {
    public static let variable = "FLEETSYNC_CRASH_AT"

    public static func after(_ step: KeyRotationStep) {
        if ProcessInfo.processInfo.environment[variable] == step.rawValue { kill(getpid(), SIGKILL) }
    }
}
