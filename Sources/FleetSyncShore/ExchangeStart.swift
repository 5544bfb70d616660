import FleetSyncCore
import FleetSyncPostgres
import Foundation
import PostgresNIO

/// What an exchange reads before it applies or answers anything, in one statement (one
/// snapshot), with the vessel's lock held: the outbox's positions, the vessel's state (registered
/// on first contact), whether it is being caught up, and whether captured changes wait to be
/// sequenced. For an exchange that carries no events the same statement records the contact
/// (cursor, time, status), which such an exchange used to do in a statement of its own.
/// (It replaces six round trips: the outbox counter, the state, the contact, the sequencer's
/// look for work, the counter again and the catch-up row.)
struct ExchangeStart {
    /// The outbox's last position and pruning mark.
    var last: Int64
    var prunedBelow: Int64
    /// The clock floor the vessel is held to, and what it acknowledged before this exchange.
    var clockFloor: Int64
    var seen: Int64
    /// The contact was recorded by the statement (an exchange without events whose cursor,
    /// read-ahead position and clock passed; not on first contact: see ``read(_:recordingContact:on:)``).
    var contactRecorded: Bool
    /// An unfinished catch-up of this vessel exists.
    var catchingUp: Bool
    /// Captured changes (or outbox rows without a position) wait for the sequencer.
    var captured: Bool

    /// Binds: vessel, cursor, read-ahead position (or null), status, whether to record the
    /// contact, the vessel's clock.
    static let sql = """
        WITH counter AS (
          SELECT last_pos, pruned_below, $2 <= last_pos AND coalesce($3, 0) <= last_pos AS valid FROM fleetsync.outbox_counter
        ), prior AS (
          SELECT max_clock, acknowledged FROM fleetsync.sync_state WHERE peer = $1
        ), registered AS (
          INSERT INTO fleetsync.sync_state (peer) SELECT $1 FROM counter WHERE valid AND NOT EXISTS (SELECT 1 FROM prior)
          ON CONFLICT DO NOTHING RETURNING max_clock, acknowledged
        ), contact AS (
          UPDATE fleetsync.sync_state SET acknowledged = greatest(acknowledged, $2), last_success = now(), status = $4::jsonb
          WHERE peer = $1 AND $5 AND (SELECT valid FROM counter) AND $6 >= max_clock
          RETURNING 1
        )
        SELECT c.last_pos, c.pruned_below, coalesce(p.max_clock, r.max_clock, 0), coalesce(p.acknowledged, r.acknowledged, 0),
          EXISTS (SELECT 1 FROM contact),
          EXISTS (SELECT 1 FROM fleetsync.catch_up WHERE vessel = $1 AND finished_at IS NULL),
          EXISTS (SELECT 1 FROM fleetsync.capture_log) OR EXISTS (SELECT 1 FROM fleetsync.outbox WHERE pos IS NULL)
        FROM counter c LEFT JOIN prior p ON true LEFT JOIN registered r ON true
        """

    /// Reads the start of `request`'s exchange; refuses a cursor or read-ahead position beyond
    /// the outbox's last position (then nothing is registered or recorded). With
    /// `recordingContact`, the contact is recorded unless the vessel's clock is below its floor;
    /// on first contact (the row is created by this statement, which cannot update it too) by a
    /// second statement.
    static func read(_ request: ExchangeRequest, recordingContact: Bool, on db: DatabaseSession) async throws -> ExchangeStart {
        let vessel = request.vesselID
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(request.cursor)
        binds.append(request.readAhead?.after)
        binds.append(JSONValue.object(request.status).serialized)
        binds.append(recordingContact)
        binds.append(request.clock)
        let rows = try await db.rows(ExchangeStartStatement.self, binds, context: "starting the exchange of \(vessel)")
        guard let row = rows.first else {
            throw WireError(.internalError, "the shore's outbox counter row is missing (fleetsync.outbox_counter); run fleetsync init on the shore")
        }
        let (last, prunedBelow, floor, seen, recorded, catchingUp, captured) = try row.decode((Int64, Int64, Int64, Int64, Bool, Bool, Bool).self)
        guard request.cursor <= last else {
            throw WireError(.cursorFromTheFuture, "cursor \(request.cursor) is beyond the shore's last position \(last); this vessel's state does not come from this shore")
        }
        if let ask = request.readAhead, ask.after > last {
            throw WireError(.cursorFromTheFuture, "read-ahead position \(ask.after) is beyond the shore's last position \(last); nothing was applied")
        }
        var start = ExchangeStart(last: last, prunedBelow: prunedBelow, clockFloor: floor, seen: seen,
                                  contactRecorded: recorded, catchingUp: catchingUp, captured: captured)
        if recordingContact, !recorded, request.clock >= floor {
            _ = try await recordContact(request, clocks: [], on: db)
            start.contactRecorded = true
        }
        return start
    }

    /// Records the contact with the vessel (its cursor as acknowledged, the time, its status)
    /// and raises its clock floor to the highest of `clocks` (the counters of its own writes
    /// among the events admitted) that the shore accepted, those at or below this node's logical
    /// clock after the apply (one beyond ``ClockBound`` was refused and must not raise the floor):
    /// one statement, where three ran (the clock, the floor, the contact). Returns the floor.
    static func recordContact(_ request: ExchangeRequest, clocks: [Int64], on db: DatabaseSession) async throws -> Int64 {
        var binds = PostgresBindings()
        binds.append(request.vesselID)
        binds.append(request.cursor)
        binds.append(JSONValue.object(request.status).serialized)
        binds.append(clocks)
        let rows = try await db.rows(ContactStatement.self, binds, context: "recording contact with \(request.vesselID)")
        return try rows.first?.decode(Int64.self) ?? 0
    }

    /// Binds: vessel, cursor, status, the clocks of its writes.
    static let contactSQL = """
        UPDATE fleetsync.sync_state SET acknowledged = greatest(acknowledged, $2), last_success = now(), status = $3::jsonb,
          max_clock = greatest(max_clock, (SELECT max(c) FROM unnest($4::int8[]) c WHERE c <= (SELECT last_value FROM fleetsync.lamport)))
        WHERE peer = $1 RETURNING max_clock
        """

    /// The distinct clock counters of `vessel`'s own writes among `events`.
    static func ownClocks(of vessel: String, in events: [ChangeEvent]) -> [Int64] {
        var counters = Set<Int64>()
        for event in events {
            for change in event.fields.values where change.clock.node == vessel { counters.insert(change.clock.counter) }
        }
        return counters.sorted()
    }
}
