import FleetSyncCore
import PostgresNIO

/// A change of the shore's routing rules (a table routed by another column, made broadcast, or
/// routed through another parent) moves rows between partitions without any write to them, so
/// no capture trigger and no transfer saga sees it. `fleetsync init` with the new rules records
/// each move as a transfer would (docs/PROTOCOL.md, *Catch-up*): an offboarding to the vessel the
/// row leaves (children's tables first) and a baseline of the row with its field clocks to the
/// vessel it joins (parents' tables first), through the capture log, in the installing
/// transaction. A vessel online receives them as events; a vessel offline while they were pruned
/// finds them in `fleetsync.departure` and `fleetsync.pruned_row`, and its catch-up removes and
/// sends those rows. A table newly configured on an installed shore has no old route: its rows
/// are baselines to their vessels, so that vessels already caught up receive them too.
public struct RoutingChange: Sendable {
    public var configuration: FleetSyncConfiguration
    /// Physical tables by sync name, as installed.
    public var physical: [String: PhysicalTable]

    public init(configuration: FleetSyncConfiguration, physical: [String: PhysicalTable]) {
        self.configuration = configuration
        self.physical = physical
    }

    /// Before `newRouteFunction` (the `CREATE OR REPLACE FUNCTION fleetsync.route_event ...`
    /// statement) replaces the installed one: when the two differ, queues the moves of every row
    /// whose vessel changes; returns how many rows moved. Nothing on a first install or a vessel.
    public func queueMoves(newRouteFunction: String, on db: DatabaseSession) async throws -> Int {
        guard configuration.role == .shore else { return 0 }
        let installed = try await db.rows("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure('fleetsync.route_event(text,uuid)')",
                                          context: "reading the installed routing function")
        guard let old = try installed.first?.decode(String.self) else { return 0 }
        // The new rules as a temporary function, to compare both routes of every row.
        let temporary = newRouteFunction.replacingOccurrences(of: "FUNCTION fleetsync.route_event(", with: "FUNCTION pg_temp.fleetsync_new_route(")
        try await db.execute(temporary, context: "installing the new routing rules for comparison")
        let fresh = try await db.rows("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure('pg_temp.fleetsync_new_route(text,uuid)')",
                                      context: "reading the new routing function")
        let new = try fresh.first?.decode(String.self)
        guard let new, new != old else {
            try await db.execute("DROP FUNCTION IF EXISTS pg_temp.fleetsync_new_route(text, uuid)", context: "dropping the comparison function")
            return 0
        }
        try await db.execute("""
            CREATE TEMP TABLE fleetsync_route_move (table_name text NOT NULL, id uuid NOT NULL, old_vessel text, new_vessel text) ON COMMIT DROP
            """, context: "recording rows the new routing rules move")
        let tables = configuration.tables.filter { physical[$0.name] != nil }
        for table in tables {
            let p = physical[table.name]!
            var binds = PostgresBindings()
            binds.append(table.name)
            try await db.execute("""
                INSERT INTO fleetsync_route_move (table_name, id, old_vessel, new_vessel)
                SELECT $1, m.id, m.o, m.n FROM (
                  SELECT r.id, fleetsync.route_event($1, r.id) AS o, pg_temp.fleetsync_new_route($1, r.id) AS n FROM \(SQL.qualified(p.schema, p.name)) r
                ) m WHERE m.o IS DISTINCT FROM m.n
                """, binds, context: "finding rows of \(table.name) the new routing rules move")
        }
        // Offboardings children's tables first, then baselines parents' tables first.
        let ordered = tables.sorted { depth(of: $0) < depth(of: $1) }
        var moved = 0
        for table in ordered.reversed() {
            var binds = PostgresBindings()
            binds.append(table.name)
            try await db.execute("""
                INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta, vessel)
                SELECT nextval('fleetsync.lamport'), $1, m.id, 'O', 0, 0, '{}', m.old_vessel
                FROM (SELECT * FROM fleetsync_route_move WHERE table_name = $1 AND old_vessel IS NOT NULL ORDER BY id) m
                """, binds, context: "offboarding rows of \(table.name) from the vessels they leave")
        }
        for table in ordered {
            let p = physical[table.name]!
            let delta = ColumnCodec.captureObject(p.syncedColumns, row: "r")
                + " || CASE WHEN r.sync_clock ? 'is_deleted' THEN jsonb_build_object('is_deleted', r.is_deleted) ELSE '{}'::jsonb END"
            var binds = PostgresBindings()
            binds.append(table.name)
            let rows = try await db.rows("""
                WITH queued AS (
                  INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta, clocks, vessel)
                  SELECT nextval('fleetsync.lamport'), $1, r.id, 'B', r.sync_version, 0, \(delta), r.sync_clock, r.new_vessel
                  FROM (SELECT t.*, m.new_vessel FROM fleetsync_route_move m JOIN \(SQL.qualified(p.schema, p.name)) t ON t.id = m.id
                        WHERE m.table_name = $1 AND m.new_vessel IS NOT NULL ORDER BY t.id) r
                  RETURNING 1
                ) SELECT (SELECT count(*) FROM queued), (SELECT count(*) FROM fleetsync_route_move WHERE table_name = $1)
                """, binds, context: "sending rows of \(table.name) to the vessels they join")
            moved += Int(try rows[0].decode((Int64, Int64).self).1)
        }
        try await db.execute("DROP TABLE fleetsync_route_move", context: "dropping the moves")
        try await db.execute("DROP FUNCTION pg_temp.fleetsync_new_route(text, uuid)", context: "dropping the comparison function")
        return moved
    }

    /// How many parents a table is routed through (0: routed by a column, or broadcast).
    func depth(of table: TableConfiguration) -> Int {
        var level = 0
        var current = table
        while case .parent(let parent, _) = current.route, let next = configuration.table(named: parent), level < 64 {
            level += 1
            current = next
        }
        return level
    }
}
