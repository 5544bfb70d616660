import FleetSyncCore
import PostgresNIO

/// Reads tables, columns, primary keys and foreign keys from `pg_catalog`.
public struct CatalogReader: Sendable {
    let session: DatabaseSession

    public init(session: DatabaseSession) { self.session = session }

    /// The table `schema.name`, or `nil` when there is no such ordinary or partitioned table.
    public func table(schema: String, name: String) async throws(DatabaseError) -> PhysicalTable? {
        let context = "reading the catalog entry of \(schema).\(name)"
        var binds = PostgresBindings()
        binds.append(schema)
        binds.append(name)
        let found = try await session.rows("""
            SELECT c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
            """, binds, context: context)
        guard let row = found.first else { return nil }
        let oid: Int64 = try row.value(0, context: context)
        var oidBind = PostgresBindings()
        oidBind.append(oid)

        let columnRows = try await session.rows("""
            SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef,
                   a.attgenerated <> '', a.attidentity = 'a'
            FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """, oidBind, context: context)
        var columns: [PhysicalColumn] = []
        for r in columnRows {
            columns.append(PhysicalColumn(
                name: try r.value(0, context: context), type: try r.value(1, context: context),
                notNull: try r.value(2, context: context), hasDefault: try r.value(3, context: context),
                generated: try r.value(4, context: context), identityAlways: try r.value(5, context: context)))
        }

        let pkRows = try await session.rows("""
            SELECT a.attname::text FROM pg_index i
            JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord
            """, oidBind, context: context)
        var primaryKey: [String] = []
        for r in pkRows { primaryKey.append(try r.value(0, context: context)) }

        let fkRows = try await session.rows("""
            SELECT con.conname::text, rn.nspname::text, rc.relname::text,
                   ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
                   ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                         JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o)
            FROM pg_constraint con JOIN pg_class rc ON rc.oid = con.confrelid
            JOIN pg_namespace rn ON rn.oid = rc.relnamespace
            WHERE con.conrelid = $1::oid AND con.contype = 'f' ORDER BY con.conname
            """, oidBind, context: context)
        var foreignKeys: [ForeignKey] = []
        for r in fkRows {
            foreignKeys.append(ForeignKey(
                name: try r.value(0, context: context), columns: try r.value(3, context: context),
                referencedSchema: try r.value(1, context: context), referencedTable: try r.value(2, context: context),
                referencedColumns: try r.value(4, context: context)))
        }
        return PhysicalTable(oid: UInt32(truncatingIfNeeded: oid), schema: schema, name: name, columns: columns, primaryKey: primaryKey, foreignKeys: foreignKeys)
    }

    /// Every configured table that exists, keyed by sync name. Missing tables are left out.
    public func tables(for configuration: FleetSyncConfiguration) async throws(DatabaseError) -> [String: PhysicalTable] {
        var result: [String: PhysicalTable] = [:]
        for table in configuration.tables {
            if let physical = try await self.table(schema: table.schema, name: table.name) {
                result[table.name] = physical
            }
        }
        return result
    }
}
