import ArgumentParser
import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTransport
import FleetSyncVessel
import Foundation

struct RotateKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-keys",
        abstract: "Replace this node's keys with new ones endorsed by the current ones, crash-safely.",
        discussion: """
            On a vessel: writes new keys as pending (next/ in [keys] directory), sends the shore the new identity \
            endorsed by the current identity key, and once the shore confirmed, makes them current and obtains a \
            token with them (the shore then drops the old keys). Run it again after any interruption: it continues \
            where it stopped. Restart a running daemon afterwards (it reads its keys at start).
            On the shore: writes next keys and their endorsement; restart serve on every replica (copy next/ to \
            each) so that it opens requests sealed to them and announces them in token answers. Later, \
            --promote makes them current (the previous sealing key is kept and still opened with; restart serve); \
            --forget-previous drops it once every vessel has synced since (fleetsync status).
            """)
    @OptionGroup var options: ConfigOption
    @Flag(help: "(shore) Make the announced next keys current.") var promote = false
    @Flag(help: "(shore) Drop the keys kept from before the last promotion.") var forgetPrevious = false

    func run() async throws {
        let configuration = try options.load()
        guard let directory = configuration.keysDirectory else {
            throw ValidationError("rotate-keys needs [keys] directory in \(options.config) and keys in it (fleetsync keygen)")
        }
        do {
            switch configuration.role {
            case .vessel:
                guard !promote, !forgetPrevious else { throw ValidationError("--promote and --forget-previous are for the shore; on a vessel, rotate-keys does the whole rotation") }
                try await rotateVessel(configuration)
            case .shore:
                try ShoreKeyFiles(files: KeyDirectory(directory), node: configuration.nodeID).run(promote: promote, forgetPrevious: forgetPrevious)
            }
        } catch let error as ValidationError {
            throw error
        } catch {
            throw CommandFailure(description: "rotate-keys: \(error)")
        }
    }

    func rotateVessel(_ configuration: FleetSyncConfiguration) async throws {
        let vessel = configuration.vessel!
        let transport = try HTTPExchangeTransport(shoreURL: vessel.shoreURL, timeout: .seconds(Int64(vessel.requestTimeoutSeconds)),
                                                  trustedCertificates: vessel.tlsCA, path: "v1/keys")
        var logger = makeLogger("fleetsync.vessel")
        logger[metadataKey: "vessel"] = "\(configuration.nodeID)"
        let driverLogger = logger
        do {
            let report = try await withDatabase(configuration) { db in
                try await KeyRotationDriver(configuration: configuration, session: db, transport: transport, logger: driverLogger).run()
            }
            await transport.shutdown()
            print("keys of vessel \(configuration.nodeID) rotated: \(report.oldFingerprint) -> \(report.newFingerprint) (steps: \(report.steps.map(\.rawValue).joined(separator: ", ")))")
            print("the shore accepts only the new keys now; restart a running fleetsync run so that it uses them")
        } catch {
            await transport.shutdown()
            throw error
        }
    }
}

/// `rotate-keys` on the shore: files only (the running servers read them at start).
struct ShoreKeyFiles {
    var files: KeyDirectory
    var node: String

    func run(promote: Bool, forgetPrevious: Bool) throws {
        let machine = KeyRotationMachine(role: .shore)
        if forgetPrevious {
            guard files.observe().previousKept else { print("no previous keys are kept; nothing to forget"); return }
            try files.forgetPrevious()
            print("previous keys forgotten: requests sealed to them no longer open (restart serve). Vessels that never saw the new keys must pin the new identity.pub")
            return
        }
        var observed = files.observe()
        if promote {
            guard observed.nextComplete || observed.promotionMarked else {
                throw SecurityError("there are no next keys to promote: run fleetsync rotate-keys first, restart serve so that vessels learn them, then --promote")
            }
            while let step = machine.next(files.observe(), promote: true) {
                try files.perform(step)
                KeyRotationCrashHook.after(step)
                if step == .finish { break }
            }
            let current = try PublicIdentity.load(path: NodeKeys.path(files.path, NodeKeys.publicFile))
            print("next keys promoted: the shore's identity is now \(current.fingerprint) (\(NodeKeys.path(files.path, NodeKeys.publicFile))). Restart serve on every replica; the previous sealing key is still opened with and the endorsement announced until rotate-keys --forget-previous")
            return
        }
        if observed.promotionMarked {
            // A promotion cut off by a crash goes forward first.
            try files.completeDecidedPromotion(role: .shore)
            observed = files.observe()
        }
        guard !observed.previousKept else {
            throw SecurityError("keys from the previous rotation are still kept in \(files.previous) for vessels that have not learnt the current ones; once every vessel has synced since the promotion, run fleetsync rotate-keys --forget-previous, then rotate again")
        }
        if observed.nextComplete {
            let next = try PublicIdentity.load(path: NodeKeys.path(files.next, NodeKeys.publicFile))
            print("next keys \(next.fingerprint) are already written and endorsed; restart serve to announce them, then fleetsync rotate-keys --promote")
            return
        }
        let current = try NodeKeys.load(directory: files.path)
        let identity = try files.writeNext(try NodeKeys.generate(), node: node, role: "shore", endorsedBy: current)
        KeyRotationCrashHook.after(.writePending)
        print("next keys \(identity.fingerprint) written to \(files.next), endorsed by the current identity key.")
        print("next: copy \(files.next) to every serve replica and restart them (they announce the next identity in token answers and open requests sealed to it); when vessels have synced, fleetsync rotate-keys --promote")
    }
}

/// `status`: this node's key age and rotation; on a vessel, which shore identity it trusts.
func printKeyStatus(_ configuration: FleetSyncConfiguration, vessel status: VesselStatus?) {
    guard let directory = configuration.keysDirectory else { return print("  keys:            none ([keys] directory is not set)") }
    for line in KeyDirectory(directory).statusLines() { print("  " + line) }
    guard let status else { return }
    let trusted = status.announcedShoreIdentity.flatMap { try? PublicIdentity.parse($0, source: "stored") }
    let pinned = configuration.vessel?.shoreIdentity.flatMap { try? PublicIdentity.load(path: $0) }
    let which = trusted.map { "\($0.fingerprint), announced by the shore and endorsed by the key trusted before" } ?? "\(pinned?.fingerprint ?? "?"), the pinned file"
    print("  shore identity:  \(which) (\(status.refusedAnnouncements) refused announcement(s))")
}
