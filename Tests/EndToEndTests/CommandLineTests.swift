import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest

/// The `fleetsync` binary as an operator runs it.
final class CommandLineTests: DatabaseTestCase {
    /// A vessel database initialized with `fleetsync init`: its configuration file, a session and
    /// an applier to feed it changes from the shore.
    func initializedVessel() async throws -> (config: String, db: DatabaseSession, applier: Applier) {
        let url = try await Fixtures.database()
        let config = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "vessel", url: url))
        XCTAssertEqual(try FleetSyncBinary.run(["init", "--config", config]).status, 0)
        let configuration = try ConfigurationLoader.load(text: try String(contentsOfFile: config, encoding: .utf8))
        let db = try await connect(url)
        return (config, db, try await makeApplier(configuration, db))
    }

    func testInitTwiceThenCaptureAndUninstall() async throws {
        let url = try await Fixtures.database()
        let config = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "vessel", url: url))
        let first = try FleetSyncBinary.run(["init", "--config", config])
        XCTAssertEqual(first.status, 0, first.error)
        XCTAssertTrue(first.output.contains("migrated from version 0 to \(Migration.latestVersion)"), first.output)
        let second = try FleetSyncBinary.run(["init", "--config", config])
        XCTAssertEqual(second.status, 0, second.error)
        XCTAssertTrue(second.output.contains("nothing to migrate"), second.output)
        let db = try await connect(url)
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        let events: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(events, 1)
        let refused = try FleetSyncBinary.run(["uninstall", "--config", config])
        XCTAssertNotEqual(refused.status, 0, "uninstall needs --yes")
        let removed = try FleetSyncBinary.run(["uninstall", "--config", config, "--yes"])
        XCTAssertEqual(removed.status, 0, removed.error)
        let name: String = try await db.scalar("SELECT name FROM vessel")
        XCTAssertEqual(name, "MV Aurora")
    }

    func testBadConfigurationGivesClearErrorsAndLeavesDatabaseUntouched() async throws {
        let url = try await Fixtures.database()
        let extra = "\n[[table]]\nname = \"voyage\"\nroute = \"multicast\"\n"
        let config = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "vessel", url: url, extra: extra))
        let result = try FleetSyncBinary.run(["init", "--config", config])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.error.contains("table[4].route: \"multicast\" is not a known routing rule"), result.error)
        let missing = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "vessel", url: url, extra: "\n[[table]]\nname = \"voyage\"\nroute = \"broadcast\"\n"))
        let second = try FleetSyncBinary.run(["init", "--config", missing])
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.error.contains("public.voyage does not exist"), second.error)
        let db = try await connect(url)
        let untouched: Bool = try await db.scalar("SELECT to_regnamespace('fleetsync') IS NULL")
        XCTAssertTrue(untouched)
        let nofile = try FleetSyncBinary.run(["init", "--config", "/nonexistent.toml"])
        XCTAssertTrue(nofile.error.contains("no such file"), nofile.error)
    }

    func testDeadLetterAndQuarantineCommands() async throws {
        let (config, db, applier) = try await initializedVessel()
        let clock = FieldClock(counter: 3, node: "shore")
        try await applier.apply([
            ChangeEvent(table: "certificate_type", rowID: UUID(), fields: ["code": .init(value: .string("X"), clock: clock), "title": .init(value: .string("t"), clock: clock), "validity_months": .init(value: .number("0"), clock: clock)], origin: "shore"),
            ChangeEvent(table: "vessel", rowID: UUID(), fields: ["code": .init(value: .string("v"), clock: clock), "name": .init(value: .string("n"), clock: clock), "ice_class": .init(value: .string("1A"), clock: clock)], origin: "shore"),
        ], from: "shore")
        let list = try FleetSyncBinary.run(["dlq", "list", "--config", config])
        XCTAssertEqual(list.status, 0, list.error)
        XCTAssertTrue(list.output.contains("certificate_type") && list.output.contains("23514") && list.output.contains("certificate_type_validity_months_check"), list.output)
        let retry = try FleetSyncBinary.run(["dlq", "retry", "--config", config, "--all"])
        XCTAssertEqual(retry.status, 1, "it fails again until the cause is fixed")
        XCTAssertTrue(retry.output.contains("1 failed again"), retry.output)
        let none = try FleetSyncBinary.run(["dlq", "discard", "--config", config])
        XCTAssertNotEqual(none.status, 0, "discard needs --id or --all")
        let discard = try FleetSyncBinary.run(["dlq", "discard", "--config", config, "--all"])
        XCTAssertTrue(discard.output.contains("discarded 1"), discard.output)

        let quarantine = try FleetSyncBinary.run(["quarantine", "list", "--config", config])
        XCTAssertTrue(quarantine.output.contains("ice_class") && quarantine.output.contains("column not present on this node"), quarantine.output)
        try await db.execute("ALTER TABLE vessel ADD COLUMN ice_class text")
        let drain = try FleetSyncBinary.run(["quarantine", "drain", "--config", config])
        XCTAssertEqual(drain.status, 0, drain.error)
        XCTAssertTrue(drain.output.contains("drained 1 value(s); 0 remain"), drain.output)
        let ice: String = try await db.scalar("SELECT ice_class FROM vessel")
        XCTAssertEqual(ice, "1A")
    }

    func testCommandsOfLaterIssuesSaySoAndFail() throws {
        for arguments in [["demo"]] {
            let result = try FleetSyncBinary.run(arguments)
            XCTAssertNotEqual(result.status, 0)
            XCTAssertTrue(result.error.contains("not built yet"), "\(arguments): \(result.error)")
        }
    }

    func testVesselBootDrainsTheQuarantine() async throws {
        let (config, db, applier) = try await initializedVessel()
        let clock = FieldClock(counter: 3, node: "shore")
        try await applier.apply([
            ChangeEvent(table: "vessel", rowID: UUID(), fields: ["code": .init(value: .string("v"), clock: clock), "name": .init(value: .string("n"), clock: clock), "call_sign": .init(value: .string("CS1"), clock: clock)], origin: "shore"),
        ], from: "shore")
        try await db.execute("ALTER TABLE vessel ADD COLUMN call_sign text")
        // The next boot (here `sync --once`, with no shore to reach) applies the quarantined value.
        let boot = try FleetSyncBinary.run(["sync", "--once", "--config", config])
        XCTAssertNotEqual(boot.status, 0, "there is no shore")
        let callSign: String = try await db.scalar("SELECT call_sign FROM vessel")
        XCTAssertEqual(callSign, "CS1")
        let left: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.schema_quarantine")
        XCTAssertEqual(left, 0)
    }
}
