import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import PostgresNIO

/// The vessel's sealed, authenticated channel to its pinned shore: it holds an access token
/// (kept in `fleetsync.sync_state`, so that a `sync` run reuses it), obtains a new one when it
/// has none or the shore says it expired (challenge, ML-DSA signature), seals every request to
/// the shore's X-Wing key and opens only answers sealed to its own key and bound to that request.
public struct VesselChannel: Sendable {
    public var configuration: FleetSyncConfiguration
    public var session: DatabaseSession
    public var transport: any ExchangeTransport
    public var keys: NodeKeys
    public var shore: PublicIdentity
    static let peer = "shore"

    /// Loads this vessel's keys (refused if others can read them) and the pinned shore identity.
    public init(configuration: FleetSyncConfiguration, session: DatabaseSession, transport: any ExchangeTransport) throws {
        self.configuration = configuration
        self.session = session
        self.transport = transport
        (keys, shore) = try Self.credentials(configuration)
    }

    /// This vessel's keys and its pinned shore's identity, checked.
    public static func credentials(_ configuration: FleetSyncConfiguration) throws -> (NodeKeys, PublicIdentity) {
        guard let directory = configuration.keysDirectory else {
            throw SecurityError("this vessel has no keys: set [keys] directory, run fleetsync keygen --config FILE, and enroll the identity.pub it writes on the shore (fleetsync enroll --vessel ID --identity FILE)")
        }
        guard let pinned = configuration.vessel?.shoreIdentity else {
            throw SecurityError("[vessel] shore_identity is not set: copy the shore's identity.pub (written by fleetsync keygen on the shore) to this vessel and name it there; exchanges are sealed to that key and only its holder's answers are accepted")
        }
        // A key promotion cut off by a crash is finished first: the vessel starts with the new keys.
        try KeyDirectory(directory).completeDecidedPromotion(role: .vessel)
        let keys = try NodeKeys.load(directory: directory)
        let shore = try PublicIdentity.load(path: pinned)
        guard shore.role == "shore" else {
            throw SecurityError("[vessel] shore_identity \(pinned) is the identity of \(shore.role) \(shore.node), not of a shore: pin the shore's identity.pub")
        }
        return (keys, shore)
    }

    /// Bounds on the sealed answers: a response body of `limits`, the seal around it.
    func outerLimits(_ limits: WireLimits) -> WireLimits {
        var outer = limits
        outer.maximumBodyBytes = limits.maximumBodyBytes + 2 * WireEnvelope.headerSize + 64 + Sealing.overhead
        return outer
    }

    /// Sends a request frame sealed under a fresh exchange id (a retry is a new exchange: the
    /// shore refuses an exchange id it has seen), and returns the opened answer frame with the
    /// bytes that crossed the link. An expired or refused token is renewed once.
    public func send(_ requestFrame: [UInt8], limits: WireLimits) async throws -> (answer: [UInt8], sent: Int, received: Int) {
        var sent = 0, received = 0
        var token = try await storedToken()
        // The pinned shore identity, or the one it announced since (ShoreTrust).
        let shore = try await trustedShore()
        for _ in 0..<2 {
            if token == nil {
                let fresh = try await authenticate()
                sent += fresh.sent
                received += fresh.received
                token = fresh.token
            }
            let (outcome, s, r) = try await attempt(requestFrame, token: token!, shore: shore, limits: limits)
            sent += s
            received += r
            switch outcome {
            case .answer(let plaintext): return (plaintext, sent, received)
            case .renewToken:
                try await forgetToken()
                token = nil
            }
        }
        throw WireError(.unauthenticated, "the shore refused this vessel's new token too; authenticate again later")
    }

    /// What one sealed request brought: the answer, or the need of a new token (expired,
    /// unknown to the shore, or issued to a key this vessel no longer has).
    enum Attempt: Sendable {
        case answer([UInt8])
        case renewToken
    }

    /// Seals `requestFrame` with `token` to `shore`, sends it and opens the answer. No database
    /// work: a read-ahead (``Prepared``) runs it while the vessel's session applies a batch.
    func attempt(_ requestFrame: [UInt8], token: [UInt8], shore: PublicIdentity, limits: WireLimits) async throws -> (Attempt, sent: Int, received: Int) {
        let exchangeID = UUID()
        var plaintext = WireWriter(capacity: requestFrame.count + 64)
        plaintext.varint(UInt64(token.count))
        plaintext.raw(token)
        plaintext.raw(requestFrame)
        let sealed = try Sealing.seal(plaintext.bytes, vessel: configuration.nodeID, exchangeID: exchangeID, direction: .vesselToShore, to: shore.sealingKey)
        let frame = MessageFraming.frameRaw(.sealedRequest, body: sealed.body)
        let answer = try await transport.send(frame)
        let envelope = try open(answer, limits: outerLimits(limits))
        switch envelope.kind {
        case .sealedResponse:
            // Sealed to a key this vessel no longer has (a token obtained before its key
            // rotation): obtain a token with the current key and resend once.
            if let (header, _) = try? Sealing.header(of: envelope.body),
               header.recipientKeyID != Sealing.keyID(keys.sealing.publicKey.rawRepresentation) {
                return (.renewToken, frame.count, answer.count)
            }
            let opened = try Sealing.open(envelope.body, direction: .shoreToVessel, with: keys.sealing, binding: sealed.answerBinding)
            guard opened.header.vessel == configuration.nodeID, opened.header.exchangeID == exchangeID else {
                throw WireError(.sealBroken, "the shore's answer is for vessel \(opened.header.vessel), exchange \(opened.header.exchangeID); refused")
            }
            return (.answer(opened.plaintext), frame.count, answer.count)
        case .error:
            let error = Self.refusal(answer)
            if error.code == .tokenExpired || error.code == .unauthenticated { return (.renewToken, frame.count, answer.count) }
            throw error
        default:
            throw WireError(.malformed, "the shore answered a sealed request with a \(envelope.kind) message")
        }
    }

    /// A channel with its token and trusted shore read from the database once, for sends that
    /// run while the vessel's session is busy (read-ahead); nil without a token.
    public struct Prepared: Sendable {
        var channel: VesselChannel
        var token: [UInt8]
        var shore: PublicIdentity

        /// One sealed request and its answer, without the database; a token to renew ends it
        /// with ``ReadAheadUnavailable`` (the next ordinary exchange renews it).
        func send(_ requestFrame: [UInt8], limits: WireLimits) async throws -> (answer: [UInt8], sent: Int, received: Int) {
            let (outcome, sent, received) = try await channel.attempt(requestFrame, token: token, shore: shore, limits: limits)
            guard case .answer(let plaintext) = outcome else { throw ReadAheadUnavailable(reason: "the access token needs renewing") }
            return (plaintext, sent, received)
        }
    }

    public func prepared() async throws -> Prepared? {
        guard let token = try await storedToken() else { return nil }
        return Prepared(channel: self, token: token, shore: try await trustedShore())
    }

    static func refusal(_ answer: [UInt8]) -> WireError {
        do {
            _ = try MessageFraming.decodeResponse(answer)
            return WireError(.malformed, "expected an error message from the shore")
        } catch {
            return error
        }
    }

    /// Decodes an answer's frame; one of another protocol version is refused naming both.
    func open(_ answer: [UInt8], limits: WireLimits) throws(WireError) -> WireEnvelope {
        if let version = WireEnvelope.version(of: answer), version != WireCodec.version {
            throw WireError(.unsupportedVersion, "the shore at \(configuration.vessel?.shoreURL ?? "?") speaks protocol version \(version), this vessel speaks version \(WireCodec.version); \(version < WireCodec.version ? "upgrade the shore (a fleet upgrades its shore first)" : "upgrade this vessel")")
        }
        return try WireEnvelope.decode(answer, limits: limits)
    }

    /// Challenge, signature, token: two round trips; the token is kept for the next exchanges.
    func authenticate() async throws -> (token: [UInt8], sent: Int, received: Int) {
        var ask = WireWriter()
        ask.string(configuration.nodeID)
        let askFrame = MessageFraming.frameRaw(.challengeRequest, body: ask.bytes)
        let challengeAnswer = try await transport.send(askFrame)
        let challenge = try expect(.challenge, in: challengeAnswer)
        var r = WireReader(challenge.body)
        let nonce = try r.fixed(ChallengeProof.nonceBytes, what: "challenge")
        let signature = try ChallengeProof.sign(shore: shore.node, vessel: configuration.nodeID, nonce: nonce, with: keys.identity)
        var proof = WireWriter(capacity: 4_096)
        proof.string(configuration.nodeID)
        proof.raw(nonce)
        proof.varint(UInt64(signature.count))
        proof.raw(signature)
        let proofFrame = MessageFraming.frameRaw(.tokenRequest, body: proof.bytes)
        let tokenAnswer = try await transport.send(proofFrame)
        let sealed = try expect(.token, in: tokenAnswer)
        let opened = try Sealing.open(sealed.body, direction: .token, with: keys.sealing)
        guard opened.header.vessel == configuration.nodeID else { throw WireError(.sealBroken, "the token answer is for vessel \(opened.header.vessel)") }
        var t = WireReader(opened.plaintext)
        let token = try t.fixed(try t.count(limit: AccessToken.maximumBytes, what: "token byte"), what: "access token")
        let lifetime = try t.varint()
        try await store(token, lifetimeSeconds: Int64(min(lifetime, 86_400)))
        finishRotationIfConfirmed()
        // During the shore's key rotation, its next identity endorsed by its current key.
        // An unreadable one is refused and counted like a forged one; the token still serves.
        if !t.isAtEnd {
            let length = (try? t.count(limit: ShoreAnnouncement.maximumBytes, what: "announcement byte")) ?? 0
            try await consider(announcement: (try? t.fixed(length, what: "key announcement")) ?? [])
        }
        return (token, askFrame.count + proofFrame.count, challengeAnswer.count + tokenAnswer.count)
    }

    func expect(_ kind: WireEnvelope.Kind, in answer: [UInt8]) throws(WireError) -> WireEnvelope {
        let envelope = try open(answer, limits: outerLimits(WireLimits()))
        if envelope.kind == .error { throw Self.refusal(answer) }
        guard envelope.kind == kind else { throw WireError(.malformed, "expected a \(kind) message from the shore, got a \(envelope.kind) message") }
        return envelope
    }

    // MARK: the token, kept in the vessel's database

    func storedToken() async throws -> [UInt8]? {
        var binds = PostgresBindings()
        binds.append(Self.peer)
        let rows = try await session.rows("SELECT token FROM fleetsync.sync_state WHERE peer = $1 AND token IS NOT NULL AND token_expires_at > now()", binds, context: "reading the access token")
        return try rows.first.map { Array(try $0.decode(Data.self)) }
    }

    /// Keeps the token until a minute before the shore's lifetime ends (by this vessel's clock).
    func store(_ token: [UInt8], lifetimeSeconds: Int64) async throws {
        var binds = PostgresBindings()
        binds.append(Self.peer)
        try binds.append(Data(token))
        binds.append(Int32(max(0, lifetimeSeconds - 60)))
        try await session.execute("""
            INSERT INTO fleetsync.sync_state (peer, token, token_expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
            ON CONFLICT (peer) DO UPDATE SET token = $2, token_expires_at = now() + make_interval(secs => $3)
            """, binds, context: "keeping the access token")
    }

    func forgetToken() async throws {
        var binds = PostgresBindings()
        binds.append(Self.peer)
        try await session.execute("UPDATE fleetsync.sync_state SET token = NULL, token_expires_at = NULL WHERE peer = $1", binds, context: "dropping the access token")
    }
}

/// Bytes that crossed the link in one exchange, sealing and authentication included.
public final class WireCount: @unchecked Sendable {
    public var sent = 0
    public var received = 0
    public init() {}
}
