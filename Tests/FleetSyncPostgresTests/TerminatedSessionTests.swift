@testable import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import Synchronization
import XCTest

/// A session whose backend PostgreSQL terminated (`pg_terminate_backend`, a restarted database):
/// every statement after that fails at once, instead of waiting for an answer that never comes.
final class TerminatedSessionTests: DatabaseTestCase {
    func testStatementsOnATerminatedSessionFailAtOnce() async throws {
        let url = try await Fixtures.database()
        let admin = try await connect(url)
        for round in 0..<5 {
            let session = try await connect(url)
            let pid: Int32 = try await session.rows("SELECT pg_backend_pid()")[0].value(0)
            try await admin.execute("SELECT pg_terminate_backend(\(pid))")
            // Until the client has seen the connection end, whole (its channel torn down).
            try await session.connection.closeFuture.get()
            let started = ContinuousClock.now
            let outcome = try await Self.within(seconds: 5) { () async -> String in
                do {
                    try await session.execute("SELECT 1", context: "a statement after the termination")
                    return "succeeded"
                } catch {
                    return "\(error)"
                }
            }
            XCTAssertNotNil(outcome, "round \(round): a statement on the terminated session never finished")
            XCTAssertNotEqual(outcome, "succeeded")
            XCTAssertLessThan(started.duration(to: .now), .seconds(1), "round \(round): \(outcome ?? "-")")
            // A rollback after a failed statement (what transaction() and withLock() do) too.
            let rollback = try await Self.within(seconds: 5) { () async -> Bool in
                (try? await session.rows("SELECT 1", context: "rolling back")) == nil
            }
            XCTAssertEqual(rollback, true, "round \(round)")
        }
    }

    func testAStatementInFlightWhenTheBackendIsTerminatedFailsAndSoDoTheNextOnes() async throws {
        let url = try await Fixtures.database()
        let admin = try await connect(url)
        for round in 0..<5 {
            let session = try await connect(url)
            let pid: Int32 = try await session.rows("SELECT pg_backend_pid()")[0].value(0)
            let outcome = try await Self.within(seconds: 10) { () async -> [String] in
                var errors: [String] = []
                do {
                    try await session.transaction { tx in
                        async let killed: Void = {
                            try? await Task.sleep(for: .milliseconds(100))
                            try? await admin.execute("SELECT pg_terminate_backend(\(pid))")
                        }()
                        do {
                            try await tx.execute("SELECT pg_sleep(5)", context: "sleeping")
                        } catch {
                            await killed
                            throw error
                        }
                        await killed
                    }
                } catch {
                    errors.append("\(error)")
                }
                // What the daemon does next on the same session: record the failure.
                do { try await session.execute("SELECT 1", context: "recording the failure") } catch { errors.append("\(error)") }
                return errors
            }
            XCTAssertEqual(outcome?.count, 2, "round \(round): \(outcome.map { "\($0)" } ?? "the session hung")")
        }
    }

    /// The shore's queue read, a prepared statement run on the connection itself, checks too.
    func testTheQueueReadOnATerminatedSessionFailsAtOnce() async throws {
        let (configuration, admin) = try await installedNode(role: .shore, nodeID: "shore")
        let session = try await connect(configuration.databaseURL)
        let pid: Int32 = try await session.rows("SELECT pg_backend_pid()")[0].value(0)
        try await admin.execute("SELECT pg_terminate_backend(\(pid))")
        try await session.connection.closeFuture.get()
        let queue = VesselQueue(configuration: configuration, session: session)
        let outcome = try await Self.within(seconds: 5) { () async -> String in
            do {
                _ = try await queue.readAtLastPosition(vessel: "aurora", cursor: 0, after: 0, limit: 10, byteBudget: 1 << 20)
                return "succeeded"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertNotNil(outcome, "the queue read on the terminated session never finished")
        XCTAssertNotEqual(outcome, "succeeded")
    }

    /// A statement sent in the instant its connection ends passes the open check, and its write
    /// reaches a channel that closed meanwhile, where PostgresNIO drops it: nothing would ever
    /// answer it (a thread preempted between the check and the write, on a loaded machine, while
    /// the database terminated the backend). Here the statement ends the connection itself after
    /// the check and writes only once the channel is torn down: it fails within the grace period
    /// (EndWatch) with an error that says the connection ended; without the watch it never returned.
    func testAStatementWrittenAfterItsConnectionEndedFailsWithinAGracePeriod() async throws {
        let url = try await Fixtures.database()
        let admin = try await connect(url)
        for round in 0..<3 {
            let session = try await connect(url)
            let pid: Int32 = try await session.rows("SELECT pg_backend_pid()")[0].value(0)
            let logger = session.logger
            let started = ContinuousClock.now
            let outcome = try await Self.within(seconds: 10) { () async -> String in
                do {
                    try await session.answered("a statement as the connection ends") { connection in
                        // Past the check: the backend is terminated, the client sees the channel close...
                        try await admin.execute("SELECT pg_terminate_backend(\(pid))")
                        try await connection.closeFuture.get()
                        // ...and its handlers removed (a task the event loop runs after the close).
                        try await connection.eventLoop.submit {}.get()
                        _ = try await connection.query("SELECT 1", logger: logger).collect()
                    }
                    return "succeeded"
                } catch {
                    return "\(error)"
                }
            }
            XCTAssertNotNil(outcome, "round \(round): the statement was never answered")
            XCTAssertTrue(outcome?.contains("connection to the database has ended") ?? false, "round \(round): \(outcome ?? "-")")
            XCTAssertLessThan(started.duration(to: .now), .seconds(3), "round \(round)")
            XCTAssertEqual(session.waitingStatements, 0, "round \(round): nothing left waiting")
        }
    }

    /// A pooled connection is lent to a new session for each exchange: the sessions share one
    /// watch, so that lending adds nothing to the connection that lasts until it closes.
    func testSessionsLentOneConnectionShareOneWatch() async throws {
        let url = try await Fixtures.database()
        let session = try await connect(url)
        for _ in 0..<20 {
            let lent = DatabaseSession.lent(session.connection, logger: session.logger)
            try await lent.execute("SELECT 1")
            XCTAssertTrue(lent.watch === session.watch)
        }
        let other = try await connect(url)
        XCTAssertFalse(other.watch === session.watch, "another connection has its own watch")
        XCTAssertTrue(EndWatch.isWatched(other.connection))
        await other.close()
        // The watch goes with its connection, after the grace period.
        let deadline = ContinuousClock.now + .seconds(5)
        while EndWatch.isWatched(other.connection), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertFalse(EndWatch.isWatched(other.connection), "the watch of a closed connection is dropped")
        XCTAssertTrue(EndWatch.isWatched(session.connection))
    }

    /// `body`'s result, or nil when it has not finished within `seconds` (left running).
    static func within<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async -> T) async throws -> T? {
        let result = Mutex<T?>(nil)
        let finished = Atomic<Bool>(false)
        let task = Task {
            let value = await body()
            result.withLock { $0 = value }
            finished.store(true, ordering: .releasing)
        }
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !finished.load(ordering: .acquiring) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        if !finished.load(ordering: .acquiring) { task.cancel() }
        return result.withLock { $0 }
    }
}
