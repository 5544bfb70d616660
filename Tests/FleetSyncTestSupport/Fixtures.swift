import FleetSyncCore
import FleetSyncPostgres
import Foundation
import Logging
import PostgresNIO

/// Shared setup for database tests: fresh databases on the shared cluster, the example schema,
/// and configurations that match it.
public enum Fixtures {
    /// The repository root, found from this source file.
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static var exampleSchemaPath: String { repositoryRoot.appendingPathComponent("examples/schema.sql").path }

    public static let logger: Logger = {
        var logger = Logger(label: "fleetsync.test")
        logger.logLevel = .warning
        return logger
    }()

    /// Runs a SQL script (several statements) with psql.
    public static func runScript(_ sql: String, url: String) throws {
        let path = NSTemporaryDirectory() + "fleetsync-\(UUID().uuidString).sql"
        try sql.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try runScriptFile(path, url: url)
    }

    public static func runScriptFile(_ path: String, url: String) throws {
        let psql = try PostgresBinaries.locate().psql
        try Shell.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", path])
    }

    /// The example maritime tables, configured as in `examples/`.
    public static func exampleTables() -> [TableConfiguration] {
        [
            TableConfiguration(name: "vessel", route: .broadcast),
            TableConfiguration(name: "certificate_type", route: .broadcast, onDelete: .refuse),
            TableConfiguration(name: "seafarer", route: .column("vessel_code"), owners: ["contact_number": .vessel, "notes": .shared]),
            TableConfiguration(name: "certificate", route: .parent(table: "seafarer", via: "seafarer_id"), owners: ["status": .shared, "remarks": .shared]),
        ]
    }

    public static func configuration(role: NodeRole, nodeID: String, url: String, tables: [TableConfiguration]) -> FleetSyncConfiguration {
        FleetSyncConfiguration(
            role: role, nodeID: nodeID, databaseURL: url,
            shore: role == .shore ? ShoreConfiguration(listen: "127.0.0.1:0") : nil,
            vessel: role == .vessel ? VesselConfiguration(shoreURL: "http://127.0.0.1:9") : nil,
            tables: tables)
    }

    /// A new database on the shared cluster holding `schema` (SQL), not yet initialized.
    public static func database(schema: String? = nil, exampleSchema: Bool = true) async throws -> String {
        let url = try await TestCluster.shared().createDatabase()
        if exampleSchema { try runScriptFile(exampleSchemaPath, url: url) }
        if let schema { try runScript(schema, url: url) }
        return url
    }

    /// A new database with the example schema and FleetSync installed for `nodeID`.
    public static func installedNode(role: NodeRole = .vessel, nodeID: String = "aurora", tables: [TableConfiguration]? = nil, schema: String? = nil) async throws -> (FleetSyncConfiguration, DatabaseSession) {
        let url = try await database(schema: schema)
        let configuration = configuration(role: role, nodeID: nodeID, url: url, tables: tables ?? exampleTables())
        let session = try await DatabaseSession.connect(url: url, logger: logger)
        _ = try await Installer(configuration: configuration).install(on: session)
        return (configuration, session)
    }
}

extension DatabaseSession {
    /// The first column of the first row, decoded as `T` (test convenience).
    public func scalar<T: PostgresDecodable & Sendable>(_ sql: String, as: T.Type = T.self) async throws -> T {
        let rows = try await self.rows(sql)
        guard let row = rows.first else { throw TestClusterError("no row from: \(sql)") }
        return try row.decode(T.self)
    }
}
