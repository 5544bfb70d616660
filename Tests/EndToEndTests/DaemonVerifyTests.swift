import FleetSyncCore
import FleetSyncTestSupport
import FleetSyncVessel
import Foundation
import XCTest

/// Issue 18: the vessel daemon verifies its partition by itself, after every catch-up from table
/// state and on `verify_interval_seconds`, repairs if `verify_repair`, and the result shows in
/// the vessel's status and, reported with its exchanges, in the shore's.
final class DaemonVerifyTests: DatabaseTestCase {
    /// The vessel's configuration with the daemon's verify settings replaced.
    func daemonConfiguration(_ vessel: FleetNode, verifyEvery seconds: Int, repair: Bool, interval: Int = 1) throws -> String {
        let text = try String(contentsOfFile: vessel.configPath, encoding: .utf8)
            .replacingOccurrences(of: "interval_seconds = 30", with: "interval_seconds = \(interval)")
            .replacingOccurrences(of: "verify_interval_seconds = 86400", with: "verify_interval_seconds = \(seconds)")
            .replacingOccurrences(of: "verify_repair = true", with: "verify_repair = \(repair)")
        XCTAssertTrue(text.contains("verify_interval_seconds = \(seconds)") && text.contains("verify_repair = \(repair)"), "the example sets both keys")
        return try FleetSyncBinary.writeConfiguration(text)
    }

    func vesselStatus(_ vessel: FleetNode) throws -> [String: JSONValue] {
        let result = try FleetSyncBinary.run(["status", "--config", vessel.configPath, "--json"])
        return (try? JSONParser.parse(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))?.objectValue ?? [:]
    }

    /// Waits until the vessel's stored last verify satisfies `condition`; returns it.
    func waitForVerify(_ vessel: FleetNode, seconds: Double = 40, _ what: String, _ daemon: FleetSyncProcess,
                       _ condition: ([String: JSONValue]) -> Bool) async throws -> [String: JSONValue] {
        let deadline = Date().addingTimeInterval(seconds)
        var last: [String: JSONValue] = [:]
        while Date() < deadline {
            last = try vesselStatus(vessel)["last_verify"]?.objectValue ?? [:]
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(250))
        }
        XCTFail("no verify \(what) within \(Int(seconds)) s; last: \(JSONValue.object(last).serialized)\n\(daemon.log.suffix(3_000))")
        return last
    }

    /// Divergence written on the vessel with capture bypassed is found by the daemon's scheduled
    /// verify and repaired (verify_repair = true); the vessel's status and the shore's (the
    /// vessel reports its last verify) show it; the next scheduled verify finds nothing.
    func testTheDaemonVerifiesOnItsScheduleRepairsAndReportsTheResult() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], schema: try CatchUpTests.preexistingSchema(crew: 300))
        let server = try fleet.serve()
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        let vessel = try await connect(aurora.url)
        let ids: [UUID] = try await vessel.rows("SELECT id FROM seafarer ORDER BY md5(id::text) LIMIT 2").map { try $0.decode(UUID.self) }
        let certificate: UUID = try await vessel.scalar("SELECT id FROM certificate ORDER BY md5(id::text) LIMIT 1")
        try Fixtures.runScript("""
            SET session_replication_role = replica;
            UPDATE seafarer SET full_name = 'renamed behind capture' WHERE id = '\(ids[0])';
            UPDATE seafarer SET rank = 'Captain by hand' WHERE id = '\(ids[1])';
            DELETE FROM certificate WHERE id = '\(certificate)';
            """, url: aurora.url)
        let captured: Int64 = try await vessel.scalar("SELECT (SELECT count(*) FROM fleetsync.capture_log) + (SELECT count(*) FROM fleetsync.outbox)")
        XCTAssertEqual(captured, 0, "the divergence bypassed capture")

        let config = try daemonConfiguration(aurora, verifyEvery: 3, repair: true)
        let daemon = try FleetSyncProcess(["run", "--config", config], environment: ["FLEETSYNC_LOG_LEVEL": "info"])
        defer { daemon.stop() }
        let found = try await waitForVerify(aurora, "repairing 3 rows", daemon) { $0["differing"]?.int64Value == 3 }
        XCTAssertEqual(found["repaired"], .number("3"), JSONValue.object(found).serialized)
        XCTAssertEqual(found["reason"], .string("scheduled"))
        XCTAssertNotNil(found["at"]?.stringValue)
        XCTAssertNotNil(found["bytes"]?.int64Value)
        XCTAssertNotNil(found["round_trips"]?.int64Value)
        let name: String = try await vessel.scalar("SELECT full_name FROM seafarer WHERE id = '\(ids[0])'")
        XCTAssertNotEqual(name, "renamed behind capture", "the repair brought back the shore's value")
        let back: Int64 = try await vessel.scalar("SELECT count(*) FROM certificate WHERE id = '\(certificate)'")
        XCTAssertEqual(back, 1, "the repair brought back the deleted certificate")

        // The next scheduled verify finds the partitions equal.
        let clean = try await waitForVerify(aurora, "finding nothing", daemon) { $0["differing"]?.int64Value == 0 }
        XCTAssertEqual(clean["repaired"], .number("0"))
        let text = try FleetSyncBinary.run(["status", "--config", aurora.configPath]).output
        XCTAssertTrue(text.contains("last verify:") && text.contains("same as the shore") && text.contains("by the daemon (scheduled)"), text)

        // The vessel reports its last verify with its exchanges: the shore's status shows it.
        let deadline = Date().addingTimeInterval(20)
        var reported: [String: JSONValue] = [:]
        while Date() < deadline {
            let shoreStatus = try FleetSyncBinary.run(["status", "--config", fleet.shore.configPath, "--json"])
            let vessels = (try? JSONParser.parse(shoreStatus.output.trimmingCharacters(in: .whitespacesAndNewlines)))?.objectValue?["vessels"]?.arrayValue ?? []
            reported = vessels.first { $0.objectValue?["vessel"] == .string("aurora") }?.objectValue?["reported"]?.objectValue?["last_verify"]?.objectValue ?? [:]
            if reported["differing"] != nil { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        XCTAssertNotNil(reported["differing"]?.int64Value, "the shore's status shows aurora's last verify")
        XCTAssertNotNil(reported["at"]?.stringValue)
        XCTAssertNil(reported["differences"], "the report carries no row lists")
    }

    /// A catch-up from table state is followed by a verify, with the schedule off; the daemon
    /// does not repair when `verify_repair = false`, and says so in the stored result.
    func testACatchUpIsFollowedByAVerify() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], schema: try CatchUpTests.preexistingSchema(crew: 300))
        let server = try fleet.serve()
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        // A vessel never synced: its first exchange is a catch-up of its whole partition.
        let config = try daemonConfiguration(aurora, verifyEvery: 0, repair: false)
        let daemon = try FleetSyncProcess(["run", "--config", config], environment: ["FLEETSYNC_LOG_LEVEL": "info"])
        defer { daemon.stop() }
        let verified = try await waitForVerify(aurora, "after the catch-up", daemon) { $0["at"] != nil }
        XCTAssertEqual(verified["reason"], .string("after_catch_up"), JSONValue.object(verified).serialized)
        XCTAssertEqual(verified["differing"], .number("0"), "the catch-up brought the whole partition")
        XCTAssertEqual(verified["repair"], .bool(false))
        let catchUp = try vesselStatus(aurora)["catch_up"]?.objectValue
        XCTAssertEqual(catchUp?["done"], .bool(true))
        XCTAssertTrue(daemon.log.contains("after_catch_up"), daemon.log)
    }

    /// A vessel restored from a backup: rows written after the backup reached the shore, with
    /// the vessel as their origin, so no exchange sends them back. The daemon detects the restore
    /// (the shore knows clocks of the vessel above its own), verifies with the schedule off, and
    /// the repair brings those rows back.
    func testTheDaemonVerifiesAfterADetectedRestoreAndBringsBackWhatTheRestoreUndid() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], schema: try CatchUpTests.preexistingSchema(crew: 300))
        let server = try fleet.serve()
        defer { server.stop() }
        let aurora = fleet.vessels[0]
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        // The backup: a copy of the vessel's database as it is now.
        let name = String(aurora.url.split(separator: "/").last!)
        try Fixtures.runScript("CREATE DATABASE \(name)_backup TEMPLATE \(name);", url: aurora.cluster!.url(database: "postgres"))
        let someone: UUID = try await connect(aurora.url).scalar("SELECT id FROM seafarer ORDER BY id LIMIT 1")
        try Fixtures.runScript("""
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'signed on after the backup');
            UPDATE seafarer SET contact_number = '+47 after the backup' WHERE id = '\(someone)';
            """, url: aurora.url)
        XCTAssertEqual(try fleet.sync(aurora).status, 0)

        // The vessel's database is restored from the backup; the daemon runs against it.
        let restoredURL = aurora.cluster!.url(database: name + "_backup")
        let text = try String(contentsOfFile: try daemonConfiguration(aurora, verifyEvery: 0, repair: true), encoding: .utf8)
            .replacingOccurrences(of: aurora.url, with: restoredURL)
        let config = try FleetSyncBinary.writeConfiguration(text)
        let restored = try await connect(restoredURL)
        let before: Int64 = try await restored.scalar("SELECT count(*) FROM seafarer WHERE full_name = 'signed on after the backup'")
        XCTAssertEqual(before, 0, "the restore undid the row")
        let daemon = try FleetSyncProcess(["run", "--config", config], environment: ["FLEETSYNC_LOG_LEVEL": "info"])
        defer { daemon.stop() }
        let deadline = Date().addingTimeInterval(40)
        var verify: [String: JSONValue] = [:]
        while Date() < deadline {
            let result = try FleetSyncBinary.run(["status", "--config", config, "--json"])
            verify = (try? JSONParser.parse(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))?.objectValue?["last_verify"]?.objectValue ?? [:]
            if verify["at"] != nil { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        XCTAssertEqual(verify["reason"], .string("after_restore"), JSONValue.object(verify).serialized + "\n" + daemon.log.suffix(3_000))
        XCTAssertEqual(verify["differing"], .number("2"), JSONValue.object(verify).serialized)
        XCTAssertEqual(verify["repaired"], .number("2"), JSONValue.object(verify).serialized)
        let back: Int64 = try await restored.scalar("SELECT count(*) FROM seafarer WHERE full_name = 'signed on after the backup'")
        XCTAssertEqual(back, 1, "the repair brought back the row the restore undid")
        let contact: String? = try await restored.scalar("SELECT contact_number FROM seafarer WHERE id = '\(someone)'")
        XCTAssertEqual(contact, "+47 after the backup", "and the value")
    }

    /// The schedule as a value: catch-ups and restores make a verify owed, the interval counts
    /// from the last verify, a vessel never verified waits an hour, failures retry later.
    func testVerifyScheduleTransitions() {
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        var s = VerifySchedule(intervalSeconds: 86_400, last: nil, started: t0)
        XCTAssertNil(s.due(at: t0.addingTimeInterval(10)), "never verified: not at once")
        XCTAssertEqual(s.due(at: t0.addingTimeInterval(3_600)), .schedule, "never verified: an hour after start")
        s.exchanged(caughtUp: true, restored: false)
        XCTAssertEqual(s.due(at: t0.addingTimeInterval(1)), .catchUp)
        s.ran(at: t0.addingTimeInterval(2), succeeded: false)
        XCTAssertNil(s.due(at: t0.addingTimeInterval(60)), "a failed verify retries after a pause")
        XCTAssertEqual(s.due(at: t0.addingTimeInterval(400)), .catchUp, "and stays owed")
        s.ran(at: t0.addingTimeInterval(400), succeeded: true)
        XCTAssertNil(s.due(at: t0.addingTimeInterval(4_000)))
        XCTAssertEqual(s.due(at: t0.addingTimeInterval(400 + 86_400)), .schedule)
        s.exchanged(caughtUp: false, restored: true)
        XCTAssertEqual(s.due(at: t0.addingTimeInterval(500)), .restore)
        var off = VerifySchedule(intervalSeconds: 0, last: t0, started: t0)
        XCTAssertNil(off.due(at: t0.addingTimeInterval(1e9)), "0 turns the schedule off")
        XCTAssertNil(off.secondsUntilDue(at: t0))
        off.exchanged(caughtUp: true, restored: false)
        XCTAssertEqual(off.due(at: t0), .catchUp, "a catch-up is verified even with the schedule off")
    }
}
