import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import Foundation
import XCTest

/// Issue 15, items 4, 5 and 9 and `fleetsync sync`'s report, end to end on real clusters and a
/// real `fleetsync serve`: one large value, one forged position, a restored vessel or a write made
/// just before a transfer loses nothing and stops nothing.
final class NothingLostTests: DatabaseTestCase {
    var transports: [HTTPExchangeTransport] = []

    override func tearDown() async throws {
        for transport in transports { await transport.shutdown() }
        transports.removeAll()
        try await super.tearDown()
    }

    /// The shore with two vessels and Ana on aurora, synced once.
    func fleetWithAna(limits: String = "") async throws -> (Fleet, FleetSyncProcess, UUID) {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], limits: limits)
        let server = try fleet.serve()
        let ana = UUID()
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A'), ('borealis', 'B');
            INSERT INTO seafarer (id, vessel_code, full_name) VALUES ('\(ana.lowercasedText)', 'aurora', 'Ana');
            """, url: fleet.shore.url)
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        return (fleet, server, ana)
    }

    func scalar(_ url: String, _ sql: String) async throws -> String {
        let db = try await connect(url)
        return try await db.scalar(sql)
    }

    func expect(_ url: String, _ sql: String, _ expected: String, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) async throws {
        let value = try await scalar(url, sql)
        XCTAssertEqual(value, expected, message, file: file, line: line)
    }

    /// Item 5: a request claiming positions up to 50 with one event makes the shore drop none of
    /// the vessel's real changes at lower positions.
    func testAClaimedPositionMakesTheShoreDropNothing() async throws {
        let (fleet, server, ana) = try await fleetWithAna()
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        for i in 0..<10 {
            try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'New \(i)');", url: aurora.url)
        }
        let transport = try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)")
        transports.append(transport)
        let cursor = Int64(try await scalar(aurora.url, "SELECT cursor::text FROM fleetsync.sync_state WHERE peer = 'shore'"))!
        let forged = ExchangeRequest(vesselID: "aurora", cursor: cursor, events: [
            ChangeEvent(table: "seafarer", rowID: ana, fields: ["notes": FieldChange(value: .string("forged"), clock: FieldClock(counter: 1, node: "aurora"))],
                        origin: "aurora", originPosition: 50),
        ], upTo: 50)
        // Sent sealed with aurora's own keys and token: the vessel itself claiming a position.
        let sealed = try SealedClient(aurora, fleet: fleet)
        defer { Task { await sealed.shutdown() } }
        _ = try await sealed.exchange(forged)
        let result = try fleet.sync(aurora)
        XCTAssertEqual(result.status, 0, result.output + result.error)
        let arrived = try await scalar(fleet.shore.url, "SELECT count(*)::text FROM seafarer WHERE full_name LIKE 'New %'")
        XCTAssertEqual(arrived, "10", "every change at a position below the claimed one reached the shore")
    }

    /// Item 5: a vessel restored from a backup (its clock and positions went back) resumes: its
    /// write after the restore stands on both sides, not the shore's copy of a write the restore
    /// undid, which carried a higher clock.
    func testAVesselRestoredFromABackupResumesWithoutLoss() async throws {
        let (fleet, server, _) = try await fleetWithAna()
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        let bin = try PostgresBinaries.locate().directory
        let dump = NSTemporaryDirectory() + "fleetsync-backup-\(UUID().uuidString).dump"
        try Shell.run([bin + "/pg_dump", "-Fc", "-f", dump, "-d", aurora.url])
        for i in 0..<5 {
            try Fixtures.runScript("UPDATE seafarer SET contact_number = '+1 after backup \(i)' WHERE full_name = 'Ana';", url: aurora.url)
        }
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        try await expect(fleet.shore.url, "SELECT contact_number FROM seafarer WHERE full_name = 'Ana'", "+1 after backup 4")

        try Shell.run([bin + "/pg_restore", "--clean", "--if-exists", "--single-transaction", "-d", aurora.url, dump])
        try Fixtures.runScript("UPDATE seafarer SET contact_number = '+2 after restore' WHERE full_name = 'Ana';", url: aurora.url)
        let result = try fleet.sync(aurora)
        XCTAssertEqual(result.status, 0, result.output + result.error)
        XCTAssertTrue(result.output.contains("re-clocked"), result.output)
        try await expect(fleet.shore.url, "SELECT contact_number FROM seafarer WHERE full_name = 'Ana'", "+2 after restore")
        try await expect(aurora.url, "SELECT contact_number FROM seafarer WHERE full_name = 'Ana'", "+2 after restore")
        let shoreClock = try await scalar(fleet.shore.url, "SELECT sync_clock->>'contact_number' FROM seafarer WHERE full_name = 'Ana'")
        let vesselClock = try await scalar(aurora.url, "SELECT sync_clock->>'contact_number' FROM seafarer WHERE full_name = 'Ana'")
        XCTAssertEqual(shoreClock, vesselClock, "both sides hold the same clock for the field")
    }

    /// Item 9: a vessel's write to a field it owns, made before the shore moved the row to another
    /// vessel (the vessel had not seen the transfer), applies on the shore and reaches the new vessel.
    func testAWriteMadeBeforeATransferIsNotLost() async throws {
        let (fleet, server, _) = try await fleetWithAna()
        defer { server.stop() }
        let (aurora, borealis) = (fleet.vessels[0], fleet.vessels[1])
        try Fixtures.runScript("UPDATE seafarer SET contact_number = '+9 before transfer' WHERE full_name = 'Ana';", url: aurora.url)
        try Fixtures.runScript("UPDATE seafarer SET vessel_code = 'borealis' WHERE full_name = 'Ana';", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        XCTAssertEqual(try fleet.sync(borealis).status, 0)
        try await expect(fleet.shore.url, "SELECT contact_number FROM seafarer WHERE full_name = 'Ana'", "+9 before transfer")
        try await expect(borealis.url, "SELECT contact_number FROM seafarer WHERE full_name = 'Ana'", "+9 before transfer")
        try await expect(aurora.url, "SELECT count(*)::text FROM seafarer", "0", "the old vessel let the row go")
        let rejected = try await scalar(fleet.shore.url, "SELECT count(*)::text FROM fleetsync.telemetry WHERE kind = 'rejected_change'")
        XCTAssertEqual(rejected, "0")
    }

    /// Item 4: a 5 MiB value (over the shore's former body limit of 4 MiB, five times the batch
    /// budget) travels alone, both ways; a change over `max_change_bytes` is refused in the
    /// writing transaction with a message naming the setting.
    func testAValueLargerThanABatchTravelsAloneBothWays() async throws {
        let (fleet, server, _) = try await fleetWithAna()
        defer { server.stop() }
        let (aurora, borealis) = (fleet.vessels[0], fleet.vessels[1])
        // md5 text does not compress away: the body really is over 5 MiB.
        let large = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 170000) i)"
        try Fixtures.runScript("UPDATE seafarer SET notes = \(large) WHERE full_name = 'Ana'; INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'After');", url: aurora.url)
        let up = try fleet.sync(aurora)
        XCTAssertEqual(up.status, 0, up.output + up.error)
        try await expect(fleet.shore.url, "SELECT length(notes)::text FROM seafarer WHERE full_name = 'Ana'", "5440000")
        try await expect(fleet.shore.url, "SELECT count(*)::text FROM seafarer WHERE full_name = 'After'", "1", "the change behind it went too")

        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name, notes) VALUES ('borealis', 'Big', \(large));", url: fleet.shore.url)
        let down = try fleet.sync(borealis)
        XCTAssertEqual(down.status, 0, down.output + down.error)
        try await expect(borealis.url, "SELECT length(notes)::text FROM seafarer WHERE full_name = 'Big'", "5440000")

        // Past the maximum (16 MiB by default), the write itself is refused.
        let huge = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 600000) i)"
        XCTAssertThrowsError(try Fixtures.runScript("UPDATE seafarer SET notes = \(huge) WHERE full_name = 'Ana';", url: aurora.url)) { error in
            XCTAssertTrue("\(error)".contains("max_change_bytes"), "\(error)")
        }
        try await expect(aurora.url, "SELECT length(notes)::text FROM seafarer WHERE full_name = 'Ana'", "5440000", "nothing changed")
    }

    /// Item 4: a vessel learns the shore's change limit from its answers; a change the shore can
    /// never take goes to the vessel's dead-letter queue (kept applied locally, reported) instead
    /// of failing every later exchange, and the changes behind it go on.
    func testAChangeTheShoreCannotTakeIsSetAsideAndTheRestGoesOn() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        // The shore takes changes of at most 64 KiB; the vessel lets its writers make 16 MiB.
        let shoreText = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8)
            .replacingOccurrences(of: "[limits]", with: "[limits]\nmax_change_bytes = 65536")
        try shoreText.write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        XCTAssertEqual(try FleetSyncBinary.run(["init", "--config", fleet.shore.configPath]).status, 0)
        let server = try fleet.serve()
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A'); INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana');", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        try Fixtures.runScript("""
            UPDATE seafarer SET notes = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 10000) i) WHERE full_name = 'Ana';
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Behind');
            """, url: aurora.url)
        let result = try fleet.sync(aurora)
        XCTAssertEqual(result.status, 4, result.output + result.error)
        try await expect(fleet.shore.url, "SELECT count(*)::text FROM seafarer WHERE full_name = 'Behind'", "1", "the change behind it went on")
        try await expect(aurora.url, "SELECT count(*)::text FROM fleetsync.dead_letter WHERE message LIKE '%exceeds what the shore accepts%'", "1")
        try await expect(aurora.url, "SELECT count(*)::text FROM fleetsync.outbox", "0")
        let again = try fleet.sync(aurora)
        XCTAssertEqual(again.status, 0, "nothing stuck: " + again.output + again.error)
    }

    /// `fleetsync sync` without --once runs to idle, prints a line per exchange, and exits 4 when
    /// a change was dead-lettered in the run.
    func testSyncReportsEachExchangeAndExitsFourWhenAChangeIsHeldBack() async throws {
        let (fleet, server, _) = try await fleetWithAna()
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        try Fixtures.runScript("ALTER TABLE seafarer ADD CONSTRAINT rank_short CHECK (length(rank) < 5);", url: aurora.url)
        try Fixtures.runScript("UPDATE seafarer SET rank = 'Chief Officer' WHERE full_name = 'Ana';", url: fleet.shore.url)
        let result = try FleetSyncBinary.run(["sync", "--config", aurora.configPath])
        XCTAssertEqual(result.status, 4, result.output + result.error)
        XCTAssertTrue(result.output.contains("exchange 1: sent 0, received 1, waiting 0, dead-lettered 1, bytes "), result.output)
        let again = try FleetSyncBinary.run(["sync", "--config", aurora.configPath])
        XCTAssertEqual(again.status, 0, "nothing new held back: " + again.output + again.error)
        XCTAssertTrue(again.output.contains("nothing pending"), again.output)
    }

    /// Shore `status` right after a clean `sync` shows nothing "not yet confirmed": the vessel's
    /// last exchange confirms what it received (issue 15, also expected). Failed before this change: after
    /// a sync that received 3 events, the shore still counts them (acknowledged = the cursor the
    /// vessel sent before applying its last batch).
    func testShoreStatusAfterACleanSyncShowsNothingUnconfirmed() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let server = try fleet.serve()
        defer { server.stop() }
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana');
            """, url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        let status = try FleetSyncBinary.run(["status", "--config", fleet.shore.configPath, "--json"])
        let vessels = try JSONParser.parse(status.output).objectValue?["vessels"]?.arrayValue ?? []
        XCTAssertEqual(vessels.first?.objectValue?["lag_events"], .number("0"), status.output)
    }
}
