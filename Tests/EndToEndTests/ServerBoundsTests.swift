import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import Foundation
import XCTest

/// Issue 16: `fleetsync serve` keeps its bounds whatever its clients and its database do: a
/// database that stops or blocks mid-exchange, many requests for one vessel at once, silent
/// clients, a declared length over the limit, a wrong method.
final class ServerBoundsTests: DatabaseTestCase {
    var transports: [HTTPExchangeTransport] = []

    override func tearDown() async throws {
        for transport in transports { await transport.shutdown() }
        transports.removeAll()
        try await super.tearDown()
    }

    /// A fleet whose shore has small bounds: 3 s per request, 2 s to shut down, 4 database
    /// connections, 2 s idle.
    func boundedFleet() async throws -> Fleet {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let text = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8).replacingOccurrences(of: "[shore]\n", with: """
            [shore]
            request_timeout_seconds = 3
            shutdown_timeout_seconds = 2
            database_connections = 4
            idle_timeout_seconds = 2

            """)
        try text.write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        return fleet
    }

    func health(_ fleet: Fleet) throws -> (String, TimeInterval) {
        let start = Date()
        let result = try Shell.runCapturing(["/usr/bin/curl", "-s", "-m", "1", "http://127.0.0.1:\(fleet.httpPort)/health"])
        return (result.output, Date().timeIntervalSince(start))
    }

    /// A database that blocks mid-exchange (a table locked by someone else) or stops: the vessel
    /// gets an answer within the request timeout, /health answers within a second, the server
    /// serves again once the database is back, and SIGTERM ends it within its shutdown timeout
    /// with a request still in flight.
    func testADatabaseThatBlocksOrStopsMidExchangeNeverHangsTheServer() async throws {
        let fleet = try await boundedFleet()
        let server = try fleet.serve()
        defer { server.stop(signal: SIGKILL) }
        let aurora = fleet.vessels[0]
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A');", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(aurora).status, 0)
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) SELECT 'aurora', 'crew ' || i FROM generate_series(1, 300) i;", url: aurora.url)

        // Someone holds the table: the exchange's apply waits; the answer comes at the deadline.
        let blocker = try await connect(fleet.shore.url)
        try await blocker.execute("BEGIN")
        try await blocker.execute("LOCK TABLE seafarer IN ACCESS EXCLUSIVE MODE")
        var start = Date()
        let blocked = try fleet.sync(aurora)
        XCTAssertNotEqual(blocked.status, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 3 + 3, "an answer within the request timeout")
        XCTAssertTrue((blocked.output + blocked.error).contains("busy") || (blocked.output + blocked.error).contains("could not finish"), blocked.output + blocked.error)
        print("blocked exchange answered after \(Date().timeIntervalSince(start)) s")
        let (ok, seconds) = try health(fleet)
        XCTAssertEqual(ok, "ok")
        XCTAssertLessThan(seconds, 1)
        try await blocker.execute("ROLLBACK")

        // The database stops during an exchange, then comes back.
        let sync = try FleetSyncProcess(["sync", "--config", aurora.configPath])
        usleep(150_000)
        try fleet.shore.cluster!.pause(mode: "fast")
        start = Date()
        _ = sync.stop(signal: 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 40, "the vessel got an answer")
        XCTAssertEqual(try health(fleet).0, "ok")
        try fleet.shore.cluster!.resume()
        print("database back after \(Date().timeIntervalSince(start)) s")
        let after = try fleet.sync(aurora)
        XCTAssertEqual(after.status, 0, after.output + after.error)
        let shore = try await connect(fleet.shore.url)
        let crew: Int64 = try await shore.scalar("SELECT count(*) FROM seafarer")
        XCTAssertEqual(crew, 300, "nothing lost")

        // SIGTERM with a request stuck in the database: the process ends within its bound.
        let blocker2 = try await connect(fleet.shore.url)
        try await blocker2.execute("BEGIN")
        try await blocker2.execute("LOCK TABLE seafarer IN ACCESS EXCLUSIVE MODE")
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'late');", url: aurora.url)
        let stuck = try FleetSyncProcess(["sync", "--config", aurora.configPath])
        defer { stuck.stop(signal: SIGKILL) }
        usleep(800_000)
        start = Date()
        server.stop()
        XCTAssertLessThan(Date().timeIntervalSince(start), 2 + 2, "SIGTERM ends the server within shutdown_timeout_seconds")
        try await blocker2.execute("ROLLBACK")
    }

    /// 150 requests for one vessel at once: one runs, the others are answered at once (busy,
    /// retry after), the pool never holds more connections than configured, and /health and a
    /// real sync keep working.
    func testManyConcurrentRequestsForOneVesselStayWithinThePool() async throws {
        let fleet = try await boundedFleet()
        let server = try fleet.serve()
        defer { server.stop() }
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A'); INSERT INTO certificate_type (code, title) SELECT 'T' || i, 't' FROM generate_series(1, 2000) i;", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        let vessel = try await connect(fleet.vessels[0].url)
        let cursor: Int64 = try await vessel.scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        // A real vessel's sealed requests with its token, 150 at once.
        let client = try SealedClient(fleet.vessels[0], fleet: fleet)
        transports.append(client.transport)
        let token = try await client.token()
        let shore = try await connect(fleet.shore.url)
        let statuses = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<150 {
                group.addTask {
                    do {
                        _ = try await client.exchange(ExchangeRequest(vesselID: "aurora", cursor: cursor, events: [], upTo: 0), token: token)
                        return "ok"
                    } catch let error as WireError {
                        return "\(error.code)"
                    }
                }
            }
            var peak: Int64 = 0
            for _ in 0..<10 {
                let now: Int64 = try await shore.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND application_name NOT LIKE 'psql%'")
                peak = max(peak, now)
                try await Task.sleep(for: .milliseconds(50))
            }
            // The pool (4) plus telemetry writers: never one connection per request.
            XCTAssertLessThanOrEqual(peak, 4 + 4, "connections in use")
            var all: [String] = []
            for try await status in group { all.append(status) }
            return all
        }
        XCTAssertEqual(statuses.count, 150)
        XCTAssertGreaterThan(statuses.filter { $0 == "ok" }.count, 0)
        XCTAssertEqual(Set(statuses).subtracting(["ok", "busy"]), [], "every request answered ok or busy")
        XCTAssertEqual(try health(fleet).0, "ok")
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
    }

    /// A client that sends half a request and waits is cut off after the idle timeout; a declared
    /// length over the limit is refused before any body is read; a wrong method gets 405.
    func testSilentClientsOversizedDeclarationsAndWrongMethods() async throws {
        let fleet = try await boundedFleet()
        let server = try fleet.serve()
        defer { server.stop() }
        let port = fleet.httpPort
        // Half a request, then silence: the server closes the connection after about 2 s.
        let slow = try Shell.runCapturing(["/bin/bash", "-c", """
            exec 3<>/dev/tcp/127.0.0.1/\(port); printf 'POST /v1/exchange HTTP/1.1\\r\\nHost: x\\r\\n' >&3
            s=$(date +%s%N); timeout 10 cat <&3 >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
            """])
        let elapsed = Int(slow.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 99_999
        XCTAssertLessThan(elapsed, 5_000, "the silent connection was closed by the server after the idle timeout (\(slow.output) ms)")
        // A declared length far over the limit: 413 at once, without sending the body.
        let declared = try Shell.runCapturing(["/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "-X", "POST",
                                                "-H", "Content-Length: 1000000000", "-H", "Expect:", "--data-binary", "x",
                                                "http://127.0.0.1:\(port)/v1/exchange"])
        XCTAssertEqual(declared.output, "413")
        let wrong = try Shell.runCapturing(["/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "http://127.0.0.1:\(port)/v1/exchange"])
        XCTAssertEqual(wrong.output, "405")
        XCTAssertEqual(try health(fleet).0, "ok")
    }
}
