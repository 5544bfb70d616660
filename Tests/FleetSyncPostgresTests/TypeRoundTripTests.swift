import FleetSyncCore
import FleetSyncTestSupport
import XCTest
@testable import FleetSyncPostgres

/// Every type a user keeps in a synced table comes back from its captured JSONB exactly.
final class TypeRoundTripTests: DatabaseTestCase {
    static let schema = """
        CREATE TYPE mood AS ENUM ('calm', 'rough', 'très agité');
        CREATE TABLE sample (
          id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          label text,
          n_numeric numeric, n_fixed numeric(40, 20), t_tz timestamptz, d_date date, i_interval interval,
          b_bytea bytea, a_text text[], a_int int[], j_jsonb jsonb, e_enum mood, u_uuid uuid,
          f_bool boolean, x_text text, f_double double precision, f_real real, n_null integer
        );
        """

    /// Values per column, each with a few hard cases.
    static let cases: [(column: String, values: [String])] = [
        ("n_numeric", ["123456789012345678901234567890.123456789012345678901234567890", "'NaN'", "-0.000000000000000000000000000001", "'Infinity'", "1e-30"]),
        ("n_fixed", ["12345678901234567890.12345678901234567890", "-0.00000000000000000001"]),
        ("t_tz", ["'2024-02-29 23:59:59.999999+05:30'", "'infinity'", "'-infinity'", "'1901-12-13 20:45:52 America/New_York'", "'0044-03-15 12:00:00 BC'"]),
        ("d_date", ["'2024-02-29'", "'infinity'", "'4713-01-01 BC'"]),
        ("i_interval", ["'1 year 2 mons -3 days 04:05:06.789'", "'-1 day +02:00:00'", "'P1Y2M3DT4H5M6S'", "'-178000000 years'"]),
        ("b_bytea", ["'\\x00ff0a5c27'::bytea", "''::bytea"]),
        ("a_text", ["ARRAY['a', NULL, 'quote \"'' back\\\\slash', '', 'NULL', '船 🚢']", "'{}'::text[]"]),
        ("a_int", ["ARRAY[[1, 2], [3, NULL]]", "ARRAY[-2147483648, 2147483647]"]),
        ("j_jsonb", ["'{\"n\": 1.000000000000000000001, \"s\": \"é\\u0000x\", \"a\": [null, true, {\"\": []}]}'::jsonb".replacingOccurrences(of: "\\u0000", with: "\\\\u0001"), "'\"just a string\"'::jsonb", "'null'::jsonb"]),
        ("e_enum", ["'très agité'", "'calm'"]),
        ("u_uuid", ["'01890a5d-ac96-774b-bcce-b302099a8057'"]),
        ("f_bool", ["true", "false"]),
        ("x_text", ["E'tab\\there\\nnewline'", "'👩‍👩‍👧‍👦 עִברִית ﷺ e\u{0301}'", "''", "repeat('x', 10000)"]),
        ("f_double", ["1.7976931348623157e308", "'NaN'", "'-Infinity'", "0.1", "-0.0", "5e-324"]),
        ("f_real", ["3.4028235e38", "1.1754944e-38", "0.1"]),
        ("n_null", ["NULL"]),
    ]

    func testEveryTypeRoundTripsFromCapturedJSONB() async throws {
        let url = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let configuration = Fixtures.configuration(role: .shore, nodeID: "shore", url: url, tables: [TableConfiguration(name: "sample", route: .broadcast)])
        let db = try await self.connect(url)
        _ = try await Installer(configuration: configuration).install(on: db)
        // Unusual session settings at capture time must not change what comes back.
        try await db.execute("SET TimeZone = 'Pacific/Chatham'")
        try await db.execute("SET IntervalStyle = 'sql_standard'")
        try await db.execute("SET DateStyle = 'German, DMY'")
        try await db.execute("SET extra_float_digits = -3")
        try await db.execute("CREATE TEMP TABLE restored AS SELECT * FROM sample WITH NO DATA")
        var checked = 0
        for (column, values) in Self.cases {
            for value in values {
                let label = "\(column) = \(value.prefix(60))"
                try await db.execute("TRUNCATE fleetsync.capture_log")
                // Insert captures the value; an update from NULL captures it again as a delta.
                try await db.execute("INSERT INTO sample (label, \(column)) VALUES (\(SQL.literal(label + " insert")), \(value))")
                try await db.execute("INSERT INTO sample (label) VALUES (\(SQL.literal(label + " update")))")
                try await db.execute("UPDATE sample SET \(column) = \(value) WHERE label = \(SQL.literal(label + " update"))")
                // Apply the captured JSONB the way the applier does: jsonb_populate_record, then
                // the column codec's read expression.
                let physical = PhysicalColumn(name: column, type: column == "j_jsonb" ? "jsonb" : "other")
                try await db.execute("""
                    INSERT INTO restored (label, \(SQL.identifier(column)))
                    SELECT 'restored ' || o.op::text, \(ColumnCodec.applyExpression(physical, record: "r"))
                    FROM fleetsync.capture_log o, jsonb_populate_record(NULL::sample, o.delta) r
                    WHERE o.delta ? \(SQL.literal(column))
                    """)
                // Setting NULL over NULL changes nothing, so only the insert carries it.
                for op in value == "NULL" ? ["I"] : ["I", "U"] {
                    let source = op == "I" ? label + " insert" : label + " update"
                    let same: Bool = try await db.scalar("""
                        SELECT s.\(SQL.identifier(column)) IS NOT DISTINCT FROM r.\(SQL.identifier(column))
                           AND s.\(SQL.identifier(column))::text IS NOT DISTINCT FROM r.\(SQL.identifier(column))::text
                        FROM sample s, restored r WHERE s.label = \(SQL.literal(source)) AND r.label = 'restored \(op)'
                        """)
                    XCTAssertTrue(same, "\(label) did not round-trip (\(op))")
                    checked += 1
                }
                try await db.execute("TRUNCATE restored")
            }
        }
        XCTAssertEqual(checked, Self.cases.reduce(0) { $0 + $1.values.count } * 2 - 1)
    }

    /// The same values captured on one node and applied on another by the applier, whose new rows
    /// travel by COPY and whose updates by JSON records: every column comes back exactly.
    func testEveryTypeRoundTripsThroughTheApplier() async throws {
        let tables = [TableConfiguration(name: "sample", route: .broadcast, defaultOwner: .shared)]
        let sourceURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let targetURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let source = try await connect(sourceURL)
        let target = try await connect(targetURL)
        let sourceConfiguration = Fixtures.configuration(role: .shore, nodeID: "shore", url: sourceURL, tables: tables)
        let targetConfiguration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: targetURL, tables: tables)
        _ = try await Installer(configuration: sourceConfiguration).install(on: source)
        _ = try await Installer(configuration: targetConfiguration).install(on: target)
        try await source.execute("SET TimeZone = 'Asia/Kathmandu'")
        var rows = 0
        for (column, values) in Self.cases {
            for value in values {
                try await source.execute("INSERT INTO sample (label, \(SQL.identifier(column))) VALUES (\(SQL.literal(column + " insert " + String(rows))), \(value))")
                try await source.execute("INSERT INTO sample (label) VALUES (\(SQL.literal(column + " update " + String(rows))))")
                try await source.execute("UPDATE sample SET \(SQL.identifier(column)) = \(value) WHERE label = \(SQL.literal(column + " update " + String(rows)))")
                rows += 1
            }
        }
        let changes = try await OutboxReader(session: source).poll(after: 0, limit: 10_000)
        let events = changes.map { $0.event(node: "shore", role: .shore, table: tables[0]) }
        let applier = try await makeApplier(targetConfiguration, target)
        // Inserts first in one batch (COPY), then the updates in another (JSON records).
        let report1 = try await applier.apply(events.filter { $0.fields["label"] != nil }, from: "shore")
        let report2 = try await applier.apply(events.filter { $0.fields["label"] == nil }, from: "shore")
        XCTAssertEqual(report1.deadLettered + report2.deadLettered, 0)
        XCTAssertEqual(report1.quarantinedFields + report2.quarantinedFields, 0)
        let digest = "SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', id, label, n_numeric, n_fixed, t_tz, d_date, i_interval, b_bytea, a_text, a_int, j_jsonb, e_enum, u_uuid, f_bool, x_text, f_double, f_real, n_null), E'\\n' ORDER BY label) FROM sample"
        try await source.execute("SET TimeZone = 'UTC'")
        try await target.execute("SET TimeZone = 'UTC'")
        let left: String = try await source.scalar(digest)
        let right: String = try await target.scalar(digest)
        XCTAssertEqual(left, right)
        let nullVersusJSONNull: Int64 = try await target.scalar("SELECT count(*) FROM sample WHERE j_jsonb = 'null'::jsonb")
        XCTAssertEqual(nullVersusJSONNull, 2, "a JSON null stays distinct from SQL NULL")
    }
}
