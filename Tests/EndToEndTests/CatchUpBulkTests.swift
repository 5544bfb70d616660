import FleetSyncCore
@testable import FleetSyncPostgres
@testable import FleetSyncShore
import FleetSyncTestSupport
import Foundation
import PostgresNIO
import XCTest

/// Bulk catch-up pages (``CatchUpBulkPage``): a whole partition's rows as COPY text with their
/// clock objects, read on the shore without events and copied straight in on the vessel after
/// a check of the whole page.
final class CatchUpBulkTests: DatabaseTestCase {
    static let schema = """
        CREATE TYPE mood AS ENUM ('calm', 'rough', 'o''dd');
        CREATE TABLE awkward (
          id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          note text, label varchar(40), amount numeric(30,10), big numeric, ratio double precision, small real,
          counts int[], words text[], doc json, body jsonb, markup xml, spot point, area box, ring circle, shape polygon,
          raw bytea, feeling mood, seen timestamptz, day date, span interval, flag boolean, tags jsonb[],
          owned text
        );
        """
    /// Awkward values: digits a float would lose, arrays with quotes and NULLs, json kept as
    /// typed, xml, geometric types, bytea, text with tabs, newlines, carriage returns and
    /// backslashes, an enum label with a quote, NULLs everywhere.
    static let rows = """
        INSERT INTO awkward (note, label, amount, big, ratio, small, counts, words, doc, body, markup, spot, area, ring, shape, raw, feeling, seen, day, span, flag, tags, owned)
        SELECT 'line ' || i || E'\\ttab\\nnewline\\\\back\\rcr \\\\N', 'l' || i, 12345678901234567890.0123456789 + i, 1e40 + i, 1.0 / 3 + i, 0.1,
               ARRAY[i, NULL, -i], ARRAY['a "quoted" ' || i, NULL, E'back\\\\slash', 'NULL', ''], ('{"k":  [1, 2.50, "x"], "i": ' || i || '}')::json,
               jsonb_build_object('i', i, 'nested', jsonb_build_array(NULL, true, 'z\\t')), ('<r a="' || i || '">x &amp; y</r>')::xml,
               point(i, -i / 7.0), box(point(0, 0), point(i, 1)), circle(point(i, i), 2.5), polygon(box(point(0, 0), point(1, i))),
               decode('00ff5c0a09' || lpad(to_hex(i), 4, '0'), 'hex'), (ARRAY['calm', 'rough', 'o''dd']::mood[])[1 + i % 3],
               timestamptz '2024-02-29 23:59:59.123456+05:30' + i * interval '1 hour', date '2000-01-01' + i, interval '1 year 2 months 3 days 04:05:06.789' * i,
               i % 2 = 0, ARRAY['{"a": 1}'::jsonb, 'null'::jsonb], 'mine ' || i
        FROM generate_series(1, 300) i;
        INSERT INTO awkward (note) VALUES (NULL), ('');
        """
    static let table = TableConfiguration(name: "awkward", route: .broadcast, owners: ["owned": .vessel], defaultOwner: .shared)

    /// Every column's text (one session's settings on both sides), the tombstone and the clocks.
    static let content = """
        SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', id, note, label, amount, big, ratio, small,
          counts, words, doc, body, markup, spot, area, ring, shape, raw, feeling, seen, day, span, flag, tags, owned, is_deleted, sync_clock), E'\\n' ORDER BY id)
        FROM awkward
        """

    struct Nodes {
        var shore: DatabaseSession
        var shoreConfiguration: FleetSyncConfiguration
        var vessel: DatabaseSession
        var vesselURL: String
        var vesselSchema: LocalSchema
    }

    func nodes(vesselSchema: String = CatchUpBulkTests.schema, moreRows: String? = nil) async throws -> Nodes {
        let shoreURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let shore = try await connect(shoreURL)
        let shoreConfiguration = Fixtures.configuration(role: .shore, nodeID: "shore", url: shoreURL, tables: [Self.table])
        try Fixtures.runScript(Self.rows, url: shoreURL)
        if let moreRows { try Fixtures.runScript(moreRows, url: shoreURL) }
        _ = try await Installer(configuration: shoreConfiguration).install(on: shore)
        let vesselURL = try await Fixtures.database(schema: vesselSchema, exampleSchema: false)
        let vessel = try await connect(vesselURL)
        let vesselConfiguration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: vesselURL, tables: [Self.table])
        _ = try await Installer(configuration: vesselConfiguration).install(on: vessel)
        return Nodes(shore: shore, shoreConfiguration: shoreConfiguration, vessel: vessel, vesselURL: vesselURL,
                     vesselSchema: try await LocalSchema.load(configuration: vesselConfiguration, session: vessel))
    }

    func page(_ nodes: Nodes) async throws -> CatchUpBulkPage {
        let schema = try await LocalSchema.load(configuration: nodes.shoreConfiguration, session: nodes.shore)
        let page = try await CatchUpReader(configuration: nodes.shoreConfiguration, schema: schema, session: nodes.shore)
            .bulkPage(vessel: "aurora", from: CatchUpPosition(phase: 1, rank: 0, id: nil), limit: 50_000, byteBudget: 1 << 24)
        XCTAssertEqual(page.next, .end)
        // Through the wire and back, as the vessel reads it.
        var response = ExchangeResponse(shore: "shore", acknowledged: 0, events: [], cursor: 7, more: true, catchUp: ["page": .number("1")])
        response.bulk = try XCTUnwrap(page.bulk)
        let decoded = try WireCodec.decodeResponse(WireCodec.encode(response))
        XCTAssertEqual(decoded, response)
        return try XCTUnwrap(decoded.bulk)
    }

    func writer(_ nodes: Nodes) -> CatchUpBulkWriter {
        CatchUpBulkWriter(schema: nodes.vesselSchema, session: nodes.vessel, telemetry: telemetry(nodes.vesselURL), shore: "shore", sender: "shore")
    }

    func cursor(_ db: DatabaseSession) async throws -> Int64 {
        try await db.scalar("SELECT coalesce((SELECT cursor FROM fleetsync.sync_state WHERE peer = 'shore'), -1)")
    }

    /// A page of more than one COPY piece (about 1 MiB each): 3,000 rows of 1 KB besides the
    /// awkward ones, ten times the page above, go in as several pieces and read back exactly.
    func testAPageOfSeveralCopyPiecesIsCopiedInWhole() async throws {
        let nodes = try await nodes(moreRows: "INSERT INTO awkward (note, owned) SELECT repeat('n', 1000) || i, 'o' || i FROM generate_series(1, 3000) i;")
        let page = try await page(nodes)
        XCTAssertEqual(page.rows, 3_302)
        let outcome = try await writer(nodes).apply(page, cursor: 7)
        XCTAssertNil(outcome.asEvents, "copied straight in")
        XCTAssertEqual(outcome.copied, 3_302)
        let bytes: Int64 = try await nodes.vessel.scalar("SELECT sum(length(note))::bigint FROM awkward")
        XCTAssertGreaterThan(bytes, 2 << 20, "more than two pieces of text")
        let expected: String = try await nodes.shore.scalar(Self.content)
        let held: String = try await nodes.vessel.scalar(Self.content)
        XCTAssertEqual(held, expected)
    }

    func testAnAwkwardPageIsCopiedInAndEveryValueReadsBackExactly() async throws {
        let nodes = try await nodes()
        let page = try await page(nodes)
        XCTAssertEqual(page.rows, 302)
        let outcome = try await writer(nodes).apply(page, cursor: 7)
        XCTAssertNil(outcome.asEvents, "copied straight in")
        XCTAssertEqual(outcome.copied, 302)
        let expected: String = try await nodes.shore.scalar(Self.content)
        let held: String = try await nodes.vessel.scalar(Self.content)
        XCTAssertEqual(held, expected)
        XCTAssertTrue(held.contains("\ttab\nnewline\\back\rcr \\N"), "text with tabs, newlines and backslashes")
        let moved = try await cursor(nodes.vessel)
        XCTAssertEqual(moved, 7, "the cursor moved with the rows")
        let versions: Int64 = try await nodes.vessel.scalar("SELECT count(*) FROM awkward WHERE sync_version = (SELECT max((v->>0)::bigint) FROM jsonb_each(sync_clock) e(k, v))")
        XCTAssertEqual(versions, 302, "each row's version is its highest clock")
        let clock: Int64 = try await nodes.vessel.scalar("SELECT last_value FROM fleetsync.lamport")
        let highest: Int64 = try await nodes.shore.scalar("SELECT max(sync_version) FROM awkward")
        XCTAssertGreaterThanOrEqual(clock, highest, "the vessel's clock moved past the page's clocks")
        let captured: Int64 = try await nodes.vessel.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(captured, 0, "nothing applied is captured back")
    }

    func testAVesselThatHoldsRowsMergesThemByTheUsualRules() async throws {
        let nodes = try await nodes()
        _ = try await writer(nodes).apply(try await page(nodes), cursor: 7)
        // The vessel changes a field of its own and a shared one; the shore then changes rows too.
        try await nodes.vessel.execute("UPDATE awkward SET owned = 'vessel wrote this', note = 'vessel note' WHERE label = 'l10'")
        try await nodes.shore.execute("UPDATE awkward SET big = -1, raw = '\\x00'::bytea WHERE label IN ('l10', 'l11', 'l12')")
        try await nodes.shore.execute("DELETE FROM awkward WHERE label = 'l13'")
        let outcome = try await writer(nodes).apply(try await page(nodes), cursor: 9)
        XCTAssertNotNil(outcome.asEvents, "rows already held go through the merge")
        XCTAssertEqual(outcome.copied, 0)
        XCTAssertEqual(outcome.report.deadLettered, 0)
        let mine: String = try await nodes.vessel.scalar("SELECT format('%s|%s|%s|%s', owned, note, big, raw) FROM awkward WHERE label = 'l10'")
        XCTAssertEqual(mine, "vessel wrote this|vessel note|-1|\\x00", "the vessel's later writes kept, the shore's later ones taken")
        let others = Self.content.replacingOccurrences(of: "FROM awkward", with: "FROM awkward WHERE label IS DISTINCT FROM 'l10'")
        let expected: String = try await nodes.shore.scalar(others)
        let held: String = try await nodes.vessel.scalar(others)
        XCTAssertEqual(held, expected, "every other row equals the shore's, the deleted one as a tombstone")
        let moved = try await cursor(nodes.vessel)
        XCTAssertEqual(moved, 9)
    }

    func testAForgedPageIsRefusedWithNothingApplied() async throws {
        let nodes = try await nodes()
        let good = try await page(nodes)
        var forgeries: [(String, CatchUpBulkPage)] = []
        func forge(_ name: String, _ change: (inout CatchUpBulkPage.Section) -> Void) {
            var page = good
            change(&page.sections[0])
            forgeries.append((name, page))
        }
        let firstLine = good.sections[0].values.firstIndex(of: 0x0A)!
        forge("an extra field") { $0.values.insert(contentsOf: Array("\tx".utf8), at: firstLine) }
        forge("the end-of-copy escape") { $0.values.insert(contentsOf: Array("\\.".utf8), at: firstLine) }
        forge("a raw carriage return") { $0.values.insert(0x0D, at: firstLine) }
        forge("a row missing") { $0.ids.append(UUID(uuidString: "ffffffff-ffff-ffff-ffff-ffffffffffff")!); $0.deleted.append(false) }
        forge("keys out of order") { $0.ids.swapAt(0, 1) }
        forge("a tracking column") { $0.columns[0].name = "sync_clock" }
        forge("clocks that are not an object") { section in
            let end = section.clocks.firstIndex(of: 0x0A)!
            section.clocks.replaceSubrange(0..<end, with: Array("[1, \"shore\"]".utf8))
        }
        for (name, page) in forgeries {
            do {
                _ = try await writer(nodes).apply(page, cursor: 7)
                XCTFail("\(name): applied")
            } catch {
                // The check's refusal; clocks that are not an object fail where the event path reads them.
                XCTAssertTrue(error is CatchUpBulkError || "\(error)".contains("clocks is a JSON array"), "\(name): \(error)")
                print("refused \(name): \(error)")
            }
            let count: Int64 = try await nodes.vessel.scalar("SELECT count(*) FROM awkward")
            XCTAssertEqual(count, 0, "\(name): nothing applied")
            let position = try await cursor(nodes.vessel)
            XCTAssertEqual(position, -1, "\(name): the cursor did not move")
        }
    }

    /// A page the event path would trim (a vessel-owned field with the shore's clock) or refuse
    /// in part (a clock past the bound) is not copied: it goes as events, with their checks.
    func testFieldsTheShoreMayNotSendGoThroughTheEventPathsChecks() async throws {
        let nodes = try await nodes()
        try await nodes.shore.transaction { tx in
            try await tx.execute("SET LOCAL fleetsync.applying = 'on'")
            try await tx.execute("UPDATE awkward SET sync_clock = sync_clock || jsonb_build_object('owned', jsonb_build_array(5, 'shore')) WHERE label = 'l1'")
            try await tx.execute("UPDATE awkward SET sync_clock = sync_clock || jsonb_build_object('note', jsonb_build_array(\(Int64(1) << 61), 'shore')) WHERE label = 'l2'")
        }
        let outcome = try await writer(nodes).apply(try await page(nodes), cursor: 7)
        XCTAssertNotNil(outcome.asEvents)
        XCTAssertEqual(outcome.report.rejectedFields, 1, "the vessel-owned field with the shore's clock")
        XCTAssertEqual(outcome.report.rejectedEvents, 1, "the row with a clock past the bound")
        let owned: String? = try await nodes.vessel.scalar("SELECT owned FROM awkward WHERE label = 'l1'")
        XCTAssertNil(owned, "not applied")
        let count: Int64 = try await nodes.vessel.scalar("SELECT count(*) FROM awkward")
        XCTAssertEqual(count, 301)
        let clock: Int64 = try await nodes.vessel.scalar("SELECT last_value FROM fleetsync.lamport")
        XCTAssertLessThan(clock, Int64(1) << 40)
    }

    /// A value the vessel's column refuses (an enum label it lacks): the COPY's error sends the
    /// page through the event path, which sets that value aside in the quarantine and applies
    /// the rest of each row.
    func testAValueTheVesselRefusesIsSetAsideAsEventsWould() async throws {
        let nodes = try await nodes(vesselSchema: Self.schema.replacingOccurrences(of: ", 'o''dd'", with: ""))
        let outcome = try await writer(nodes).apply(try await page(nodes), cursor: 7)
        XCTAssertEqual(outcome.copied, 0)
        XCTAssertNotNil(outcome.asEvents)
        XCTAssertEqual(outcome.report.quarantinedFields, 100, "the rows with the label the vessel lacks")
        XCTAssertEqual(outcome.report.deadLettered, 0)
        let rows: String = try await nodes.vessel.scalar("SELECT format('%s rows, %s without a feeling', count(*), count(*) FILTER (WHERE feeling IS NULL)) FROM awkward")
        XCTAssertEqual(rows, "302 rows, 102 without a feeling")
    }

    /// A vessel that does not announce bulk pages (one before them, or with
    /// `FLEETSYNC_BULK_CATCH_UP=off`) is caught up with event pages, and one that does with bulk
    /// pages, through the command line against one server: both end with their partition.
    func testVesselsWithAndWithoutBulkPagesBothHoldTheirPartition() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], limits: "[limits]\nbatch_bytes = 65536", schema: try CatchUpTests.preexistingSchema(crew: 1_500))
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        for (index, bulk) in [(0, true), (1, false)] {
            let vessel = fleet.vessels[index]
            var environment = ProcessInfo.processInfo.environment
            if !bulk { environment["FLEETSYNC_BULK_CATCH_UP"] = "off" }
            let result = try Shell.runCapturing([FleetSyncBinary.path, "sync", "--config", vessel.configPath], environment: environment)
            XCTAssertEqual(result.status, 0, result.error)
            let status = try FleetSyncBinary.run(["status", "--config", vessel.configPath, "--json"])
            let catchUp = try JSONParser.parse(status.output.trimmingCharacters(in: .whitespacesAndNewlines)).objectValue?["catch_up"]?.objectValue
            XCTAssertEqual(catchUp?["bulk"], .bool(bulk), status.output)
            XCTAssertEqual(catchUp?["done"], .bool(true), status.output)
            XCTAssertGreaterThan(catchUp?["page"]?.int64Value ?? 0, 1, "more than one page")
            let expected = try await CatchUpTests.partition(shore, vessel: vessel.id)
            let held = try await CatchUpTests.partition(try await connect(vessel.url), vessel: nil)
            XCTAssertEqual(held, expected, "\(vessel.id) (bulk pages: \(bulk)) holds its partition")
        }
    }

    /// A section whose rows reference rows this vessel does not hold (their page not applied):
    /// the COPY's foreign-key error sends the page through the event path, where they wait for
    /// their parents as any change does, and nothing else is lost.
    func testRowsWhoseParentsAreMissingWaitAsEventsWould() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], schema: try CatchUpTests.preexistingSchema(crew: 90))
        let shore = try await connect(fleet.shore.url)
        let schema = try await LocalSchema.load(configuration: fleet.shore.configuration, session: shore)
        let page = try await CatchUpReader(configuration: fleet.shore.configuration, schema: schema, session: shore)
            .bulkPage(vessel: "aurora", from: CatchUpPosition(phase: 1, rank: 0, id: nil), limit: 50_000, byteBudget: 1 << 24)
        let certificates = try XCTUnwrap(page.bulk?.sections.first { $0.table == "certificate" })
        let vessel = try await connect(fleet.vessels[0].url)
        let vesselSchema = try await LocalSchema.load(configuration: fleet.vessels[0].configuration, session: vessel)
        let outcome = try await CatchUpBulkWriter(schema: vesselSchema, session: vessel, telemetry: telemetry(fleet.vessels[0].url), shore: "shore", sender: "shore")
            .apply(CatchUpBulkPage(sections: [certificates]), cursor: 3)
        XCTAssertEqual(outcome.copied, 0)
        XCTAssertNotNil(outcome.asEvents, "the foreign-key error sent the page through the event path")
        XCTAssertEqual(outcome.report.waiting, certificates.rows, "every certificate waits for its seafarer")
        let waiting: Int64 = try await vessel.scalar("SELECT count(*) FROM fleetsync.waiting")
        XCTAssertEqual(waiting, Int64(certificates.rows))
    }

    /// Only a vessel that announces the bulk form gets it; others get events as before.
    func testOnlyAVesselThatAnnouncesTheBulkFormGetsIt() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora"], schema: try CatchUpTests.preexistingSchema(crew: 300))
        let db = try await connect(fleet.shore.url)
        let configuration = fleet.shore.configuration
        let schema = try await LocalSchema.load(configuration: configuration, session: db)
        let catchUp = CatchUp(configuration: configuration, schema: schema, logger: Fixtures.logger)
        XCTAssertFalse(CatchUp.announcesBulk(["pending": .number("0")]))
        XCTAssertTrue(CatchUp.announcesBulk([CatchUpBulkPage.statusKey: .number("1")]))
        let old = try await catchUp.answer(vessel: "aurora", cursor: 0, echo: nil, bulk: false, force: false, on: db)
        XCTAssertNil(old?.bulk)
        XCTAssertFalse(old?.events.isEmpty ?? true)
        let new = try await catchUp.answer(vessel: "aurora", cursor: 0, echo: nil, bulk: true, force: false, on: db)
        XCTAssertEqual(new?.events.count, 0)
        XCTAssertEqual(new?.bulk?.rows, old?.events.count)
        XCTAssertEqual(new?.progress["bulk"], .bool(true))
    }
}
