import FleetSyncCore
import FleetSyncPostgres
import Foundation
import Logging
import PostgresNIO

/// Catch-up from table state, on the shore (docs/PROTOCOL.md, *Catch-up*). A vessel whose cursor
/// is below what the shore still keeps (`pruned_below`), or that has never been caught up (cursor
/// 0 and no catch-up progress reported), receives instead of events: removals (offboardings) of
/// the rows that left its partition since its cursor, children's tables first, then the current
/// version of every row of its partition changed since (the whole partition for a new vessel),
/// with field clocks, parents' tables first. Then its cursor jumps to the position the catch-up
/// started at, and events follow from there.
///
/// Pages are bounded by bytes (``pageBounds(_:)``), not by `batch_events`. Progress lives in
/// `fleetsync.catch_up`: the position the last page reached (sent) and the position the vessel
/// confirmed applying (done). Each page's response carries the progress, the vessel echoes it in
/// its next request, and only then does the shore count the page as done: a lost response costs
/// that page again, never the catch-up from the start.
struct CatchUp: Sendable {
    var configuration: FleetSyncConfiguration
    var schema: LocalSchema
    var logger: Logger

    /// The stored progress of one vessel's catch-up.
    struct State: Sendable {
        var since: Int64
        var target: Int64
        var whole: Bool
        var total: Int64
        var page: Int64
        var sent: CatchUpPosition
        var sentRows: Int64
        var sentRemovals: Int64
        var done: CatchUpPosition
        var doneRows: Int64
        var doneRemovals: Int64
        var finished: Bool
    }

    /// What one exchange answers while catching up.
    struct Answer: Sendable {
        var events: [ChangeEvent]
        /// The page's rows in bulk form, for a vessel that announced it (then no events).
        var bulk: CatchUpBulkPage?
        var cursor: Int64
        var progress: [String: JSONValue]
    }

    /// How large one catch-up page may be: pages are bounded by bytes, not by `batch_events`.
    /// At most `batch_bytes` of row text (capped at ``maximumPageBytes``) and ``pageEvents``
    /// rows, well inside what every vessel decodes (``WireLimits``: 100,000 events, 64 MiB of
    /// body). A whole partition then takes a few dozen exchanges instead of one per
    /// `batch_events` rows: the exchange's own cost (a sealed request and answer, a page query,
    /// an apply transaction) dominated onboarding at 1,000 rows a page. Event batches keep both
    /// `batch_events` and `batch_bytes`.
    static let pageEvents = WireLimits().maximumEvents / 2
    static let maximumPageBytes = WireLimits().maximumBodyBytes / 4

    static func pageBounds(_ limits: Limits) -> (events: Int, bytes: Int) {
        (pageEvents, min(limits.batchBytes, maximumPageBytes))
    }

    /// The catch-up page for this request, or nil when the vessel takes events.
    /// - Parameters:
    ///   - echo: the `catch_up` object of the request's status (the last progress the vessel applied).
    ///   - bulk: the vessel reads pages in bulk form (``announcesBulk(_:)``); a whole partition's
    ///     pages then go that way.
    ///   - force: the events after `cursor` are known to be pruned (checked in a snapshot).
    func answer(vessel: String, cursor: Int64, echo: JSONValue?, bulk: Bool = false, force: Bool, known: Known? = nil, on db: DatabaseSession) async throws -> Answer? {
        // No catch-up unfinished and none to start, by what the exchange read first: no statement.
        if let known, !known.inProgress, !Self.starts(cursor: cursor, prunedBelow: known.prunedBelow, echo: echo, force: force) { return nil }
        let counter = try await db.rows("SELECT last_pos, pruned_below, tracked_from FROM fleetsync.outbox_counter", context: "reading the outbox position")
        let (last, prunedBelow, trackedFrom) = try counter[0].decode((Int64, Int64, Int64).self)
        var state = try await load(vessel: vessel, on: db)
        if var current = state, !current.finished {
            if cursor == current.since {
                // Continue; the vessel applied the last page if it echoes its number.
                if case .object(let echoed)? = echo, echoed["page"]?.int64Value == current.page, echoed["since"]?.int64Value == current.since,
                   echoed["target"]?.int64Value == current.target {
                    current.done = current.sent
                    current.doneRows = current.sentRows
                    current.doneRemovals = current.sentRemovals
                }
                if current.done.isEnd {
                    try await finish(vessel: vessel, state: current, on: db)
                    state = nil
                } else {
                    return try await nextPage(vessel: vessel, state: current, bulk: bulk, on: db)
                }
            } else {
                // The vessel has moved past the catch-up (it applied the last page) or elsewhere.
                try await finish(vessel: vessel, state: current, on: db)
                state = nil
            }
        }
        let neverCaughtUp: Bool
        if case .object? = echo { neverCaughtUp = false } else { neverCaughtUp = true }
        guard Self.starts(cursor: cursor, prunedBelow: prunedBelow, echo: echo, force: force) else { return nil }
        // A new catch-up: from the cursor to the last position sequenced now. Whole when the
        // vessel has never been caught up (it may hold nothing) or pruning before FleetSync
        // tracked it left no trace. A vessel caught up at position 0 (a shore with no events yet)
        // has everything up to 0: from there, changed rows and removals as for any cursor.
        let whole = (cursor == 0 && neverCaughtUp) || cursor < trackedFrom
        let reader = CatchUpReader(configuration: configuration, schema: schema, session: db)
        let total = whole ? try await reader.partitionSize(vessel: vessel) : try await reader.listCandidates(vessel: vessel, since: cursor, target: last)
        let start = CatchUpPosition(phase: whole ? 1 : 0, rank: 0, id: nil)
        let fresh = State(since: cursor, target: last, whole: whole, total: total, page: 0, sent: start, sentRows: 0, sentRemovals: 0,
                          done: start, doneRows: 0, doneRemovals: 0, finished: false)
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(cursor)
        binds.append(last)
        binds.append(whole)
        binds.append(total)
        binds.append(Int16(start.phase))
        try await db.execute("""
            INSERT INTO fleetsync.catch_up (vessel, since, target, whole, total, sent_phase, done_phase)
            VALUES ($1, $2, $3, $4, $5, $6, $6)
            ON CONFLICT (vessel) DO UPDATE SET since = $2, target = $3, whole = $4, total = $5, page = 0,
              sent_phase = $6, sent_rank = 0, sent_id = NULL, sent_rows = 0, sent_removals = 0,
              done_phase = $6, done_rank = 0, done_id = NULL, done_rows = 0, done_removals = 0,
              started_at = now(), updated_at = now(), finished_at = NULL
            """, binds, context: "starting the catch-up of \(vessel)")
        await CatchUpReadAhead.shared.drop(vessel: vessel)
        logger.info("catching a vessel up from table state", metadata: [
            "vessel": "\(vessel)", "cursor": "\(cursor)", "pruned_below": "\(prunedBelow)", "target": "\(last)",
            "whole_partition": "\(whole)", "rows": "\(total)"])
        return try await nextPage(vessel: vessel, state: fresh, bulk: bulk, on: db)
    }

    /// What the exchange read before (``ExchangeStart``): the pruning mark, and whether a
    /// catch-up of the vessel is unfinished.
    struct Known {
        var prunedBelow: Int64
        var inProgress: Bool
    }

    /// Whether a new catch-up starts (none being unfinished): forced, the cursor below the
    /// pruning mark, or a vessel never caught up.
    static func starts(cursor: Int64, prunedBelow: Int64, echo: JSONValue?, force: Bool) -> Bool {
        let neverCaughtUp: Bool
        if case .object? = echo { neverCaughtUp = false } else { neverCaughtUp = true }
        return force || cursor < prunedBelow || (cursor == 0 && neverCaughtUp)
    }

    /// Whether a request's status announces the bulk form of catch-up pages (``CatchUpBulkPage``).
    static func announcesBulk(_ status: [String: JSONValue]) -> Bool {
        status[CatchUpBulkPage.statusKey]?.int64Value == Int64(CatchUpBulkPage.version)
    }

    /// Sends the page after the confirmed position (again, if its answer was lost).
    func nextPage(vessel: String, state: State, bulk announced: Bool, on db: DatabaseSession) async throws -> Answer {
        let reader = CatchUpReader(configuration: configuration, schema: schema, session: db)
        // The bulk form carries a whole partition's rows (no removals, no candidate list).
        let bulk = announced && state.whole
        let started = ContinuousClock.now
        let ahead = await CatchUpReadAhead.shared.take(CatchUpReadAhead.Key(vessel: vessel, state: state, start: state.done, bulk: bulk))
        let page: CatchUpReader.Page
        if let ahead {
            page = ahead
        } else {
            page = try await Self.read(reader, vessel: vessel, state: state, start: state.done, bulk: bulk)
        }
        var next = state
        next.page += 1
        next.sent = page.next
        next.sentRows = state.doneRows + Int64(page.rows)
        next.sentRemovals = state.doneRemovals + Int64(page.removals)
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(next.page)
        binds.append(Int16(next.sent.phase))
        binds.append(Int32(next.sent.rank))
        binds.append(next.sent.id)
        binds.append(next.sentRows)
        binds.append(next.sentRemovals)
        binds.append(Int16(state.done.phase))
        binds.append(Int32(state.done.rank))
        binds.append(state.done.id)
        binds.append(state.doneRows)
        binds.append(state.doneRemovals)
        try await db.execute("""
            UPDATE fleetsync.catch_up SET page = $2, sent_phase = $3, sent_rank = $4, sent_id = $5, sent_rows = $6, sent_removals = $7,
              done_phase = $8, done_rank = $9, done_id = $10, done_rows = $11, done_removals = $12, updated_at = now()
            WHERE vessel = $1
            """, binds, context: "recording the catch-up progress of \(vessel)")
        let finished = page.next.isEnd
        logger.info("catch-up page read", metadata: [
            "vessel": "\(vessel)", "page": "\(next.page)", "rows": "\(page.rows)", "removals": "\(page.removals)",
            "read_ahead": "\(ahead != nil)", "bulk": "\(bulk)", "milliseconds": "\((ContinuousClock.now - started).milliseconds)"])
        // The page after this one is read while the vessel applies this one (CatchUpReadAhead):
        // for a whole partition only, whose pages depend on nothing this exchange wrote.
        if !finished && state.whole {
            let (configuration, schema, logger, start) = (self.configuration, self.schema, self.logger, page.next)
            await CatchUpReadAhead.shared.start(CatchUpReadAhead.Key(vessel: vessel, state: state, start: start, bulk: bulk)) {
                await CatchUpReadAhead.read(configuration: configuration, schema: schema, vessel: vessel, state: state, start: start, bulk: bulk, logger: logger)
            }
        }
        return Answer(events: page.events, bulk: page.bulk, cursor: finished ? state.target : state.since, progress: [
            "since": .number(String(state.since)), "target": .number(String(state.target)), "page": .number(String(next.page)),
            "rows": .number(String(next.sentRows)), "removals": .number(String(next.sentRemovals)), "total": .number(String(state.total)),
            "whole": .bool(state.whole), "done": .bool(finished), "bulk": .bool(bulk),
        ])
    }

    /// Reads the page at `start` of a catch-up, in bulk form or as events.
    static func read(_ reader: CatchUpReader, vessel: String, state: State, start: CatchUpPosition, bulk: Bool) async throws -> CatchUpReader.Page {
        let bounds = pageBounds(reader.configuration.limits)
        if bulk { return try await reader.bulkPage(vessel: vessel, from: start, limit: bounds.events, byteBudget: bounds.bytes) }
        return try await reader.page(vessel: vessel, whole: state.whole, from: start, limit: bounds.events, byteBudget: bounds.bytes, position: state.target)
    }

    func finish(vessel: String, state: State, on db: DatabaseSession) async throws {
        await CatchUpReadAhead.shared.drop(vessel: vessel)
        var binds = PostgresBindings()
        binds.append(vessel)
        try await db.execute("UPDATE fleetsync.catch_up SET finished_at = now(), updated_at = now() WHERE vessel = $1", binds, context: "finishing the catch-up of \(vessel)")
        try await db.execute("DELETE FROM fleetsync.catch_up_row WHERE vessel = $1", binds, context: "clearing the catch-up rows of \(vessel)")
        logger.info("vessel caught up from table state", metadata: [
            "vessel": "\(vessel)", "rows": "\(state.sentRows)", "removals": "\(state.sentRemovals)", "pages": "\(state.page)", "cursor": "\(state.target)"])
    }

    func load(vessel: String, on db: DatabaseSession) async throws -> State? {
        var binds = PostgresBindings()
        binds.append(vessel)
        let rows = try await db.rows("""
            SELECT since, target, whole, total, page, sent_phase, sent_rank, sent_id, sent_rows, sent_removals,
                   done_phase, done_rank, done_id, done_rows, done_removals, finished_at IS NOT NULL
            FROM fleetsync.catch_up WHERE vessel = $1
            """, binds, context: "reading the catch-up of \(vessel)")
        guard let row = rows.first else { return nil }
        let c = "reading a catch-up"
        return State(
            since: try row.value(0, context: c), target: try row.value(1, context: c), whole: try row.value(2, context: c),
            total: try row.value(3, context: c), page: try row.value(4, context: c),
            sent: CatchUpPosition(phase: Int(try row.value(5, as: Int16.self, context: c)), rank: Int(try row.value(6, as: Int32.self, context: c)),
                                  id: try row.value(7, as: UUID?.self, context: c)),
            sentRows: try row.value(8, context: c), sentRemovals: try row.value(9, context: c),
            done: CatchUpPosition(phase: Int(try row.value(10, as: Int16.self, context: c)), rank: Int(try row.value(11, as: Int32.self, context: c)),
                                  id: try row.value(12, as: UUID?.self, context: c)),
            doneRows: try row.value(13, context: c), doneRemovals: try row.value(14, context: c), finished: try row.value(15, context: c))
    }
}

extension Duration {
    /// Whole milliseconds, for logs.
    var milliseconds: Int64 { components.seconds * 1_000 + components.attoseconds / 1_000_000_000_000_000 }
}
