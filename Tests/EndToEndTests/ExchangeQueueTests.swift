import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTestSupport
import FleetSyncTransport
import Foundation
import XCTest

/// Issue 16: a request arriving while `concurrent_exchanges` are in progress waits in a bounded
/// FIFO queue (`exchange_queue_length`, each for at most `exchange_queue_seconds`) instead of
/// being answered busy at once; past the queue it is still answered busy with a time to retry,
/// /health keeps answering, and SIGTERM answers the queued requests and ends the server in its
/// bound.
final class ExchangeQueueTests: DatabaseTestCase {
    var clients: [SealedClient] = []

    override func tearDown() async throws {
        for client in clients { await client.shutdown() }
        clients.removeAll()
        try await super.tearDown()
    }

    /// A shore with room for 2 exchanges at once and a queue of 4 requests waiting up to 20 s;
    /// `vessels` more vessels enrolled with keys of their own, each with a token.
    func queuedShore(vessels: Int) async throws -> (Fleet, FleetSyncProcess, [(SealedClient, [UInt8])]) {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let text = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8).replacingOccurrences(of: "[shore]\n", with: """
            [shore]
            concurrent_exchanges = 2
            exchange_queue_seconds = 20
            exchange_queue_length = 4
            database_connections = 4
            shutdown_timeout_seconds = 3

            """)
        try text.write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        let shore = try await connect(fleet.shore.url)
        let identity = try PublicIdentity.load(path: fleet.shore.configuration.keysDirectory! + "/identity.pub")
        var clients: [(SealedClient, [UInt8])] = []
        let server = try fleet.serve()
        for i in 0..<vessels {
            let id = "queued\(i)"
            let keys = try NodeKeys.generate()
            let vesselIdentity = try keys.publicIdentity(node: id, role: "vessel")
            try await ShoreAuthority.enroll(vessel: id, identity: vesselIdentity, text: vesselIdentity.text, on: shore)
            let client = SealedClient(vessel: id, keys: keys, shore: identity, transport: try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)"))
            self.clients.append(client)
            clients.append((client, try await client.token()))
        }
        return (fleet, server, clients)
    }

    /// Sends one empty exchange of each client at once; the answers: "ok" or the error code.
    func exchangeAll(_ clients: [(SealedClient, [UInt8])]) -> Task<[String], Never> {
        Task {
            await withTaskGroup(of: String.self) { group in
                for (client, token) in clients {
                    group.addTask {
                        do {
                            _ = try await client.exchange(ExchangeRequest(vesselID: client.vessel, cursor: 0, events: [], upTo: 0), token: token)
                            return "ok"
                        } catch let error as WireError {
                            return "\(error.code)"
                        } catch {
                            return "\(error)"
                        }
                    }
                }
                var all: [String] = []
                for await answer in group { all.append(answer) }
                return all
            }
        }
    }

    /// Status, Retry-After and /health of the shore while its exchanges and queue are full: a
    /// request past the queue is answered at once, busy, with a time to retry.
    func overflow(_ fleet: Fleet) throws -> (status: String, retryAfter: String, seconds: TimeInterval) {
        let start = Date()
        let result = try Shell.runCapturing(["/usr/bin/curl", "-s", "-m", "5", "-o", "/dev/null", "-D", "-", "-w", "status=%{http_code}\n",
                                              "-X", "POST", "--data-binary", "x", "http://127.0.0.1:\(fleet.httpPort)/v1/exchange"])
        let lines = result.output.split(whereSeparator: \.isNewline)
        let retry = lines.first { $0.lowercased().hasPrefix("retry-after:") }.map { $0.dropFirst("retry-after:".count).trimmingCharacters(in: .whitespaces) } ?? ""
        let status = lines.first { $0.hasPrefix("status=") }.map { String($0.dropFirst("status=".count)) } ?? ""
        return (status, retry, Date().timeIntervalSince(start))
    }

    /// Six vessels at once against room for two: the four past the bound wait in the queue
    /// (the database is held so that none finishes) and all six are answered, none busy, once it
    /// lets go; meanwhile a seventh request, past the queue, is answered busy at once with
    /// Retry-After, and /health answers within a second. The same server with the queue off
    /// answers four of the six busy.
    func testRequestsPastTheExchangeBoundWaitInTheQueueAndOnlyAnOverflowIsBusy() async throws {
        let (fleet, server, clients) = try await queuedShore(vessels: 6)
        defer { server.stop(signal: SIGKILL) }
        // Every exchange stops at recording its exchange id until the blocker lets go.
        let blocker = try await connect(fleet.shore.url)
        try await Self.holdExchanges(blocker)
        let answers = exchangeAll(clients)
        try await Task.sleep(for: .seconds(2))
        let past = try overflow(fleet)
        XCTAssertEqual(past.status, "503", "a request past the queue is answered busy")
        XCTAssertEqual(past.retryAfter, "2", "with a time to retry")
        XCTAssertLessThan(past.seconds, 1, "at once")
        let health = try Shell.runCapturing(["/usr/bin/curl", "-s", "-m", "1", "http://127.0.0.1:\(fleet.httpPort)/health"])
        XCTAssertEqual(health.output, "ok", "/health answers while exchanges wait")
        try await blocker.execute("ROLLBACK")
        let all = await answers.value
        XCTAssertEqual(all.sorted(), Array(repeating: "ok", count: 6), "every request past the bound waited its turn and was answered: \(all)")

        // The same six with the queue off (exchange_queue_seconds = 0, the server before it):
        // the four past the bound are answered busy.
        _ = server.stop()
        let text = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "exchange_queue_seconds = 20", with: "exchange_queue_seconds = 0").write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        let unqueued = try fleet.serve()
        defer { unqueued.stop(signal: SIGKILL) }
        try await Self.holdExchanges(blocker)
        // Their tokens still hold (the secret is the database's).
        let refused = exchangeAll(clients)
        try await Task.sleep(for: .seconds(2))
        try await blocker.execute("ROLLBACK")
        let without = await refused.value
        XCTAssertEqual(without.filter { $0 == "busy" }.count, 4, "without the queue, the four past the bound are busy: \(without)")
    }

    /// SIGTERM with requests in the queue: they are answered busy at once, and the server ends
    /// within `shutdown_timeout_seconds` although the two in progress are stuck in the database.
    func testSIGTERMAnswersTheQueueAndEndsInItsBound() async throws {
        let (fleet, server, clients) = try await queuedShore(vessels: 5)
        defer { server.stop(signal: SIGKILL) }
        let blocker = try await connect(fleet.shore.url)
        try await Self.holdExchanges(blocker)
        let answers = exchangeAll(clients)
        try await Task.sleep(for: .seconds(2))
        let start = Date()
        _ = server.stop()
        XCTAssertLessThan(Date().timeIntervalSince(start), 3 + 2, "SIGTERM ends the server within shutdown_timeout_seconds")
        let all = await answers.value
        XCTAssertEqual(all.filter { $0 == "busy" }.count, 3, "the three queued requests were answered busy: \(all)")
        try await blocker.execute("ROLLBACK")
    }

    /// Holds every exchange at recording its exchange id (`seen_exchange`) until `blocker` rolls back.
    static func holdExchanges(_ blocker: DatabaseSession) async throws {
        try await blocker.execute("BEGIN")
        try await blocker.execute("LOCK TABLE fleetsync.seen_exchange IN EXCLUSIVE MODE")
    }
}
