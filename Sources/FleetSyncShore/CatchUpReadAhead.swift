import FleetSyncCore
import FleetSyncPostgres
import Foundation
import Logging

/// Reads a vessel's next catch-up page while the vessel applies the one just sent, so that the
/// shore's page query and the vessel's apply overlap instead of taking turns (onboarding a large
/// partition is a long run of such pages). Only in this process, and bounded: at most
/// ``maximumPages`` pages are read ahead at a time, each on a connection of its own opened for
/// it (outside the server's pool of `database_connections`) and closed after; a vessel's next
/// request that finds no page read ahead, or one for another position, reads it as before.
///
/// A page read ahead is as valid as one read when asked: a catch-up sends each row's state as
/// of some moment after it started, and the events after its starting position follow it, so a
/// row that changes after the page was read arrives again as an event.
actor CatchUpReadAhead {
    static let shared = CatchUpReadAhead()
    /// Pages read ahead at once, in this process (each holds up to one page's rows in memory).
    static let maximumPages = 2

    /// Which page: the catch-up (vessel, since, target, whole) and where the page starts.
    struct Key: Hashable, Sendable {
        var vessel: String
        var since: Int64
        var target: Int64
        var whole: Bool
        var phase: Int
        var rank: Int
        var id: UUID?
        /// The page in bulk form (``CatchUpBulkPage``) or as events.
        var bulk: Bool

        init(vessel: String, state: CatchUp.State, start: CatchUpPosition, bulk: Bool = false) {
            self.bulk = bulk
            self.vessel = vessel
            since = state.since
            target = state.target
            whole = state.whole
            phase = start.phase
            rank = start.rank
            id = start.id
        }
    }

    /// A page read ahead is dropped when no request took it within this time (its vessel went
    /// silent), so that it holds neither memory nor a place for long.
    static let keptFor: Duration = .seconds(120)

    private var pages: [Key: (task: Task<CatchUpReader.Page?, Never>, started: ContinuousClock.Instant)] = [:]

    /// Starts reading the page at `key` with `read`, unless as many pages as allowed are being
    /// read or held; returns whether it started.
    @discardableResult
    func start(_ key: Key, _ read: @escaping @Sendable () async -> CatchUpReader.Page?) -> Bool {
        let now = ContinuousClock.now
        for (old, entry) in pages where now - entry.started > Self.keptFor { pages.removeValue(forKey: old)?.task.cancel() }
        guard pages[key] == nil, pages.count < Self.maximumPages else { return false }
        pages[key] = (Task { await read() }, now)
        return true
    }

    /// The page read ahead at `key`, if any (waiting for the read to end); it is handed out once.
    func take(_ key: Key) async -> CatchUpReader.Page? {
        guard let entry = pages.removeValue(forKey: key) else { return nil }
        return await entry.task.value
    }

    /// Drops what was read ahead for `vessel` (its catch-up started again, or ended).
    func drop(vessel: String) {
        for key in pages.keys where key.vessel == vessel { pages.removeValue(forKey: key)?.task.cancel() }
    }

    /// Reads the page at `start` of `vessel`'s catch-up on a connection of its own; nil on any
    /// failure (the vessel's next request then reads it itself).
    static func read(configuration: FleetSyncConfiguration, schema: LocalSchema, vessel: String, state: CatchUp.State,
                     start: CatchUpPosition, bulk: Bool, logger: Logger) async -> CatchUpReader.Page? {
        let db: DatabaseSession
        do {
            db = try await DatabaseSession.connect(url: configuration.databaseURL, logger: logger)
        } catch {
            logger.warning("reading a catch-up page ahead failed; the vessel's next request reads it", metadata: ["vessel": "\(vessel)", "error": "\(error)"])
            return nil
        }
        var page: CatchUpReader.Page?
        do {
            page = try await CatchUp.read(CatchUpReader(configuration: configuration, schema: schema, session: db), vessel: vessel, state: state, start: start, bulk: bulk)
        } catch {
            logger.warning("reading a catch-up page ahead failed; the vessel's next request reads it", metadata: ["vessel": "\(vessel)", "error": "\(error)"])
        }
        await db.close()
        return page
    }
}
