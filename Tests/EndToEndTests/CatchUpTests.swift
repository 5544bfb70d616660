import FleetSyncCore
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTestSupport
import FleetSyncTransport
import FleetSyncVessel
import Foundation
import PostgresNIO
import XCTest

/// Loses the answers of the exchanges numbered in `lose` (1-based): the shore has sent the page,
/// the vessel never applies it.
final class PageLosingTransport: ExchangeTransport, @unchecked Sendable {
    let inner: HTTPExchangeTransport
    var lose: Set<Int>
    var count = 0
    init(_ inner: HTTPExchangeTransport, lose: Set<Int>) { self.inner = inner; self.lose = lose }
    var name: String { inner.name }
    func send(_ request: [UInt8]) async throws -> [UInt8] {
        let response = try await inner.send(request)
        count += 1
        if lose.contains(count) { throw TransportError("response lost on the link") }
        return response
    }
}

/// Issue 18: a vessel behind what the shore keeps, or new, is caught up from table state.
final class CatchUpTests: DatabaseTestCase {
    /// `FLEETSYNC_FULL_SIZE=1` runs the sizes (scripts/catch-up-benchmark.sh); CI runs them scaled down.
    static let fullSize = ProcessInfo.processInfo.environment["FLEETSYNC_FULL_SIZE"] == "1"
    var transports: [HTTPExchangeTransport] = []

    override func tearDown() async throws {
        for transport in transports { await transport.shutdown() }
        transports.removeAll()
        try await super.tearDown()
    }

    func vesselSync(_ fleet: Fleet, _ node: FleetNode, lose: Set<Int> = []) async throws -> VesselSync {
        let http = try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)")
        transports.append(http)
        let db = try await connect(node.url)
        let schema = try await LocalSchema.load(configuration: node.configuration, session: db)
        let transport: any ExchangeTransport = lose.isEmpty ? http : PageLosingTransport(http, lose: lose)
        return VesselSync(configuration: node.configuration, schema: schema, session: db, telemetry: telemetry(node.url), transport: transport, logger: Fixtures.logger)
    }

    /// Rows of the example schema that a vessel's partition holds, as text (values, clocks and
    /// tombstones; not sync_version, which each node counts for itself), on the shore for
    /// `vessel` or on the vessel itself (nil).
    static func partition(_ db: DatabaseSession, vessel: String?) async throws -> [String: String] {
        let filter: [String: String] = [
            "vessel": "true", "certificate_type": "true",
            "seafarer": vessel.map { "t.vessel_code = \(SQL.literal($0))" } ?? "true",
            "certificate": vessel.map { "t.seafarer_id IN (SELECT id FROM seafarer WHERE vessel_code = \(SQL.literal($0)))" } ?? "true",
        ]
        var result: [String: String] = [:]
        for (table, condition) in filter {
            result[table] = try await db.scalar("SELECT coalesce(string_agg((to_jsonb(t) - 'sync_version')::text, E'\\n' ORDER BY t.id), '') FROM \(table) t WHERE \(condition)")
        }
        return result
    }

    func assertHoldsPartition(_ fleet: Fleet, _ index: Int, _ message: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        let shore = try await connect(fleet.shore.url)
        let vessel = try await connect(fleet.vessels[index].url)
        let expected = try await Self.partition(shore, vessel: fleet.vessels[index].id)
        let held = try await Self.partition(vessel, vessel: nil)
        for table in expected.keys.sorted() {
            let e = expected[table] ?? "", h = held[table] ?? ""
            if e != h {
                let el = Set(e.split(separator: "\n")), hl = Set(h.split(separator: "\n"))
                XCTFail("\(message): \(fleet.vessels[index].id)'s \(table) differs: \(el.subtracting(hl).count) row(s) missing or different, \(hl.subtracting(el).count) extra; e.g. \(el.subtracting(hl).first ?? "") vs \(hl.subtracting(el).first ?? "")", file: file, line: line)
            }
        }
    }

    /// SQL creating the example schema and, on the shore only (its database is named after it),
    /// rows that exist before `fleetsync init`: `crew` seafarers spread over aurora, borealis and
    /// cygnus (a vessel not enrolled), two certificates each, and reference data.
    static func preexistingSchema(crew: Int) throws -> String {
        try String(contentsOfFile: Fixtures.exampleSchemaPath, encoding: .utf8) + """

            DO $$ BEGIN
              IF current_database() LIKE 'shore%' THEN
                INSERT INTO vessel (code, name) VALUES ('aurora', 'Aurora'), ('borealis', 'Borealis'), ('cygnus', 'Cygnus');
                INSERT INTO certificate_type (code, title, validity_months) SELECT 'T' || i, 'type ' || i, 12 + i FROM generate_series(1, 40) i;
                INSERT INTO seafarer (vessel_code, full_name, rank, notes)
                  SELECT (ARRAY['aurora', 'borealis', 'cygnus'])[1 + i % 3], 'sailor ' || i, 'AB', 'n' || i FROM generate_series(1, \(crew)) i;
                INSERT INTO certificate (seafarer_id, certificate_type_id, number, issued_on)
                  SELECT s.id, (SELECT id FROM certificate_type WHERE code = 'T' || (1 + k % 40)), s.full_name || '/' || k, date '2020-01-01' + k
                  FROM seafarer s, generate_series(1, 2) k;
              END IF;
            END $$;
            """
    }

    /// Onboarding: rows a shore held before init reach every vessel, each exactly its partition,
    /// in bounded exchanges (20,000 rows; the 200,000 run in the benchmark script).
    func testPreexistingShoreRowsReachEveryVesselThroughCatchUp() async throws {
        // 6,600 seafarers + 13,200 certificates + 43 reference rows ≈ 20,000 rows (full size: 200,000).
        let crew = Self.fullSize ? 66_000 : 6_600
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], schema: try Self.preexistingSchema(crew: crew))
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        let unclocked: Int64 = try await shore.scalar("SELECT count(*) FROM seafarer WHERE sync_clock = '{}'::jsonb")
        XCTAssertEqual(unclocked, 0, "init gave the pre-existing rows clocks")
        for (index, vessel) in fleet.vessels.enumerated() {
            let result = try fleet.sync(vessel)
            XCTAssertEqual(result.status, 0, result.error)
            try await assertHoldsPartition(fleet, index, "after one sync")
            let db = try await connect(vessel.url)
            let seafarers: Int64 = try await db.scalar("SELECT count(*) FROM seafarer")
            XCTAssertEqual(seafarers, Int64(crew / 3), "\(vessel.id) holds its crew only")
            let held: String = try await db.scalar("SELECT format('dead %s, waiting %s', (SELECT count(*) FROM fleetsync.dead_letter), (SELECT count(*) FROM fleetsync.waiting))")
            XCTAssertEqual(held, "dead 0, waiting 0")
        }
        let status = try FleetSyncBinary.run(["status", "--config", fleet.vessels[0].configPath, "--json"])
        let catchUp = try JSONParser.parse(status.output.trimmingCharacters(in: .whitespacesAndNewlines)).objectValue?["catch_up"]?.objectValue
        XCTAssertEqual(catchUp?["done"], .bool(true), status.output)
        XCTAssertEqual(catchUp?["whole"], .bool(true), status.output)
        XCTAssertEqual(catchUp?["bulk"], .bool(true), "the vessel announced the bulk form and the shore sent it: \(status.output)")
        let shoreStatus = try FleetSyncBinary.run(["status", "--config", fleet.shore.configPath, "--json"])
        let vessels = try JSONParser.parse(shoreStatus.output.trimmingCharacters(in: .whitespacesAndNewlines)).objectValue?["vessels"]?.arrayValue ?? []
        let aurora = vessels.first { $0.objectValue?["vessel"] == .string("aurora") }?.objectValue
        XCTAssertEqual(aurora?["catch_up"]?.objectValue?["finished"], .bool(true), shoreStatus.output)
        // Later changes come as events, after the catch-up.
        try Fixtures.runScript("UPDATE seafarer SET rank = 'Bosun' WHERE full_name = 'sailor 1';", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        try await assertHoldsPartition(fleet, 0, "after a later change")
    }

    /// The offline vessel's seafarers the shore changes: `rows` rows, `changes` updates in all,
    /// plus inserts, deletes, one transfer in and one out.
    func shoreChangesWhileOffline(_ shore: DatabaseSession, url: String, rows: Int, changes: Int) async throws {
        let rounds = changes / rows
        try Fixtures.runScript("""
            DO $$ DECLARE r int; BEGIN
              FOR r IN 1..\(rounds) LOOP
                UPDATE seafarer SET rank = 'rank ' || r, notes = 'note ' || r
                WHERE id IN (SELECT id FROM seafarer WHERE vessel_code = 'aurora' ORDER BY id LIMIT \(rows));
              END LOOP;
            END $$;
            INSERT INTO seafarer (vessel_code, full_name) SELECT 'aurora', 'new ' || i FROM generate_series(1, 5) i;
            DELETE FROM certificate WHERE id IN (SELECT c.id FROM certificate c JOIN seafarer s ON s.id = c.seafarer_id WHERE s.vessel_code = 'aurora' ORDER BY c.id DESC LIMIT 3);
            UPDATE seafarer SET vessel_code = 'aurora' WHERE id = (SELECT id FROM seafarer WHERE vessel_code = 'borealis' ORDER BY id LIMIT 1);
            UPDATE seafarer SET vessel_code = 'borealis' WHERE id = (SELECT id FROM seafarer WHERE vessel_code = 'aurora' ORDER BY id DESC LIMIT 1);
            """, url: url)
    }

    /// Everything the shore kept is pruned (aurora counts as silent past retention).
    func pruneEverything(_ shore: DatabaseSession) async throws {
        _ = try await OutboxReader(session: shore).sequence()
        try await shore.execute("UPDATE fleetsync.sync_state SET last_success = now() - interval '3 weeks' WHERE peer = 'aurora'")
        try await shore.execute("UPDATE fleetsync.vessel SET enrolled_at = now() - interval '4 weeks'")
        try await Retention.prune(retentionDays: 1, on: shore)
        let (left, pruned, last): (Int64, Int64, Int64) = try await shore.rows(
            "SELECT (SELECT count(*) FROM fleetsync.outbox), pruned_below, last_pos FROM fleetsync.outbox_counter")[0].decode((Int64, Int64, Int64).self)
        XCTAssertEqual(left, 0)
        XCTAssertEqual(pruned, last)
    }

    /// The final states of `ids` in the exchange's own format, once: the yardstick for catch-up bytes.
    func finalStatesBytes(_ shore: DatabaseSession, configuration: FleetSyncConfiguration, vessel: String, since: Int64) async throws -> (bytes: Int, rows: Int) {
        let schema = try await LocalSchema.load(configuration: configuration, session: shore)
        let reader = CatchUpReader(configuration: configuration, schema: schema, session: shore)
        // The rows a catch-up must send: those the pruned events touched, which still are aurora's.
        var events: [ChangeEvent] = []
        for table in ["seafarer", "certificate"] {
            let rows = try await shore.rows("""
                SELECT t.id, (to_jsonb(t) - 'id' - 'sync_version' - 'sync_clock' - 'is_deleted'
                          || CASE WHEN t.sync_clock ? 'is_deleted' THEN jsonb_build_object('is_deleted', t.is_deleted) ELSE '{}' END)::text, t.sync_clock::text
                FROM \(table) t JOIN fleetsync.pruned_row p ON p.table_name = '\(table)' AND p.row_id = t.id AND p.last_pos > \(since)
                WHERE fleetsync.route_event('\(table)', t.id) = '\(vessel)'
                """)
            for row in rows {
                let (id, values, clocks) = try row.decode((UUID, String, String).self)
                let clockMap = try JSONParser.parse(clocks).objectValue ?? [:]
                var fields: [String: FieldChange] = [:]
                for (name, value) in try JSONParser.parse(values).objectValue ?? [:] {
                    fields[name] = FieldChange(value: value, clock: clockMap[name].flatMap(FieldClock.init(json:)) ?? FieldClock(counter: 0, node: "shore"))
                }
                events.append(ChangeEvent(table: table, rowID: id, fields: fields, origin: "shore", originPosition: 1))
            }
        }
        _ = reader
        let once = ExchangeResponse(shore: "shore", acknowledged: 0, events: events, cursor: 1, more: false)
        return (MessageFraming.encode(once).count, events.count)
    }

    /// A vessel offline while the shore makes 1,000 changes to 100 rows of its partition
    /// (updates, inserts, deletes, a transfer in and one out), every event pruned: one sync
    /// later it equals its partition, with about the bytes of those rows' final states once.
    func testVesselPastRetentionIsCaughtUpFromStateWithTheBytesOfTheFinalRows() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], schema: try Self.preexistingSchema(crew: Self.fullSize ? 3_000 : 900))
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        try await assertHoldsPartition(fleet, 0, "first sync")
        let since: Int64 = try await shore.scalar("SELECT acknowledged FROM fleetsync.sync_state WHERE peer = 'aurora'")
        try await shoreChangesWhileOffline(shore, url: fleet.shore.url, rows: Self.fullSize ? 500 : 100, changes: Self.fullSize ? 50_000 : 1_000)
        try await pruneEverything(shore)
        let yardstick = try await finalStatesBytes(shore, configuration: fleet.shore.configuration, vessel: "aurora", since: since)
        let sync = try await vesselSync(fleet, fleet.vessels[0])
        var exchanges: [(events: Int, bytes: Int)] = []
        _ = try await sync.syncUntilIdle { _, outcome in exchanges.append((outcome.received, outcome.bytesReceived)) }
        try await assertHoldsPartition(fleet, 0, "after catching up")
        // The yardstick in the exchange's own format as it travels: the events encoded once, plus
        // what any message adds on the link (framing, sealing), measured as an empty answer of
        // this run minus an empty response encoded the same way as the yardstick.
        let pages = exchanges.filter { $0.events > 0 }
        let catchUpBytes = pages.reduce(0) { $0 + $1.bytes }
        let emptyOnTheLink = exchanges.filter { $0.events == 0 }.map(\.bytes).min() ?? 0
        let emptyEncoded = MessageFraming.encode(ExchangeResponse(shore: "shore", acknowledged: 0, events: [], cursor: 1, more: false)).count
        let reference = yardstick.bytes + max(0, emptyOnTheLink - emptyEncoded)
        print("catch-up: \(catchUpBytes) bytes in \(pages.count) page(s) carrying \(pages.reduce(0) { $0 + $1.events }) event(s) "
              + "(\(exchanges.count) exchange(s), \(exchanges.reduce(0) { $0 + $1.bytes }) bytes in all); the \(yardstick.rows) changed rows' "
              + "final states once: \(yardstick.bytes) bytes encoded, \(reference) bytes as one message on the link")
        XCTAssertLessThanOrEqual(Double(catchUpBytes), Double(reference) * 1.2, "catch-up bytes within 1.2x of the final states once")
        let status = try FleetSyncBinary.run(["status", "--config", fleet.vessels[0].configPath])
        XCTAssertTrue(status.output.contains("caught up from table state"), status.output)
        XCTAssertFalse(status.output.contains("must_rebootstrap"), status.output)
    }

    /// The same, with the vessel changing its own fields meanwhile: both directions converge.
    func testBothDirectionsConvergeWhenTheVesselWroteWhileBehind() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], schema: try Self.preexistingSchema(crew: 300))
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        try await shoreChangesWhileOffline(shore, url: fleet.shore.url, rows: 50, changes: 500)
        try Fixtures.runScript("""
            UPDATE seafarer SET contact_number = 'sat ' || left(id::text, 8), notes = 'vessel note' WHERE id IN (SELECT id FROM seafarer ORDER BY id DESC LIMIT 40);
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'signed on at sea');
            """, url: fleet.vessels[0].url)
        try await pruneEverything(shore)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        try await assertHoldsPartition(fleet, 0, "both directions")
        let fromVessel: Int64 = try await shore.scalar("SELECT count(*) FROM seafarer WHERE contact_number LIKE 'sat %' OR full_name = 'signed on at sea'")
        XCTAssertGreaterThan(fromVessel, 1, "the vessel's writes reached the shore")
    }

    /// A catch-up page is bounded by bytes, not by `batch_events`: with `batch_events = 50` a
    /// partition of about 640 rows comes in one page, in one exchange.
    func testACatchUpPageIsBoundedByBytesNotByBatchEvents() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], limits: "[limits]\nbatch_events = 50\nbatch_bytes = 1048576",
                                         schema: try Self.preexistingSchema(crew: 600))
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        let partition = try await Self.partition(shore, vessel: "aurora").values.reduce(0) { $0 + ($1.isEmpty ? 0 : $1.split(separator: "\n").count) }
        let sync = try await vesselSync(fleet, fleet.vessels[0])
        let first = try await sync.exchangeOnce()
        XCTAssertEqual(first.received, partition, "the whole partition (\(partition) rows, more than batch_events) in the first exchange")
        XCTAssertTrue(first.caughtUp)
        let pages: Int64 = try await shore.scalar("SELECT page FROM fleetsync.catch_up WHERE vessel = 'aurora'")
        XCTAssertEqual(pages, 1)
        _ = try await sync.syncUntilIdle { _, _ in }
        try await assertHoldsPartition(fleet, 0, "after one page")
    }

    /// Interrupted halfway (the process gone, an answer lost), the catch-up resumes where the
    /// vessel confirmed, and no page but the lost one is sent twice. Pages of about 32 KB of
    /// row text (`batch_bytes`), more rows than `batch_events` each.
    func testInterruptedCatchUpResumesWithoutStartingOver() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], limits: "[limits]\nbatch_events = 50\nbatch_bytes = 32768",
                                         schema: try Self.preexistingSchema(crew: 1_200))
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        let partition = try await Self.partition(shore, vessel: "aurora").values.reduce(0) { $0 + ($1.isEmpty ? 0 : $1.split(separator: "\n").count) }
        // Five exchanges, the fourth answer lost on the link, then the vessel process is gone.
        var received = 0, largest = 0, delivered = 0
        do {
            let first = try await vesselSync(fleet, fleet.vessels[0], lose: [4])
            for _ in 0..<5 {
                do {
                    let got = try await first.exchangeOnce().received
                    received += got
                    largest = max(largest, got)
                    if got > 0 { delivered += 1 }
                } catch is TransportError {}
            }
        }
        XCTAssertGreaterThan(largest, 50, "a page carries more rows than batch_events")
        XCTAssertLessThan(received, partition / 2, "bounded by bytes: five pages are not the partition")
        let midway: Int64 = try await shore.scalar("SELECT done_rows FROM fleetsync.catch_up WHERE vessel = 'aurora'")
        XCTAssertGreaterThan(midway, 0, "progress is kept on the shore")
        let vesselStatus = try FleetSyncBinary.run(["status", "--config", fleet.vessels[0].configPath])
        XCTAssertTrue(vesselStatus.output.contains("catching up from table state"), vesselStatus.output)
        let shoreStatus = try FleetSyncBinary.run(["status", "--config", fleet.shore.configPath])
        XCTAssertTrue(shoreStatus.output.contains("CATCHING UP"), shoreStatus.output)
        // A new process resumes.
        let second = try await vesselSync(fleet, fleet.vessels[0])
        _ = try await second.syncUntilIdle { _, outcome in
            received += outcome.received
            largest = max(largest, outcome.received)
            if outcome.received > 0 { delivered += 1 }
        }
        try await assertHoldsPartition(fleet, 0, "after resuming")
        print("catch-up of \(partition) rows: \(received) rows received in all, in \(delivered) page(s) of at most \(largest) rows")
        XCTAssertLessThanOrEqual(received, partition + largest, "only the lost page came twice")
        XCTAssertGreaterThanOrEqual(received, partition)
        let pages: Int64 = try await shore.scalar("SELECT page FROM fleetsync.catch_up WHERE vessel = 'aurora'")
        XCTAssertLessThanOrEqual(pages, Int64(delivered + 1), "pages: those delivered and the lost one")
    }

    /// `init` on a vessel whose tables already hold rows refuses by default, naming the tables
    /// and the flag; with `--existing-rows merge` it installs, and the first sync gives the rows
    /// the shore also holds the shore's version.
    func testInitOnAVesselWithRowsRefusesUnlessToldToMerge() async throws {
        let cluster = try TestCluster.shared()
        let url = try await cluster.createDatabase(prefix: "aurora")
        try Fixtures.runScriptFile(Fixtures.exampleSchemaPath, url: url)
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'Old name');", url: url)
        let config = try FleetSyncBinary.writeConfiguration(try FleetSyncBinary.exampleConfiguration(role: "vessel", url: url, nodeID: "aurora"))
        let refused = try FleetSyncBinary.run(["init", "--config", config])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.error.contains("vessel (1 row(s))") && refused.error.contains("--existing-rows merge"), refused.error)
        let db = try await connect(url)
        let installed: Bool = try await db.scalar("SELECT to_regclass('fleetsync.node') IS NOT NULL")
        XCTAssertFalse(installed, "nothing installed")
        let merged = try FleetSyncBinary.run(["init", "--config", config, "--existing-rows", "merge"])
        XCTAssertEqual(merged.status, 0, merged.error)
        XCTAssertTrue(merged.output.contains("merging"), merged.output)
        let again = try FleetSyncBinary.run(["init", "--config", config])
        XCTAssertEqual(again.status, 0, "a later init of an installed vessel is not refused: \(again.error)")
    }

    /// Retention by size: with `retention_max_events = 5` the shore keeps at most 5 events after
    /// each exchange, whatever the vessels have confirmed; a vessel behind that is caught up.
    func testRetentionBySizeKeepsTheNewestEventsAndABehindVesselCatchesUp() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], schema: try Self.preexistingSchema(crew: 30))
        let text = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8)
            .replacingOccurrences(of: "retention_max_events = 10000000", with: "retention_max_events = 5")
        XCTAssertTrue(text.contains("retention_max_events = 5"), text)
        try text.write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        let server = try fleet.serve()
        defer { server.stop() }
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        XCTAssertEqual(try fleet.sync(fleet.vessels[1]).status, 0)
        try Fixtures.runScript("""
            DO $$ DECLARE r int; BEGIN
              FOR r IN 1..10 LOOP UPDATE seafarer SET rank = 'rank ' || r WHERE vessel_code IN ('aurora', 'borealis'); END LOOP;
            END $$;
            """, url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[1]).status, 0)  // borealis's exchanges prune by size
        let shore = try await connect(fleet.shore.url)
        let (kept, pruned, aurora): (Int64, Int64, Int64) = try await shore.rows("""
            SELECT (SELECT count(*) FROM fleetsync.outbox WHERE pos IS NOT NULL), pruned_below,
                   (SELECT acknowledged FROM fleetsync.sync_state WHERE peer = 'aurora') FROM fleetsync.outbox_counter
            """)[0].decode((Int64, Int64, Int64).self)
        XCTAssertLessThanOrEqual(kept, 5, "at most retention_max_events events kept")
        XCTAssertGreaterThan(pruned, aurora, "aurora, silent meanwhile, is behind what is kept")
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        try await assertHoldsPartition(fleet, 0, "aurora after pruning by size")
        try await assertHoldsPartition(fleet, 1, "borealis")
    }
}
