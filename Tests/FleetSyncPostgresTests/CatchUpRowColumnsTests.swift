import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

/// A catch-up page reads each synced column on its own (``CatchUpRowColumns``) instead of the
/// row's captured JSON object: every value must come out exactly as capture writes it.
final class CatchUpRowColumnsTests: DatabaseTestCase {
    func testAPageCarriesEveryValueAsCaptureWritesIt() async throws {
        let tables = Fixtures.exampleTables() + [TableConfiguration(name: "kinds", route: .broadcast)]
        let (configuration, db) = try await installedNode(role: .shore, nodeID: "shore", tables: tables, schema: """
            CREATE TABLE kinds (
              id uuid PRIMARY KEY DEFAULT gen_random_uuid(), t text, v varchar(12), c char(4), n numeric, i int, b bigint, f float8, r real,
              ok boolean, j jsonb, a int[], ta text[], ts timestamptz, d date, iv interval, by bytea, u uuid
            );
            """)
        try await db.execute("""
            INSERT INTO kinds (t, v, c, n, i, b, f, r, ok, j, a, ta, ts, d, iv, by, u) VALUES
              ('plain', 'short', 'ab', 1.50, 7, 9007199254740993, 0.1, 1.5, true, '{"k": [1, null, "x"]}', '{1,2,NULL}', '{"a b", "c\\"d"}',
               '2024-02-29 12:34:56.789+02', '2024-02-29', '1 day 02:03:04', '\\x00ff', gen_random_uuid()),
              (E'tab\\tnew\\nline "quoted" \\\\ back', 'ünïcödé', NULL, -1e-20, NULL, NULL, 'NaN', '-Infinity', false, 'null', '{}', '{}',
               NULL, NULL, NULL, NULL, NULL),
              (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
            """)
        try await db.execute("DELETE FROM kinds WHERE t IS NULL")  // a tombstone with its clock
        let schema = try await LocalSchema.load(configuration: configuration, session: db)
        let reader = CatchUpReader(configuration: configuration, schema: schema, session: db)
        let page = try await reader.page(vessel: "aurora", whole: true, from: CatchUpPosition(phase: 1, rank: 0, id: nil), limit: 1_000,
                                         byteBudget: 1_048_576, position: 1)
        let kinds = page.events.filter { $0.table == "kinds" }
        XCTAssertEqual(kinds.count, 3)
        // The reference: the row's captured object, as capture and the former page query made it.
        let expected = try await reader.rows(of: configuration.table(named: "kinds")!, ids: kinds.map(\.rowID), vessel: nil)
        for event in kinds {
            let reference = try XCTUnwrap(expected.first { $0.rowID == event.rowID })
            XCTAssertEqual(event.fields, reference.fields, "row \(event.rowID)")
        }
        XCTAssertTrue(kinds.contains { $0.fields[ChangeEvent.deletedField]?.value == .bool(true) }, "the deleted row travels with its tombstone")
    }
}
