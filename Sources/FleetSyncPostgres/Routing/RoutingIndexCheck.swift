import FleetSyncCore
import PostgresNIO

/// Finds the routing columns on the shore that no index leads with. A vessel's partition is
/// read by its routing column (`[[table]] route = "column:..."`, or the reference a table is
/// routed through, `route = "parent:...:via"`): every catch-up of a vessel, every transfer and
/// the routing of each event read by it. Without an index each of those reads the whole table,
/// once per vessel: with 500 vessels joining, 500 scans. `fleetsync init` warns; it creates no
/// index on the application's tables itself.
public struct RoutingIndexCheck: Sendable {
    public var configuration: FleetSyncConfiguration

    public init(configuration: FleetSyncConfiguration) {
        self.configuration = configuration
    }

    /// A routing column no index leads with.
    public struct Unindexed: Sendable, Equatable, CustomStringConvertible {
        public var table: String
        public var column: String
        /// The statement that creates the index it lacks.
        public var fix: String
        public var description: String { "\(table).\(column)" }
    }

    /// Every routed table whose routing column is not the first column of any of its (whole,
    /// not partial) indexes, in configuration order.
    public func unindexed(on db: DatabaseSession) async throws -> [Unindexed] {
        var missing: [Unindexed] = []
        for table in configuration.tables {
            let column: String
            switch table.route {
            case .column(let name): column = name
            case .parent(_, let via): column = via
            case .broadcast: continue
            }
            var binds = PostgresBindings()
            binds.append(SQL.qualified(table.schema, table.name))
            binds.append(column)
            let indexed: Bool = try await db.rows("""
                SELECT EXISTS (
                  SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                  WHERE i.indrelid = to_regclass($1) AND a.attname = $2 AND i.indpred IS NULL)
                """, binds, context: "looking for an index on the routing column \(table.name).\(column)")[0].value(0)
            if !indexed {
                missing.append(Unindexed(table: table.name, column: column,
                                         fix: "CREATE INDEX ON \(SQL.qualified(table.schema, table.name)) (\(SQL.identifier(column)))"))
            }
        }
        return missing
    }
}
