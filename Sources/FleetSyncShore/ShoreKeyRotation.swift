import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Hummingbird
import Logging
import NIOCore
import PostgresNIO

/// The shore's side of a vessel's key rotation (`POST /v1/keys`, docs/SECURITY.md, *Key
/// rotation*): a sealed, authenticated message carrying the vessel's new public identity endorsed
/// by its enrolled identity key. The shore checks the endorsement against the enrolled keys and
/// keeps the new keys as the vessel's *next* keys, accepted alongside the enrolled ones until the
/// vessel first proves itself with the new key (``ShoreAuthority/token(_:on:)``), which makes them
/// its only keys. Sending the same endorsement again is answered the same: a retry is harmless.
public struct ShoreKeyRotation: Sendable {
    public var authority: ShoreAuthority
    public var logger: Logger

    public init(authority: ShoreAuthority, logger: Logger) {
        self.authority = authority
        self.logger = logger
    }

    public static let path = "/v1/keys"
    /// Keeps the endorsed next keys of the authenticated vessel; refuses (and records) an
    /// endorsement not made by its enrolled key, changing nothing. Returns the answer's plaintext.
    func accept(_ inner: [UInt8], vessel: String, on db: DatabaseSession) async throws -> [UInt8] {
        var r = WireReader(inner)
        guard try r.string(limit: 64, what: "message label") == KeyRotationMessage.requestLabel else {
            throw WireError(.malformed, "expected a key rotation message (\(KeyRotationMessage.requestLabel))")
        }
        let text = try r.string(limit: ShoreAnnouncement.maximumBytes, what: "new identity")
        let endorsement = Data(try r.fixed(try r.count(limit: 8_192, what: "endorsement byte"), what: "endorsement"))
        guard r.isAtEnd else { throw WireError(.malformed, "\(r.remaining) unexpected bytes after the key rotation message") }
        let identity: PublicIdentity
        do {
            identity = try PublicIdentity.parse(text, source: "the new identity of vessel \(vessel)")
        } catch {
            throw WireError(.malformed, "\(error)")
        }
        guard identity.role == "vessel", identity.node == vessel else {
            throw WireError(.forbidden, "the new identity is that of \(identity.role) \(identity.node), not of vessel \(vessel): a vessel rotates only its own keys; nothing changed")
        }
        var binds = PostgresBindings()
        binds.append(vessel)
        let rows = try await db.rows("SELECT signing_key, sealing_key FROM fleetsync.vessel WHERE vessel_id = $1 AND revoked_at IS NULL",
                                     binds, context: "reading the enrolled keys of vessel \(vessel)")
        guard let (signing, sealing) = try rows.first?.decode((Data, Data).self) else { throw WireError(.unauthenticated, ShoreAuthority.authenticationFailed) }
        if identity.signingKey == signing, identity.sealingKey == sealing { return KeyRotationMessage.confirmed(identity) }
        guard KeyEndorsement.verify(endorsement, new: identity, oldSigningKey: signing, oldSealingKey: sealing) else {
            logger.warning("key rotation refused: the endorsement is not signed by the enrolled key", metadata: ["vessel": "\(vessel)", "new": "\(identity.fingerprint)"])
            try? await ShoreAuthority.record(vessel: vessel, kind: "endorsement_refused", detail: "new identity \(identity.fingerprint) not endorsed by the enrolled key", on: db)
            throw WireError(.forbidden, "the endorsement of new identity \(identity.fingerprint) is not signed by the identity key enrolled for vessel \(vessel): refused, nothing changed. Fix: endorse the new keys with the vessel's current identity.key (fleetsync rotate-keys does), or enroll the new identity.pub on the shore")
        }
        binds.append(text)
        try binds.append(identity.signingKey)
        try binds.append(identity.sealingKey)
        try await db.execute("""
            UPDATE fleetsync.vessel SET next_identity = $2, next_signing_key = $3, next_sealing_key = $4,
              next_since = CASE WHEN next_signing_key IS DISTINCT FROM $3 THEN now() ELSE next_since END
            WHERE vessel_id = $1
            """, binds, context: "keeping the next keys of vessel \(vessel)")
        logger.info("vessel key rotation: next keys kept", metadata: ["vessel": "\(vessel)", "new": "\(identity.fingerprint)"])
        return KeyRotationMessage.confirmed(identity)
    }

    /// The vessel proved itself with its next key: the next keys become its only keys.
    static func promoteVesselKeys(vessel: String, signingKey: Data, on db: DatabaseSession) async throws {
        var binds = PostgresBindings()
        binds.append(vessel)
        try binds.append(signingKey)
        try await db.execute("""
            UPDATE fleetsync.vessel SET identity = next_identity, signing_key = next_signing_key, sealing_key = next_sealing_key,
              next_identity = NULL, next_signing_key = NULL, next_sealing_key = NULL, next_since = NULL, keys_since = now()
            WHERE vessel_id = $1 AND next_signing_key = $2
            """, binds, context: "making the next keys of vessel \(vessel) its keys")
    }

    /// Opens a sealed message (token checked, replay refused), handles it, seals the answer;
    /// challenge and token requests are answered as on the exchange path.
    func handle(_ body: [UInt8], session: DatabaseSession) async -> (status: Int, body: [UInt8]) {
        var opened: ShoreAuthority.Opened?
        do {
            let envelope = try WireEnvelope.decode(body, limits: WireLimits())
            switch envelope.kind {
            case .sealedRequest: break
            case .challengeRequest: return (200, try await authority.challenge(envelope.body, on: session))
            case .tokenRequest: return (200, try await authority.token(envelope.body, on: session))
            default: throw WireError(.unauthenticated, "this shore answers only sealed key rotation messages carrying an access token")
            }
            let unsealed = try authority.unseal(envelope.body)
            let channel = try await authority.authenticate(unsealed, on: session)
            opened = channel
            return (200, try authority.seal(try await accept(unsealed.inner, vessel: channel.vessel, on: session), for: channel))
        } catch let error as WireError {
            logger.warning("key rotation request refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
            let frame = MessageFraming.encode(error)
            if let opened, let sealed = try? authority.seal(frame, for: opened) { return (ShoreExchange.httpStatus(error.code), sealed) }
            return (ShoreExchange.httpStatus(error.code), frame)
        } catch {
            logger.error("key rotation request failed", metadata: ["error": "\(error)"])
            return (500, MessageFraming.encode(WireError(.internalError, "the shore could not handle the key rotation message; retry later")))
        }
    }

    /// Adds `POST /v1/keys` to the shore's router, under the server's bounds (``PooledEndpoint``).
    public func install(on router: Router<BasicRequestContext>, pool: PostgresClient, timeoutSeconds: Int) {
        let endpoint = self
        PooledEndpoint.install(on: router, path: Self.path, maximumBytes: 64 * 1_024,
                               tooLarge: MessageFraming.encode(WireError(.tooLarge, "a key rotation message is at most 64 KiB")),
                               pool: pool, timeoutSeconds: timeoutSeconds, logger: logger) { body, session in
            await endpoint.handle(body, session: session)
        }
    }
}

extension FleetStatus.Vessel {
    /// The vessel's keys for the text status: since when, and a rotation pending.
    public var keyNote: String {
        let since = keysSince.map { ", keys since \(ISO8601DateFormatter().string(from: $0))" } ?? ""
        guard let nextKeysSince else { return since }
        return since + ", KEY ROTATION PENDING since \(ISO8601DateFormatter().string(from: nextKeysSince)) (its next keys are accepted alongside the current ones until it authenticates with them)"
    }
}
