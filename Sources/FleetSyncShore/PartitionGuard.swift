import FleetSyncCore
import FleetSyncPostgres
import Foundation
import PostgresNIO

/// On the shore, a vessel may only change rows of its own partition (and broadcast rows): an
/// event for a row routed to another vessel is rejected whole, recorded, and never applied.
/// The routed vessel of each row also decides who owns its `vessel` fields. A write is judged
/// against the partition its writer had seen: a row that left the vessel after the vessel's
/// cursor (its offboarding is still queued for it, or, pruned, recorded as a departure) was still
/// the vessel's when it wrote, so the write applies and reaches the row's new vessel.
struct PartitionGuard {
    var configuration: FleetSyncConfiguration

    struct Decision {
        var admitted: [ChangeEvent] = []
        var rejected: [JSONValue] = []
        /// Rows new to the shore admitted because their parent left the vessel after it wrote
        /// them: the vessel must let them go too (the transfer's offboardings do not name them).
        var offboardAfterwards: [(table: String, id: UUID)] = []
        /// Routed vessel of each admitted row of a routed table.
        var routes: [UUID: String] = [:]
    }

    /// - Parameter seen: the position of the shore's stream the vessel had applied when it wrote.
    func check(_ events: [ChangeEvent], vessel: String, seen: Int64 = .max, on db: DatabaseSession) async throws -> Decision {
        var decision = Decision()
        var tables: [String] = []
        var ids: [UUID] = []
        for event in events where configuration.table(named: event.table).map({ $0.route != .broadcast }) ?? false {
            tables.append(event.table)
            ids.append(event.rowID)
        }
        var current: [UUID: String] = [:]
        if !ids.isEmpty {
            var binds = PostgresBindings()
            binds.append(tables)
            binds.append(ids)
            let rows = try await db.rows("""
                SELECT x.id, fleetsync.route_event(x.t, x.id) FROM unnest($1::text[], $2::uuid[]) AS x(t, id)
                """, binds, context: "routing incoming rows of \(vessel)")
            for row in rows {
                let (id, route) = try row.decode((UUID, String?).self)
                if let route { current[id] = route }
            }
        }
        // Rows new to the shore go where their own routing values say; a child may arrive in
        // the same batch as its new parent, so parents are resolved first, level by level.
        var known = current
        for _ in 0..<8 {
            var progress = false
            for event in events where known[event.rowID] == nil {
                guard let table = configuration.table(named: event.table) else { continue }
                var route: String?
                switch table.route {
                case .broadcast: route = nil
                case .column(let column): route = event.fields[column]?.value.stringValue
                case .parent(let parent, let via):
                    guard let parentID = event.fields[via]?.value.stringValue.flatMap(UUID.init(uuidString:)) else { continue }
                    route = known[parentID]
                    if route == nil { route = try await storedRoute(parent, parentID, on: db) }
                }
                if let route {
                    known[event.rowID] = route
                    progress = true
                }
            }
            if !progress { break }
        }
        // Rows that left the vessel after its cursor, and rows new to the shore under them
        // (a child the vessel created under a row it still held), level by level.
        // Broadcast rows are admitted whatever moved (below): looking them up cost a scan of
        // every event queued after the vessel's cursor (23 ms a 1,000-event batch of a backlog).
        let elsewhere = events.filter { known[$0.rowID] != vessel && configuration.table(named: $0.table)?.route != .broadcast }
        var parentOf: [UUID: UUID] = [:]
        for event in elsewhere {
            if case .parent(_, let via) = configuration.table(named: event.table)?.route,
               let parent = event.fields[via]?.value.stringValue.flatMap(UUID.init(uuidString:)) {
                parentOf[event.rowID] = parent
            }
        }
        let queued = try await offboardedSince(seen, vessel: vessel, ids: elsewhere.map(\.rowID) + parentOf.values, on: db)
        var movedAway = queued
        var grew = true
        while grew {
            grew = false
            for event in elsewhere where !movedAway.contains(event.rowID) {
                if let parent = parentOf[event.rowID], movedAway.contains(parent), current[event.rowID] == nil {
                    movedAway.insert(event.rowID)
                    decision.offboardAfterwards.append((event.table, event.rowID))
                    grew = true
                }
            }
        }
        // A row this vessel created whose first change waits here for its parent is not on the
        // shore yet: a later change of it (with no routing value of its own) is the vessel's too.
        let unrouted = events.filter { known[$0.rowID] == nil && configuration.table(named: $0.table).map { $0.route != .broadcast } == true }
        let waiting = try await WaitingRoom.rows(from: vessel, among: unrouted.map(\.rowID), on: db)
        for event in events {
            guard let table = configuration.table(named: event.table), table.route != .broadcast else {
                decision.admitted.append(event)
                continue
            }
            let route = known[event.rowID]
            if route == vessel || movedAway.contains(event.rowID) || (route == nil && waiting.contains(event.rowID)) {
                decision.admitted.append(event)
                decision.routes[event.rowID] = vessel
            } else {
                decision.rejected.append(.object([
                    "table": .string(event.table), "row_id": .string(event.rowID.uuidString.lowercased()), "sender": .string(vessel),
                    "reason": .string(route.map { "row belongs to the partition of \($0), not \(vessel)" } ?? "row is routed to no vessel"),
                ]))
            }
        }
        return decision
    }

    /// Rows among `ids` whose offboarding from `vessel` is queued after position `seen`: they
    /// left the vessel after the last position it had applied. An offboarding already pruned
    /// from the event log is remembered in `fleetsync.departure` (``Retention``) until the vessel
    /// has passed it, so a vessel silent past retention is judged by what it had seen too.
    private func offboardedSince(_ seen: Int64, vessel: String, ids: [UUID], on db: DatabaseSession) async throws -> Set<UUID> {
        guard !ids.isEmpty, seen < .max else { return [] }
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(seen)
        binds.append(ids)
        let rows = try await db.rows("""
            SELECT row_id FROM fleetsync.outbox WHERE vessel IN ($1, '*') AND pos > $2 AND op = 'O' AND row_id = ANY($3::uuid[])
            UNION SELECT row_id FROM fleetsync.departure WHERE vessel IN ($1, '*') AND pos > $2 AND row_id = ANY($3::uuid[])
            """, binds, context: "finding rows that left \(vessel) after its cursor")
        return Set(try rows.map { try $0.decode(UUID.self) })
    }

    /// The stored routing of a row already on the shore.
    private func storedRoute(_ table: String, _ id: UUID, on db: DatabaseSession) async throws -> String? {
        var binds = PostgresBindings()
        binds.append(table)
        binds.append(id)
        let rows = try await db.rows("SELECT fleetsync.route_event($1, $2)", binds, context: "routing a row of \(table)")
        return try rows[0].decode(String?.self)
    }
}
