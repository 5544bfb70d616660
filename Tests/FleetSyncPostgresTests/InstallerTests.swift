import FleetSyncCore
import FleetSyncTestSupport
import XCTest
@testable import FleetSyncPostgres

final class InstallerTests: DatabaseTestCase {
    func testInitInstallsSchemaColumnsAndTriggersAndIsIdempotent() async throws {
        let url = try await Fixtures.database()
        let configuration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: url, tables: Fixtures.exampleTables())
        let db = try await self.connect(url)
        let first = try await Installer(configuration: configuration).install(on: db)
        XCTAssertEqual(first.fromVersion, 0)
        XCTAssertEqual(first.toVersion, Migration.latestVersion)
        XCTAssertTrue(first.addedColumns.contains("seafarer.sync_clock"))
        let triggers: Int64 = try await db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_fleetsync_%'")
        XCTAssertEqual(triggers, 20, "five per table: insert (version, then event) and update capture, delete, truncate")

        let snapshot = "SELECT string_agg(format('%s.%s %s', attrelid::regclass, attname, format_type(atttypid, atttypmod)), ',' ORDER BY 1) FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped AND attrelid::regclass::text IN ('vessel', 'seafarer', 'certificate', 'certificate_type')"
        let columnsBefore: String = try await db.scalar(snapshot)
        let functionsBefore: String = try await db.scalar("SELECT string_agg(md5(prosrc), ',' ORDER BY proname) FROM pg_proc WHERE pronamespace = 'fleetsync'::regnamespace")
        let second = try await Installer(configuration: configuration).install(on: db)
        XCTAssertEqual(second.fromVersion, Migration.latestVersion)
        XCTAssertEqual(second.addedColumns, [])
        let columnsAfter: String = try await db.scalar(snapshot)
        let functionsAfter: String = try await db.scalar("SELECT string_agg(md5(prosrc), ',' ORDER BY proname) FROM pg_proc WHERE pronamespace = 'fleetsync'::regnamespace")
        XCTAssertEqual(columnsBefore, columnsAfter)
        XCTAssertEqual(functionsBefore, functionsAfter)
        let migrations: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.schema_migrations")
        XCTAssertEqual(migrations, Int64(Migration.all.count))
    }

    func testShoreInitNamesRoutingColumnsWithoutAnIndex() async throws {
        let url = try await Fixtures.database()
        let db = try await self.connect(url)
        // The example schema indexes both routing columns; without one, init on the shore says so.
        try await db.execute("DROP INDEX seafarer_vessel_code")
        try await db.execute("CREATE INDEX seafarer_partial ON seafarer (vessel_code) WHERE notes IS NULL")
        let shore = Fixtures.configuration(role: .shore, nodeID: "shore", url: url, tables: Fixtures.exampleTables())
        let report = try await Installer(configuration: shore).install(on: db)
        XCTAssertEqual(report.unindexedRoutes.map(\.description), ["seafarer.vessel_code"], "a partial index does not serve every vessel's partition")
        XCTAssertEqual(report.unindexedRoutes.first?.fix, "CREATE INDEX ON \"public\".\"seafarer\" (\"vessel_code\")")
        // An index leading with another column does not count either; one leading with it does.
        try await db.execute("CREATE INDEX seafarer_name_code ON seafarer (full_name, vessel_code)")
        let again = try await Installer(configuration: shore).install(on: db)
        XCTAssertEqual(again.unindexedRoutes.map(\.description), ["seafarer.vessel_code"])
        try await db.execute(report.unindexedRoutes[0].fix)
        let fixed = try await Installer(configuration: shore).install(on: db)
        XCTAssertEqual(fixed.unindexedRoutes, [])
        try await db.execute("DROP INDEX certificate_seafarer_id")
        let parent = try await Installer(configuration: shore).install(on: db)
        XCTAssertEqual(parent.unindexedRoutes.map(\.description), ["certificate.seafarer_id"], "the reference a table is routed through counts too")
    }

    func testNewerVersionUpgradesInPlaceKeepingEvents() async throws {
        let (configuration, db) = try await self.installedNode()
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        let upgrade = Migration(version: Migration.latestVersion + 1, description: "test upgrade", statements: [
            "ALTER TABLE fleetsync.capture_log ADD COLUMN upgraded_marker integer",
        ])
        let report = try await Installer(configuration: configuration, migrations: Migration.all + [upgrade]).install(on: db)
        XCTAssertEqual(report.fromVersion, Migration.latestVersion)
        XCTAssertEqual(report.toVersion, Migration.latestVersion + 1)
        let events: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log WHERE upgraded_marker IS NULL")
        XCTAssertEqual(events, 1)
        // An older build refuses a newer schema instead of guessing.
        do {
            _ = try await Installer(configuration: configuration).install(on: db)
            XCTFail("an older build must refuse a newer schema")
        } catch {
            XCTAssertTrue("\(error)".contains("newer than this fleetsync knows"), "\(error)")
        }
    }

    func testTableWithoutKeyGetsUUIDv7Id() async throws {
        let url = try await Fixtures.database(schema: "CREATE TABLE port_call (port text, eta_days int); INSERT INTO port_call VALUES ('Lisbon', 3), ('Rotterdam', 5);", exampleSchema: false)
        let configuration = Fixtures.configuration(role: .shore, nodeID: "shore", url: url, tables: [TableConfiguration(name: "port_call", route: .broadcast)])
        let db = try await self.connect(url)
        let report = try await Installer(configuration: configuration).install(on: db)
        XCTAssertTrue(report.addedColumns.contains("port_call.id"))
        let pk: String = try await db.scalar("SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'port_call'::regclass AND i.indisprimary")
        XCTAssertEqual(pk, "id")
        try await db.execute("INSERT INTO port_call (port) VALUES ('Santos')")
        let version: Int64 = try await db.scalar("SELECT get_byte(uuid_send(id), 6) >> 4 FROM port_call WHERE port = 'Santos'")
        XCTAssertEqual(version, 7)
        // UUIDv7 values sort by creation time.
        let ordered: Bool = try await db.scalar("WITH u AS (SELECT fleetsync.uuidv7() AS a, pg_sleep(0.002), fleetsync.uuidv7() AS b) SELECT a < b FROM u")
        XCTAssertTrue(ordered)
        // Uninstalled, the id column init added keeps a default: inserts that do not name it work.
        try await Installer(configuration: configuration).uninstall(on: db)
        try await db.execute("INSERT INTO port_call (port) VALUES ('Callao')")
        let ids: Int64 = try await db.scalar("SELECT count(DISTINCT id) FROM port_call")
        XCTAssertEqual(ids, 4)
    }

    /// A stored generated column is computed on every node and never synced; an identity column
    /// that refuses given values, or a nullable tracking column, is refused with the database
    /// untouched.
    func testGeneratedIdentityAndNullableTrackingColumns() async throws {
        let url = try await Fixtures.database(schema: """
            CREATE TABLE order_line (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), qty int, price numeric,
              total numeric GENERATED ALWAYS AS (qty * price) STORED);
            CREATE TABLE ticket (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), number int GENERATED ALWAYS AS IDENTITY);
            CREATE TABLE note (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), body text, is_deleted boolean);
            """, exampleSchema: false)
        let db = try await self.connect(url)
        let generated = Fixtures.configuration(role: .shore, nodeID: "shore", url: url, tables: [TableConfiguration(name: "order_line", route: .broadcast)])
        _ = try await Installer(configuration: generated).install(on: db)
        try await db.execute("INSERT INTO order_line (qty, price) VALUES (3, 2.5)")
        let delta: String = try await db.scalar("SELECT delta::text FROM fleetsync.capture_log")
        XCTAssertFalse(delta.contains("total"), delta)
        XCTAssertTrue(delta.contains("qty"), delta)
        try await Installer(configuration: generated).uninstall(on: db)

        for (table, expected) in [("ticket", "GENERATED ALWAYS AS IDENTITY"), ("note", "allows NULL")] {
            let configuration = Fixtures.configuration(role: .shore, nodeID: "shore", url: url, tables: [TableConfiguration(name: table, route: .broadcast)])
            do {
                _ = try await Installer(configuration: configuration).install(on: db)
                XCTFail("\(table) must be refused")
            } catch {
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
            }
            let installed: Bool = try await db.scalar("SELECT to_regnamespace('fleetsync') IS NOT NULL")
            XCTAssertFalse(installed, "a refused init changes nothing")
        }
    }

    func testBadConfigurationIsRejectedAndChangesNothing() async throws {
        let url = try await Fixtures.database(schema: "CREATE TABLE legacy_log (n serial PRIMARY KEY, line text);")
        let db = try await self.connect(url)
        var tables = Fixtures.exampleTables()
        tables.append(TableConfiguration(name: "voyage", route: .broadcast))
        tables.append(TableConfiguration(name: "legacy_log", route: .broadcast))
        tables[2].owners["shoe_size"] = .vessel
        tables[2].route = .column("ship")
        tables[3].route = .parent(table: "seafarer", via: "certificate_type_id")
        let configuration = Fixtures.configuration(role: .vessel, nodeID: "aurora", url: url, tables: tables)
        do {
            _ = try await Installer(configuration: configuration).install(on: db)
            XCTFail("install must fail")
        } catch let error as InstallError {
            let text = error.description
            XCTAssertTrue(text.contains("public.voyage does not exist"), text)
            XCTAssertTrue(text.contains("primary key (n)") && text.contains("uuid primary key named id"), text)
            XCTAssertTrue(text.contains("column \"shoe_size\" does not exist"), text)
            XCTAssertTrue(text.contains("routing column \"ship\" does not exist"), text)
            XCTAssertTrue(text.contains("\"certificate_type_id\" has no foreign key to seafarer.id"), text)
        }
        let schema: Bool = try await db.scalar("SELECT to_regnamespace('fleetsync') IS NULL")
        XCTAssertTrue(schema, "the fleetsync schema must not exist after a failed init")
        let columns: Int64 = try await db.scalar("SELECT count(*) FROM pg_attribute WHERE attname IN ('sync_version', 'sync_clock', 'is_deleted')")
        XCTAssertEqual(columns, 0)
        let triggers: Int64 = try await db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_fleetsync_%'")
        XCTAssertEqual(triggers, 0)
    }

    func testDatabaseOfAnotherNodeIsRefused() async throws {
        let (configuration, db) = try await self.installedNode(nodeID: "aurora")
        var other = configuration
        other.nodeID = "borealis"
        do {
            _ = try await Installer(configuration: other).install(on: db)
            XCTFail("must refuse")
        } catch {
            XCTAssertTrue("\(error)".contains("belongs to vessel \"aurora\""), "\(error)")
        }
    }

    func testUninstallRemovesTriggersAndSchemaButKeepsData() async throws {
        let (configuration, db) = try await self.installedNode()
        try await db.execute("INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')")
        try await Installer(configuration: configuration).uninstall(on: db)
        let schemaGone: Bool = try await db.scalar("SELECT to_regnamespace('fleetsync') IS NULL")
        XCTAssertTrue(schemaGone)
        let triggers: Int64 = try await db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_fleetsync_%'")
        XCTAssertEqual(triggers, 0)
        let name: String = try await db.scalar("SELECT name FROM vessel WHERE code = 'aurora'")
        XCTAssertEqual(name, "MV Aurora")
        // Plain SQL works again without capture, and DELETE deletes.
        try await db.execute("DELETE FROM vessel")
        let left: Int64 = try await db.scalar("SELECT count(*) FROM vessel")
        XCTAssertEqual(left, 0)
    }

    func testTablesNoLongerConfiguredLoseCapture() async throws {
        let (configuration, db) = try await self.installedNode()
        var fewer = configuration
        fewer.tables.removeAll { $0.name == "certificate" }
        let report = try await Installer(configuration: fewer).install(on: db)
        XCTAssertEqual(report.removedTables, ["certificate"])
        let triggers: Int64 = try await db.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'certificate'::regclass AND tgname LIKE 'zz_fleetsync_%'")
        XCTAssertEqual(triggers, 0)
    }
}
