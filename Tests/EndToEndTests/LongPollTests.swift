import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import Foundation
import XCTest

/// Issue 19, prompt delivery shore → vessel: an idle daemon holds one exchange open (a long poll)
/// that the shore answers as soon as something arrives for that vessel; waiting vessels hold no
/// database connection, their number is bounded, and the shore keeps serving everyone else.
final class LongPollTests: DatabaseTestCase {
    func testShoreChangesReachAnIdleDaemonAtOnceUnlessLongPollIsOff() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let server = try fleet.serve()
        defer { server.stop() }
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A');", url: fleet.shore.url)
        let aurora = fleet.vessels[0]
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        let local = try await connect(aurora.url)
        func arrives(_ name: String, within seconds: Double) async throws -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let n: Int64 = try await local.scalar("SELECT count(*) FROM seafarer WHERE full_name = '\(name)'")
                if n > 0 { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return false
        }
        // An interval of an hour: only the long poll can bring the shore's change in seconds.
        let base = try String(contentsOfFile: aurora.configPath, encoding: .utf8).replacingOccurrences(of: "interval_seconds = 30", with: "interval_seconds = 3600")
        XCTAssertTrue(base.contains("long_poll = true"), "the example configuration turns the long poll on")
        var daemon = try FleetSyncProcess(["run", "--config", try FleetSyncBinary.writeConfiguration(base)], environment: ["FLEETSYNC_LOG_LEVEL": "info"])
        try daemon.waitFor("exchange done")
        try await Task.sleep(for: .milliseconds(1_000))
        var start = Date()
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Prompt');", url: fleet.shore.url)
        let prompt = try await arrives("Prompt", within: 10)
        XCTAssertTrue(prompt, "the shore answered the waiting exchange when the change was made")
        print("a shore change reached the idle vessel in \(Date().timeIntervalSince(start)) s (interval 3600 s)")
        // A local change still goes at once: it ends the long poll.
        start = Date()
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'FromSea');", url: aurora.url)
        let shore = try await connect(fleet.shore.url)
        var reached = false
        while Date().timeIntervalSince(start) < 10 && !reached {
            reached = try await shore.scalar("SELECT count(*) FROM seafarer WHERE full_name = 'FromSea'") as Int64 > 0
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertTrue(reached, "a local commit ended the long poll and was sent")
        daemon.stop()

        // Off: the vessel polls on its interval, and the shore's change waits for it.
        daemon = try FleetSyncProcess(["run", "--config", try FleetSyncBinary.writeConfiguration(base.replacingOccurrences(of: "long_poll = true", with: "long_poll = false"))],
                                      environment: ["FLEETSYNC_LOG_LEVEL": "info"])
        defer { daemon.stop() }
        try daemon.waitFor("exchange done")
        try await Task.sleep(for: .milliseconds(1_000))
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Later');", url: fleet.shore.url)
        let early = try await arrives("Later", within: 4)
        XCTAssertFalse(early, "without long_poll the change waits for the interval")
    }

    func testWaitingVesselsHoldNoConnectionAreBoundedAndEveryoneElseIsServed() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        // Two database connections for the whole server, at most four waiting vessels.
        let text = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8)
            .replacingOccurrences(of: "[shore]\n", with: "[shore]\ndatabase_connections = 2\n")
            .replacingOccurrences(of: "long_poll_max_waiters = 10000", with: "long_poll_max_waiters = 4")
            .replacingOccurrences(of: "long_poll_max_seconds = 30", with: "long_poll_max_seconds = 20")
        XCTAssertTrue(text.contains("long_poll_max_waiters = 4"))
        try text.write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        let server = try fleet.serve()
        defer { server.stop() }
        let shoreIdentity = try PublicIdentity.load(path: fleet.shore.configuration.keysDirectory! + "/identity.pub")
        let names = (1...6).map { "probe\($0)" }
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A');" + names.map { "INSERT INTO vessel (code, name) VALUES ('\($0)', '\($0)');" }.joined(), url: fleet.shore.url)
        // Simulated vessels: enrolled keys, real sealed requests.
        var clients: [(client: SealedClient, token: [UInt8], cursor: Int64)] = []
        for name in names {
            let keys = try NodeKeys.generate()
            let directory = NSTemporaryDirectory() + "fleetsync-longpoll-\(name)-\(UUID().uuidString)"
            try keys.write(to: directory, node: name, role: "vessel")
            let enrolled = try FleetSyncBinary.run(["enroll", "--config", fleet.shore.configPath, "--vessel", name, "--identity", directory + "/identity.pub"])
            XCTAssertEqual(enrolled.status, 0, enrolled.error)
            let client = SealedClient(vessel: name, keys: keys, shore: shoreIdentity,
                                      transport: try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)", timeout: .seconds(60)))
            let token = try await client.token()
            // Caught up first (a new vessel gets its partition from table state), to an empty queue.
            var cursor: Int64 = 0
            var echo: [String: JSONValue] = [:]
            for _ in 0..<20 {
                let answer = try await client.exchange(ExchangeRequest(vesselID: name, cursor: cursor, events: [], upTo: 0, status: echo), token: token)
                cursor = answer.cursor
                echo = answer.catchUp.map { ["catch_up": .object($0)] } ?? [:]
                if !answer.more { break }
            }
            clients.append((client, token, cursor))
        }
        let shore = try await connect(fleet.shore.url)
        // Six long polls: the first four wait, the last two are over the bound and answered at once.
        func poll(_ entry: (client: SealedClient, token: [UInt8], cursor: Int64)) -> Task<(vessel: String, seconds: Double, events: Int), any Error> {
            Task { () -> (vessel: String, seconds: Double, events: Int) in
                let started = Date()
                var request = ExchangeRequest(vesselID: entry.client.vessel, cursor: entry.cursor, events: [], upTo: 0)
                request.waitSeconds = 20
                let answer = try await entry.client.exchange(request, token: entry.token)
                return (entry.client.vessel, Date().timeIntervalSince(started), answer.events.count)
            }
        }
        var polls = clients.prefix(4).map(poll)
        try await Task.sleep(for: .milliseconds(1_500))
        polls += clients.suffix(2).map(poll)
        try await Task.sleep(for: .seconds(2))
        // While they wait: no connection is busy for them, and a real vessel syncs through the pool of two.
        let busy: Int64 = try await shore.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fleetsync serve' AND state <> 'idle'")
        XCTAssertLessThanOrEqual(busy, 1, "waiting vessels hold no database connection (at most the watcher's look is in flight)")
        let syncStart = Date()
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        XCTAssertLessThan(Date().timeIntervalSince(syncStart), 10, "a vessel that does not wait is served at once")
        // A change for one waiting vessel answers that one.
        let target = names[0]
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('\(target)', 'Ping');", url: fleet.shore.url)
        var results: [(vessel: String, seconds: Double, events: Int)] = []
        for poll in polls { results.append(try await poll.value) }
        let early = results.filter { $0.seconds < 2 }
        XCTAssertEqual(early.map(\.vessel), Array(names.suffix(2)), "the polls past long_poll_max_waiters were answered at once: \(results)")
        XCTAssertTrue(early.allSatisfy { $0.events == 0 })
        let pinged = results.first { $0.vessel == target }!
        XCTAssertEqual(pinged.events, 1, "the waiting vessel received the change")
        XCTAssertLessThan(pinged.seconds, 12, "answered when the change was made, not after its 20 s")
        let held = results.filter { $0.seconds >= 2 && $0.vessel != target }
        XCTAssertTrue(held.allSatisfy { $0.events == 0 && $0.seconds >= 15 }, "the others waited their time: \(held)")
        // One place per vessel: a second poll of the same vessel ends the first at once.
        let entry = clients[1]
        var request = ExchangeRequest(vesselID: entry.client.vessel, cursor: entry.cursor, events: [], upTo: 0)
        request.waitSeconds = 20
        let first = Task { () -> Double in
            let started = Date()
            _ = try await entry.client.exchange(request, token: entry.token)
            return Date().timeIntervalSince(started)
        }
        try await Task.sleep(for: .milliseconds(1_500))
        var second = request
        second.exchangeID = UUID()
        let secondTask = Task { try await entry.client.exchange(second, token: entry.token) }
        let firstSeconds = try await first.value
        XCTAssertLessThan(firstSeconds, 5, "the newer poll of the same vessel ended the older one")
        secondTask.cancel()
        for entry in clients { await entry.client.shutdown() }
    }
}
