import FleetSyncCore
import FleetSyncTestSupport
import XCTest
@testable import FleetSyncPostgres

/// Types PostgreSQL stores but cannot compare with `=` (json, xml, point, box, ...; arrays of
/// them) must be captured and applied like any other: whatever PostgreSQL accepts into a synced
/// table syncs.
final class NoEqualityTypeTests: DatabaseTestCase {
    static let schema = """
        CREATE TABLE oddity (
          id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          note text, j json, x xml, p point, b box, c circle, ja json[]
        );
        """

    func testRowsWithTypesWithoutEqualityAreCapturedAndApplied() async throws {
        let table = TableConfiguration(name: "oddity", route: .broadcast, defaultOwner: .shared)
        let sourceURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let source = try await connect(sourceURL)
        _ = try await Installer(configuration: Fixtures.configuration(role: .shore, nodeID: "shore", url: sourceURL, tables: [table])).install(on: source)
        try await source.execute("""
            INSERT INTO oddity (note, j, x, p, b, c, ja) VALUES
              ('first', '{"a": [1, 2.50, "x"]}', '<a>b</a>', '(1.5,2)', '((0,0),(1,1))', '<(1,1),2>', ARRAY['{"k": 1}'::json, 'null'::json])
            """)
        try await source.execute("UPDATE oddity SET j = '{\"a\":   [1, 2.50, \"x\"], \"b\": null}', p = '(3,4)', note = 'second'")
        try await source.execute("UPDATE oddity SET ja = ARRAY['[]'::json], x = '<a>c</a>', b = '((0,0),(2,2))', c = '<(0,0),5>'")
        try await source.execute("UPDATE oddity SET b = '((1,1),(3,3))'")
        try await source.execute("INSERT INTO oddity (note) VALUES ('gone')")
        try await source.execute("DELETE FROM oddity WHERE note = 'gone'")
        let moved = try await OutboxReader(session: source).sequence()
        XCTAssertEqual(moved, 6, "two inserts, three updates, one delete")

        let targetURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let target = try await connect(targetURL)
        let targetConfiguration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: targetURL, tables: [table])
        _ = try await Installer(configuration: targetConfiguration).install(on: target)
        let changes = try await OutboxReader(session: source).read(after: 0, limit: 100)
        let events = changes.map { $0.event(node: "shore", role: .shore, table: table) }
        let schema = try await LocalSchema.load(configuration: targetConfiguration, session: target)
        let telemetry = TelemetryWriter(url: targetURL, logger: Fixtures.logger)
        let report = try await Applier(schema: schema, session: target, telemetry: telemetry).apply(events, from: "shore")
        await telemetry.close()
        let reasons: [String] = try await target.rows("SELECT coalesce(sql_state, '') || ' ' || message FROM fleetsync.dead_letter").map { try $0.decode(String.self) }
        XCTAssertEqual(report.deadLettered, 0, reasons.joined(separator: "; "))
        // json keeps its input's text; FleetSync carries its value (as jsonb would): compared as jsonb.
        let query = "SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', id, note, j::jsonb, x, p, b, c, ja, is_deleted), E'\\n' ORDER BY note) FROM oddity"
        let expected: String = try await source.scalar(query)
        let actual: String = try await target.scalar(query)
        XCTAssertEqual(actual, expected)
        XCTAssertTrue(actual.contains("\"b\": null"), actual)
        let tombstones: Int64 = try await target.scalar("SELECT count(*) FROM oddity WHERE is_deleted")
        XCTAssertEqual(tombstones, 1, "the deleted row")
        XCTAssertTrue(actual.contains("(3,3),(1,1)"), "a box moved without changing its area (box = box compares areas): \(actual)")
        // An update on the target too (the vessel's capture of the same types).
        try await target.execute("UPDATE oddity SET j = '[1]', p = '(9,9)' WHERE note = 'second'")
        let captured: Int64 = try await target.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(captured, 1)
    }

    /// The same types in numbers: 3,500 rows (more than one 3,000-row apply slice, each slice
    /// of new rows copied in through the empty-range path), each inserted and then updated.
    func testThousandsOfRowsWithTheseTypesApplyInEverySlice() async throws {
        let table = TableConfiguration(name: "oddity", route: .broadcast, defaultOwner: .shared)
        let sourceURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let source = try await connect(sourceURL)
        _ = try await Installer(configuration: Fixtures.configuration(role: .shore, nodeID: "shore", url: sourceURL, tables: [table])).install(on: source)
        try await source.execute("""
            INSERT INTO oddity (note, j, x, p, b, c, ja)
            SELECT 'n' || i, json_build_object('i', i, 'a', json_build_array()), ('<r>' || i || '</r>')::xml, point(i, -i),
                   box(point(0, 0), point(i, 1)), circle(point(i, i), 1), ARRAY[json_build_array(), json_build_object('i', i)]
            FROM generate_series(1, 3500) i
            """)
        try await source.execute("UPDATE oddity SET b = box(point(1, 0), point(1 + (b[0])[0], 1)), j = json_build_object('moved', true), p = point(p[1], p[0])")
        let moved = try await OutboxReader(session: source).sequence()
        XCTAssertEqual(moved, 7_000)

        let targetURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let target = try await connect(targetURL)
        let targetConfiguration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: targetURL, tables: [table])
        _ = try await Installer(configuration: targetConfiguration).install(on: target)
        let schema = try await LocalSchema.load(configuration: targetConfiguration, session: target)
        let telemetry = TelemetryWriter(url: targetURL, logger: Fixtures.logger)
        // In two batches, as two exchanges would bring them: the inserts, then the updates.
        for (after, limit) in [(Int64(0), 3_500), (Int64(3_500), 3_500)] {
            let events = try await OutboxReader(session: source).read(after: after, limit: limit).map { $0.event(node: "shore", role: .shore, table: table) }
            let report = try await Applier(schema: schema, session: target, telemetry: telemetry).apply(events, from: "shore")
            XCTAssertEqual(report.deadLettered, 0)
        }
        await telemetry.close()
        let query = "SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s', id, note, j::jsonb, x, p, b, c, ja), E'\\n' ORDER BY id)) FROM oddity"
        let expected: String = try await source.scalar(query)
        let actual: String = try await target.scalar(query)
        XCTAssertEqual(actual, expected, "all 3,500 rows equal, boxes moved at the same area included")
    }
}
