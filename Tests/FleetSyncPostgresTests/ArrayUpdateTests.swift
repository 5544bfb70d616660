import FleetSyncCore
import FleetSyncTestSupport
import XCTest
@testable import FleetSyncPostgres

/// Updates of rows that exist on the receiving node travel as typed arrays (``ArrayUpdate``):
/// every built-in type comes through exactly, a value the local column cannot hold fails as it
/// does through COPY or JSON (never truncated), and only the changed fields' clocks are written.
final class ArrayUpdateTests: DatabaseTestCase {
    static let schema = """
        CREATE TABLE sample (
          id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          label text,
          n_numeric numeric, n_fixed numeric(40, 20), t_tz timestamptz(3), d_date date, i_interval interval hour to second,
          b_bytea bytea, a_text text[], a_int int[], j_jsonb jsonb, j_json json, x_xml xml, u_uuid uuid,
          f_bool boolean, x_text text, f_double double precision, f_real real, n_null integer,
          v_short varchar(12), c_fixed char(4), bits bit(3), vbits bit varying(8), a_varchar varchar(6)[],
          p point, bx box, poly polygon, net inet, ja json[]
        );
        """

    /// Values per column, each with a few hard cases (text with every character an array
    /// literal or COPY escapes, a long value, NULL inside arrays, JSON null against SQL NULL).
    static let cases: [(column: String, values: [String])] = [
        ("n_numeric", ["123456789012345678901234567890.123456789012345678901234567890", "'NaN'", "-0.000000000000000000000000000001", "'Infinity'"]),
        ("n_fixed", ["12345678901234567890.12345678901234567890", "-0.00000000000000000001"]),
        ("t_tz", ["'2024-02-29 23:59:59.999+05:30'", "'infinity'", "'0044-03-15 12:00:00 BC'"]),
        ("d_date", ["'2024-02-29'", "'4713-01-01 BC'"]),
        ("i_interval", ["'1 day 04:05:06.789'", "'-178000000 hours'"]),
        ("b_bytea", ["'\\x00ff0a5c27227b7d2c'::bytea", "''::bytea"]),
        ("a_text", ["ARRAY['a', NULL, 'quote \"'' back\\\\slash', '', 'NULL', '{,}', E'tab\\tnl\\n', '船 🚢']", "'{}'::text[]"]),
        ("a_int", ["ARRAY[[1, 2], [3, NULL]]", "ARRAY[-2147483648, 2147483647]"]),
        ("j_jsonb", ["'{\"n\": 1.000000000000000000001, \"s\": \"é\\\\u0001x,{}\\\"\", \"a\": [null, true, {\"\": []}]}'::jsonb", "'null'::jsonb"]),
        ("j_json", ["'{\"keep\":   [1, 2.50], \"b\": null}'::json", "'null'::json", "'\"x\\\\\\\\y\"'::json"]),
        ("x_xml", ["'<a b=\"1\">c &amp; \"d\", {e}</a>'", "'text, only'"]),
        ("u_uuid", ["'01890a5d-ac96-774b-bcce-b302099a8057'"]),
        ("f_bool", ["true", "false"]),
        ("x_text", ["E'tab\\there\\nnewline\\\\ \"quoted\" {braces}, commas'", "'👩‍👩‍👧‍👦 עִברִית ﷺ e\u{0301}'", "''", "'NULL'", "repeat('x,\"\\', 30000)"]),
        ("f_double", ["1.7976931348623157e308", "'NaN'", "'-Infinity'", "0.1", "-0.0", "5e-324"]),
        ("f_real", ["3.4028235e38", "0.1"]),
        ("n_null", ["NULL"]),
        ("v_short", ["'twelve chars'", "'ü'"]),
        ("c_fixed", ["'ab'", "'abcd'"]),
        ("bits", ["B'101'"]),
        ("vbits", ["B'10100101'", "B''"]),
        ("a_varchar", ["ARRAY['six ch', NULL, '']"]),
        ("p", ["'(1.5,-2)'"]),
        ("bx", ["'((0,0),(1,1))'", "'((1,1),(2,2))'"]),
        ("poly", ["'((0,0),(1,1),(2,0))'"]),
        ("net", ["'10.1.2.3/8'", "'::1'"]),
        ("ja", ["ARRAY['[]'::json, 'null'::json, '{\"k\": \"v,}\"}'::json]"]),
    ]

    func testEveryBuiltInTypeIsUpdatedExactlyThroughTypedArrays() async throws {
        let tables = [TableConfiguration(name: "sample", route: .broadcast, defaultOwner: .shared)]
        let sourceURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let targetURL = try await Fixtures.database(schema: Self.schema, exampleSchema: false)
        let source = try await connect(sourceURL)
        let target = try await connect(targetURL)
        let targetConfiguration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: targetURL, tables: tables)
        _ = try await Installer(configuration: Fixtures.configuration(role: .shore, nodeID: "shore", url: sourceURL, tables: tables)).install(on: source)
        _ = try await Installer(configuration: targetConfiguration).install(on: target)
        // One row per case, created first; then each case's value written into its row, and
        // every row given a second value in another column, so that rows differ in what changes.
        var rows = 0
        for (column, values) in Self.cases {
            for value in values {
                let label = SQL.literal("\(column) \(rows)")
                try await source.execute("INSERT INTO sample (label, x_text) VALUES (\(label), 'before')")
                try await source.execute("UPDATE sample SET \(SQL.identifier(column)) = \(value) WHERE label = \(label)")
                rows += 1
            }
        }
        try await source.execute("UPDATE sample SET f_bool = NOT coalesce(f_bool, false) WHERE label LIKE 'n\\_%'")
        let changes = try await OutboxReader(session: source).poll(after: 0, limit: 10_000)
        let events = changes.map { $0.event(node: "shore", role: .shore, table: tables[0]) }
        let applier = try await makeApplier(targetConfiguration, target)
        let inserts = try await applier.apply(events.filter { $0.fields["label"] != nil }, from: "shore")
        XCTAssertEqual(inserts.deadLettered, 0)
        // Every column the updates write goes through the typed arrays.
        let physical = try await LocalSchema.load(configuration: targetConfiguration, session: target).tables["sample"]!
        XCTAssertNotNil(ArrayUpdate(columns: physical.syncedColumns.filter { $0.name != "label" }))
        let updates = try await applier.apply(events.filter { $0.fields["label"] == nil }, from: "shore")
        let reasons: [String] = try await target.rows("SELECT coalesce(sql_state, '') || ' ' || message FROM fleetsync.dead_letter").map { try $0.decode(String.self) }
        XCTAssertEqual(updates.deadLettered, 0, reasons.joined(separator: "; "))
        XCTAssertEqual(updates.quarantinedFields, 0)
        let columns = ["id", "label", "sync_version", "is_deleted", "sync_clock"] + Self.cases.map(\.column)
        let digest = "SELECT string_agg(format('\(columns.map { _ in "%s" }.joined(separator: "|"))', \(columns.map { $0 == "j_json" ? "j_json::jsonb" : $0 }.joined(separator: ", "))), E'\\n' ORDER BY label) FROM sample"
        for db in [source, target] { try await db.execute("SET TimeZone = 'UTC'") }
        let left: String = try await source.scalar(digest)
        let right: String = try await target.scalar(digest)
        let count: Int64 = try await target.scalar("SELECT count(*) FROM sample")
        XCTAssertEqual(count, Int64(rows))
        XCTAssertEqual(right, left)
        let nulls: Int64 = try await target.scalar("SELECT count(*) FROM sample WHERE j_jsonb = 'null'::jsonb OR j_json::text = 'null'")
        XCTAssertEqual(nulls, 2, "a JSON null stays distinct from SQL NULL")
        // Applying the same updates again changes nothing.
        let again = try await applier.apply(events.filter { $0.fields["label"] == nil }, from: "shore")
        XCTAssertEqual(again.appliedRows, 0)
    }

    /// A value longer than the local column allows is refused (and set aside), not cut to fit:
    /// the arrays are cast to the type without its length, which the assignment then checks.
    func testAValueTooLongForTheLocalColumnIsRefusedNotTruncated() async throws {
        let tables = [TableConfiguration(name: "narrow", route: .broadcast, defaultOwner: .shared)]
        let sourceURL = try await Fixtures.database(schema: "CREATE TABLE narrow (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), v varchar(10), c char(6), b bit varying(4), n integer)", exampleSchema: false)
        let targetURL = try await Fixtures.database(schema: "CREATE TABLE narrow (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), v varchar(5), c char(3), b bit(3), n integer)", exampleSchema: false)
        let source = try await connect(sourceURL)
        let target = try await connect(targetURL)
        let targetConfiguration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: targetURL, tables: tables)
        _ = try await Installer(configuration: Fixtures.configuration(role: .shore, nodeID: "shore", url: sourceURL, tables: tables)).install(on: source)
        _ = try await Installer(configuration: targetConfiguration).install(on: target)
        try await source.execute("INSERT INTO narrow (v, c, b, n) VALUES ('short', 'abc', B'101', 1), ('short', 'abc', B'101', 2), ('short', 'abc', B'101', 3)")
        let applier = try await makeApplier(targetConfiguration, target)
        let first = try await OutboxReader(session: source).poll(after: 0, limit: 100)
        _ = try await applier.apply(first.map { $0.event(node: "shore", role: .shore, table: tables[0]) }, from: "shore")
        try await source.execute("UPDATE narrow SET v = 'too long' WHERE n = 1")
        try await source.execute("UPDATE narrow SET c = 'abcdef' WHERE n = 2")
        try await source.execute("UPDATE narrow SET b = B'1011' WHERE n = 3")
        let second = try await OutboxReader(session: source).poll(after: first.map(\.position).max() ?? 0, limit: 100)
        XCTAssertEqual(second.count, 3)
        let report = try await applier.apply(second.map { $0.event(node: "shore", role: .shore, table: tables[0]) }, from: "shore")
        XCTAssertEqual(report.appliedRows, 0, "no row took a cut value")
        XCTAssertEqual(report.deadLettered + report.quarantinedFields, 3)
        let values: String = try await target.scalar("SELECT string_agg(format('%s|%s|%s', v, c, b), ',' ORDER BY n) FROM narrow")
        XCTAssertEqual(values, "short|abc|101,short|abc|101,short|abc|101")
    }

    /// Rows are read without a lock; a local write between the read and the update makes a new
    /// row version, which the update does not write over: the row is read again (locked) and
    /// merged again, so the later local value wins over an older incoming one. Through the typed
    /// arrays (a text column) and through the JSON records (an enum column).
    func testALocalWriteBetweenTheReadAndTheUpdateIsMergedNotOverwritten() async throws {
        let schema = """
            CREATE TYPE mood AS ENUM ('calm', 'rough');
            CREATE TABLE item (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), title text, m mood, qty integer);
            """
        let tables = [TableConfiguration(name: "item", route: .broadcast, defaultOwner: .shared)]
        let url = try await Fixtures.database(schema: schema, exampleSchema: false)
        let db = try await connect(url)
        let other = try await connect(url)
        let configuration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: url, tables: tables)
        _ = try await Installer(configuration: configuration).install(on: db)
        let applier = try await makeApplier(configuration, db)
        for (column, incoming, local) in [("title", JSONValue.string("from shore"), "'local'"), ("m", .string("rough"), "'calm'")] {
            // A row with no clocks (written before init): any incoming change wins when read.
            let id: UUID = try await db.transaction { tx in
                try await tx.execute("SET LOCAL fleetsync.applying = 'on'")
                return try await tx.scalar("INSERT INTO item (title, m, qty) VALUES ('old', 'rough', 1) RETURNING id")
            }
            try await db.execute("SELECT setval('fleetsync.lamport', greatest(last_value, 1000)) FROM fleetsync.lamport")
            var group = RowGroup(table: "item", rowID: id, sender: "shore", sequence: 0)
            group.merge([column: FieldChange(value: incoming, clock: FieldClock(counter: 5, node: "shore"))], base: 1)
            var writer = applier.tableWriter(for: "item", sender: "shore")
            XCTAssertFalse(writer.readsLocked)
            let sql = "UPDATE item SET \(column) = \(local), qty = qty + 1 WHERE id = '\(id.lowercasedText)'"
            writer.afterRead = { try await other.execute(sql) }
            let outcome = try await db.transaction { tx in
                try await tx.execute("SET LOCAL fleetsync.applying = 'on'")
                return try await writer.write([group], on: tx)
            }
            XCTAssertEqual(outcome.applied, 0, "\(column): the local write (clock above 1000) is newer than the incoming one (5)")
            XCTAssertEqual(outcome.unchanged, 1)
            let row: String = try await db.scalar("SELECT format('%s|%s|%s', \(column), qty, sync_clock -> \(SQL.literal(column)) ->> 1) FROM item WHERE id = '\(id.lowercasedText)'")
            XCTAssertEqual(row, "\(local.dropFirst().dropLast())|2|aurora", "\(column): the local value, clock and other column stay")
        }
    }

    /// The cast type of a column: the type without its modifier, built-in types only.
    func testCastTypes() {
        XCTAssertEqual(ArrayUpdate.castType("character varying(20)"), "character varying")
        XCTAssertEqual(ArrayUpdate.castType("character varying(20)[]"), "character varying[]")
        XCTAssertEqual(ArrayUpdate.castType("character(3)"), "bpchar")
        XCTAssertEqual(ArrayUpdate.castType("bit(3)"), "bit varying")
        XCTAssertEqual(ArrayUpdate.castType("numeric(12,2)"), "numeric")
        XCTAssertEqual(ArrayUpdate.castType("timestamp(3) with time zone"), "timestamp with time zone")
        XCTAssertEqual(ArrayUpdate.castType("interval hour to second(2)"), "interval")
        XCTAssertEqual(ArrayUpdate.castType("\"char\""), "\"char\"")
        XCTAssertEqual(ArrayUpdate.castType("json[]"), "json[]")
        // Enums, domains and other user types go through JSON records.
        XCTAssertNil(ArrayUpdate.castType("mood"))
        XCTAssertNil(ArrayUpdate.castType("public.short_text"))
        XCTAssertNil(ArrayUpdate.castType("\"Mixed Case\""))
    }
}
