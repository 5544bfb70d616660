import FleetSyncCore

/// Generates the shore's routing SQL from the configuration: the function that names the vessel
/// of a row, and the transfer-saga triggers that run when a row changes vessel.
public struct RoutingBuilder: Sendable {
    public var configuration: FleetSyncConfiguration
    /// Physical tables by sync name.
    public var physical: [String: PhysicalTable]

    public init(configuration: FleetSyncConfiguration, physical: [String: PhysicalTable]) {
        self.configuration = configuration
        self.physical = physical
    }

    func qualified(_ table: String) -> String {
        let p = physical[table]!
        return SQL.qualified(p.schema, p.name)
    }

    /// The vessel expression of `table` for the row whose id is the SQL expression `id`.
    func vesselExpression(_ table: TableConfiguration, id: String) -> String {
        switch table.route {
        case .broadcast:
            return "'*'::text"
        case .column(let column):
            return "(SELECT t.\(SQL.identifier(column))::text FROM \(qualified(table.name)) t WHERE t.id = \(id))"
        case .parent(let parent, let via):
            let parentID = "(SELECT t.\(SQL.identifier(via)) FROM \(qualified(table.name)) t WHERE t.id = \(id))"
            return vesselExpression(configuration.table(named: parent)!, id: parentID)
        }
    }

    /// `fleetsync.route_event(table_name, row_id)`: the vessel an event goes to.
    public func routeFunction() -> String {
        guard configuration.role == .shore else {
            return "CREATE OR REPLACE FUNCTION fleetsync.route_event(table_name text, row_id uuid) RETURNS text LANGUAGE sql STABLE AS $$ SELECT NULL::text $$"
        }
        let branches = configuration.tables.map { "WHEN \(SQL.literal($0.name)) THEN \(vesselExpression($0, id: "$2"))" }
        let body = "SELECT CASE $1 \(branches.joined(separator: " ")) END"
        let tag = SQL.dollarTag(for: body)
        return "CREATE OR REPLACE FUNCTION fleetsync.route_event(table_name text, row_id uuid) RETURNS text LANGUAGE sql STABLE AS \(tag) \(body) \(tag)"
    }

    /// Tables routed through `table` (directly), with the column that references it.
    func children(of table: String) -> [(table: TableConfiguration, via: String)] {
        configuration.tables.compactMap { t in
            if case .parent(let parent, let via) = t.route, parent == table { return (t, via) }
            return nil
        }
    }

    /// Every table routed through `table`, directly or over several levels, each with a FROM
    /// clause selecting as `r` its rows that belong to the row `NEW`; parents before children.
    func family(_ table: TableConfiguration) -> [(table: TableConfiguration, from: String)] {
        var result: [(TableConfiguration, String)] = []
        // path: the chain of (table, via column) from the top row's child down to the member.
        func descend(_ parent: TableConfiguration, path: [(TableConfiguration, String)]) {
            for (child, via) in children(of: parent.name) {
                let chain = path + [(child, via)]
                // r is the member; p1...pn-1 its ancestors up to the child of NEW.
                var from = "FROM \(qualified(child.name)) r"
                var current = "r"
                var currentVia = via
                for (level, ancestor) in chain.dropLast().reversed().enumerated() {
                    let alias = "p\(level + 1)"
                    from += " JOIN \(qualified(ancestor.0.name)) \(alias) ON \(current).\(SQL.identifier(currentVia)) = \(alias).id"
                    current = alias
                    currentVia = ancestor.1
                }
                from += " WHERE \(current).\(SQL.identifier(currentVia)) = NEW.id"
                result.append((child, from))
                descend(child, path: chain)
            }
        }
        descend(table, path: [])
        return result
    }

    /// For a member that references itself (a tree of steps, say), `from` wrapped so that each
    /// row carries its depth in the tree (roots 0; rows in a reference cycle 0), and the ORDER BY
    /// clauses that put the deepest rows first (offboarding: children leave before their parents,
    /// across batches too) or the shallowest first (baseline: parents arrive first). PostgreSQL
    /// evaluates the volatile `nextval` of the select list after the sort, so each event takes
    /// its clock value, and its place in the queue, in that order. Other members are unchanged.
    func orderedByDepth(_ member: TableConfiguration, from: String) -> (from: String, deepestFirst: String, shallowestFirst: String) {
        guard let p = physical[member.name],
              let key = p.foreignKeys.first(where: { $0.referencedSchema == p.schema && $0.referencedTable == p.name && $0.columns.count == 1 })
        else { return (from, "", "") }
        let column = SQL.identifier(key.columns[0])
        let wrapped = "FROM (WITH RECURSIVE m AS (SELECT r.* \(from)), "
            + "d AS (SELECT m.id, 0 AS depth FROM m WHERE NOT EXISTS (SELECT 1 FROM m p WHERE p.id = m.\(column)) "
            + "UNION ALL SELECT m.id, d.depth + 1 FROM m JOIN d ON m.\(column) = d.id) "
            + "SELECT m.*, coalesce(d.depth, 0) AS fleetsync_depth FROM m LEFT JOIN d ON d.id = m.id) r"
        return (wrapped, " ORDER BY r.fleetsync_depth DESC", " ORDER BY r.fleetsync_depth")
    }

    /// Statements installing the transfer saga on every table routed by a column, and on every
    /// table routed through a parent, for a change of the column that names the parent: when the
    /// row's vessel changes, the old vessel gets offboardings and the new one a full baseline of
    /// the row and of every row routed through it. Tables routed otherwise lose any saga trigger
    /// an earlier configuration gave them.
    public func sagaStatements() -> [String] {
        guard configuration.role == .shore else { return [] }
        var statements: [String] = []
        for table in configuration.tables {
            guard let p = physical[table.name] else { continue }
            statements.append("DROP TRIGGER IF EXISTS zz_fleetsync_saga ON \(qualified(table.name))")
            // The column whose change can move the row, and the row's vessel before and after.
            let column: String, oldVessel: String, newVessel: String
            switch table.route {
            case .broadcast:
                continue
            case .column(let routing):
                column = routing
                oldVessel = "OLD.\(SQL.identifier(routing))::text"
                newVessel = "NEW.\(SQL.identifier(routing))::text"
            case .parent(let parent, let via):
                guard let parentTable = configuration.table(named: parent) else { continue }
                column = via
                oldVessel = vesselExpression(parentTable, id: "OLD.\(SQL.identifier(via))")
                newVessel = vesselExpression(parentTable, id: "NEW.\(SQL.identifier(via))")
            }
            let function = "fleetsync." + SQL.identifier("saga_\(p.oid)")
            let members = [(table, "FROM (SELECT NEW.*) r")] + family(table)
            var offboard: [String] = []
            var baseline: [String] = []
            for (member, from) in members {
                let (ordered, deepestFirst, shallowestFirst) = orderedByDepth(member, from: from)
                // The tombstone travels only when the row has one, with its clock.
                let delta = ColumnCodec.captureObject(physical[member.name]!.syncedColumns, row: "r")
                    + " || CASE WHEN r.sync_clock ? 'is_deleted' THEN jsonb_build_object('is_deleted', r.is_deleted) ELSE '{}'::jsonb END"
                let name = SQL.literal(member.name)
                offboard.append("INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta, vessel) SELECT nextval('fleetsync.lamport'), \(name), r.id, 'O', r.sync_version, 0, '{}', old_vessel \(ordered.replacingOccurrences(of: "NEW.", with: "OLD."))\(deepestFirst);")
                baseline.append("INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta, clocks, vessel) SELECT nextval('fleetsync.lamport'), \(name), r.id, 'B', r.sync_version, 0, \(delta), r.sync_clock, new_vessel \(ordered)\(shallowestFirst);")
            }
            // Offboarding removes children before parents; the baseline brings parents first. A
            // row moved to another parent on the same vessel needs neither. The update that moved
            // the row is dropped from the capture log: it would reach the new vessel one position
            // before the baseline, as a partial row where a batch ends between them, and the
            // baseline carries its values and clocks.
            let body = """
            DECLARE
              old_vessel text := \(oldVessel);
              new_vessel text := \(newVessel);
            BEGIN
              IF old_vessel IS NOT DISTINCT FROM new_vessel THEN RETURN NULL; END IF;
              DELETE FROM fleetsync.capture_log WHERE op = 'U' AND table_name = \(SQL.literal(table.name)) AND row_id = NEW.id AND version = NEW.sync_version;
              IF old_vessel IS NOT NULL THEN
                \(offboard.reversed().joined(separator: "\n    "))
              END IF;
              IF new_vessel IS NOT NULL THEN
                \(baseline.joined(separator: "\n    "))
              END IF;
              RETURN NULL;
            END
            """
            let tag = SQL.dollarTag(for: body)
            statements.append("CREATE OR REPLACE FUNCTION \(function)() RETURNS trigger LANGUAGE plpgsql AS \(tag)\n\(body)\n\(tag)")
            statements.append("""
                CREATE TRIGGER zz_fleetsync_saga AFTER UPDATE OF \(SQL.identifier(column)) ON \(qualified(table.name)) FOR EACH ROW
                WHEN (OLD.\(SQL.identifier(column)) IS DISTINCT FROM NEW.\(SQL.identifier(column))) EXECUTE FUNCTION \(function)()
                """)
        }
        return statements
    }
}
