import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest

/// Issue 19, prompt delivery: the vessel daemon exchanges as soon as a local change of a synced
/// table commits (it watches the capture log), not only on its interval; with `wake_on_change = false` it
/// keeps to its interval.
final class DaemonWakeTests: DatabaseTestCase {
    func testTheDaemonWakesOnALocalCommitUnlessConfiguredNotTo() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let server = try fleet.serve()
        defer { server.stop() }
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A');", url: fleet.shore.url)
        let aurora = fleet.vessels[0]
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        let shore = try await connect(fleet.shore.url)

        // An interval of an hour: only the wake can bring the change to the shore in seconds.
        let base = try String(contentsOfFile: aurora.configPath, encoding: .utf8).replacingOccurrences(of: "interval_seconds = 30", with: "interval_seconds = 3600")
        func arrives(_ name: String, within seconds: Double) async throws -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let n: Int64 = try await shore.scalar("SELECT count(*) FROM seafarer WHERE full_name = '\(name)'")
                if n > 0 { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return false
        }
        XCTAssertTrue(base.contains("wake_on_change = true"), "the example configuration turns the wake on")
        let waking = try FleetSyncBinary.writeConfiguration(base)
        var daemon = try FleetSyncProcess(["run", "--config", waking], environment: ["FLEETSYNC_LOG_LEVEL": "info"])
        try daemon.waitFor("exchange done")
        try await Task.sleep(for: .milliseconds(500))
        let start = Date()
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Woken');", url: aurora.url)
        let woken = try await arrives("Woken", within: 10)
        XCTAssertTrue(woken, "the commit woke the daemon")
        print("a local commit reached the shore in \(Date().timeIntervalSince(start)) s (interval 3600 s)")
        daemon.stop()

        // Off: the daemon keeps to its interval.
        let quiet = try FleetSyncBinary.writeConfiguration(base.replacingOccurrences(of: "wake_on_change = true", with: "wake_on_change = false"))
        daemon = try FleetSyncProcess(["run", "--config", quiet], environment: ["FLEETSYNC_LOG_LEVEL": "info"])
        defer { daemon.stop() }
        try daemon.waitFor("exchange done")
        try await Task.sleep(for: .milliseconds(500))
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Waits');", url: aurora.url)
        let early = try await arrives("Waits", within: 4)
        XCTAssertFalse(early, "without wake_on_change the change waits for the interval")
    }
}
