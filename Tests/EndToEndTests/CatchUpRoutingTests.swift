import FleetSyncCore
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTestSupport
import Foundation
import XCTest

/// Issue 18: catch-up when a vessel's partition moved while it was offline and the events that
/// said so were pruned: by a change of the shore's routing rules, and by a transfer of a row the
/// vessel wrote under meanwhile.
final class CatchUpRoutingTests: DatabaseTestCase {
    /// The example schema with a second routing column on seafarer, `assigned_to`, and rows on
    /// the shore: aurora's and borealis's crew (by vessel_code), some assigned elsewhere, two
    /// certificates each.
    static let schema = ((try? String(contentsOfFile: Fixtures.exampleSchemaPath, encoding: .utf8)) ?? "") + """

        ALTER TABLE seafarer ADD COLUMN assigned_to text;
        """

    static func tables(routeSeafarerBy column: String) throws -> String {
        let text = try String(contentsOf: Fixtures.repositoryRoot.appendingPathComponent("examples/shore.toml"), encoding: .utf8)
        let first = text.range(of: #"(?m)^\[\[table\]\]"#, options: .regularExpression)!
        return String(text[first.lowerBound...]).replacingOccurrences(of: #"(?m)^route = \{ column = "vessel_code" \}.*$"#, with: route(column), options: .regularExpression)
    }

    /// Rows (values, clocks, tombstones) the shore routes to `vessel` (or broadcasts), by table;
    /// on a vessel (nil) every row it holds.
    static func rows(_ db: DatabaseSession, routedTo vessel: String?) async throws -> [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        for table in ["vessel", "certificate_type", "seafarer", "certificate"] {
            let condition = vessel.map { "fleetsync.route_event('\(table)', t.id) IN (\(SQL.literal($0)), '*')" } ?? "true"
            let rows = try await db.rows("SELECT (to_jsonb(t) - 'sync_version')::text FROM \(table) t WHERE \(condition)")
            result[table] = Set(try rows.map { try $0.decode(String.self) })
        }
        return result
    }

    func assertHoldsItsPartition(_ fleet: Fleet, _ index: Int, _ message: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        let shore = try await connect(fleet.shore.url)
        let vessel = try await connect(fleet.vessels[index].url)
        let expected = try await Self.rows(shore, routedTo: fleet.vessels[index].id)
        let held = try await Self.rows(vessel, routedTo: nil)
        for table in expected.keys.sorted() where expected[table] != held[table] {
            let missing = expected[table]!.subtracting(held[table] ?? []), extra = (held[table] ?? []).subtracting(expected[table]!)
            XCTFail("\(message): \(fleet.vessels[index].id)'s \(table): \(missing.count) row(s) missing or different, \(extra.count) extra; e.g. \(missing.first ?? extra.first ?? "")",
                    file: file, line: line)
        }
    }

    /// Everything the shore kept is pruned; `silent` count as silent past retention.
    func pruneEverything(_ shore: DatabaseSession, silent: [String]) async throws {
        _ = try await OutboxReader(session: shore).sequence()
        for vessel in silent {
            try await shore.execute("UPDATE fleetsync.sync_state SET last_success = now() - interval '3 weeks' WHERE peer = \(SQL.literal(vessel))")
        }
        try await shore.execute("UPDATE fleetsync.vessel SET enrolled_at = now() - interval '4 weeks'")
        try await Retention.prune(retentionDays: 1, on: shore)
        let (left, pruned, last): (Int64, Int64, Int64) = try await shore.rows(
            "SELECT (SELECT count(*) FROM fleetsync.outbox), pruned_below, last_pos FROM fleetsync.outbox_counter")[0].decode((Int64, Int64, Int64).self)
        XCTAssertEqual(left, 0, "every event pruned")
        XCTAssertEqual(pruned, last)
    }

    /// The `route` line of seafarer in the configuration's tables.
    static func route(_ column: String?) -> String {
        (column.map { #"route = { column = "\#($0)" }"# } ?? #"route = "broadcast""#) + "   # seafarer's rule"
    }

    /// Seafarer's routing rule changes on the shore (`from` to `to`, nil: broadcast) while aurora
    /// is offline: borealis, online, receives its moves as events; then every event is pruned, and
    /// aurora's one sync later leaves it holding exactly its new partition. Returns the shore.
    func reroute(from: String?, to: String?, moved: Int) async throws -> (Fleet, DatabaseSession, FleetSyncProcess) {
        // A broadcast seafarer has no vessel to own its contact number: the shore owns it then.
        var tables = try Self.tables(routeSeafarerBy: "vessel_code").replacingOccurrences(of: Self.route("vessel_code"), with: Self.route(from))
        if from == nil || to == nil { tables = tables.replacingOccurrences(of: #"vessel = ["contact_number"]"#, with: "") }
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], schema: Self.schema, tables: tables)
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'Aurora'), ('borealis', 'Borealis');
            INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety');
            INSERT INTO seafarer (vessel_code, assigned_to, full_name)
              SELECT v, CASE WHEN i <= 6 THEN v WHEN v = 'aurora' THEN 'borealis' ELSE 'aurora' END, v || ' sailor ' || i
              FROM generate_series(1, 9) i, unnest(ARRAY['aurora', 'borealis']) v;
            INSERT INTO certificate (seafarer_id, certificate_type_id, number)
              SELECT s.id, t.id, s.full_name || ' / ' || k FROM seafarer s, certificate_type t, generate_series(1, 2) k;
            """, url: fleet.shore.url)
        var server = try fleet.serve()
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        try await assertHoldsItsPartition(fleet, 0, "before the rule change")

        // The rule changes on the shore while aurora is offline: the operator edits the
        // configuration, runs init and restarts the server.
        server.stop()
        let rerouted = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8).replacingOccurrences(of: Self.route(from), with: Self.route(to))
        try rerouted.write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        let initialized = try FleetSyncBinary.run(["init", "--config", fleet.shore.configPath])
        XCTAssertEqual(initialized.status, 0, initialized.error)
        XCTAssertTrue(initialized.output.contains("\(moved) row(s) move between vessels"), initialized.output)
        server = try fleet.serve()
        try Fixtures.runScript("UPDATE seafarer SET rank = 'AB' WHERE full_name LIKE '%sailor 1';", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[1]).status, 0)
        try await assertHoldsItsPartition(fleet, 1, "borealis, online, after the rule change")

        let shore = try await connect(fleet.shore.url)
        try await pruneEverything(shore, silent: ["aurora"])
        let result = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(result.status, 0, result.error + result.output)
        try await assertHoldsItsPartition(fleet, 0, "aurora, one sync after the rule change with every event pruned")
        return (fleet, shore, server)
    }

    /// From vessel_code to assigned_to: rows move out of aurora's partition and into it,
    /// certificates with their seafarers.
    func testARoutingRuleChangedWhileOfflineIsCaughtUp() async throws {
        // 3 seafarers of each vessel move to the other, with 2 certificates each.
        let (fleet, _, server) = try await reroute(from: "vessel_code", to: "assigned_to", moved: 18)
        defer { server.stop() }
        let aurora = try await connect(fleet.vessels[0].url)
        let crew: Int64 = try await aurora.scalar("SELECT count(*) FROM seafarer WHERE assigned_to = 'aurora'")
        let strangers: Int64 = try await aurora.scalar("SELECT count(*) FROM seafarer WHERE assigned_to <> 'aurora'")
        XCTAssertEqual(crew, 9, "aurora holds the crew assigned to it, three of them new")
        XCTAssertEqual(strangers, 0, "and none of the three that moved away")
    }

    /// From broadcast to vessel_code: every row leaves every vessel (a departure addressed to
    /// all, `*`) and each vessel gets back its own; aurora, offline meanwhile, lets the others'
    /// go. Once every vessel has passed them, retention forgets those departures.
    func testABroadcastTableRoutedWhileOfflineIsCaughtUp() async throws {
        // 18 seafarers and 36 certificates go from every vessel to one.
        let (fleet, shore, server) = try await reroute(from: nil, to: "vessel_code", moved: 54)
        defer { server.stop() }
        let aurora = try await connect(fleet.vessels[0].url)
        let crew: String = try await aurora.scalar("SELECT string_agg(DISTINCT vessel_code, ',') FROM seafarer")
        XCTAssertEqual(crew, "aurora", "aurora let the other vessel's crew go")
        XCTAssertEqual(try fleet.sync(fleet.vessels[1]).status, 0)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        let kept: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.departure WHERE vessel = '*'")
        XCTAssertEqual(kept, 0, "departures addressed to every vessel are forgotten once every vessel passed them")
    }

    /// aurora, offline, writes under a seafarer (a note, and a new certificate) that the shore
    /// meanwhile transfers to borealis; the offboarding is pruned before aurora comes back. The
    /// row was still aurora's when it wrote: the writes apply and reach borealis, and aurora's
    /// catch-up lets both rows go. (Partition-as-seen reads the departure table, not only the
    /// event log.)
    func testAWriteUnderARowWhoseDepartureWasPrunedIsJudgedByWhatTheVesselHadSeen() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], schema: try CatchUpTests.preexistingSchema(crew: 30))
        let server = try fleet.serve()
        defer { server.stop() }
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        let aurora = try await connect(fleet.vessels[0].url)
        let moved: UUID = try await aurora.scalar("SELECT id FROM seafarer ORDER BY id LIMIT 1")
        try Fixtures.runScript("""
            UPDATE seafarer SET notes = 'written at sea' WHERE id = '\(moved)';
            INSERT INTO certificate (seafarer_id, certificate_type_id, number)
              SELECT '\(moved)', id, 'AT-SEA-1' FROM certificate_type ORDER BY code LIMIT 1;
            """, url: fleet.vessels[0].url)
        try Fixtures.runScript("UPDATE seafarer SET vessel_code = 'borealis' WHERE id = '\(moved)';", url: fleet.shore.url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[1]).status, 0)
        let shore = try await connect(fleet.shore.url)
        try await pruneEverything(shore, silent: ["aurora"])
        let departed: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.departure WHERE vessel = 'aurora' AND row_id = '\(moved)'")
        XCTAssertEqual(departed, 1, "the pruned offboarding is remembered as a departure")

        let result = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(result.status, 0, result.error + result.output)
        let rejected: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.security_event WHERE vessel = 'aurora'")
        XCTAssertEqual(rejected, 0, "nothing aurora wrote was rejected")
        let note: String? = try await shore.scalar("SELECT notes FROM seafarer WHERE id = '\(moved)'")
        XCTAssertEqual(note, "written at sea", "aurora's write to the row it still held applied")
        let created: Int64 = try await shore.scalar("SELECT count(*) FROM certificate WHERE number = 'AT-SEA-1' AND seafarer_id = '\(moved)'")
        XCTAssertEqual(created, 1, "the certificate aurora created under it reached the shore")
        let left: Int64 = try await aurora.scalar("SELECT (SELECT count(*) FROM seafarer WHERE id = '\(moved)') + (SELECT count(*) FROM certificate WHERE number = 'AT-SEA-1')")
        XCTAssertEqual(left, 0, "aurora let the row and its new certificate go")
        XCTAssertEqual(try fleet.sync(fleet.vessels[1]).status, 0)
        let borealis = try await connect(fleet.vessels[1].url)
        let arrived: Int64 = try await borealis.scalar("SELECT count(*) FROM certificate WHERE number = 'AT-SEA-1'")
        XCTAssertEqual(arrived, 1, "the certificate reached the seafarer's new vessel")
        let heldNote: String? = try await borealis.scalar("SELECT notes FROM seafarer WHERE id = '\(moved)'")
        XCTAssertEqual(heldNote, "written at sea")
    }
}
