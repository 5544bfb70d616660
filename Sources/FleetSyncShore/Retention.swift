import FleetSyncCore
import FleetSyncPostgres
import PostgresNIO

/// Prunes shore events every active vessel has acknowledged. A vessel silent for longer than the
/// retention no longer holds events back; if its cursor falls behind what is kept, its next
/// exchange is told to re-bootstrap.
public enum Retention {
    /// Deletes events up to the lowest cursor of the vessels heard from within `days`; returns
    /// the new horizon (events at or below it are gone).
    @discardableResult
    public static func prune(retentionDays days: Int, on db: DatabaseSession) async throws -> Int64 {
        var binds = PostgresBindings()
        binds.append(Int32(days))
        let rows = try await db.rows("""
            WITH active AS (
              SELECT coalesce(s.acknowledged, 0) AS acknowledged
              FROM fleetsync.vessel v LEFT JOIN fleetsync.sync_state s ON s.peer = v.vessel_id
              WHERE coalesce(s.last_success, v.enrolled_at) > now() - make_interval(days => $1)
            ), horizon AS (
              SELECT coalesce((SELECT min(acknowledged) FROM active), (SELECT last_pos FROM fleetsync.outbox_counter)) AS h
            ), pruned AS (
              DELETE FROM fleetsync.outbox WHERE pos <= (SELECT h FROM horizon) RETURNING 1
            )
            UPDATE fleetsync.outbox_counter SET pruned_below = greatest(pruned_below, (SELECT h FROM horizon))
            RETURNING pruned_below, (SELECT count(*) FROM pruned)
            """, binds, context: "pruning acknowledged events")
        return try rows[0].value(0)
    }
}
