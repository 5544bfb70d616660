import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import Foundation
import Logging
import PostgresNIO

/// Which shore identity a vessel trusts: the pinned file (`[vessel] shore_identity`), or the
/// identity the shore announced since, endorsed by the key trusted before it (docs/SECURITY.md,
/// *Key rotation*). The announced identity is kept in `fleetsync.sync_state` with the fingerprint
/// of the pinned file it descends from: pinning another file starts over from that file.
extension VesselChannel {
    static let trustLogger = Logger(label: "fleetsync.vessel")

    /// The shore identity requests are sealed to.
    public func trustedShore() async throws -> PublicIdentity {
        var binds = PostgresBindings()
        binds.append(Self.peer)
        let rows = try await session.rows("SELECT shore_identity, shore_identity_root FROM fleetsync.sync_state WHERE peer = $1", binds,
                                          context: "reading the trusted shore identity")
        guard let (text, root) = try rows.first?.decode((String?, String?).self), let text, root == shore.fingerprint else { return shore }
        guard let announced = try? PublicIdentity.parse(text, source: "the stored shore identity"), announced.node == shore.node, announced.role == "shore" else {
            return shore
        }
        return announced
    }

    /// Checks an announcement against the trusted shore identity: endorsed by it, it is trusted
    /// from now on; otherwise it is ignored, logged and counted (`status`).
    @discardableResult
    public func consider(announcement bytes: [UInt8]) async throws -> ShoreAnnouncement.Verdict {
        let trusted = try await trustedShore()
        let verdict: ShoreAnnouncement.Verdict
        var announced: ShoreAnnouncement?
        do {
            announced = try ShoreAnnouncement.decode(bytes)
            verdict = announced!.verdict(trusting: trusted)
        } catch {
            verdict = .refuse("it is not a readable announcement (\(error))")
        }
        var binds = PostgresBindings()
        binds.append(Self.peer)
        switch verdict {
        case .known:
            break
        case .accept:
            binds.append(announced!.identity.text)
            binds.append(shore.fingerprint)
            try await session.execute("""
                INSERT INTO fleetsync.sync_state (peer, shore_identity, shore_identity_root) VALUES ($1, $2, $3)
                ON CONFLICT (peer) DO UPDATE SET shore_identity = $2, shore_identity_root = $3
                """, binds, context: "keeping the shore's announced identity")
            Self.trustLogger.notice("the shore announced its next keys, endorsed by the trusted key: requests are sealed to them from now on",
                                    metadata: ["trusted": "\(trusted.fingerprint)", "announced": "\(announced!.identity.fingerprint)"])
        case .refuse(let why):
            try await session.execute("""
                INSERT INTO fleetsync.sync_state (peer, shore_announcements_refused) VALUES ($1, 1)
                ON CONFLICT (peer) DO UPDATE SET shore_announcements_refused = fleetsync.sync_state.shore_announcements_refused + 1
                """, binds, context: "counting a refused shore announcement")
            Self.trustLogger.warning("a shore key announcement was ignored: \(why). The vessel keeps trusting \(trusted.fingerprint)",
                                     metadata: ["trusted": "\(trusted.fingerprint)"])
        }
        return verdict
    }
}
