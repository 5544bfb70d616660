import FleetSyncCore
import Foundation
import PostgresNIO

/// Reads the outbox in an order consistent with commits, never skipping a late committer.
///
/// Every event is first written to `fleetsync.capture_log`, a table without key or index (cheap
/// to insert into), with the node's Lamport counter value as its `seq`: local writes by the
/// capture triggers, changes relayed by the shore, transfer-saga events. Transactions commit in
/// another order than they take those values, so a cursor over `seq` would skip the events of a
/// transaction that commits after a higher-numbered one. Instead a *sequencer*, under a lock,
/// moves what has committed into the outbox in `seq` order and gives each event a position
/// (`pos`). An event that commits later gets a later position, so a cursor over `pos` never skips
/// one. Causal order holds too: a transaction that saw another's commit took its counter values
/// after all of that one's.
public struct OutboxReader: Sendable {
    public let session: DatabaseSession

    public init(session: DatabaseSession) { self.session = session }

    /// Moves every committed event of the capture log into the outbox with its position and, on
    /// the shore, the vessel it goes to (by the row's routing at this moment); returns how many.
    /// Outbox rows left without a position by a version before the capture log (up to `limit`)
    /// are numbered first.
    ///
    /// With nothing to move (what every exchange of an idle fleet finds) it returns at once,
    /// without the lock or a write: every shore exchange sequences, and the lock and the counter
    /// row made them wait on one another. Safe: a capture row committed before this read is
    /// visible to it, and one a running sequencer is moving is still visible until that one
    /// commits (then this call waits for its lock).
    @discardableResult
    public func sequence(limit: Int = 100_000) async throws -> Int {
        try await sequence(limit: limit, chunk: nil).moved
    }

    /// Like ``sequence(limit:)``, but moves at most `chunk` events of the capture log (more from a
    /// large backlog: ``chunkSize(asked:backlog:)``), those with the lowest `seq` (what committed and is not moved yet goes in a later call, after them:
    /// positions still follow commits, and a transaction that saw another's commit took its
    /// counter values after all of that one's). `full`: the call stopped at its chunk, so more may
    /// wait. A backlog of 100,000 captured changes took 2–3 s to move in one call, before a single
    /// one of them could be read; in chunks, the reading starts after the first.
    @discardableResult
    public func sequence(chunk: Int) async throws -> (moved: Int, full: Bool) {
        try await sequence(limit: 100_000, chunk: chunk)
    }

    private func sequence(limit: Int, chunk: Int?) async throws -> (moved: Int, full: Bool) {
        let waiting: Bool = try await session.rows("""
            SELECT EXISTS (SELECT 1 FROM fleetsync.capture_log) OR EXISTS (SELECT 1 FROM fleetsync.outbox WHERE pos IS NULL)
            """, context: "looking for events to sequence")[0].value(0)
        guard waiting else { return (0, false) }
        let (moved, full, logBytes) = try await session.transaction { db in
            try await db.lockForTransaction("fleetsync.outbox.sequencer", context: "locking the outbox sequencer")
            var binds = PostgresBindings()
            binds.append(Int64(limit))
            // Each statement after the lock takes a fresh snapshot: it sees every event committed until now.
            let earlier = try await db.rows("""
                WITH pending AS (
                  SELECT seq, row_number() OVER (ORDER BY seq) AS rn
                  FROM fleetsync.outbox WHERE pos IS NULL ORDER BY seq LIMIT $1
                ), counter AS (
                  UPDATE fleetsync.outbox_counter SET last_pos = last_pos + (SELECT count(*) FROM pending)
                  RETURNING last_pos - (SELECT count(*) FROM pending) AS base
                ), numbered AS (
                  UPDATE fleetsync.outbox o SET pos = counter.base + pending.rn,
                    vessel = CASE WHEN o.op IN ('B', 'O') THEN o.vessel ELSE fleetsync.route_event(o.table_name, o.row_id) END
                  FROM pending, counter WHERE o.seq = pending.seq RETURNING 1
                )
                SELECT count(*) FROM numbered
                """, binds, context: "sequencing the outbox")
            // Moved and numbered in one statement: each event is written to the outbox once.
            var chunkBinds = PostgresBindings()
            let picked: String
            var size = Int.max
            if let chunk {
                // Each chunk's pick reads and sorts the whole log: a large backlog goes in larger chunks.
                // Counted no further than makes a difference to the chunk (four times its largest).
                var counted = PostgresBindings()
                counted.append(Int64(4 * Self.largestChunk))
                let backlog: Int64 = try await db.rows("SELECT count(*) FROM (SELECT 1 FROM fleetsync.capture_log LIMIT $1) c", counted,
                                                       context: "counting captured changes")[0].value(0)
                size = Self.chunkSize(asked: chunk, backlog: Int(backlog))
                chunkBinds.append(Int64(size))
                picked = "WHERE ctid = ANY (ARRAY(SELECT ctid FROM fleetsync.capture_log ORDER BY seq LIMIT $1))"
            } else {
                picked = ""
            }
            let moved = try await db.rows("""
                WITH moved AS (
                  DELETE FROM fleetsync.capture_log \(picked) RETURNING *
                ), ordered AS (
                  SELECT moved.*, row_number() OVER (ORDER BY seq) AS rn FROM moved
                ), counter AS (
                  UPDATE fleetsync.outbox_counter SET last_pos = last_pos + (SELECT count(*) FROM moved)
                  RETURNING last_pos - (SELECT count(*) FROM moved) AS base
                ), queued AS (
                  INSERT INTO fleetsync.outbox (pos, table_name, row_id, op, version, base_version, delta, clocks, origin, vessel)
                  SELECT counter.base + o.rn, o.table_name, o.row_id, o.op, o.version, o.base_version, o.delta, o.clocks, o.origin,
                    CASE WHEN o.op IN ('B', 'O') THEN o.vessel ELSE fleetsync.route_event(o.table_name, o.row_id) END
                  FROM ordered o, counter ORDER BY o.rn
                  RETURNING 1
                )
                SELECT count(*), pg_relation_size('fleetsync.capture_log') FROM queued
                """, chunkBinds, context: "moving captured changes into the outbox")
            let count = Int(try moved[0].value(0, as: Int64.self))
            return (Int(try earlier[0].value(0, as: Int64.self)) + count, count >= size, try moved[0].value(1, as: Int64.self))
        }
        if !full, logBytes >= Self.emptiedLogVacuumBytes { await vacuumEmptiedLog(bytes: logBytes) }
        return (moved, full)
    }

    /// How many captured changes a chunked run moves when `asked` for a chunk with `backlog`
    /// waiting: a quarter of the backlog, at least `asked` and at most 20,000 (or `asked`, if
    /// larger). Picking a chunk reads and sorts the whole capture log, so a 100,000-change backlog
    /// moved 2,000 at a time read it 50 times, 2.5 million rows (on the shore, the exchanges of the
    /// first half of such a backlog came at two thirds of the rate of the second half); a quarter at
    /// a time reads about 400,000 in 12 runs, and holds the sequencer lock for a 20,000-change move
    /// at most (about 0.2 s).
    public static func chunkSize(asked: Int, backlog: Int) -> Int {
        max(asked, min(backlog / 4, largestChunk))
    }

    /// The most a chunked run moves unless asked for more.
    public static let largestChunk = 20_000

    /// The capture log's size past which a sequencing run that emptied it vacuums it: 1 MB.
    public static let emptiedLogVacuumBytes: Int64 = 1_048_576

    /// Every read of the capture log (each sequencing run, the look for waiting events, the
    /// vessel's watch for local changes) scans its whole heap, moved rows' dead space included:
    /// after a 100,000-change backlog, 12 MB a time, and the shore's log, which relays every
    /// event a vessel sends, grew by as much again per 100,000 relayed (sequencing 1,000 relays
    /// then took 25 ms, nearly all of it that scan). Autovacuum looks at a table at most once a
    /// minute. Once a run has moved what it found, a VACUUM gives the space back: the heap is cut
    /// down to the rows committed since. `SKIP_LOCKED`: never waits for another vacuum; the
    /// truncation takes its lock only if free and lets go when a writer waits. A failure (a role
    /// that does not own the table only gets a warning) changes nothing but the size.
    private func vacuumEmptiedLog(bytes: Int64) async {
        do {
            try await session.execute("VACUUM (SKIP_LOCKED) fleetsync.capture_log", context: "vacuuming the emptied capture log")
            session.logger.debug("vacuumed the emptied capture log", metadata: ["bytes_before": "\(bytes)"])
        } catch {
            session.logger.warning("the emptied capture log could not be vacuumed", metadata: ["error": "\(error)"])
        }
    }

    /// Up to `limit` sequenced events after position `after`, in position order.
    public func read(after: Int64, limit: Int) async throws -> [CapturedChange] {
        try await read(after: after, limit: limit, byteBudget: nil).map(\.change)
    }

    /// Up to `limit` sequenced events after position `after`, in position order, each with its
    /// size (its delta's text and 32 bytes). With a `byteBudget`, the database stops sending rows
    /// once the rows before them exceed it (the first two always come: the first goes whatever
    /// its size, the next tells that more waits), so that large rows past the budget are never
    /// held here.
    ///
    /// An event whose delta cannot be read (a value nested deeper than `JSONLimits.maximumDepth`,
    /// which PostgreSQL accepts only with a raised `max_stack_depth`, or a delta that is not a
    /// JSON object) would stop this node's stream for good, and the shore would refuse it anyway:
    /// it is moved out of the outbox into the dead-letter queue, its text kept whole, with a
    /// telemetry row (``DeadLetterQueue/addUnreadable(table:rowID:source:position:key:text:reason:on:)``),
    /// in one transaction, and the read goes on past it.
    public func read(after: Int64, limit: Int, byteBudget: Int?) async throws -> [(change: CapturedChange, bytes: Int)] {
        var binds = PostgresBindings()
        binds.append(after)
        binds.append(Int64(limit))
        binds.append(Int64(byteBudget ?? Int.max))
        let rows = try await session.rows(Self.page(
            columns: "pos, table_name, row_id, op::text AS op, version, base_version, delta_text AS delta",
            where: "pos > $1", limit: "$2", budget: "$3", overhead: 32), binds, context: "reading the outbox")
        var changes: [(change: CapturedChange, bytes: Int)] = []
        changes.reserveCapacity(rows.count)
        var setAsideAny = false
        for row in rows {
            let context = "decoding an outbox entry"
            let position: Int64 = try row.value(0, context: context)
            let table: String = try row.value(1, context: context)
            let rowID: UUID = try row.value(2, as: UUID.self, context: context)
            let deltaText: String = try row.value(6, context: context)
            let parsed: JSONValue
            do {
                parsed = try JSONParser.parse(deltaText, valuesAt: JSONLimits.Envelope.members)
            } catch {
                try await setAside(position: position, table: table, rowID: rowID, text: deltaText, reason: "\(error)")
                setAsideAny = true
                continue
            }
            guard case .object(let delta) = parsed else {
                try await setAside(position: position, table: table, rowID: rowID, text: deltaText, reason: "the delta is a JSON \(parsed.kindName), not an object")
                setAsideAny = true
                continue
            }
            let op: String = try row.value(3, context: context)
            guard let operation = CapturedChange.Operation(rawValue: op) else {
                throw DatabaseError(context: context, message: "unknown operation \(op)")
            }
            let change = CapturedChange(
                position: position, table: table, rowID: rowID, operation: operation,
                version: try row.value(4, context: context), baseVersion: try row.value(5, context: context),
                delta: delta)
            changes.append((change, Int(try row.value(7, as: Int32.self, context: context))))
        }
        // Read the page again without what was set aside (each pass removes rows, so it ends):
        // callers take a page shorter than `limit` to mean that nothing more is pending.
        if setAsideAny { return try await read(after: after, limit: limit, byteBudget: byteBudget) }
        return changes
    }

    /// Moves an unreadable outbox row into the dead-letter queue (see ``read(after:limit:byteBudget:)``).
    private func setAside(position: Int64, table: String, rowID: UUID, text: String, reason: String) async throws {
        try await session.transaction { tx in
            var binds = PostgresBindings()
            binds.append(position)
            // Only if the row is still there (another reader may have set it aside already).
            let still = try await tx.rows("SELECT 1 FROM fleetsync.outbox WHERE pos = $1 FOR UPDATE", binds, context: "locking an unreadable outbox row")
            guard !still.isEmpty else { return }
            try await DeadLetterQueue.addUnreadable(
                table: table, rowID: rowID, source: .outbox, position: position, key: nil, text: text, reason: reason, on: tx)
            try await tx.execute("DELETE FROM fleetsync.outbox WHERE pos = $1", binds, context: "moving an unreadable event out of the outbox")
        }
        session.logger.error("an outbox event could not be read and was dead-lettered", metadata: [
            "table": "\(table)", "row_id": "\(rowID.lowercasedText)", "position": "\(position)", "reason": "\(reason.prefix(200))"])
    }

    /// A page of outbox rows in position order: `columns`, then `bytes` (the size of the row's
    /// delta text and `overhead`), then two bookkeeping columns. At most `limit` rows; past the byte
    /// `budget` the database stops sending rows: a row comes while the rows before it fit, and
    /// the first two always (the first goes whatever its size, the next tells that more waits),
    /// so that large rows behind the budget are never held by the reader.
    ///
    /// Rows come from `sources`: conditions each read in position order up to `limit` rows on its
    /// own (an index scan on `pos` or on `(vessel, pos)` with a limit), merged in position order.
    /// The plan then never depends on the outbox's statistics: with statistics gathered when the
    /// outbox was nearly empty, one condition over all sources made PostgreSQL scan and sort the
    /// whole backlog (36 ms at 100,000 waiting, against 2.7 ms; `QueuePlanTests`).
    ///
    /// Each source row also carries `delta_text`, its delta as text, made once: `columns` reads
    /// it (`delta_text AS delta`) and the sizes count it. Written out where it is used, the
    /// conversion ran four times a row (the column, the row's size, the running sum, the sum
    /// before it): a page of 1,000 events took 5.4 ms, 4.2 ms with one (docs/BENCHMARKS.md,
    /// *Outbox deletes and the page's delta text*).
    static func page(columns: String, where condition: String, limit: String, budget: String, overhead: Int) -> String {
        page(columns: columns, sources: [condition], limit: limit, budget: budget, overhead: overhead)
    }

    static func page(columns: String, sources: [String], limit: String, budget: String, overhead: Int) -> String {
        let size = "(octet_length(delta_text) + \(overhead))"
        let union = sources.map { "(SELECT *, delta::text AS delta_text FROM fleetsync.outbox WHERE \($0) ORDER BY pos LIMIT \(limit))" }.joined(separator: " UNION ALL ")
        return """
            SELECT * FROM (
              SELECT \(columns), \(size) AS bytes, row_number() OVER w AS n, sum\(size) OVER w - \(size) AS before
              FROM (\(union)) o
              WINDOW w AS (ORDER BY pos)
              ORDER BY pos LIMIT \(limit)
            ) q
            WHERE n <= 2 OR before <= \(budget)
            ORDER BY pos
            """
    }

    /// Sequences what has committed, then reads after `after`.
    public func poll(after: Int64, limit: Int) async throws -> [CapturedChange] {
        try await sequence()
        return try await read(after: after, limit: limit)
    }
}
