import FleetSyncCore
import PostgresNIO

/// What a node learns about its own database at boot: the physical shape of each configured
/// table and the apply order planned from their foreign keys.
public struct LocalSchema: Sendable {
    public var configuration: FleetSyncConfiguration
    /// Configured tables that exist locally, by sync name.
    public var tables: [String: PhysicalTable]
    public var plan: ApplyPlan

    public init(configuration: FleetSyncConfiguration, tables: [String: PhysicalTable]) throws(PlanningError) {
        self.configuration = configuration
        self.tables = tables
        self.plan = try BatchPlanner.plan(tables: configuration.tables, physical: tables)
    }

    /// Reads the catalog and plans; a foreign-key cycle the configuration does not break is an error.
    public static func load(configuration: FleetSyncConfiguration, session: DatabaseSession) async throws -> LocalSchema {
        let tables = try await CatalogReader(session: session).tables(for: configuration)
        return try LocalSchema(configuration: configuration, tables: tables)
    }

    /// The columns of `table` that incoming events may write, by name.
    func writableColumns(of table: String) -> [String: PhysicalColumn] {
        guard let physical = tables[table] else { return [:] }
        var columns: [String: PhysicalColumn] = [:]
        for column in physical.syncedColumns { columns[column.name] = column }
        return columns
    }
}
