import FleetSyncCore
import PostgresNIO

/// Gives the rows a table held before `fleetsync init` (no field clocks: an empty `sync_clock`)
/// their clocks and owner, as if the shore had just written them. Without clocks their fields
/// count as the lowest clock, and any node's creation of a row with the same id wins against
/// them: a vessel's insert could move a pre-existing crew row into another vessel's partition or
/// overwrite a broadcast row for the whole fleet.
///
/// On the shore each batch of rows takes a fresh Lamport value `v`: every column the shore may
/// write gets the clock `[v, shore]`, every other column the creation clock `[0, shore]` (what
/// the BEFORE INSERT capture trigger gives a row the shore inserts), a row already marked
/// deleted gets its tombstone at `v`, and `sync_version` becomes `v`. Nothing is captured: the
/// rows reach the vessels with the catch-up (issue 18). Vessels are left alone: a vessel's copy
/// of a pre-existing row loses to whatever the shore sends, which is what the shore's baseline
/// needs, and vessel clocks would let stale copies win without ever being sent.
struct PreexistingRows {
    var table: TableConfiguration
    var physical: PhysicalTable
    var role: NodeRole
    var nodeID: String
    /// Rows per statement.
    var batchRows: Int
    var progress: (@Sendable (String) -> Void)?

    /// Runs inside the caller's (the installation's) transaction, a statement per batch of rows
    /// in key order; returns how many rows got clocks.
    func assignClocks(on db: DatabaseSession) async throws -> Int {
        guard role == .shore else { return 0 }
        let qualified = SQL.qualified(physical.schema, physical.name)
        let context = "giving clocks to rows of \(table.name) that existed before init"
        let pending: Int64 = try await db.rows("SELECT count(*) FROM \(qualified) WHERE sync_clock = '{}'::jsonb", context: context)[0].value(0, context: context)
        guard pending > 0 else { return 0 }
        let large = pending > Int64(batchRows)
        if large { progress?("\(table.name): giving clocks to \(pending) row(s) that existed before init, \(batchRows) per statement") }
        // Capture (installed by an earlier init) must not take these writes for business ones.
        try await db.execute("SET LOCAL fleetsync.applying = 'on'", context: context)
        let written = "jsonb_build_array($1::bigint, \(SQL.literal(nodeID)))"
        let creation = SQL.literal(FieldClock(counter: 0, node: nodeID).json.serialized) + "::jsonb"
        let clocks = SQL.jsonObject(physical.syncedColumns.map { column in
            SQL.literal(column.name) + ", " + (table.owner(of: column.name).isWritable(by: role) ? written : creation)
        }) + " || CASE WHEN t.is_deleted THEN jsonb_build_object('is_deleted', \(written)) ELSE '{}'::jsonb END"
        var done: Int64 = 0
        var last: String?
        while true {
            let version: Int64 = try await db.rows("SELECT nextval('fleetsync.lamport')", context: context)[0].value(0, context: context)
            var binds = PostgresBindings()
            binds.append(version)
            if let last { binds.append(last) }
            let rows = try await db.rows("""
                WITH u AS (
                  UPDATE \(qualified) t SET sync_version = greatest(t.sync_version, $1), sync_clock = \(clocks)
                  WHERE t.id IN (SELECT id FROM \(qualified) WHERE sync_clock = '{}'::jsonb\(last == nil ? "" : " AND id > $2::uuid") ORDER BY id LIMIT \(batchRows))
                  RETURNING t.id
                ) SELECT count(*), max(id::text) FROM u
                """, binds, context: context)
            let count: Int64 = try rows[0].value(0, context: context)
            let highest: String? = try rows[0].value(1, context: context)
            guard count > 0, let highest else { break }
            done += count
            last = highest
            if large { progress?("\(table.name): \(done) of \(pending) row(s) given clocks") }
        }
        try await db.execute("SET LOCAL fleetsync.applying = 'off'", context: context)
        return Int(done)
    }
}
