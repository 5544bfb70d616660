import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import FleetSyncVessel
import Foundation
import XCTest

/// Issue 17, part 5: crash-safe key rotation. The real `fleetsync` binary is killed with SIGKILL
/// right after each step (the drivers' test hook FLEETSYNC_CRASH_AT); afterwards the vessel
/// syncs both ways and the rotation completes on retry.
final class KeyRotationTests: DatabaseTestCase {
    func rotate(_ node: FleetNode, _ arguments: [String] = [], crashAt step: String? = nil) throws -> (status: Int32, output: String, error: String) {
        var environment = ProcessInfo.processInfo.environment
        environment[KeyRotationCrashHook.variable] = step
        return try Shell.runCapturing([FleetSyncBinary.path, "rotate-keys", "--config", node.configPath] + arguments, environment: environment)
    }

    func identity(_ node: FleetNode) throws -> PublicIdentity {
        try PublicIdentity.load(path: node.configuration.keysDirectory! + "/identity.pub")
    }

    /// The vessel's keys on the shore: fingerprint of the enrolled signing key, and whether next keys are kept.
    func enrolled(_ fleet: Fleet, _ vessel: String) async throws -> (signing: String, next: Bool) {
        let db = try await connect(fleet.shore.url)
        let text: String = try await db.scalar("""
            SELECT encode(signing_key, 'base64') || '|' || (next_signing_key IS NOT NULL) FROM fleetsync.vessel WHERE vessel_id = '\(vessel)'
            """)
        let parts = text.replacingOccurrences(of: "\n", with: "").split(separator: "|")
        return (String(parts[0]), parts[1] == "true")
    }

    /// A row written on the shore for the vessel and one written on the vessel, both delivered by one sync.
    func assertSyncsBothWays(_ fleet: Fleet, _ vessel: FleetNode, _ tag: String, server: FleetSyncProcess, file: StaticString = #filePath, line: UInt = #line) async throws {
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('\(vessel.id)', 'shore-\(vessel.id)-\(tag)')", url: fleet.shore.url)
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('\(vessel.id)', 'vessel-\(vessel.id)-\(tag)')", url: vessel.url)
        let result = try fleet.sync(vessel)
        XCTAssertEqual(result.status, 0, "sync after \(tag): " + result.output + result.error + server.log, file: file, line: line)
        let onVessel: Int64 = try await connect(vessel.url).scalar("SELECT count(*) FROM seafarer WHERE full_name = 'shore-\(vessel.id)-\(tag)'")
        let onShore: Int64 = try await connect(fleet.shore.url).scalar("SELECT count(*) FROM seafarer WHERE full_name = 'vessel-\(vessel.id)-\(tag)'")
        XCTAssertEqual(onVessel, 1, "the shore's row reached vessel \(vessel.id) after \(tag)", file: file, line: line)
        XCTAssertEqual(onShore, 1, "vessel \(vessel.id)'s row reached the shore after \(tag)", file: file, line: line)
    }

    func fleet(_ vessels: [String]) async throws -> (Fleet, FleetSyncProcess) {
        let fleet = try await Fleet.make(vessels: vessels)
        // Vessels pin a copy of the shore's identity file, as a real vessel does (Fleet.make points
        // them at the shore's own file, which the shore's promotion replaces).
        let shorePublic = fleet.shore.configuration.keysDirectory! + "/identity.pub"
        let pinned = NSTemporaryDirectory() + "fleetsync-pinned-shore-\(UUID().uuidString).pub"
        try FileManager.default.copyItem(atPath: shorePublic, toPath: pinned)
        for vessel in fleet.vessels {
            let text = try String(contentsOfFile: vessel.configPath, encoding: .utf8).replacingOccurrences(of: shorePublic, with: pinned)
            try text.write(toFile: vessel.configPath, atomically: true, encoding: .utf8)
        }
        let server = try fleet.serve()
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES " + vessels.map { "('\($0)', '\($0)')" }.joined(separator: ", "), url: fleet.shore.url)
        for vessel in fleet.vessels {
            let result = try fleet.sync(vessel)
            XCTAssertEqual(result.status, 0, result.output + result.error + server.log)
        }
        return (fleet, server)
    }

    /// The pure machine: a vessel's steps in order, a shore that promotes only when asked, and a
    /// decided promotion that only goes forward whatever the rest says.
    func testMachineStepsFromObservedState() {
        let vessel = KeyRotationMachine(role: .vessel), shore = KeyRotationMachine(role: .shore)
        var o = KeyRotationMachine.Observed()
        var steps: [KeyRotationStep] = []
        let all: Set<String> = [NodeKeys.identityFile, NodeKeys.sealingFile, NodeKeys.publicFile]
        while let step = vessel.next(o), steps.count < 20 {
            steps.append(step)
            switch step {
            case .writePending: o.nextComplete = true; o.filesInNext = all
            case .sendEndorsement: o.shoreConfirmed = true
            case .forgetToken: o.tokenForgotten = true
            case .markPromotion: o.promotionMarked = true
            case .promoteIdentityKey: o.filesInNext.remove(NodeKeys.identityFile)
            case .promoteSealingKey: o.filesInNext.remove(NodeKeys.sealingFile)
            case .promotePublicIdentity: o.filesInNext.remove(NodeKeys.publicFile)
            case .confirmNewKey: o.newKeyConfirmed = true
            case .finish, .keepPrevious: o = KeyRotationMachine.Observed()
            }
            if step == .finish { break }
        }
        XCTAssertEqual(steps, Self.vesselSteps + [.finish])
        // A restart forgets what the shore said: before the mark, the endorsement is sent again.
        var restarted = KeyRotationMachine.Observed()
        restarted.nextComplete = true
        restarted.filesInNext = all
        XCTAssertEqual(vessel.next(restarted), .sendEndorsement)
        restarted.promotionMarked = true
        XCTAssertEqual(vessel.next(restarted), .promoteIdentityKey, "a decided promotion goes forward without asking the shore again")
        XCTAssertNil(shore.next(restarted.with { $0.promotionMarked = false }, promote: false), "the shore promotes only when asked")
        XCTAssertEqual(shore.next(restarted), .keepPrevious, "the shore keeps its previous key before moving files")
        XCTAssertEqual(shore.next(KeyRotationMachine.Observed()), .writePending)
    }

    static let vesselSteps: [KeyRotationStep] = [.writePending, .sendEndorsement, .forgetToken, .markPromotion,
                                                 .promoteIdentityKey, .promoteSealingKey, .promotePublicIdentity, .confirmNewKey]

    func testVesselRotationKilledAfterEveryStepSyncsAndCompletesOnRetry() async throws {
        let (fleet, server) = try await fleet(["aurora"])
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        for step in Self.vesselSteps {
            let before = try identity(aurora)
            let crashed = try rotate(aurora, crashAt: step.rawValue)
            XCTAssertEqual(crashed.status, 128 + SIGKILL, "rotate-keys was to be killed after \(step.rawValue): " + crashed.output + crashed.error)
            let shoreSide = try await enrolled(fleet, "aurora")
            switch step {
            case .writePending:
                // Pending files written, nothing sent: the shore knows only the old key.
                XCTAssertEqual(shoreSide.signing, before.signingKey.base64EncodedString())
                XCTAssertFalse(shoreSide.next)
                XCTAssertTrue(FileManager.default.fileExists(atPath: aurora.configuration.keysDirectory! + "/next/identity.key"))
            case .sendEndorsement, .forgetToken:
                // Sent, answer not acted on: the shore keeps the new keys as next, the old still work.
                XCTAssertEqual(shoreSide.signing, before.signingKey.base64EncodedString())
                XCTAssertTrue(shoreSide.next, "the shore keeps the endorsed keys as next keys")
                let status = try FleetSyncBinary.run(["status", "--config", fleet.shore.configPath])
                XCTAssertTrue(status.output.contains("KEY ROTATION PENDING"), status.output)
                let vesselStatus = try FleetSyncBinary.run(["status", "--config", aurora.configPath])
                XCTAssertTrue(vesselStatus.output.contains("key rotation:    pending since"), vesselStatus.output)
            default:
                break
            }
            try await assertSyncsBothWays(fleet, aurora, "\(step.rawValue)-crashed", server: server)
            if [.markPromotion, .promoteIdentityKey, .promoteSealingKey, .promotePublicIdentity, .confirmNewKey].contains(step) {
                // Promotion decided: the sync finished it and proved itself with the new key.
                XCTAssertNotEqual(try identity(aurora).signingKey, before.signingKey, "after \(step.rawValue) the vessel uses the new keys")
                let promoted = try await enrolled(fleet, "aurora")
                XCTAssertEqual(promoted.signing, try identity(aurora).signingKey.base64EncodedString(), "the shore dropped the old key after \(step.rawValue)")
                XCTAssertFalse(promoted.next)
            }
            let retry = try rotate(aurora)
            XCTAssertEqual(retry.status, 0, "rotate-keys again after \(step.rawValue): " + retry.output + retry.error + server.log)
            let after = try identity(aurora)
            XCTAssertNotEqual(after.signingKey, before.signingKey)
            let final = try await enrolled(fleet, "aurora")
            XCTAssertEqual(final.signing, after.signingKey.base64EncodedString(), "the shore holds exactly the vessel's current key after \(step.rawValue)")
            XCTAssertFalse(final.next)
            XCTAssertFalse(FileManager.default.fileExists(atPath: aurora.configuration.keysDirectory! + "/next"), "no pending keys left after \(step.rawValue)")
            try await assertSyncsBothWays(fleet, aurora, "\(step.rawValue)-retried", server: server)
        }
    }

    func testEndorsementByAnotherKeyIsRefusedAndChangesNothing() async throws {
        let (fleet, server) = try await fleet(["aurora"])
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        let directory = aurora.configuration.keysDirectory!
        let before = try identity(aurora)
        // Next keys endorsed by a key the shore never enrolled.
        try KeyDirectory(directory).writeNext(try NodeKeys.generate(), node: "aurora", role: "vessel", endorsedBy: try NodeKeys.generate())
        let result = try rotate(aurora)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.error.contains("not signed by the identity key enrolled for vessel aurora"), result.output + result.error)
        let shoreSide = try await enrolled(fleet, "aurora")
        XCTAssertEqual(shoreSide.signing, before.signingKey.base64EncodedString(), "the enrolled key is unchanged")
        XCTAssertFalse(shoreSide.next, "no next keys were stored")
        let recorded: Int64 = try await connect(fleet.shore.url).scalar("SELECT count(*) FROM fleetsync.security_event WHERE vessel = 'aurora' AND kind = 'endorsement_refused'")
        XCTAssertEqual(recorded, 1)
        XCTAssertEqual(try identity(aurora), before, "the vessel's current keys are unchanged")
        try await assertSyncsBothWays(fleet, aurora, "after-refusal", server: server)
    }

    func testForgedShoreAnnouncementIsIgnoredAndCounted() async throws {
        let (fleet, server) = try await fleet(["aurora"])
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        let db = try await connect(aurora.url)
        let transport = try HTTPExchangeTransport(shoreURL: aurora.configuration.vessel!.shoreURL)
        defer { Task { await transport.shutdown() } }
        let channel = try VesselChannel(configuration: aurora.configuration, session: db, transport: transport)
        let pinned = try identity(fleet.shore)
        // A shore identity of the right node and role, endorsed by a key that is not the pinned one.
        let impostor = try NodeKeys.generate()
        let forgedIdentity = try impostor.publicIdentity(node: fleet.shore.id, role: "shore")
        let forged = ShoreAnnouncement(identity: forgedIdentity, endorsement: try KeyEndorsement.sign(new: forgedIdentity, by: try NodeKeys.generate()))
        let verdict = try await channel.consider(announcement: forged.encoded)
        guard case .refuse(let why) = verdict else { return XCTFail("a forged announcement was accepted: \(verdict)") }
        XCTAssertTrue(why.contains("not signed by the trusted shore key"), why)
        let refused: Int32 = try await db.scalar("SELECT shore_announcements_refused FROM fleetsync.sync_state WHERE peer = 'shore'")
        XCTAssertEqual(refused, 1)
        let trusted = try await channel.trustedShore()
        XCTAssertEqual(trusted, pinned, "the vessel still trusts the pinned shore key")
        let status = try FleetSyncBinary.run(["status", "--config", aurora.configPath])
        XCTAssertTrue(status.output.contains("1 refused"), status.output)
        // The same identity endorsed by the pinned shore key is accepted: the signature decides.
        let shoreKeys = try NodeKeys.load(directory: fleet.shore.configuration.keysDirectory!)
        let genuine = ShoreAnnouncement(identity: forgedIdentity, endorsement: try KeyEndorsement.sign(new: forgedIdentity, by: shoreKeys))
        let accepted = try await channel.consider(announcement: genuine.encoded)
        XCTAssertEqual(accepted, .accept)
        let now = try await channel.trustedShore()
        XCTAssertEqual(now.fingerprint, forgedIdentity.fingerprint)

        // A shore whose next keys are not endorsed by its current key does not start (it never announces them).
        let shoreDirectory = fleet.shore.configuration.keysDirectory!
        try KeyDirectory(shoreDirectory).writeNext(try NodeKeys.generate(), node: fleet.shore.id, role: "shore", endorsedBy: impostor)
        server.stop()
        let refusedServe = try FleetSyncProcess(["serve", "--config", fleet.shore.configPath])
        XCTAssertThrowsError(try refusedServe.waitFor("listening on port", seconds: 20), "serve started with next keys its key did not endorse")
        XCTAssertTrue(refusedServe.log.contains("does not endorse the next identity"), refusedServe.log)
    }

    /// Syncs `vessel` and returns the fingerprint of the shore identity it trusts afterwards.
    func trustedShore(_ vessel: FleetNode) async throws -> String {
        let text: String? = try await connect(vessel.url).scalar("SELECT shore_identity FROM fleetsync.sync_state WHERE peer = 'shore'")
        guard let text else { return "pinned" }
        return try PublicIdentity.parse(text, source: "stored").fingerprint
    }

    static let shorePromotionSteps: [KeyRotationStep?] = [nil, .markPromotion, .keepPrevious, .promoteIdentityKey, .promoteSealingKey, .promotePublicIdentity, .finish]

    /// The shore rotates (killed after writing its next keys the first time, after each promotion
    /// step the following times); vessels learn the endorsed next identity from token answers and
    /// still trust it after the promotion and after the old key is forgotten; a vessel that never
    /// learnt it gets a clear refusal.
    func testShoreRotationAnnouncedPromotedAndTrustedAfterCrashes() async throws {
        let (fleet, first) = try await fleet(["aurora", "borealis", "cygnus"])
        var server = first
        defer { server.stop() }
        func restart() throws {
            server.stop()
            server = try fleet.serve()
        }
        var cygnusLeftBehind = false
        for (round, step) in Self.shorePromotionSteps.enumerated() {
            let old = try identity(fleet.shore)
            if step == nil {
                let crashed = try rotate(fleet.shore, crashAt: KeyRotationStep.writePending.rawValue)
                XCTAssertEqual(crashed.status, 128 + SIGKILL, crashed.output + crashed.error)
                let again = try rotate(fleet.shore)
                XCTAssertTrue(again.output.contains("already written"), again.output + again.error)
            } else {
                let started = try rotate(fleet.shore)
                XCTAssertEqual(started.status, 0, started.output + started.error)
            }
            let next = try PublicIdentity.load(path: fleet.shore.configuration.keysDirectory! + "/next/identity.pub")
            try restart()
            // Aurora and borealis sync while the next keys are announced: they keep the endorsed identity.
            for vessel in fleet.vessels.prefix(2) {
                // The announcement rides on token answers: the vessel's token runs out (as it does
                // within 15 minutes online) and the next sync authenticates.
                try Fixtures.runScript("UPDATE fleetsync.sync_state SET token_expires_at = now() WHERE peer = 'shore'", url: vessel.url)
                try await assertSyncsBothWays(fleet, vessel, "round\(round)-announced", server: server)
                let trusted = try await trustedShore(vessel)
                XCTAssertEqual(trusted, next.fingerprint, "\(vessel.id) trusts the announced next identity")
            }
            // Promotion, killed after `step` (the next serve start finishes it).
            let promoted = try rotate(fleet.shore, ["--promote"], crashAt: step?.rawValue)
            XCTAssertEqual(promoted.status, step == nil ? 0 : 128 + SIGKILL, promoted.output + promoted.error)
            try restart()
            XCTAssertEqual(try identity(fleet.shore).fingerprint, next.fingerprint, "the promotion went through after \(step?.rawValue ?? "no crash")")
            XCTAssertNotEqual(next.fingerprint, old.fingerprint)
            let forgot = try rotate(fleet.shore, ["--forget-previous"])
            XCTAssertEqual(forgot.status, 0, forgot.output + forgot.error)
            try restart()
            // Offline during promotion and forgetting, they return trusting the new key.
            for vessel in fleet.vessels.prefix(2) {
                try await assertSyncsBothWays(fleet, vessel, "round\(round)-promoted", server: server)
            }
            if !cygnusLeftBehind {
                // Cygnus never saw the announcement: sealed to a key the shore no longer holds.
                let refused = try fleet.sync(fleet.vessels[2])
                XCTAssertNotEqual(refused.status, 0)
                XCTAssertTrue((refused.output + refused.error).contains("pins another or an older identity"), refused.output + refused.error)
                cygnusLeftBehind = true
            }
        }
    }
}

extension KeyRotationMachine.Observed {
    func with(_ change: (inout Self) -> Void) -> Self {
        var copy = self
        change(&copy)
        return copy
    }
}
