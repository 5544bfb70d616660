import FleetSyncCore
import FleetSyncPostgres
import PostgresNIO
import Synchronization

/// When `fleetsync serve` prunes: after an exchange, as housekeeping that yields to exchanges.
/// An exchange of a quiet process prunes after it; while other exchanges are in progress, or
/// when more than `busyVessels` vessels exchanged with the process in the last `interval` (a
/// fleet's exchanges, even when each happens to run alone), pruning runs at most once per
/// `interval` per process, and never twice at once. (Pruning after every exchange of a busy
/// shore took more of PostgreSQL's time than the exchanges themselves, and its write of the
/// outbox counter row queued behind the sequencer's: docs/SCALING.md. With 200 vessels
/// exchanging every 5 s, about two exchanges in three still ran alone and pruned, 767 prunes in
/// 30 s, a quarter of PostgreSQL's statement time: docs/BENCHMARKS.md, *Round trips per
/// exchange*.) One vessel exchanging many times a second (a backlog draining) is no fleet: each
/// of its exchanges prunes, as before.
public final class RetentionSchedule: Sendable {
    struct State {
        var running = false
        var last: ContinuousClock.Instant?
        /// Vessels that exchanged since `windowStart` (at most `busyVessels` + 1 kept).
        var vessels: Set<String> = []
        var windowStart: ContinuousClock.Instant?
        /// The interval before was busy: so is this one, from its start.
        var wasBusy = false
    }

    let state = Mutex(State())
    public let interval: Duration
    public let busyVessels: Int

    public init(interval: Duration = .seconds(1), busyVessels: Int = 8) {
        self.interval = interval
        self.busyVessels = busyVessels
    }

    /// Whether this exchange (of `vessel`, when known) prunes now; `othersInProgress`: other
    /// exchanges are running. A true answer must be followed by ``done()``.
    public func claim(othersInProgress: Bool, vessel: String? = nil) -> Bool {
        let now = ContinuousClock.now
        return state.withLock { s in
            if s.windowStart.map({ now - $0 >= interval }) ?? true {
                s.wasBusy = s.windowStart.map { now - $0 < interval * 2 } == true && s.vessels.count > busyVessels
                s.windowStart = now
                s.vessels = []
            }
            if let vessel, s.vessels.count <= busyVessels { s.vessels.insert(vessel) }
            guard !s.running else { return false }
            let busy = othersInProgress || s.wasBusy || s.vessels.count > busyVessels
            if busy, let last = s.last, now - last < interval { return false }
            s.running = true
            s.last = now
            return true
        }
    }

    public func done() { state.withLock { $0.running = false } }
}

/// Prunes the shore's event log, by age and by size. Pruning is always safe: a vessel whose
/// cursor falls behind what is kept is caught up from table state (``CatchUp``). What pruning
/// forgets is kept in two small tables the catch-up reads: the last pruned position that touched
/// each row (`fleetsync.pruned_row`) and every row that left a vessel (`fleetsync.departure`).
public enum Retention {
    /// Deletes events up to the lowest cursor of the vessels heard from within `days`, and in
    /// any case all but the newest `maxEvents` (0: no size limit); returns the new horizon
    /// (events at or below it are gone).
    @discardableResult
    public static func prune(retentionDays days: Int, maxEvents: Int = 0, on db: DatabaseSession) async throws -> Int64 {
        var binds = PostgresBindings()
        binds.append(Int32(days))
        binds.append(Int64(maxEvents))
        let rows = try await db.rows(pruneSQL, binds, context: "pruning the shore's event log")
        let horizon: Int64 = try rows[0].value(0)
        try await forgetWhatNoVesselNeeds(on: db)
        return horizon
    }

    /// The prune of ``prune(retentionDays:maxEvents:on:)``. Binds: days, maximum events. Its
    /// delete reads the position index from the last horizon (every event at or below
    /// `pruned_below` went with the prune that set it) to the new one, whatever the outbox's
    /// statistics say: `pos <= horizon` alone was planned, with statistics gathered while the
    /// outbox was small, as a scan of its whole heap, dead rows included, on every prune (9–10 ms
    /// a prune while one vessel drained a backlog; docs/BENCHMARKS.md, *Outbox deletes*).
    public static let pruneSQL = """
            WITH active AS (
              SELECT coalesce(s.acknowledged, 0) AS acknowledged
              FROM fleetsync.vessel v LEFT JOIN fleetsync.sync_state s ON s.peer = v.vessel_id
              WHERE coalesce(s.last_success, v.enrolled_at) > now() - make_interval(days => $1)
            ), by_age AS (
              SELECT coalesce((SELECT min(acknowledged) FROM active), (SELECT last_pos FROM fleetsync.outbox_counter)) AS h
            ), by_size AS (
              -- Positions are unique and those at or below pruned_below are gone: with no more
              -- than $2 positions between them and last_pos there is nothing to count.
              SELECT CASE WHEN $2 > 0 AND (SELECT last_pos - pruned_below FROM fleetsync.outbox_counter) > $2
                THEN (SELECT pos FROM fleetsync.outbox WHERE pos IS NOT NULL ORDER BY pos DESC OFFSET $2 LIMIT 1) END AS h
            ), horizon AS (
              SELECT greatest((SELECT h FROM by_age), coalesce((SELECT h FROM by_size), 0)) AS h
            ), pruned AS (
              DELETE FROM fleetsync.outbox WHERE pos > (SELECT pruned_below FROM fleetsync.outbox_counter) AND pos <= (SELECT h FROM horizon)
              RETURNING pos, table_name, row_id, op, vessel
            ), passed AS (
              -- Every enrolled vessel has applied the events up to here: a mark at or below it
              -- would only be forgotten again (forgetWhatNoVesselNeeds), and tracked_from
              -- rises to it below, so none is written.
              SELECT least(coalesce(min(coalesce(s.acknowledged, 0)), 0), (SELECT h FROM horizon)) AS m
              FROM fleetsync.vessel v LEFT JOIN fleetsync.sync_state s ON s.peer = v.vessel_id
            ), touched AS (
              INSERT INTO fleetsync.pruned_row (table_name, row_id, last_pos, vessel)
              SELECT DISTINCT ON (table_name, row_id) table_name, row_id, pos, vessel FROM pruned
              WHERE op <> 'O' AND pos > (SELECT m FROM passed)
              ORDER BY table_name, row_id, pos DESC
              ON CONFLICT (table_name, row_id) DO UPDATE SET
                vessel = CASE WHEN EXCLUDED.last_pos > fleetsync.pruned_row.last_pos THEN EXCLUDED.vessel ELSE fleetsync.pruned_row.vessel END,
                last_pos = greatest(fleetsync.pruned_row.last_pos, EXCLUDED.last_pos)
              RETURNING 1
            ), departed AS (
              INSERT INTO fleetsync.departure (vessel, table_name, row_id, pos)
              SELECT DISTINCT ON (vessel, table_name, row_id) vessel, table_name, row_id, pos FROM pruned WHERE op = 'O' AND vessel IS NOT NULL
              ORDER BY vessel, table_name, row_id, pos DESC
              ON CONFLICT (vessel, table_name, row_id) DO UPDATE SET pos = greatest(fleetsync.departure.pos, EXCLUDED.pos)
              RETURNING 1
            )
            UPDATE fleetsync.outbox_counter SET pruned_below = greatest(pruned_below, (SELECT h FROM horizon)),
              tracked_from = greatest(tracked_from, (SELECT m FROM passed))
            RETURNING pruned_below, (SELECT count(*) FROM pruned), (SELECT count(*) FROM touched), (SELECT count(*) FROM departed)
            """

    /// Departures a vessel has passed, and pruned-row marks at or below every enrolled vessel's
    /// cursor, are no longer needed; `tracked_from` rises with what is forgotten, and a vessel
    /// below it is caught up whole.
    static func forgetWhatNoVesselNeeds(on db: DatabaseSession) async throws {
        // One statement (three used to run): departures a vessel has passed; departures from
        // every vessel ('*': a broadcast row a routing change gave one vessel), needed until
        // every enrolled vessel has passed them; pruned-row marks below every vessel's cursor.
        // (Each delete of a WITH runs whether or not the statement reads its rows.)
        try await db.execute("""
            WITH low AS (
              SELECT min(coalesce(s.acknowledged, 0)) AS m FROM fleetsync.vessel v LEFT JOIN fleetsync.sync_state s ON s.peer = v.vessel_id
            ), passed AS (
              DELETE FROM fleetsync.departure d USING fleetsync.sync_state s
              WHERE s.peer = d.vessel AND d.vessel <> '*' AND d.pos <= s.acknowledged
              RETURNING 1
            ), everyone AS (
              DELETE FROM fleetsync.departure WHERE vessel = '*' AND pos <= (SELECT coalesce(m, 0) FROM low)
              RETURNING 1
            ), gone AS (
              DELETE FROM fleetsync.pruned_row WHERE last_pos <= (SELECT m FROM low) RETURNING 1
            )
            UPDATE fleetsync.outbox_counter SET tracked_from = greatest(tracked_from, (SELECT m FROM low))
            WHERE (SELECT count(*) FROM gone) > 0
            """, context: "forgetting departures every vessel has passed and pruned-row marks below every vessel's cursor")
    }
}
