import FleetSyncCore
import FleetSyncPostgres
import XCTest

/// A test case whose database sessions are closed after each test, whether it passed or threw.
open class DatabaseTestCase: XCTestCase {
    private var sessions: [DatabaseSession] = []
    private var telemetryWriters: [TelemetryWriter] = []

    /// A telemetry writer whose connection is closed after the test.
    public func telemetry(_ url: String) -> TelemetryWriter {
        let writer = TelemetryWriter(url: url, logger: Fixtures.logger)
        telemetryWriters.append(writer)
        return writer
    }

    /// An applier on `db` for `configuration`, its schema read from the catalog now.
    public func makeApplier(_ configuration: FleetSyncConfiguration, _ db: DatabaseSession) async throws -> Applier {
        let schema = try await LocalSchema.load(configuration: configuration, session: db)
        return Applier(schema: schema, session: db, telemetry: telemetry(configuration.databaseURL))
    }

    /// Opens a session that is closed after the test.
    public func connect(_ url: String) async throws -> DatabaseSession {
        let session = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
        sessions.append(session)
        return session
    }

    /// A new database with the example schema (plus `schema`) and FleetSync installed.
    public func installedNode(role: NodeRole = .vessel, nodeID: String = "aurora", tables: [TableConfiguration]? = nil, schema: String? = nil) async throws -> (FleetSyncConfiguration, DatabaseSession) {
        let url = try await Fixtures.database(schema: schema)
        let configuration = Fixtures.configuration(role: role, nodeID: nodeID, url: url, tables: tables ?? Fixtures.exampleTables())
        let session = try await connect(url)
        _ = try await Installer(configuration: configuration).install(on: session)
        return (configuration, session)
    }

    open override func tearDown() async throws {
        for writer in telemetryWriters { await writer.close() }
        telemetryWriters.removeAll()
        for session in sessions { await session.close() }
        sessions.removeAll()
        try await super.tearDown()
    }

    /// Fills the shore's outbox with 100,000 queued events (every other one for `aurora`, the rest
    /// broadcast) after its statistics were taken empty and autovacuum turned off: the plans of
    /// queue reads must not depend on when statistics were last gathered.
    public func fillOutboxBehindStaleStatistics(_ db: DatabaseSession) async throws {
        try await db.execute("ALTER TABLE fleetsync.outbox SET (autovacuum_enabled = false)")
        try await db.execute("ANALYZE fleetsync.outbox")
        try await db.execute("""
            INSERT INTO fleetsync.outbox (pos, table_name, row_id, op, version, base_version, delta, vessel)
            SELECT i, 'vessel', gen_random_uuid(), 'U', i, i, '{"name": "x"}', CASE WHEN i % 2 = 0 THEN 'aurora' ELSE '*' END
            FROM generate_series(1, 100000) i
            """)
    }
}

extension VesselQueue {
    /// The page of `vessel`'s queue after `cursor`, read as the shore's exchange reads it
    /// (``readAtLastPosition(vessel:cursor:after:limit:byteBudget:)``); fails when `cursor` is
    /// below the pruning mark.
    public func page(vessel: String, after cursor: Int64, limit: Int, byteBudget: Int) async throws -> Batch {
        let read = try await readAtLastPosition(vessel: vessel, cursor: cursor, after: cursor, limit: limit, byteBudget: byteBudget)
        guard let batch = read.batch else { throw DatabaseError(context: "reading the queue of vessel \(vessel)", message: "cursor \(cursor) is below the pruning mark") }
        return batch
    }
}
