import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest

/// Issue 15, items 2 and 3, end to end: a real shore (`fleetsync serve`) and two vessels
/// (`fleetsync sync --once`) sync `numeric` 1e1100, the longest numeric PostgreSQL writes, a
/// `jsonb` holding a long number and `jsonb` nested 64 and 10,000 levels deep, both ways, and a
/// deep value one vessel writes into a broadcast row reaches the other vessel without stopping
/// its exchange. Before: "number of 1101 bytes exceeds the limit of 1024" on every exchange, and
/// the 64-deep value made every other vessel's exchange fail with 500.
final class LongValueEndToEndTests: DatabaseTestCase {
    static let schema = (try? String(contentsOfFile: Fixtures.exampleSchemaPath, encoding: .utf8) ?? "") ?? ""
    static let columns = """
        ALTER TABLE seafarer ADD COLUMN salary numeric, ADD COLUMN profile jsonb;
        ALTER TABLE vessel ADD COLUMN spec jsonb;
        """
    static let tables = """
        [[table]]
        name = "vessel"
        route = "broadcast"
        default_owner = "shore"
        [table.owners]
        shared = ["spec"]

        [[table]]
        name = "certificate_type"
        route = "broadcast"
        default_owner = "shore"

        [[table]]
        name = "seafarer"
        route = { column = "vessel_code" }
        default_owner = "shore"
        [table.owners]
        shared = ["notes", "salary", "profile"]

        [[table]]
        name = "certificate"
        route = { parent = "seafarer", via = "seafarer_id" }
        default_owner = "shore"

        """

    static let e1100 = "1" + String(repeating: "0", count: 1_100)
    static let longestNumeric = "-" + String(repeating: "9", count: 131_072) + "." + String(repeating: "9", count: 16_383)

    static func nested(_ depth: Int, around leaf: String = "1") -> String {
        String(repeating: "[", count: depth) + leaf + String(repeating: "]", count: depth)
    }

    /// One node's rows of `vessel`'s partition (all rows with nil), values hashed to keep it short.
    static func partition(_ vessel: String?) -> String {
        let seafarers = vessel.map { "WHERE vessel_code = '\($0)'" } ?? ""
        return """
            SELECT coalesce(string_agg(r, E'\\n' ORDER BY r), '') FROM (
              SELECT format('vessel %s %s %s', code, name, md5(spec::text)) AS r FROM vessel UNION ALL
              SELECT format('seafarer %s %s %s %s %s', full_name, vessel_code, md5(salary::text), length(salary::text), md5(profile::text)) FROM seafarer \(seafarers)) p
            """
    }

    func syncAll(_ fleet: Fleet, file: StaticString = #filePath, line: UInt = #line) throws {
        for vessel in fleet.vessels + fleet.vessels {
            let result = try fleet.sync(vessel)
            XCTAssertEqual(result.status, 0, "sync of \(vessel.id): \(result.output) \(result.error)", file: file, line: line)
        }
    }

    func assertConverged(_ fleet: Fleet, file: StaticString = #filePath, line: UInt = #line) async throws {
        let shore = try await connect(fleet.shore.url)
        for vessel in fleet.vessels {
            let db = try await connect(vessel.url)
            let expected: String = try await shore.scalar(Self.partition(vessel.id))
            let actual: String = try await db.scalar(Self.partition(nil))
            XCTAssertEqual(actual, expected, "vessel \(vessel.id) does not hold exactly its partition", file: file, line: line)
            let dead: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.dead_letter")
            XCTAssertEqual(dead, 0, "vessel \(vessel.id) dead-lettered something", file: file, line: line)
        }
        let dead: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.dead_letter")
        XCTAssertEqual(dead, 0, "the shore dead-lettered something", file: file, line: line)
    }

    func testLongNumbersAndDeepJSONBSyncBothWays() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], schema: Self.schema + Self.columns, tables: Self.tables)
        let server = try fleet.serve()
        defer { server.stop() }

        // Shore to vessels.
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name, spec) VALUES ('aurora', 'A', '{"n": 1e1100, "deep": \(Self.nested(10_000))}'), ('borealis', 'B', NULL);
            INSERT INTO seafarer (vessel_code, full_name, salary, profile) VALUES
              ('aurora', 's-Ana', 1e1100, '{"n": 1e1100}'),
              ('aurora', 's-Bo', \(Self.longestNumeric), '\(Self.nested(64))'),
              ('borealis', 's-Cy', 2e1100, '\(Self.nested(10_000, around: "3e1100"))');
            """, url: fleet.shore.url)
        try syncAll(fleet)
        try await assertConverged(fleet)
        let aurora = try await connect(fleet.vessels[0].url)
        let salary: String = try await aurora.scalar("SELECT salary::text FROM seafarer WHERE full_name = 's-Ana'")
        XCTAssertEqual(salary, Self.e1100)
        let longest: String = try await aurora.scalar("SELECT salary::text FROM seafarer WHERE full_name = 's-Bo'")
        XCTAssertEqual(longest, Self.longestNumeric)

        // Vessels to shore, and through the shore to the other vessel (a broadcast row).
        try Fixtures.runScript("""
            UPDATE seafarer SET salary = \(Self.longestNumeric), profile = '\(Self.nested(10_000, around: "{\"n\": 4e1100}"))' WHERE full_name = 's-Ana';
            INSERT INTO seafarer (vessel_code, full_name, salary, profile) VALUES ('aurora', 'v-Dee', 5e1100, '\(Self.nested(64))');
            UPDATE vessel SET spec = '\(Self.nested(64, around: "6e1100"))' WHERE code = 'borealis';
            """, url: fleet.vessels[0].url)
        try Fixtures.runScript("""
            UPDATE seafarer SET profile = '{"n": 7e1100}', salary = 8e1100 WHERE full_name = 's-Cy';
            """, url: fleet.vessels[1].url)
        try syncAll(fleet)
        try await assertConverged(fleet)
        let shore = try await connect(fleet.shore.url)
        let dee: Int64 = try await shore.scalar("SELECT length(salary::text) FROM seafarer WHERE full_name = 'v-Dee'")
        XCTAssertEqual(dee, 1_101)
        let borealis = try await connect(fleet.vessels[1].url)
        let spec: Bool = try await borealis.scalar("SELECT spec = '\(Self.nested(64, around: "6e1100"))'::jsonb FROM vessel WHERE code = 'borealis'")
        XCTAssertTrue(spec, "aurora's 64-deep value reached borealis through the shore")
        let cy: Bool = try await shore.scalar("SELECT profile = '{\"n\": 7e1100}'::jsonb AND salary = 8e1100 FROM seafarer WHERE full_name = 's-Cy'")
        XCTAssertTrue(cy)
    }
}
