import FleetSyncCore
import Logging
import PostgresNIO

/// What `fleetsync init` did.
public struct InstallReport: Sendable, Equatable {
    public var fromVersion: Int
    public var toVersion: Int
    /// `table.column` for every tracking column added.
    public var addedColumns: [String] = []
    public var capturedTables: [String] = []
    public var removedTables: [String] = []
    /// On the shore: rows per table that existed before init and got their clocks now.
    public var clockedRows: [String: Int] = [:]
    /// On the shore: rows that changed vessel because the routing rules changed (``RoutingChange``).
    public var rowsMovedByRouting = 0
    /// On the shore: every routing column (or parent reference a table is
    /// routed through) that no index leads with: each vessel's catch-up and every transfer
    /// then reads the whole table (``RoutingIndexCheck``).
    public var unindexedRoutes: [RoutingIndexCheck.Unindexed] = []
}

/// The configuration does not fit the database; nothing was changed.
public struct InstallError: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigurationError]
    public var description: String {
        "the configuration does not fit the database; nothing was changed:\n"
            + problems.map { "  - \($0.description)" }.joined(separator: "\n")
    }
}

/// Installs, upgrades and removes the `fleetsync` schema and capture triggers, each in one transaction.
public struct Installer: Sendable {
    public var configuration: FleetSyncConfiguration
    public var migrations: [Migration]
    /// Rows per statement when rows that existed before init get their clocks (``PreexistingRows``).
    public var clockBatchRows = 10_000
    /// Told how a long step goes (clocks for the rows of a large table); nil says nothing.
    public var progress: (@Sendable (String) -> Void)?

    public init(configuration: FleetSyncConfiguration, migrations: [Migration] = Migration.all) {
        self.configuration = configuration
        self.migrations = migrations
    }

    /// Installs or upgrades everything; running it again changes nothing.
    public func install(on session: DatabaseSession) async throws -> InstallReport {
        try await session.transaction { db in
            try await db.lockForTransaction("fleetsync.install", context: "locking the installation")
            let from = try await migrate(db)
            var report = InstallReport(fromVersion: from, toVersion: migrations.last?.version ?? from)
            try await recordNode(db)
            let catalog = CatalogReader(session: db)
            let physical = try await catalog.tables(for: configuration)
            let problems = InstallValidator(configuration: configuration, physical: physical).problems()
            if !problems.isEmpty { throw InstallError(problems: problems) }

            var installed: [String: PhysicalTable] = [:]
            for table in configuration.tables {
                let before = physical[table.name]!
                for statement in InstallValidator.trackingColumnStatements(for: before) {
                    try await db.execute(statement.sql, context: "adding \(statement.column) to \(table.name)")
                    report.addedColumns.append("\(table.name).\(statement.column)")
                }
                guard let after = try await catalog.table(schema: table.schema, name: table.name) else {
                    throw DatabaseError(context: "installing capture", message: "table \(table.name) vanished during installation")
                }
                installed[table.name] = after
                let clocked = try await PreexistingRows(
                    table: table, physical: after, role: configuration.role, nodeID: configuration.nodeID,
                    batchRows: clockBatchRows, progress: progress).assignClocks(on: db)
                if clocked > 0 { report.clockedRows[table.name] = clocked }
                let builder = CaptureTriggerBuilder(table: table, physical: after, role: configuration.role, nodeID: configuration.nodeID)
                for statement in builder.statements() {
                    try await db.execute(statement, context: "installing capture on \(table.name)")
                }
                var binds = PostgresBindings()
                binds.append(table.name)
                binds.append(table.schema)
                binds.append(table.name)
                try await db.execute("""
                    INSERT INTO fleetsync.synced_table (name, schema_name, table_name) VALUES ($1, $2, $3)
                    ON CONFLICT (name) DO UPDATE SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name
                    """, binds, context: "registering \(table.name)")
                report.capturedTables.append(table.name)
            }
            let routing = RoutingBuilder(configuration: configuration, physical: installed)
            // Rows the new routing rules move between vessels travel as transfers would. Not on a
            // first install: the routing function the migrations create routes nothing, and rows
            // that predate FleetSync reach every vessel by catch-up (capturing them all here would
            // write the whole database into the capture log).
            if from > 0 {
                report.rowsMovedByRouting = try await RoutingChange(configuration: configuration, physical: installed)
                    .queueMoves(newRouteFunction: routing.routeFunction(), on: db)
            }
            for statement in [routing.routeFunction()] + routing.sagaStatements() + ChangeSizeLimit.statements(maximumBytes: configuration.limits.maximumChangeBytes) {
                try await db.execute(statement, context: "installing routing")
            }
            report.removedTables = try await removeUnconfigured(db)
            if configuration.role == .shore {
                report.unindexedRoutes = try await RoutingIndexCheck(configuration: configuration).unindexed(on: db)
            }
            return report
        }
    }

    /// Applies the migrations above the installed version; returns the version found.
    func migrate(_ db: DatabaseSession) async throws -> Int {
        try await db.execute("CREATE SCHEMA IF NOT EXISTS fleetsync", context: "creating the fleetsync schema")
        try await db.execute("""
            CREATE TABLE IF NOT EXISTS fleetsync.schema_migrations (
              version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
            """, context: "creating fleetsync.schema_migrations")
        let rows = try await db.rows("SELECT coalesce(max(version), 0) FROM fleetsync.schema_migrations", context: "reading the schema version")
        let current: Int = try rows[0].value(0)
        let latest = migrations.last?.version ?? 0
        if current > latest {
            throw DatabaseError(context: "checking the schema version", message: "the database has fleetsync schema version \(current), newer than this fleetsync knows (\(latest))", hint: "run a fleetsync release that knows version \(current) or later")
        }
        for migration in migrations where migration.version > current {
            for statement in migration.statements {
                try await db.execute(statement, context: "applying migration \(migration.version) (\(migration.description))")
            }
            var binds = PostgresBindings()
            binds.append(migration.version)
            binds.append(migration.description)
            try await db.execute("INSERT INTO fleetsync.schema_migrations (version, description) VALUES ($1, $2)", binds, context: "recording migration \(migration.version)")
        }
        return current
    }

    /// The database belongs to one node for life: a different id or role is refused.
    func recordNode(_ db: DatabaseSession) async throws {
        let rows = try await db.rows("SELECT node_id, role FROM fleetsync.node", context: "reading the node identity")
        if let row = rows.first {
            let id: String = try row.value(0)
            let role: String = try row.value(1)
            if id != configuration.nodeID || role != configuration.role.rawValue {
                throw InstallError(problems: [ConfigurationError(
                    key: "node", problem: "this database belongs to \(role) \"\(id)\", but the configuration says \(configuration.role.rawValue) \"\(configuration.nodeID)\"",
                    fix: "point database.url at this node's own database, or correct [node]")])
            }
            return
        }
        var binds = PostgresBindings()
        binds.append(configuration.nodeID)
        binds.append(configuration.role.rawValue)
        try await db.execute("INSERT INTO fleetsync.node (node_id, role) VALUES ($1, $2)", binds, context: "recording the node identity")
    }

    /// Drops capture from tables registered earlier but no longer configured.
    func removeUnconfigured(_ db: DatabaseSession) async throws -> [String] {
        let rows = try await db.rows("SELECT name, schema_name, table_name FROM fleetsync.synced_table ORDER BY name", context: "reading registered tables")
        var removed: [String] = []
        for row in rows {
            let name: String = try row.value(0)
            guard configuration.table(named: name) == nil else { continue }
            try await removeCapture(db, schema: try row.value(1), name: try row.value(2))
            var binds = PostgresBindings()
            binds.append(name)
            try await db.execute("DELETE FROM fleetsync.synced_table WHERE name = $1", binds, context: "unregistering \(name)")
            removed.append(name)
        }
        return removed
    }

    /// Removes every trigger and the `fleetsync` schema; business tables and their rows stay.
    public func uninstall(on session: DatabaseSession) async throws {
        try await session.transaction { db in
            let exists = try await db.rows("SELECT to_regclass('fleetsync.synced_table') IS NOT NULL", context: "looking for an installation")
            if try exists[0].value(0, as: Bool.self) {
                let rows = try await db.rows("SELECT schema_name, table_name FROM fleetsync.synced_table", context: "reading registered tables")
                for row in rows {
                    try await removeCapture(db, schema: try row.value(0), name: try row.value(1))
                }
            }
            // Dropping the schema drops every default that calls fleetsync.uuidv7(): the id
            // columns init gave one keep a default of their own, so that inserts still work.
            let defaults = try await db.rows("""
                SELECT n.nspname::text, c.relname::text, a.attname::text
                FROM pg_attrdef d
                JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
                  AND dep.refclassid = 'pg_proc'::regclass AND dep.refobjid = to_regprocedure('fleetsync.uuidv7()')
                JOIN pg_class c ON c.oid = d.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                WHERE n.nspname <> 'fleetsync'
                """, context: "finding defaults that call fleetsync.uuidv7()")
            for row in defaults {
                let (schema, table, column) = try row.decode((String, String, String).self)
                try await db.execute("ALTER TABLE \(SQL.qualified(schema, table)) ALTER COLUMN \(SQL.identifier(column)) SET DEFAULT gen_random_uuid()",
                                     context: "keeping a default for \(schema).\(table).\(column)")
            }
            try await db.execute("DROP SCHEMA IF EXISTS fleetsync CASCADE", context: "dropping the fleetsync schema")
        }
    }

    /// Drops the capture triggers of a table, if the table still exists.
    func removeCapture(_ db: DatabaseSession, schema: String, name: String) async throws {
        var binds = PostgresBindings()
        binds.append(SQL.qualified(schema, name))
        let exists = try await db.rows("SELECT to_regclass($1) IS NOT NULL", binds, context: "looking for \(schema).\(name)")
        guard try exists[0].value(0, as: Bool.self) else { return }
        for statement in CaptureTriggerBuilder.removalStatements(schema: schema, name: name) {
            try await db.execute(statement, context: "removing capture from \(schema).\(name)")
        }
    }
}
