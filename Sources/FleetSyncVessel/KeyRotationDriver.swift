import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging

/// `fleetsync rotate-keys` on a vessel: runs ``KeyRotationMachine`` against the keys directory
/// and the shore, one step at a time, each idempotent (docs/SECURITY.md, *Key rotation*):
///
/// 1. `pending-written`: new ML-DSA-65 and X-Wing keys in `next/` (0600, atomic), endorsed by the
///    current identity key (`next/endorsement`, written last);
/// 2. `endorsement-sent`: the endorsed new identity, sealed and authenticated with the current
///    keys, to `POST /v1/keys`; the shore answers that it keeps them as next keys;
/// 3. `token-forgotten`: the token obtained with the old keys is dropped;
/// 4. `promotion-marked`: `next/promote`; from here the promotion only goes forward (also at
///    the next start of `sync` or `run`);
/// 5. the three key files moved over the current ones (renames);
/// 6. `new-key-confirmed`: a token obtained with the new key (the shore drops the old one), and
///    `next/` removed (a `sync` that authenticates with the new key first does the same).
public struct KeyRotationDriver: Sendable {
    public var configuration: FleetSyncConfiguration
    public var session: DatabaseSession
    /// To `POST {shore_url}/v1/keys`.
    public var transport: any ExchangeTransport
    public var logger: Logger

    public init(configuration: FleetSyncConfiguration, session: DatabaseSession, transport: any ExchangeTransport, logger: Logger) {
        self.configuration = configuration
        self.session = session
        self.transport = transport
        self.logger = logger
    }

    public struct Report: Sendable {
        public var steps: [KeyRotationStep] = []
        public var oldFingerprint = ""
        public var newFingerprint = ""
    }

    public func run() async throws -> Report {
        guard let directory = configuration.keysDirectory else { throw SecurityError("rotate-keys needs [keys] directory (run fleetsync keygen first)") }
        let files = KeyDirectory(directory)
        let machine = KeyRotationMachine(role: .vessel)
        var report = Report()
        report.oldFingerprint = (try? PublicIdentity.load(path: NodeKeys.path(directory, NodeKeys.publicFile)).fingerprint) ?? "?"
        var learnt = KeyRotationMachine.Observed()
        while true {
            var observed = files.observe()
            observed.shoreConfirmed = learnt.shoreConfirmed
            observed.tokenForgotten = learnt.tokenForgotten
            observed.newKeyConfirmed = learnt.newKeyConfirmed
            guard let step = machine.next(observed) else { break }
            switch step {
            case .writePending:
                let current = try NodeKeys.load(directory: directory)
                let identity = try files.writeNext(try NodeKeys.generate(), node: configuration.nodeID, role: "vessel", endorsedBy: current)
                logger.info("new keys written as pending", metadata: ["next": "\(identity.fingerprint)"])
            case .sendEndorsement:
                try await sendEndorsement(files)
                learnt.shoreConfirmed = true
            case .forgetToken:
                try await channel().forgetToken()
                learnt.tokenForgotten = true
            case .confirmNewKey:
                // The channel removes `next/` once the shore accepted the new key (finishRotationIfConfirmed).
                _ = try await channel().authenticate()
                try files.finish()
                learnt.newKeyConfirmed = true
            case .markPromotion, .keepPrevious, .promoteIdentityKey, .promoteSealingKey, .promotePublicIdentity, .finish:
                try files.perform(step)
            }
            report.steps.append(step)
            logger.debug("key rotation step done", metadata: ["step": "\(step.rawValue)"])
            KeyRotationCrashHook.after(step)
            if step == .finish || step == .confirmNewKey { break }
        }
        report.newFingerprint = (try? PublicIdentity.load(path: NodeKeys.path(directory, NodeKeys.publicFile)).fingerprint) ?? "?"
        return report
    }

    func channel() throws -> VesselChannel {
        try VesselChannel(configuration: configuration, session: session, transport: transport)
    }

    /// Sends the endorsed next identity; returns once the shore confirmed it keeps it.
    func sendEndorsement(_ files: KeyDirectory) async throws {
        let next = try files.loadNext()
        let message = KeyRotationMessage.request(identity: next.identity, endorsement: next.endorsement)
        let answer = try await channel().send(message, limits: WireLimits()).answer
        guard let confirmed = KeyRotationMessage.confirmation(answer) else { throw VesselChannel.refusal(answer) }
        guard confirmed == next.identity.fingerprint else {
            throw SecurityError("the shore confirmed keys \(confirmed), not the ones sent (\(next.identity.fingerprint)); run rotate-keys again")
        }
        logger.info("the shore keeps the new keys as next keys", metadata: ["next": "\(confirmed)"])
    }
}

extension VesselChannel {
    /// After a token obtained with the promoted keys: the rotation is over, `next/` goes. (A
    /// `sync` after a crash between promotion and confirmation finishes the rotation this way.)
    func finishRotationIfConfirmed() {
        guard let directory = configuration.keysDirectory else { return }
        let files = KeyDirectory(directory)
        let observed = files.observe()
        guard observed.promotionMarked, observed.filesInNext.isEmpty,
              let current = try? PublicIdentity.load(path: NodeKeys.path(directory, NodeKeys.publicFile)),
              current.signingKey == keys.identity.publicKey.rawRepresentation else { return }
        try? files.finish()
    }
}
