import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import PostgresNIO

/// Who a request comes from, decided by the shore alone: single-use challenges, ML-DSA proofs,
/// access tokens (HMAC-SHA256 under a secret in PostgreSQL, so that every replica checks them),
/// sealed requests opened with the shore's X-Wing key, replay refusal by exchange id. Every piece
/// of state is in PostgreSQL: any server replica answers any step.
public struct ShoreAuthority: Sendable {
    public var shoreID: String
    public var keys: NodeKeys
    /// The token secret as last read (shared by the copies of this value: one per process).
    public let secrets = TokenSecret()

    /// How long a challenge may be answered.
    public static let challengeSeconds = 60
    /// How long seen exchange ids are kept: well past a token's life, so that a replayed request
    /// either names a remembered id or carries an expired token.
    public static let seenExchangeSeconds = Int(AccessToken.lifetimeSeconds) * 4
    /// One answer for an unknown vessel, a revoked one and a bad signature: ids cannot be enumerated.
    public static let authenticationFailed = "authentication failed: this shore knows no enrolled, unrevoked vessel of that id whose key made this signature. Fix: check [node] id, that fleetsync enroll --vessel ID --identity identity.pub ran on the shore with this vessel's current identity file, and that it was not revoked"

    public init(shoreID: String, keys: NodeKeys) {
        self.shoreID = shoreID
        self.keys = keys
    }

    // MARK: challenge and token

    /// Answers a challenge request (kind 6) with a fresh single-use nonce (kind 7): 32 bytes, then
    /// its life in seconds as a varint. Issued whatever vessel id is named (no enumeration).
    public func challenge(_ body: [UInt8], on db: DatabaseSession) async throws -> [UInt8] {
        var r = WireReader(body)
        _ = try r.string(limit: 63, what: "vessel id")
        let nonce = secureRandomBytes(ChallengeProof.nonceBytes)
        var binds = PostgresBindings()
        try binds.append(Data(nonce))
        binds.append(Int32(Self.challengeSeconds))
        // At most this many challenges alive at once: a flood of challenge requests (they need
        // no identity) fills no more of the table; past it, requests are answered busy until some
        // are answered (which deletes them) or expire. A fleet's own use stays far below.
        let maximumLive = 4_096
        binds.append(Int64(maximumLive))
        try await db.execute("DELETE FROM fleetsync.auth_challenge WHERE expires_at < now()", context: "forgetting expired challenges")
        let stored = try await db.rows("""
            INSERT INTO fleetsync.auth_challenge (nonce, expires_at) SELECT $1, now() + make_interval(secs => $2)
            WHERE (SELECT count(*) FROM (SELECT 1 FROM fleetsync.auth_challenge LIMIT $3) live) < $3 RETURNING 1
            """, binds, context: "storing a challenge")
        guard !stored.isEmpty else {
            throw WireError(.busy, "the shore has \(maximumLive) unanswered challenges (each lives \(Self.challengeSeconds) s); retry in a few seconds")
        }
        var w = WireWriter()
        w.raw(nonce)
        w.varint(UInt64(Self.challengeSeconds))
        return MessageFraming.frameRaw(.challenge, body: w.bytes)
    }

    /// Answers a token request (kind 8: vessel id, nonce, ML-DSA-65 signature) with a token sealed
    /// to the vessel's enrolled sealing key (kind 9). The challenge is used up first, whatever
    /// follows.
    public func token(_ body: [UInt8], on db: DatabaseSession) async throws -> [UInt8] {
        var r = WireReader(body)
        let vessel = try r.string(limit: 63, what: "vessel id")
        let nonce = try r.fixed(ChallengeProof.nonceBytes, what: "challenge")
        let signatureLength = try r.count(limit: 8_192, what: "signature byte")
        let signature = try r.fixed(signatureLength, what: "signature")
        guard r.isAtEnd else { throw WireError(.malformed, "\(r.remaining) unexpected bytes after the token request") }
        var nonceBind = PostgresBindings()
        try nonceBind.append(Data(nonce))
        let used = try await db.rows("DELETE FROM fleetsync.auth_challenge WHERE nonce = $1 RETURNING expires_at > now()", nonceBind, context: "using up a challenge")
        guard let live = try used.first?.decode(Bool.self), live else {
            throw WireError(.unauthenticated, "the challenge is unknown, already used or expired (a challenge is answered once, within \(Self.challengeSeconds) s): ask for a new one")
        }
        var binds = PostgresBindings()
        binds.append(vessel)
        let rows = try await db.rows("""
            SELECT signing_key, sealing_key, next_signing_key, next_sealing_key FROM fleetsync.vessel
            WHERE vessel_id = $1 AND revoked_at IS NULL AND signing_key IS NOT NULL AND sealing_key IS NOT NULL
            """, binds, context: "reading the keys of vessel \(vessel)")
        let enrolled = try rows.first?.decode((Data, Data, Data?, Data?).self)
        // The same work whether the vessel is known or not.
        let signingKey = enrolled?.0 ?? keys.identity.publicKey.rawRepresentation
        var valid = ChallengeProof.verify(signature, shore: shoreID, vessel: vessel, nonce: nonce, signingKey: signingKey)
        var sealTo = enrolled?.1
        // During the vessel's key rotation its next key is accepted too; the first proof by it
        // makes it the vessel's only key (ShoreKeyRotation).
        if !valid, let enrolled, let nextSigning = enrolled.2, let nextSealing = enrolled.3,
           ChallengeProof.verify(signature, shore: shoreID, vessel: vessel, nonce: nonce, signingKey: nextSigning) {
            try await ShoreKeyRotation.promoteVesselKeys(vessel: vessel, signingKey: nextSigning, on: db)
            valid = true
            sealTo = nextSealing
        }
        guard let sealTo, valid else {
            try? await Self.record(vessel: nil, kind: "authentication_failed", detail: "token request naming vessel \(vessel.prefix(63))", on: db)
            throw WireError(.unauthenticated, Self.authenticationFailed)
        }
        let token = AccessToken(vessel: vessel, issuedAt: Int64(Date().timeIntervalSince1970)).encoded(secret: try await secrets.load(on: db))
        var w = WireWriter()
        w.varint(UInt64(token.count))
        w.raw(token)
        w.varint(UInt64(AccessToken.lifetimeSeconds))
        // During the shore's key rotation: its next (or newly promoted) identity, endorsed.
        if let announcement = keys.announcement?.encoded {
            w.varint(UInt64(announcement.count))
            w.raw(announcement)
        }
        let sealed = try Sealing.seal(w.bytes, vessel: vessel, exchangeID: UUID(), direction: .token, to: sealTo)
        return MessageFraming.frameRaw(.token, body: sealed.body)
    }

    // MARK: sealed exchanges

    /// A sealed request opened with the shore's key, its token not yet checked.
    public struct Unsealed: Sendable {
        public var vessel: String
        public var exchangeID: UUID
        var token: [UInt8]
        /// The framed (compressed) request inside.
        public var inner: [UInt8]
        var binding: [UInt8]
    }

    /// A sealed request whose token and exchange id passed.
    public struct Opened: Sendable {
        /// The vessel the token names: the only source of the requester's identity.
        public var vessel: String
        public var exchangeID: UUID
        var sealingKey: Data
        var binding: [UInt8]
        /// Whether the advisory lock asked of ``authenticate(_:on:lock:)`` was taken (nil: none asked).
        var locked: Bool? = nil
    }

    /// Opens a sealed request (kind 4) with the shore's X-Wing key: any altered, truncated or
    /// mis-addressed byte is refused here, before anything is decoded. No database work.
    public func unseal(_ body: [UInt8]) throws(WireError) -> Unsealed {
        // During a key rotation a request may be sealed to the next or the previous key.
        var key = keys.sealing
        if !keys.otherSealing.isEmpty, let (header, _) = try? Sealing.header(of: body),
           let other = keys.otherSealing.first(where: { Sealing.keyID($0.publicKey.rawRepresentation) == header.recipientKeyID }) {
            key = other
        }
        let (header, plaintext, binding) = try Sealing.open(body, direction: .vesselToShore, with: key)
        var r = WireReader(plaintext)
        let tokenLength = try r.count(limit: AccessToken.maximumBytes, what: "token byte")
        let token = try r.fixed(tokenLength, what: "access token")
        return Unsealed(vessel: header.vessel, exchangeID: header.exchangeID, token: token, inner: r.rest(), binding: binding)
    }

    /// Seals an answer frame (response or error) to the vessel, bound to its request.
    public func seal(_ frame: [UInt8], for opened: Opened) throws -> [UInt8] {
        let sealed = try Sealing.seal(frame, vessel: opened.vessel, exchangeID: opened.exchangeID, direction: .shoreToVessel, to: opened.sealingKey, binding: opened.binding)
        return MessageFraming.frameRaw(.sealedResponse, body: sealed.body)
    }

    // MARK: records

    /// Records a refused request or rejected change; `status` counts them per vessel.
    public static func record(vessel: String?, kind: String, detail: String, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(kind)
        binds.append(String(detail.prefix(1_000)))
        try await db.execute("INSERT INTO fleetsync.security_event (vessel, kind, detail) VALUES ($1, $2, $3)", binds, context: "recording a refused request")
    }

    // MARK: enrollment

    /// Enrolls (or re-enrolls) a vessel with the keys of its checked identity file; clears a
    /// revocation; tokens issued before now stop working.
    public static func enroll(vessel: String, identity: PublicIdentity, text: String, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(text)
        try binds.append(identity.signingKey)
        try binds.append(identity.sealingKey)
        try await db.execute("""
            INSERT INTO fleetsync.vessel (vessel_id, identity, signing_key, sealing_key) VALUES ($1, $2, $3, $4)
            ON CONFLICT (vessel_id) DO UPDATE SET identity = $2, signing_key = $3, sealing_key = $4, revoked_at = NULL, authorized_since = now(),
              next_identity = NULL, next_signing_key = NULL, next_sealing_key = NULL, next_since = NULL, keys_since = now()
            """, binds, context: "enrolling vessel \(vessel)")
    }

    /// Revokes a vessel: from its next request on, its tokens and proofs are refused. Returns
    /// false when no such vessel is enrolled.
    public static func revoke(vessel: String, on db: DatabaseSession) async throws -> Bool {
        var binds = PostgresBindings()
        binds.append(vessel)
        let rows = try await db.rows("UPDATE fleetsync.vessel SET revoked_at = coalesce(revoked_at, now()) WHERE vessel_id = $1 RETURNING 1", binds, context: "revoking vessel \(vessel)")
        return !rows.isEmpty
    }
}

/// Bounds on what a vessel reports about itself (the request's `status` object), checked before
/// anything is applied.
public enum StatusBounds {
    public static let maximumMembers = 32
    public static let maximumKeyBytes = 64
    public static let maximumStringBytes = 512
    public static let maximumDepth = 3
    public static let maximumBytes = 8_192

    public static func check(_ status: [String: JSONValue]) throws(WireError) {
        func refuse(_ why: String) -> WireError {
            WireError(.tooLarge, "the vessel's status object is refused: \(why) (at most \(maximumMembers) members per object or array, keys of \(maximumKeyBytes) bytes, strings of \(maximumStringBytes) bytes, \(maximumDepth) levels, \(maximumBytes) bytes in all); nothing was applied")
        }
        var stack: [(JSONValue, Int)] = [(.object(status), 1)]
        while let (value, depth) = stack.popLast() {
            switch value {
            case .object(let members):
                guard depth <= maximumDepth else { throw refuse("nested deeper than \(maximumDepth) levels") }
                guard members.count <= maximumMembers else { throw refuse("an object has \(members.count) members") }
                for (key, member) in members {
                    guard key.utf8.count <= maximumKeyBytes else { throw refuse("a key of \(key.utf8.count) bytes") }
                    stack.append((member, depth + 1))
                }
            case .array(let items):
                guard depth <= maximumDepth else { throw refuse("nested deeper than \(maximumDepth) levels") }
                guard items.count <= maximumMembers else { throw refuse("an array has \(items.count) items") }
                stack.append(contentsOf: items.map { ($0, depth + 1) })
            case .string(let s):
                guard s.utf8.count <= maximumStringBytes else { throw refuse("a string of \(s.utf8.count) bytes") }
            case .number(let n):
                guard n.utf8.count <= 40 else { throw refuse("a number of \(n.utf8.count) digits") }
            case .bool, .null:
                break
            }
        }
        let size = JSONValue.object(status).serialized.utf8.count
        guard size <= maximumBytes else { throw refuse("it is \(size) bytes") }
    }
}

extension ShoreAuthority {
    /// Refused requests and rejected changes per vessel ("" for requests that proved no identity).
    public static func refusals(on db: DatabaseSession) async throws -> [String: Int64] {
        let rows = try await db.rows("SELECT coalesce(vessel, ''), count(*) FROM fleetsync.security_event GROUP BY 1", context: "counting refused requests")
        var counts: [String: Int64] = [:]
        for row in rows {
            let (vessel, count) = try row.decode((String, Int64).self)
            counts[vessel] = count
        }
        return counts
    }

    /// What `status` says of authentication: there is no unauthenticated mode.
    public static let statusLine = "authentication: required (ML-DSA-65 identities, HMAC-SHA256 tokens of \(AccessToken.lifetimeSeconds) s, every exchange sealed with HPKE X-Wing ML-KEM-768+X25519 / AES-256-GCM)"
}
