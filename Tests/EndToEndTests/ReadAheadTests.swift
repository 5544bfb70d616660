import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
@testable import FleetSyncVessel
import Foundation
import XCTest

/// Issue 19, part 1: while a backlog drains, the vessel asks for the next batch while it applies
/// the one it has (read-ahead), and its batches grow while they are full and quick (adaptive
/// batch size); with both off, the same backlog takes one exchange per configured batch.
final class ReadAheadTests: DatabaseTestCase {
    /// The rows of `vessel`'s partition (or all rows, on a vessel), comparable as one text.
    static func partition(_ vessel: String?) -> String {
        let seafarers = vessel.map { "WHERE vessel_code = '\($0)'" } ?? ""
        return """
            SELECT coalesce(string_agg(r, E'\\n' ORDER BY r), '') FROM (
              SELECT format('seafarer %s %s %s %s %s %s', id, vessel_code, full_name, notes, is_deleted, sync_clock) AS r FROM seafarer \(seafarers)) p
            """
    }

    /// The vessel side of `node`, in this process (the shore need not be running), and what
    /// closes it.
    func vesselSync(_ node: FleetNode, fleet: Fleet) async throws -> (VesselSync, @Sendable () async -> Void) {
        let db = try await connect(node.url)
        let transport = try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)")
        let telemetry = TelemetryWriter(url: node.url, logger: Fixtures.logger)
        let sync = VesselSync(configuration: node.configuration, schema: try await LocalSchema.load(configuration: node.configuration, session: db),
                              session: db, telemetry: telemetry, transport: transport, logger: Fixtures.logger)
        return (sync, { await telemetry.close(); await transport.shutdown() })
    }

    /// Exchanges a `fleetsync sync` printed: its rounds, and the batches within them that its
    /// lines count as "N more batch(es) `what`" (read ahead, sent ahead).
    static func exchanges(_ output: String, _ what: String = "read ahead") -> (rounds: Int, ahead: Int) {
        var rounds = 0, ahead = 0
        for line in output.split(separator: "\n") where line.hasPrefix("exchange ") {
            rounds += 1
            if let range = line.range(of: #", (\d+) more batch\(es\) "# + what, options: .regularExpression) {
                ahead += Int(line[range].split(separator: " ")[1])!
            }
        }
        return (rounds, ahead)
    }

    func testABacklogDrainsReadingAheadInGrowingBatchesAndConvergesAndBothCanBeTurnedOff() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], limits: "[limits]\nbatch_events = 100\nmax_batch_events = 1600")
        // borealis: one exchange at a time, batches as configured.
        let borealis = fleet.vessels[1]
        let text = try String(contentsOfFile: borealis.configPath, encoding: .utf8)
        let off = text.replacingOccurrences(of: "read_ahead = true", with: "read_ahead = false").replacingOccurrences(of: "adaptive_batch = true", with: "adaptive_batch = false")
        XCTAssertNotEqual(off, text, "the example configuration names read_ahead and adaptive_batch")
        try off.write(toFile: borealis.configPath, atomically: true, encoding: .utf8)
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora'), ('borealis', 'MV Borealis');", url: fleet.shore.url)
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        // A backlog of 4,000 events for each vessel: 2,000 new rows, then an update of each.
        try Fixtures.runScript("""
            INSERT INTO seafarer (vessel_code, full_name) SELECT v, v || '-' || i FROM generate_series(1, 2000) i, (VALUES ('aurora'), ('borealis')) x(v);
            UPDATE seafarer SET notes = 'second ' || full_name;
            """, url: fleet.shore.url)
        var counted: [String: (rounds: Int, ahead: Int)] = [:]
        for vessel in fleet.vessels {
            let run = try fleet.sync(vessel)
            XCTAssertEqual(run.status, 0, run.output + run.error)
            counted[vessel.id] = Self.exchanges(run.output)
            let db = try await connect(vessel.url)
            let expected: String = try await shore.scalar(Self.partition(vessel.id))
            let actual: String = try await db.scalar(Self.partition(nil))
            XCTAssertEqual(actual, expected, "\(vessel.id) holds exactly its partition")
            let rows: Int64 = try await db.scalar("SELECT count(*) FROM seafarer WHERE notes LIKE 'second %'")
            XCTAssertEqual(rows, 2_000)
        }
        let ahead = counted["aurora"]!, plain = counted["borealis"]!
        print("exchanges for 4,000 events at batch_events = 100: read-ahead and adaptive \(ahead.rounds) rounds + \(ahead.ahead) read ahead; both off \(plain.rounds)")
        XCTAssertGreaterThan(ahead.ahead, 0, "the next batch was asked for while one applied")
        XCTAssertLessThan(ahead.rounds + ahead.ahead, 25, "batches grew past the configured 100 events")
        XCTAssertEqual(plain.ahead, 0)
        XCTAssertGreaterThanOrEqual(plain.rounds, 40, "with both off, one exchange per 100 events")
    }

    /// A read-ahead asks for events after a position the vessel has not applied: the shore
    /// records only the cursor (what it judges the vessel's writes by and prunes by), and refuses
    /// a position beyond its last one with nothing changed.
    func testTheShoreRecordsOnlyTheAppliedCursorAndRefusesAPositionFromTheFuture() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], limits: "[limits]\nbatch_events = 10")
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora');", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) SELECT 'aurora', 'crew ' || i FROM generate_series(1, 30) i;", url: fleet.shore.url)
        let sealed = try SealedClient(fleet.vessels[0], fleet: fleet)
        defer { Task { await sealed.shutdown() } }
        let token = try await sealed.token()
        let cursor: Int64 = try await connect(fleet.vessels[0].url).scalar("SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'")
        // The first batch, as an ordinary exchange would get it.
        var first = ExchangeRequest(vesselID: "aurora", cursor: cursor, events: [], upTo: 0)
        first.readAhead = ReadAheadAsk(after: cursor, events: 10, bytes: 1_048_576)
        let batch = try await sealed.exchange(first, token: token)
        XCTAssertEqual(batch.events.count, 10)
        XCTAssertEqual(batch.readAhead?.after, cursor)
        // The next one, asked for before the first is applied.
        var next = first
        next.exchangeID = UUID()
        next.readAhead = ReadAheadAsk(after: batch.cursor, events: 15, bytes: 1_048_576)
        let ahead = try await sealed.exchange(next, token: token)
        XCTAssertEqual(ahead.readAhead?.after, batch.cursor)
        XCTAssertEqual(ahead.events.count, 15, "the size asked for, within the shore's ceiling")
        XCTAssertTrue(Set(ahead.events.map(\.rowID)).isDisjoint(with: batch.events.map(\.rowID)), "the batch after the first, not the first again")
        let recorded: Int64 = try await shore.scalar("SELECT acknowledged FROM fleetsync.sync_state WHERE peer = 'aurora'")
        XCTAssertEqual(recorded, cursor, "the shore records the applied cursor, not the read-ahead position")
        // From the future: refused, nothing recorded.
        let before: String = try await shore.scalar("SELECT status::text FROM fleetsync.sync_state WHERE peer = 'aurora'")
        var future = first
        future.exchangeID = UUID()
        future.status = ["pending": .number("99")]
        future.readAhead = ReadAheadAsk(after: 1_000_000_000, events: 10, bytes: 1_048_576)
        do {
            _ = try await sealed.exchange(future, token: token)
            XCTFail("a read-ahead position beyond the shore's last was accepted")
        } catch let error as WireError {
            XCTAssertEqual(error.code, .cursorFromTheFuture)
            XCTAssertTrue(error.message.contains("read-ahead position 1000000000 is beyond the shore's last position"), error.message)
        }
        let after: String = try await shore.scalar("SELECT status::text FROM fleetsync.sync_state WHERE peer = 'aurora'")
        XCTAssertEqual(after, before, "nothing recorded for the refused request")
    }

    /// A read-ahead answer is applied only when it is exactly the batch after the one applied;
    /// anything else is dropped before anything of it is applied.
    func testAReadAheadAnswerThatIsNotTheNextBatchIsDropped() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let (sync, close) = try await vesselSync(fleet.vessels[0], fleet: fleet)
        defer { Task { await close() } }
        let request = ExchangeRequest(vesselID: "aurora", cursor: 10, events: [], upTo: 7, clock: 50)
        let applied = ExchangeResponse(shore: "shore", acknowledged: 7, events: [], cursor: 40, more: true, clockFloor: 3)
        func answer(_ change: (inout ExchangeResponse) -> Void) throws -> ReadAhead.Answer {
            var response = ExchangeResponse(shore: "shore", acknowledged: 7, events: [], cursor: 70, more: true, clockFloor: 3)
            response.readAhead = ReadAheadTerms(after: 40, maximumEvents: 500, maximumBytes: 65_536)
            change(&response)
            let (decoded, batch) = try WireEventBatch.response(WireCodec.encode(response))
            return ReadAhead.Answer(response: decoded, received: batch, sent: 0, receivedBytes: 0, started: .now)
        }
        let refused: [(String, (inout ExchangeResponse) -> Void)] = [
            ("read after another position", { $0.readAhead?.after = 39 }),
            ("no terms (a shore that ignored the ask)", { $0.readAhead = nil }),
            ("a catch-up page", { $0.catchUp = ["done": .bool(false)] }),
            ("another shore", { $0.shore = "other" }),
            ("an acknowledgement beyond what was sent", { $0.acknowledged = 8 }),
            ("a clock floor above the vessel's clock (a restore)", { $0.clockFloor = 51 }),
            ("a cursor behind the batch applied", { $0.cursor = 39 }),
        ]
        for (what, change) in refused {
            var ahead = ReadAhead(sync: sync, request: request, clock: 50, durableCursor: 10)
            XCTAssertNil(ahead.accept(try answer(change), after: applied), what)
            XCTAssertEqual(ahead.durableCursor, 10, what)
        }
        var ahead = ReadAhead(sync: sync, request: request, clock: 50, durableCursor: 10)
        XCTAssertNil(ahead.accept(nil, after: applied), "a failed read-ahead")
        let accepted = ahead.accept(try answer { _ in }, after: applied)
        XCTAssertEqual(accepted?.response.cursor, 70)
        XCTAssertEqual(ahead.durableCursor, 40, "the batch applied is now the cursor the next read-ahead carries")
        XCTAssertEqual(sync.sizing.download.ceilingEvents, 500, "the shore's ceilings bound the batches asked for")
    }

    /// A local change committed while a backlog drains stops the read-ahead: the vessel applies
    /// nothing newer while a write it made earlier is unsent.
    func testALocalChangeStopsTheReadAhead() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let (sync, close) = try await vesselSync(fleet.vessels[0], fleet: fleet)
        defer { Task { await close() } }
        let db = sync.session
        // A token as if the vessel had authenticated (a read-ahead is sealed with the one it holds).
        try await db.execute("INSERT INTO fleetsync.sync_state (peer, token, token_expires_at) VALUES ('shore', '\\x0102', now() + interval '1 hour') ON CONFLICT (peer) DO UPDATE SET token = EXCLUDED.token, token_expires_at = EXCLUDED.token_expires_at")
        var response = ExchangeResponse(shore: "shore", acknowledged: 0, events: [], cursor: 40, more: true)
        response.readAhead = ReadAheadTerms(after: 0, maximumEvents: 1_000, maximumBytes: 1_048_576)
        let request = ExchangeRequest(vesselID: "aurora", cursor: 0, events: [], upTo: 0)
        var ahead = ReadAhead(sync: sync, request: request, clock: 0, durableCursor: 0)
        let planned = try await ahead.plan(after: response, elapsed: 0)
        XCTAssertEqual(planned?.after, 40, "nothing local waits: the next batch is asked for")
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('local', 'written on board');", url: fleet.vessels[0].url)
        var again = ReadAhead(sync: sync, request: request, clock: 0, durableCursor: 0)
        let stopped = try await again.plan(after: response, elapsed: 0)
        XCTAssertNil(stopped, "a local change waits: no read-ahead")
    }
}
