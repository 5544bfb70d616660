import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

final class OutboxReaderTests: DatabaseTestCase {
    /// 200 transactions take sequence numbers in one order and commit in the reverse order while
    /// a reader polls after every commit: each event is delivered exactly once, in commit order.
    func testLateCommittersAreNeverSkipped() async throws {
        let (configuration, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        let count = 200
        var writers: [DatabaseSession] = []
        for _ in 0..<count {
            writers.append(try await self.connect(configuration.databaseURL))
        }
        for (i, writer) in writers.enumerated() {
            try await writer.execute("BEGIN")
            try await writer.execute("INSERT INTO certificate_type (code, title) VALUES ('T\(i)', 'type \(i)')")
        }
        let reader = OutboxReader(session: db)
        var cursor: Int64 = 0
        var delivered: [String] = []
        var naiveSeen: Set<Int64> = []
        var naiveCursor: Int64 = 0
        for i in stride(from: count - 1, through: 0, by: -1) {
            try await writers[i].execute("COMMIT")
            // What a reader advancing by the highest sequence number would see.
            let naive = try await db.rows("SELECT seq FROM fleetsync.capture_log WHERE seq > \(naiveCursor) ORDER BY seq")
            for row in naive {
                let seq = try row.decode(Int64.self)
                naiveSeen.insert(seq)
                naiveCursor = max(naiveCursor, seq)
            }
            let batch = try await reader.poll(after: cursor, limit: 1000)
            for change in batch {
                XCTAssertGreaterThan(change.position, cursor)
                cursor = change.position
                delivered.append(change.delta["code"]?.stringValue ?? "?")
            }
        }
        XCTAssertEqual(delivered.count, count)
        XCTAssertEqual(Set(delivered).count, count, "every event exactly once")
        XCTAssertEqual(delivered, (0..<count).reversed().map { "T\($0)" }, "delivered in commit order")
        XCTAssertLessThan(naiveSeen.count, count / 10, "a cursor over sequence numbers would have skipped the late committers")
        let again = try await reader.poll(after: cursor, limit: 1000)
        XCTAssertEqual(again.count, 0)
    }

    /// A backlog moved a chunk at a time: each call moves the lowest sequence numbers, says when
    /// it stopped at its chunk, and the positions follow the sequence numbers across the calls,
    /// with a late committer after everything moved before it commits.
    func testChunkedSequencingMovesTheLowestSequenceNumbersFirstAndSaysWhenMoreWaits() async throws {
        let (configuration, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        let late = try await self.connect(configuration.databaseURL)
        try await late.execute("BEGIN")
        try await late.execute("INSERT INTO certificate_type (code, title) VALUES ('LATE', 'late')")
        try await db.execute("INSERT INTO certificate_type (code, title) SELECT 'C' || i, 't' FROM generate_series(1, 2500) i")
        let reader = OutboxReader(session: db)
        let first = try await reader.sequence(chunk: 1_000)
        XCTAssertEqual(first.moved, 1_000)
        XCTAssertTrue(first.full, "more waits")
        let left: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(left, 1_500, "only the chunk moved")
        let early: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log WHERE substr(delta->>'code', 2)::int <= 1000")
        XCTAssertEqual(early, 0, "the lowest sequence numbers moved first")
        try await late.execute("COMMIT")
        let second = try await reader.sequence(chunk: 1_000)
        XCTAssertEqual(second.moved, 1_000)
        XCTAssertTrue(second.full)
        let third = try await reader.sequence(chunk: 1_000)
        XCTAssertEqual(third.moved, 501)
        XCTAssertFalse(third.full, "the backlog is moved")
        let changes = try await reader.poll(after: 0, limit: 10_000)
        XCTAssertEqual(changes.count, 2_501)
        XCTAssertEqual(changes.map(\.position), Array(1...2_501).map(Int64.init), "positions dense and in order")
        let codes = changes.map { $0.delta["code"]?.stringValue ?? "?" }
        XCTAssertEqual(codes.filter { $0 != "LATE" }, (1...2_500).map { "C\($0)" }, "in sequence order across the chunks")
        let lateIndex = try XCTUnwrap(codes.firstIndex(of: "LATE"))
        XCTAssertGreaterThanOrEqual(lateIndex, 1_000, "the late committer comes after what was moved before it committed")
    }

    /// A large backlog is moved a quarter at a time (at least the chunk asked for, at most 20,000),
    /// still the lowest sequence numbers first, positions dense and in order across the runs.
    func testALargeBacklogMovesInChunksOfAQuarterOfIt() async throws {
        XCTAssertEqual(OutboxReader.chunkSize(asked: 2_000, backlog: 100_000), 20_000)
        XCTAssertEqual(OutboxReader.chunkSize(asked: 2_000, backlog: 1_000_000), 20_000)
        XCTAssertEqual(OutboxReader.chunkSize(asked: 2_000, backlog: 6_000), 2_000)
        XCTAssertEqual(OutboxReader.chunkSize(asked: 30_000, backlog: 1_000_000), 30_000)
        let (_, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO certificate_type (code, title) SELECT 'C' || i, 't' FROM generate_series(1, 16000) i")
        let reader = OutboxReader(session: db)
        let first = try await reader.sequence(chunk: 1_000)
        XCTAssertEqual(first.moved, 4_000, "a quarter of the backlog")
        XCTAssertTrue(first.full)
        let early: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log WHERE substr(delta->>'code', 2)::int <= 4000")
        XCTAssertEqual(early, 0, "the lowest sequence numbers moved first")
        let second = try await reader.sequence(chunk: 1_000)
        XCTAssertEqual(second.moved, 3_000)
        var runs = 2
        while try await reader.sequence(chunk: 1_000).full { runs += 1 }
        XCTAssertLessThanOrEqual(runs, 12, "about a dozen runs, not 16")
        let changes = try await reader.poll(after: 0, limit: 20_000)
        XCTAssertEqual(changes.map(\.position), Array(1...16_000).map(Int64.init), "positions dense and in order")
        XCTAssertEqual(changes.map { $0.delta["code"]?.stringValue ?? "?" }, (1...16_000).map { "C\($0)" }, "in sequence order across the runs")
    }

    /// A run that moves what is left of a capture log grown past 1 MB gives its space back (every
    /// later read of the log scanned the dead space); runs that stop at their chunk leave it, and
    /// capture and sequencing go on as before.
    func testARunThatEmptiesALargeCaptureLogGivesItsSpaceBack() async throws {
        let (_, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO certificate_type (code, title) SELECT 'C' || i, repeat('t', 40) FROM generate_series(1, 12000) i")
        let grown: Int64 = try await db.scalar("SELECT pg_relation_size('fleetsync.capture_log')")
        XCTAssertGreaterThan(grown, OutboxReader.emptiedLogVacuumBytes, "the backlog's log is past the threshold")
        let reader = OutboxReader(session: db)
        let first = try await reader.sequence(chunk: 10_000)
        XCTAssertTrue(first.full)
        let partly: Int64 = try await db.scalar("SELECT pg_relation_size('fleetsync.capture_log')")
        XCTAssertEqual(partly, grown, "a run that stopped at its chunk leaves the log as it is")
        let last = try await reader.sequence(chunk: 10_000)
        XCTAssertEqual(last.moved, 2_000)
        XCTAssertFalse(last.full)
        let emptied: Int64 = try await db.scalar("SELECT pg_relation_size('fleetsync.capture_log')")
        XCTAssertLessThan(emptied, 65_536, "the emptied log's space is given back (was \(grown) bytes)")
        try await db.execute("INSERT INTO certificate_type (code, title) VALUES ('AFTER', 'after')")
        let changes = try await reader.poll(after: 0, limit: 20_000)
        XCTAssertEqual(changes.count, 12_001)
        XCTAssertEqual(changes.last?.delta["code"]?.stringValue, "AFTER")
        XCTAssertEqual(changes.map(\.position), Array(1...12_001).map(Int64.init), "positions dense and in order")
    }

    /// Concurrent writers and two concurrent sequencers: positions are unique and dense.
    func testConcurrentWritersAndReadersDeliverEverythingOnce() async throws {
        let (configuration, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        let url = configuration.databaseURL
        let perWriter = 50
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    let writer = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
                    do {
                        for i in 0..<perWriter {
                            try await writer.execute("INSERT INTO certificate_type (code, title) VALUES ('W\(w)-\(i)', 'x')")
                        }
                    } catch {
                        await writer.close()
                        throw error
                    }
                    await writer.close()
                }
            }
            for _ in 0..<2 {
                group.addTask {
                    let session = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
                    do {
                        for _ in 0..<30 { try await OutboxReader(session: session).sequence() }
                    } catch {
                        await session.close()
                        throw error
                    }
                    await session.close()
                }
            }
            try await group.waitForAll()
        }
        let reader = OutboxReader(session: db)
        var cursor: Int64 = 0
        var positions: [Int64] = []
        while true {
            let batch = try await reader.poll(after: cursor, limit: 37)
            if batch.isEmpty { break }
            positions += batch.map(\.position)
            cursor = batch.last!.position
        }
        XCTAssertEqual(positions, Array(1...Int64(4 * perWriter)))
    }

    func testReadAttachesClocksFromConfiguration() async throws {
        let (configuration, db) = try await self.installedNode(role: .vessel, nodeID: "aurora")
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'A')")
        try await db.execute("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana')")
        try await db.execute("UPDATE seafarer SET contact_number = '1'")
        let changes = try await OutboxReader(session: db).poll(after: 0, limit: 10)
        let table = configuration.table(named: "seafarer")!
        let events = changes.filter { $0.table == "seafarer" }.map { $0.event(node: "aurora", role: .vessel, table: table) }
        XCTAssertEqual(events.count, 2)
        XCTAssertEqual(events[0].fields["full_name"]?.clock.counter, 0)
        XCTAssertEqual(events[1].fields["contact_number"]?.clock, FieldClock(counter: changes.last!.version, node: "aurora"))
    }

    /// With a byte budget the outbox sends no rows past it (large local rows stay in the
    /// database), and the first row goes whatever its size.
    func testReadStopsAtItsByteBudget() async throws {
        let (_, db) = try await self.installedNode(role: .shore, nodeID: "shore")
        try await db.execute("INSERT INTO certificate_type (code, title) SELECT 'T' || i, repeat('x', 10000) FROM generate_series(1, 20) i")
        let reader = OutboxReader(session: db)
        try await reader.sequence()
        let three = try await reader.read(after: 0, limit: 1_000, byteBudget: 35_000)
        XCTAssertEqual(three.count, 4, "three rows within the budget and the one that tells more waits")
        XCTAssertEqual(three.prefix(3).reduce(0) { $0 + $1.bytes } <= 35_000, true)
        XCTAssertGreaterThan(three.reduce(0) { $0 + $1.bytes }, 35_000)
        let one = try await reader.read(after: 0, limit: 1_000, byteBudget: 5_000)
        XCTAssertEqual(one.count, 2)
        let all = try await reader.read(after: 0, limit: 1_000)
        XCTAssertEqual(all.count, 20)
    }
}
