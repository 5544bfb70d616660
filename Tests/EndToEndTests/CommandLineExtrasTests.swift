import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest

/// Smaller operator-facing promises of issue 15: node ids as the routing column holds them,
/// `init` against a database it cannot reach, and `uninstall`'s own usage.
final class CommandLineExtrasTests: DatabaseTestCase {
    /// A vessel id in upper case, as an IMO number: kept as written everywhere (configuration,
    /// enrollment, routing, clocks), and distinct from the same letters in lower case.
    func testVesselIdKeepsItsCaseEndToEnd() async throws {
        let id = "IMO9321483"
        XCTAssertTrue(Identifiers.isValidNodeID(id))
        let fleet = try await Fleet.make(vessels: [id])
        let server = try fleet.serve()
        defer { server.stop() }
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('IMO9321483', 'MV Aurora'), ('imo9321483', 'MV Other');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('IMO9321483', 'Ana'), ('imo9321483', 'Bo');
            """, url: fleet.shore.url)
        let first = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(first.status, 0, first.error)
        let vessel = try await connect(fleet.vessels[0].url)
        let crew: String = try await vessel.scalar("SELECT string_agg(full_name || '@' || vessel_code, ',') FROM seafarer")
        XCTAssertEqual(crew, "Ana@IMO9321483", "only its own partition, matched with its case")

        try await vessel.execute("UPDATE seafarer SET contact_number = '+30 1'")
        let clock: String = try await vessel.scalar("SELECT sync_clock->'contact_number'->>1 FROM seafarer")
        XCTAssertEqual(clock, id)
        let second = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(second.status, 0, second.error)
        let shore = try await connect(fleet.shore.url)
        let contact: String = try await shore.scalar("SELECT contact_number || ' by ' || (sync_clock->'contact_number'->>1) FROM seafarer WHERE full_name = 'Ana'")
        XCTAssertEqual(contact, "+30 1 by IMO9321483")
        let rejected: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.telemetry WHERE kind = 'rejected_change'")
        XCTAssertEqual(rejected, 0)
        let status = try FleetSyncBinary.run(["status", "--config", fleet.shore.configPath])
        XCTAssertTrue(status.output.contains("  IMO9321483: last contact"), status.output)
    }

    /// `fleetsync sync` logs at the level of `FLEETSYNC_LOG_LEVEL`, as every other command does
    /// (it was fixed at warning), and at warning without it.
    func testSyncLogsAtTheLevelTheEnvironmentAsks() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let server = try fleet.serve()
        defer { server.stop() }
        let arguments = [FleetSyncBinary.path, "sync", "--once", "--config", fleet.vessels[0].configPath]
        var environment = ProcessInfo.processInfo.environment
        environment["FLEETSYNC_LOG_LEVEL"] = nil
        let quiet = try Shell.runCapturing(arguments, environment: environment)
        XCTAssertEqual(quiet.status, 0, quiet.error)
        XCTAssertFalse(quiet.error.contains("exchange done"), quiet.error)
        environment["FLEETSYNC_LOG_LEVEL"] = "info"
        let told = try Shell.runCapturing(arguments, environment: environment)
        XCTAssertEqual(told.status, 0, told.error)
        XCTAssertTrue(told.error.contains("exchange done"), "info lines on standard error: \(told.error)")
    }

    func testNodeIdsAreBoundedAndFreeOfSpaces() {
        for valid in ["IMO9321483", "aurora", "MV-Aurora_2", "Ñandú", "a.b/c"] { XCTAssertTrue(Identifiers.isValidNodeID(valid), valid) }
        let invalid = ["", "*", "MV Aurora", "tab\there", "line\n", String(repeating: "x", count: 64), "e\u{301}", "zero\u{200B}width"]
        for id in invalid { XCTAssertFalse(Identifiers.isValidNodeID(id), id.debugDescription) }
    }

    /// `init` against a server that does not listen, and against a database that does not exist.
    func testInitNamesTheDatabaseURLTheProblemAndTheFix() async throws {
        let port = try FreePort.find()
        let nowhere = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "shore", url: "postgres://postgres:secret@127.0.0.1:\(port)/fleet"))
        let refused = try FleetSyncBinary.run(["init", "--config", nowhere])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.error.contains("database.url (postgres://postgres:***@127.0.0.1:\(port)/fleet)"), refused.error)
        XCTAssertTrue(refused.error.contains("nothing accepts connections at 127.0.0.1:\(port)"), refused.error)
        XCTAssertTrue(refused.error.contains("Fix: start PostgreSQL there, or correct the host and port in database.url"), refused.error)
        XCTAssertFalse(refused.error.contains("secret"), "the password is not printed")

        let missingURL = try TestCluster.shared().url(database: "no_such_fleet")
        let missing = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "shore", url: missingURL))
        let result = try FleetSyncBinary.run(["init", "--config", missing])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.error.contains("database.url"), result.error)
        XCTAssertTrue(result.error.contains("database \"no_such_fleet\" does not exist"), result.error)
        XCTAssertTrue(result.error.contains("Fix: create it (createdb"), result.error)
    }

    func testUninstallWithoutYesPrintsItsOwnUsage() throws {
        let config = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "shore", url: "postgres://postgres@127.0.0.1:1/fleet"))
        let result = try FleetSyncBinary.run(["uninstall", "--config", config])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.error.contains("run again with --yes to confirm"), result.error)
        XCTAssertTrue(result.error.contains("Usage: fleetsync uninstall --config <config> [--yes]"), result.error)
        XCTAssertFalse(result.error.contains("fleetsync <subcommand>"), result.error)
    }
}
