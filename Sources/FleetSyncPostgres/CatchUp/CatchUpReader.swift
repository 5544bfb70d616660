import FleetSyncCore
import Foundation
import PostgresNIO

/// Where a catch-up stands: phase 0 sends removals (children's tables first), phase 1 the rows of
/// the partition (parents' tables first), phase 2 is the end. Within a phase, tables by rank,
/// rows by id.
public struct CatchUpPosition: Sendable, Equatable, Comparable {
    public var phase: Int
    public var rank: Int
    public var id: UUID?

    public init(phase: Int, rank: Int, id: UUID?) {
        self.phase = phase
        self.rank = rank
        self.id = id
    }

    public static let end = CatchUpPosition(phase: 2, rank: 0, id: nil)
    public var isEnd: Bool { phase >= 2 }

    public static func < (a: CatchUpPosition, b: CatchUpPosition) -> Bool {
        if a.phase != b.phase { return a.phase < b.phase }
        if a.rank != b.rank { return a.rank < b.rank }
        switch (a.id, b.id) {
        case (nil, nil), (_, nil): return false
        case (nil, _): return true
        case (let x?, let y?): return x.lowercasedText < y.lowercasedText
        }
    }
}

/// Reads a vessel's partition from table state on the shore, for a catch-up: the current version
/// of each row (all its synced fields with their clocks, as a transfer's baseline carries them),
/// and removals (offboardings) of rows that left the partition. Bounded pages, resumable from a
/// ``CatchUpPosition``.
public struct CatchUpReader: Sendable {
    public var configuration: FleetSyncConfiguration
    public var schema: LocalSchema
    public var session: DatabaseSession

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, session: DatabaseSession) {
        self.configuration = configuration
        self.schema = schema
        self.session = session
    }

    /// Synced tables present here, parents first (the apply order).
    public var tables: [TableConfiguration] {
        schema.plan.tableOrder.compactMap { name in schema.tables[name] == nil ? nil : configuration.table(named: name) }
    }

    /// The rank of a table in phase `phase` (removals go children first).
    func rank(of index: Int, phase: Int) -> Int { phase == 0 ? tables.count - 1 - index : index }
    func table(at rank: Int, phase: Int) -> TableConfiguration { tables[phase == 0 ? tables.count - 1 - rank : rank] }

    /// SQL true for the rows (alias `r`) of `table` in the partition of the vessel bound as `vessel`.
    func partition(_ table: TableConfiguration, vessel: String) -> String {
        switch table.route {
        case .broadcast:
            return "true"
        case .column(let column):
            return "r.\(SQL.identifier(column))::text = \(vessel)"
        case .parent(let parent, let via):
            guard let parentTable = configuration.table(named: parent) else { return "false" }
            // A row under a broadcast parent is broadcast too ('*').
            return "\(RoutingBuilder(configuration: configuration, physical: schema.tables).vesselExpression(parentTable, id: "r.\(SQL.identifier(via))")) IN (\(vessel), '*')"
        }
    }

    /// The row's synced values as one JSON object, with the tombstone when it has a clock.
    func delta(_ table: TableConfiguration) -> String {
        ColumnCodec.captureObject(schema.tables[table.name]!.syncedColumns, row: "r")
            + " || CASE WHEN r.sync_clock ? 'is_deleted' THEN jsonb_build_object('is_deleted', r.is_deleted) ELSE '{}'::jsonb END"
    }

    func qualified(_ table: TableConfiguration) -> String {
        let p = schema.tables[table.name]!
        return SQL.qualified(p.schema, p.name)
    }

    /// Lists the rows a partial catch-up of `vessel` from `since` to `target` may send: rows
    /// touched after `since` by pruned events (``Retention``) or by events still kept, and rows
    /// that left the vessel after `since`. Returns how many.
    @discardableResult
    public func listCandidates(vessel: String, since: Int64, target: Int64) async throws -> Int64 {
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(since)
        binds.append(target)
        binds.append(tables.map(\.name))
        binds.append(tables.indices.map { Int32(rank(of: $0, phase: 1)) })
        binds.append(tables.indices.map { Int32(rank(of: $0, phase: 0)) })
        try await session.execute("DELETE FROM fleetsync.catch_up_row WHERE vessel = $1", [vessel].bindings, context: "clearing an earlier catch-up's rows")
        let rows = try await session.rows("""
            WITH ranks AS (SELECT * FROM unnest($4::text[], $5::int[], $6::int[]) AS t(name, row_rank, removal_rank)),
            touched AS (
              SELECT table_name, row_id FROM fleetsync.pruned_row WHERE last_pos > $2 AND vessel IN ($1, '*')
              UNION SELECT table_name, row_id FROM fleetsync.outbox WHERE pos > $2 AND pos <= $3 AND op <> 'O' AND vessel IN ($1, '*')
            ), departed AS (
              SELECT table_name, row_id FROM fleetsync.departure WHERE vessel IN ($1, '*') AND pos > $2
              UNION SELECT table_name, row_id FROM fleetsync.outbox WHERE pos > $2 AND pos <= $3 AND op = 'O' AND vessel IN ($1, '*')
            ), listed AS (
              INSERT INTO fleetsync.catch_up_row (vessel, phase, rank, row_id)
              SELECT $1, 1, ranks.row_rank, touched.row_id FROM touched JOIN ranks ON ranks.name = touched.table_name
              UNION ALL
              SELECT $1, 0, ranks.removal_rank, departed.row_id FROM departed JOIN ranks ON ranks.name = departed.table_name
              ON CONFLICT DO NOTHING RETURNING 1
            ) SELECT count(*) FROM listed
            """, binds, context: "listing the rows a catch-up of \(vessel) may send")
        return try rows[0].value(0, context: "counting catch-up rows")
    }

    /// How many rows the vessel's whole partition holds (for progress).
    public func partitionSize(vessel: String) async throws -> Int64 {
        var total: Int64 = 0
        for table in tables {
            let rows = try await session.rows("SELECT count(*) FROM \(qualified(table)) r WHERE \(partition(table, vessel: "$1"))", [vessel].bindings,
                                              context: "counting \(vessel)'s rows of \(table.name)")
            total += try rows[0].value(0, context: "counting rows")
        }
        return total
    }

    /// One page of a catch-up.
    public struct Page: Sendable {
        public var events: [ChangeEvent] = []
        public var rows = 0
        public var removals = 0
        /// The rows in bulk form (``bulkPage(vessel:from:limit:byteBudget:)``), instead of events.
        public var bulk: CatchUpBulkPage?
        /// Where the next page starts (``CatchUpPosition/end`` when all is sent).
        public var next: CatchUpPosition
    }

    /// The next page after `position`: at most `limit` events and about `byteBudget` bytes
    /// (the first row goes whatever its size). `whole`: the whole partition (no removals);
    /// otherwise only the listed candidates. Events carry `position` as their position.
    public func page(vessel: String, whole: Bool, from start: CatchUpPosition, limit: Int, byteBudget: Int, position: Int64) async throws -> Page {
        var page = Page(next: start)
        if whole && page.next.phase == 0 { page.next = CatchUpPosition(phase: 1, rank: 0, id: nil) }
        var bytes = 0
        let count = tables.count
        while !page.next.isEnd && page.events.count < limit && (page.events.isEmpty || bytes < byteBudget) {
            let here = page.next
            guard here.rank < count else {
                page.next = here.phase == 0 ? CatchUpPosition(phase: 1, rank: 0, id: nil) : .end
                continue
            }
            let table = self.table(at: here.rank, phase: here.phase)
            let wanted = limit - page.events.count
            if here.phase == 0 {
                let ids = try await removals(of: table, rank: here.rank, vessel: vessel, after: here.id, limit: wanted)
                for id in ids {
                    page.events.append(ChangeEvent(table: table.name, rowID: id, fields: [:], origin: configuration.nodeID, originPosition: position, offboard: true))
                    bytes += 48
                }
                page.removals += ids.count
                page.next = ids.count < wanted ? CatchUpPosition(phase: 0, rank: here.rank + 1, id: nil) : CatchUpPosition(phase: 0, rank: here.rank, id: ids.last)
            } else {
                let (events, sizes, exhausted) = try await rows(of: table, rank: here.rank, vessel: vessel, whole: whole, after: here.id,
                                                                limit: wanted, budget: byteBudget - bytes, alone: page.events.isEmpty, position: position)
                page.events += events
                bytes += sizes
                page.rows += events.count
                page.next = exhausted ? CatchUpPosition(phase: 1, rank: here.rank + 1, id: nil) : CatchUpPosition(phase: 1, rank: here.rank, id: events.last?.rowID ?? here.id)
                if !exhausted { break }
            }
        }
        return page
    }

    func removals(of table: TableConfiguration, rank: Int, vessel: String, after id: UUID?, limit: Int) async throws -> [UUID] {
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(Int32(rank))
        binds.append(id)
        binds.append(Int64(limit))
        binds.append(table.name)
        let rows = try await session.rows("""
            SELECT c.row_id FROM fleetsync.catch_up_row c
            WHERE c.vessel = $1 AND c.phase = 0 AND c.rank = $2 AND ($3::uuid IS NULL OR c.row_id > $3::uuid)
              AND coalesce(fleetsync.route_event($5, c.row_id), '') NOT IN ($1, '*')
            ORDER BY c.row_id LIMIT $4
            """, binds, context: "reading removals of \(table.name) for \(vessel)'s catch-up")
        return try rows.map { try $0.value(0, as: UUID.self, context: "reading a removal") }
    }

    /// Rows of `table` in the partition after `id`, as baseline events; `exhausted` when the
    /// table has no more.
    func rows(of table: TableConfiguration, rank: Int, vessel: String, whole: Bool, after id: UUID?, limit: Int, budget: Int, alone: Bool,
              position: Int64) async throws -> (events: [ChangeEvent], bytes: Int, exhausted: Bool) {
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(id)
        binds.append(Int64(limit + 1))
        binds.append(Int64(max(budget, 0)))
        let from: String, condition: String
        if whole {
            from = "\(qualified(table)) r"
            condition = "($2::uuid IS NULL OR r.id > $2::uuid)"
        } else {
            binds.append(Int32(rank))
            from = "fleetsync.catch_up_row c JOIN \(qualified(table)) r ON r.id = c.row_id"
            condition = "c.vessel = $1 AND c.phase = 1 AND c.rank = $5 AND ($2::uuid IS NULL OR c.row_id > $2::uuid)"
        }
        // One result column per synced column (CatchUpRowColumns), each row's size from its
        // texts; the running sum stops the rows past the budget in the query (the first two
        // always come: the first goes whatever its size, the second says whether more follow).
        // The rows are decoded as they stream in, while the database still reads the next ones.
        let layout = CatchUpRowColumns(schema.tables[table.name]!.syncedColumns)
        let sql = """
            SELECT \(layout.outputList), bytes FROM (
              SELECT q.*, row_number() OVER w AS n, sum(q.bytes) OVER w - q.bytes AS before FROM (
                SELECT t.*, \(layout.sizeExpression) AS bytes FROM (
                  SELECT \(layout.selectList)
                  FROM \(from)
                  WHERE \(condition) AND \(partition(table, vessel: "$1"))
                  ORDER BY r.id LIMIT $3
                ) t
              ) q WINDOW w AS (ORDER BY q.id ROWS UNBOUNDED PRECEDING)
            ) z WHERE n <= 2 OR before <= $4 ORDER BY id
            """
        let logger = session.logger, node = configuration.nodeID, name = table.name
        let (events, bytes, stopped, count) = try await session.answered("reading \(table.name) rows for \(vessel)'s catch-up") { [binds] connection in
            var events: [ChangeEvent] = []
            var bytes = 0
            var stopped = false
            var count = 0
            var clocks = ClockReader(fallback: node)
            for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger) {
                count += 1
                // The rest of the stream is read, not decoded (ending it early would leave the
                // connection with a query in flight).
                if stopped { continue }
                let context = "decoding a row for a catch-up"
                let size = Int(try row.value(layout.columns.count + 3, as: Int64.self, context: context))
                if events.count == limit || ((!alone || !events.isEmpty) && bytes + size > budget) {
                    stopped = true
                    continue
                }
                let rowID: UUID = try row.value(0, context: context)
                let fields = try layout.fields(of: row, clocks: &clocks, context: context)
                events.append(ChangeEvent(table: name, rowID: rowID, fields: fields, origin: node, originPosition: position))
                bytes += size
            }
            return (events, bytes, stopped, count)
        }
        let exhausted = !stopped && count <= limit
        return (events, bytes, exhausted)
    }

    /// The current version of rows `ids` of `table` that are in the vessel's partition (with no
    /// vessel: whatever this node holds of them).
    public func rows(of table: TableConfiguration, ids: [UUID], vessel: String?) async throws -> [ChangeEvent] {
        var binds = PostgresBindings()
        binds.append(vessel ?? "")
        binds.append(ids)
        let rows = try await session.rows("""
            SELECT r.id, d.delta::text, r.sync_clock::text
            FROM \(qualified(table)) r CROSS JOIN LATERAL (SELECT \(delta(table)) AS delta) d
            WHERE r.id = ANY($2::uuid[]) AND ($1 = '' OR \(partition(table, vessel: "$1"))) ORDER BY r.id
            """, binds, context: "reading rows of \(table.name) in \(vessel ?? "this node")'s partition")
        return try rows.map { try event(table: table, row: $0, position: 0) }
    }

    func event(table: TableConfiguration, row: PostgresRow, position: Int64) throws -> ChangeEvent {
        let context = "decoding a row of \(table.name)"
        let rowID: UUID = try row.value(0, context: context)
        let values = try Self.members(of: try row.value(1, as: String.self, context: context), what: "row")
        let clocks = try (try row.value(2, as: String?.self, context: context)).map { try Self.members(of: $0, what: "clocks") } ?? [:]
        var fields: [String: FieldChange] = [:]
        for (name, value) in values {
            fields[name] = FieldChange(value: value, clock: clocks[name].flatMap(FieldClock.init(json:)) ?? FieldClock(counter: 0, node: configuration.nodeID))
        }
        return ChangeEvent(table: table.name, rowID: rowID, fields: fields, origin: configuration.nodeID, originPosition: position)
    }

    static func members(of text: String, what: String) throws -> [String: JSONValue] {
        let value = try JSONParser.parse(text, valuesAt: JSONLimits.Envelope.members)
        guard case .object(let members) = value else { throw EventDecodingError("the \(what) is a JSON \(value.kindName), not an object") }
        return members
    }
}

/// Reads stored field clocks (`[counter, "node"]`), checking each distinct node id once: rows of
/// a page name the same few writers.
struct ClockReader {
    var fallback: String
    var checked: [String] = []

    /// The clock, or the lowest clock of `fallback` when it is missing or malformed.
    mutating func clock(_ json: JSONValue?) -> FieldClock {
        guard case .array(let items)? = json, items.count == 2, let counter = items[0].int64Value, counter >= 0,
              let node = items[1].stringValue else { return FieldClock(counter: 0, node: fallback) }
        if !checked.contains(node) {
            guard Identifiers.isValidNodeID(node) else { return FieldClock(counter: 0, node: fallback) }
            if checked.count < 16 { checked.append(node) }
        }
        return FieldClock(counter: counter, node: node)
    }
}

extension Array where Element == String {
    /// The strings as query bindings, in order.
    fileprivate var bindings: PostgresBindings {
        var binds = PostgresBindings()
        for s in self { binds.append(s) }
        return binds
    }
}
