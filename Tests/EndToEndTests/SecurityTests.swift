import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import FleetSyncVessel
import Foundation
import XCTest

/// Issue 17: every attack gets a clear error and changes nothing; every exchange in the fleet
/// tests (Fleet.make) is authenticated and sealed.
final class SecurityTests: DatabaseTestCase {
    var clients: [SealedClient] = []

    override func tearDown() async throws {
        for client in clients { await client.shutdown() }
        try await super.tearDown()
    }

    func client(_ node: FleetNode, _ fleet: Fleet, keys: NodeKeys? = nil) throws -> SealedClient {
        let client = try SealedClient(node, fleet: fleet, keys: keys)
        clients.append(client)
        return client
    }

    /// The shore's business rows, fleet queue and per-vessel state, as one text.
    func shoreState(_ fleet: Fleet) async throws -> String {
        let db = try await connect(fleet.shore.url)
        return try await db.scalar("""
            SELECT concat_ws(' | ',
              (SELECT string_agg(concat_ws(',', full_name, vessel_code, contact_number, notes, is_deleted), ';' ORDER BY full_name) FROM seafarer),
              (SELECT count(*) FROM fleetsync.outbox), (SELECT count(*) FROM fleetsync.capture_log),
              (SELECT string_agg(concat_ws(',', peer, acknowledged, max_clock, status), ';' ORDER BY peer) FROM fleetsync.sync_state))
            """)
    }

    /// A shore with Ana on the aurora and Bo on the borealis, both vessels synced once.
    func fleetWithCrew() async throws -> (Fleet, FleetSyncProcess) {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"])
        let server = try fleet.serve()
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A'), ('borealis', 'B');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana'), ('borealis', 'Bo');
            """, url: fleet.shore.url)
        for vessel in fleet.vessels {
            let result = try fleet.sync(vessel)
            XCTAssertEqual(result.status, 0, result.output + result.error + server.log)
        }
        return (fleet, server)
    }

    func rowID(_ url: String, _ name: String) async throws -> UUID {
        let db = try await connect(url)
        let text: String = try await db.scalar("SELECT id::text FROM seafarer WHERE full_name = '\(name)'")
        return UUID(uuidString: text)!
    }

    func change(_ row: UUID, _ column: String, _ value: String, by node: String, counter: Int64 = 1_000) -> ChangeEvent {
        ChangeEvent(table: "seafarer", rowID: row, fields: [column: FieldChange(value: .string(value), clock: FieldClock(counter: counter, node: node))],
                    origin: node, originPosition: 1)
    }

    func assertRefused(_ client: SealedClient, _ frame: [UInt8], binding: [UInt8] = [], _ expected: WireError.Code, contains text: String? = nil,
                       file: StaticString = #filePath, line: UInt = #line) async throws {
        let answer = try await client.transport.send(frame)
        do {
            _ = try client.openAnswer(answer, binding: binding)
            XCTFail("expected \(expected), the shore answered", file: file, line: line)
        } catch let error as WireError {
            XCTAssertEqual(error.code, expected, error.message, file: file, line: line)
            if let text { XCTAssertTrue(error.message.contains(text), error.message, file: file, line: line) }
        }
    }

    func testForgedIdentityAndOtherVesselsRowsAreRefusedAndChangeNothing() async throws {
        let (fleet, server) = try await fleetWithCrew()
        defer { server.stop() }
        let aurora = try client(fleet.vessels[0], fleet)
        let bo = try await rowID(fleet.shore.url, "Bo")
        let before = try await shoreState(fleet)
        let steal = ExchangeRequest(vesselID: "borealis", cursor: 0, events: [change(bo, "contact_number", "stolen", by: "borealis")], upTo: 1)
        // Unsealed, as version 1 vessels and curl would send it.
        do {
            _ = try MessageFraming.decodeResponse(try await aurora.transport.send(MessageFraming.encode(steal)))
            XCTFail("an unsealed request was answered")
        } catch let error as WireError {
            XCTAssertEqual(error.code, .unauthenticated)
            XCTAssertTrue(error.message.contains("only sealed exchanges"), error.message)
        }
        // Sealed, with no token, a made-up token, and aurora's token naming borealis.
        try await assertRefused(aurora, try aurora.seal(steal, token: [], headerVessel: "borealis").frame, .unauthenticated)
        try await assertRefused(aurora, try aurora.seal(steal, token: Array(repeating: 7, count: 48), headerVessel: "borealis").frame, .unauthenticated)
        let token = try await aurora.token()
        try await assertRefused(aurora, try aurora.seal(steal, token: token, headerVessel: "borealis").frame, .forbidden, contains: "token of vessel aurora")
        let sealed = try aurora.seal(steal, token: token)
        try await assertRefused(aurora, sealed.frame, binding: sealed.binding, .forbidden, contains: "names vessel borealis")
        let after = try await shoreState(fleet)
        XCTAssertEqual(after, before, "nothing changed on the shore")
        // With its own identity, aurora writing Bo's row (routed to the borealis): rejected,
        // counted, and aurora's answer holds nothing of the borealis.
        let response = try await aurora.exchange(ExchangeRequest(vesselID: "aurora", cursor: 0, events: [change(bo, "contact_number", "stolen", by: "aurora")], upTo: 1), token: token)
        XCTAssertFalse(response.events.contains { $0.rowID == bo }, "aurora never receives the borealis's rows")
        let db = try await connect(fleet.shore.url)
        let contact: String? = try await db.scalar("SELECT contact_number FROM seafarer WHERE full_name = 'Bo'")
        XCTAssertNil(contact, "the borealis's row is unchanged")
        let counted: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.security_event WHERE vessel = 'aurora' AND kind = 'rejected_changes'")
        XCTAssertEqual(counted, 1)
        let status = try FleetSyncBinary.run(["status", "--config", fleet.shore.configPath])
        XCTAssertTrue(status.output.contains("authentication: required"), status.output)
        // Aurora's refused request (naming the borealis in its payload) and its rejected change.
        XCTAssertTrue(status.output.contains("2 refused request"), status.output)
    }

    func testUnknownRevokedAndWrongKeyGetOneAnswerAndChallengesAreSingleUse() async throws {
        let (fleet, server) = try await fleetWithCrew()
        defer { server.stop() }
        let aurora = try client(fleet.vessels[0], fleet)
        let stranger = try NodeKeys.generate()
        func refusal(_ frame: [UInt8]) async throws -> WireError {
            do {
                _ = try aurora.openToken(try await aurora.transport.send(frame))
                XCTFail("a token was issued")
                return WireError(.internalError, "")
            } catch let error as WireError {
                return error
            }
        }
        let unknown = try await refusal(try aurora.tokenRequest(nonce: try await aurora.challenge(claiming: "nobody"), claiming: "nobody"))
        let wrongKey = try await refusal(try aurora.tokenRequest(nonce: try await aurora.challenge(), signer: stranger))
        let revoke = try FleetSyncBinary.run(["revoke", "--config", fleet.shore.configPath, "--vessel", "borealis"])
        XCTAssertEqual(revoke.status, 0, revoke.error)
        let borealis = try client(fleet.vessels[1], fleet)
        let revoked = try await refusal(try borealis.tokenRequest(nonce: try await borealis.challenge()))
        XCTAssertEqual(unknown, wrongKey)
        XCTAssertEqual(unknown, revoked)
        XCTAssertEqual(unknown.code, .unauthenticated)
        XCTAssertTrue(unknown.message.contains("authentication failed"), unknown.message)
        // A challenge answers once.
        let request = try aurora.tokenRequest(nonce: try await aurora.challenge())
        let first = try await aurora.transport.send(request)
        XCTAssertFalse(try aurora.openToken(first).isEmpty)
        let reused = try await refusal(request)
        XCTAssertTrue(reused.message.contains("already used"), reused.message)
        // The revoked vessel's daemon is refused at its next request, and nothing changes.
        let before = try await shoreState(fleet)
        try Fixtures.runScript("UPDATE seafarer SET contact_number = '+47 1' WHERE full_name = 'Bo';", url: fleet.vessels[1].url)
        let refused = try fleet.sync(fleet.vessels[1])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.error.contains("authentication failed"), refused.error)
        let after = try await shoreState(fleet)
        XCTAssertEqual(after, before)
        // Enrolled again, it syncs.
        let enroll = try FleetSyncBinary.run(["enroll", "--config", fleet.shore.configPath, "--vessel", "borealis", "--identity", fleet.vessels[1].configuration.keysDirectory! + "/identity.pub"])
        XCTAssertEqual(enroll.status, 0, enroll.error)
        let synced = try fleet.sync(fleet.vessels[1])
        XCTAssertEqual(synced.status, 0, synced.error)
        // An identity file that is not the vessel's is refused at enrollment.
        let wrong = try FleetSyncBinary.run(["enroll", "--config", fleet.shore.configPath, "--vessel", "borealis", "--identity", fleet.vessels[0].configuration.keysDirectory! + "/identity.pub"])
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.error.contains("not of vessel borealis"), wrong.error)
    }

    func testTamperedTruncatedOversizedMisaddressedAndReplayedMessagesAreRefused() async throws {
        let (fleet, server) = try await fleetWithCrew()
        defer { server.stop() }
        let aurora = try client(fleet.vessels[0], fleet)
        let ana = try await rowID(fleet.shore.url, "Ana")
        let token = try await aurora.token()
        let request = ExchangeRequest(vesselID: "aurora", cursor: 0, events: [change(ana, "contact_number", "+351 1", by: "aurora")], upTo: 1, clock: 2_000)
        let (frame, binding) = try aurora.seal(request, token: token)
        let before = try await shoreState(fleet)
        // One bit flipped in each region: frame header, vessel id, exchange id, key id,
        // encapsulated key, ciphertext, tag.
        let idLength = 1 + "aurora".utf8.count
        let regions: [(String, Int)] = [
            ("magic", 0), ("version", 4), ("kind", 5), ("length", 10), ("vessel id", 16 + 2), ("exchange id", 16 + idLength + 3),
            ("key id", 16 + idLength + 16 + 2), ("encapsulated key", 16 + idLength + 24 + 500), ("ciphertext", frame.count - 40), ("tag", frame.count - 1),
        ]
        for (region, offset) in regions {
            var bad = frame
            bad[offset] ^= 0x04
            let answer = try await aurora.transport.send(bad)
            let code = aurora.code(answer, binding: binding)
            XCTAssertNotNil(code, "a bit flipped in the \(region) was accepted")
        }
        for cut in [1, 17, frame.count - 40] {
            let code = aurora.code(try await aurora.transport.send(Array(frame.dropLast(cut))), binding: binding)
            XCTAssertEqual(code, .truncated, "cut by \(cut)")
        }
        var oversized = frame
        oversized[8...11] = [0x7F, 0xFF, 0xFF, 0xFF]
        let oversizedAnswer = try await aurora.transport.send(oversized)
        XCTAssertEqual(aurora.code(oversizedAnswer), .tooLarge)
        // Sealed to the vessel's own key instead of the shore's.
        let misaddressed = try aurora.seal(request, token: token, to: aurora.keys.sealing.publicKey.rawRepresentation)
        try await assertRefused(aurora, misaddressed.frame, binding: misaddressed.binding, .sealBroken, contains: "not to this node's sealing key")
        let after = try await shoreState(fleet)
        XCTAssertEqual(after, before, "no damaged message changed anything")
        // The message itself is good; sent again, it is a replay.
        let response = try aurora.openAnswer(try await aurora.transport.send(frame), binding: binding)
        XCTAssertEqual(response.acknowledged, 1)
        let applied = try await shoreState(fleet)
        XCTAssertTrue(applied.contains("+351 1"), applied)
        try await assertRefused(aurora, frame, binding: binding, .replayed, contains: "already received")
        let replayed = try await shoreState(fleet)
        XCTAssertEqual(replayed, applied, "the replay changed nothing")
        // A retry of the same content under a new exchange id is answered (idempotent).
        var retry = request
        retry.exchangeID = UUID()
        let retried = try await aurora.exchange(retry, token: token)
        XCTAssertEqual(retried.acknowledged, 1)
        // An answer forged by anyone but the shore (sealed to the vessel's public key, without the
        // request's binding) does not open.
        let forged = try Sealing.seal(MessageFraming.encode(ExchangeResponse(shore: "shore", acknowledged: 0, events: [], cursor: 0, more: false)),
                                      vessel: "aurora", exchangeID: request.exchangeID, direction: .shoreToVessel, to: aurora.keys.sealing.publicKey.rawRepresentation)
        XCTAssertThrowsError(try aurora.openAnswer(MessageFraming.frameRaw(.sealedResponse, body: forged.body), binding: binding)) {
            XCTAssertEqual(($0 as? WireError)?.code, .sealBroken)
        }
    }

    func testExpiredOrForgedTokensAndOversizedStatusAreRefusedAndTheVesselRenewsItsToken() async throws {
        let (fleet, server) = try await fleetWithCrew()
        defer { server.stop() }
        let aurora = try client(fleet.vessels[0], fleet)
        let ana = try await rowID(fleet.shore.url, "Ana")
        let shore = try await connect(fleet.shore.url)
        let secret: Data = try await shore.scalar("SELECT secret FROM fleetsync.auth_secret WHERE id = 1")
        let now = Int64(Date().timeIntervalSince1970)
        let expired = AccessToken(vessel: "aurora", issuedAt: now - AccessToken.lifetimeSeconds - 5).encoded(secret: Array(secret))
        let otherShore = AccessToken(vessel: "aurora", issuedAt: now).encoded(secret: Array(repeating: 1, count: 32))
        let request = ExchangeRequest(vesselID: "aurora", cursor: 0, events: [change(ana, "contact_number", "+351 2", by: "aurora")], upTo: 1)
        let before = try await shoreState(fleet)
        try await assertRefused(aurora, try aurora.seal(request, token: expired).frame, .tokenExpired, contains: "expired")
        var again = request
        again.exchangeID = UUID()
        try await assertRefused(aurora, try aurora.seal(again, token: otherShore).frame, .unauthenticated, contains: "does not verify")
        var status = again
        status.exchangeID = UUID()
        status.status = Dictionary(uniqueKeysWithValues: (0..<100).map { ("k\($0)", JSONValue.string("v")) })
        let token = try await aurora.token()
        let sealed = try aurora.seal(status, token: token)
        try await assertRefused(aurora, sealed.frame, binding: sealed.binding, .tooLarge, contains: "status object is refused")
        var huge = again
        huge.exchangeID = UUID()
        huge.status = ["note": .string(String(repeating: "x", count: 25_000))]
        let sealedHuge = try aurora.seal(huge, token: token)
        try await assertRefused(aurora, sealedHuge.frame, binding: sealedHuge.binding, .tooLarge)
        let after = try await shoreState(fleet)
        XCTAssertEqual(after, before)
        // A vessel holding an expired token (back from weeks offline) renews it by itself.
        let vessel = try await connect(fleet.vessels[0].url)
        try await vessel.execute("UPDATE fleetsync.sync_state SET token = '\\x\(expired.map { String(format: "%02x", $0) }.joined())', token_expires_at = now() + interval '1 hour' WHERE peer = 'shore'")
        try Fixtures.runScript("UPDATE seafarer SET contact_number = '+351 3' WHERE full_name = 'Ana';", url: fleet.vessels[0].url)
        let result = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(result.status, 0, result.error)
        let contact: String? = try await shore.scalar("SELECT contact_number FROM seafarer WHERE full_name = 'Ana'")
        XCTAssertEqual(contact, "+351 3")
    }

    func testAPrivateKeyOthersCanReadStopsTheNode() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let vesselKey = fleet.vessels[0].configuration.keysDirectory! + "/identity.key"
        XCTAssertEqual(chmod(vesselKey, 0o644), 0)
        let sync = try fleet.sync(fleet.vessels[0])
        XCTAssertNotEqual(sync.status, 0)
        XCTAssertTrue(sync.error.contains("has mode 0644") && sync.error.contains("chmod 600 \(vesselKey)"), sync.error)
        let daemon = try FleetSyncBinary.run(["run", "--config", fleet.vessels[0].configPath])
        XCTAssertNotEqual(daemon.status, 0, "the daemon does not start")
        XCTAssertTrue(daemon.error.contains("has mode 0644"), daemon.error)
        let shoreKey = fleet.shore.configuration.keysDirectory! + "/sealing.key"
        XCTAssertEqual(chmod(shoreKey, 0o640), 0)
        let serve = try FleetSyncBinary.run(["serve", "--config", fleet.shore.configPath])
        XCTAssertNotEqual(serve.status, 0)
        XCTAssertTrue(serve.error.contains("has mode 0640"), serve.error)
        // keygen never replaces keys.
        let again = try FleetSyncBinary.run(["keygen", "--config", fleet.shore.configPath])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.error.contains("already exists"), again.error)
    }

    func testAnOlderProtocolVersionIsRefusedNamingBoth() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let server = try fleet.serve()
        defer { server.stop() }
        let aurora = try client(fleet.vessels[0], fleet)
        var old = MessageFraming.encode(ExchangeRequest(vesselID: "aurora", cursor: 0, events: [], upTo: 0))
        old[4] = 1
        let answer = try await aurora.transport.send(old)
        XCTAssertEqual(answer[4], 1, "the refusal is written in the sender's version, so that it can read it")
        var readable = answer
        readable[4] = WireCodec.version
        XCTAssertThrowsError(try SealedClient.check(readable)) {
            let error = $0 as? WireError
            XCTAssertEqual(error?.code, .unsupportedVersion)
            XCTAssertTrue(error?.message.contains("protocol version 1, this node speaks version 2") == true, "\(String(describing: error))")
        }
    }
}
