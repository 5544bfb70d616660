import FleetSyncPostgres
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Vessels whose exchange waits for shore changes (a long poll), and the one watcher per server
/// process that tells them when something arrived for them.
///
/// A waiting vessel holds no database connection and no task of its own: it is a continuation
/// in this table (at most `maximumWaiters`; past that, a waiting request is answered at once)
/// plus its HTTP connection. The watcher runs only while someone waits; every `checkInterval` it
/// asks the database one cheap question (has the shore's logical clock moved?) and only when it
/// has, sequences the new events and wakes the vessels they are routed to (every vessel for a
/// broadcast event). It also ends the waits whose time is up.
public final class LongPollHub: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// Something may have arrived for the vessel: read its queue again.
        case woken
        case timedOut
        /// Too many vessels wait already: answer now.
        case full
        /// The server is stopping.
        case stopped
    }

    /// Vessels with new events since the last look (`nil`: nothing new), `"*"` for everyone.
    /// `from`: also report events after this position (a new waiter saw the queue up to it).
    public typealias Probe = @Sendable (_ from: Int64?) async -> Set<String>?

    struct Waiter {
        var vessel: String
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Outcome, Never>?
        var outcome: Outcome?
    }

    struct State {
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        var watching = false
        var stopped = false
        /// The lowest queue position a waiter registered since the last look had read up to.
        var unseenFrom: Int64?
    }

    let state = Mutex(State())
    public let maximumWaiters: Int
    let checkInterval: Duration
    let probe: Probe
    let logger: Logger

    public init(maximumWaiters: Int, checkInterval: Duration = .milliseconds(200), logger: Logger, probe: @escaping Probe) {
        self.maximumWaiters = maximumWaiters
        self.checkInterval = checkInterval
        self.logger = logger
        self.probe = probe
    }

    public var waiting: Int { state.withLock { $0.waiters.count } }

    /// Waits until something may have arrived for `vessel`, or `deadline`. `seen`: the last queue
    /// position the vessel's read covered, so that nothing sequenced after it is missed.
    public func wait(vessel: String, seen: Int64, until deadline: ContinuousClock.Instant) async -> Outcome {
        // One wait per vessel: a newer poll of the same vessel (a retry, or a vessel opening
        // many) ends the older one, so that no vessel holds more than one place.
        var replaced: [CheckedContinuation<Outcome, Never>] = []
        let reserved: (id: UInt64, startWatcher: Bool)? = state.withLock { s in
            guard !s.stopped else { return nil }
            replaced = Self.finish(&s, with: .timedOut) { $0.vessel == vessel }
            guard s.waiters.count < maximumWaiters else { return nil }
            let id = s.nextID
            s.nextID += 1
            s.waiters[id] = Waiter(vessel: vessel, deadline: deadline)
            s.unseenFrom = min(s.unseenFrom ?? seen, seen)
            let start = !s.watching
            s.watching = true
            return (id, start)
        }
        replaced.forEach { $0.resume(returning: .timedOut) }
        guard let reserved else { return state.withLock { $0.stopped } ? .stopped : .full }
        if reserved.startWatcher { Task { await self.watch() } }
        return await withCheckedContinuation { continuation in
            let ready: Outcome? = state.withLock { s in
                guard let outcome = s.waiters[reserved.id]?.outcome else {
                    s.waiters[reserved.id]?.continuation = continuation
                    return nil
                }
                s.waiters[reserved.id] = nil
                return outcome
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Ends every wait (the server is stopping) and refuses new ones.
    public func stop() {
        let all = state.withLock { s -> [CheckedContinuation<Outcome, Never>] in
            s.stopped = true
            return Self.finish(&s, with: .stopped) { _ in true }
        }
        all.forEach { $0.resume(returning: .stopped) }
    }

    /// Wakes the waiters of `vessels` (all of them for `"*"`).
    func wake(_ vessels: Set<String>) {
        let everyone = vessels.contains("*")
        let woken = state.withLock { s in Self.finish(&s, with: .woken) { everyone || vessels.contains($0.vessel) } }
        woken.forEach { $0.resume(returning: .woken) }
    }

    /// Removes the waiters `matching` from the table with `outcome`, returning the continuations
    /// to resume outside the lock; a waiter not yet suspended keeps its outcome for later.
    static func finish(_ s: inout State, with outcome: Outcome, matching: (Waiter) -> Bool) -> [CheckedContinuation<Outcome, Never>] {
        var resumed: [CheckedContinuation<Outcome, Never>] = []
        for (id, waiter) in s.waiters where waiter.outcome == nil && matching(waiter) {
            if let continuation = waiter.continuation {
                resumed.append(continuation)
                s.waiters[id] = nil
            } else {
                s.waiters[id]?.outcome = outcome
            }
        }
        return resumed
    }

    /// The watcher: runs while anyone waits.
    func watch() async {
        while true {
            let now = ContinuousClock.now
            let (expired, from, done) = state.withLock { s -> ([CheckedContinuation<Outcome, Never>], Int64?, Bool) in
                let expired = Self.finish(&s, with: .timedOut) { $0.deadline <= now }
                let from = s.unseenFrom
                s.unseenFrom = nil
                if s.waiters.isEmpty || s.stopped { s.watching = false }
                return (expired, from, !s.watching)
            }
            expired.forEach { $0.resume(returning: .timedOut) }
            if done { return }
            if let vessels = await probe(from), !vessels.isEmpty { wake(vessels) }
            try? await Task.sleep(for: checkInterval)
        }
    }
}

/// The watcher's question to the shore database, through the server's pool: one read of the
/// logical clock's sequence per look; only when it moved (a shore write, a relayed vessel
/// change, a saga event), the sequencer runs and the new events' vessels are read from the
/// outbox's position index.
public final class ShoreWorkProbe: Sendable {
    struct Marks {
        var clock: Int64?
        var position: Int64?
        /// The last sequencing stopped at its chunk: more captured changes wait.
        var backlog = false
    }

    /// Captured changes one look moves into the outbox at most: a large backlog (one
    /// transaction of 100,000 rows) wakes its vessels after its first chunk, not after all of it.
    static let sequencingChunk = 10_000

    let marks = Mutex(Marks())
    let pool: PostgresClient
    let logger: Logger

    public init(pool: PostgresClient, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    public func callAsFunction(_ from: Int64?) async -> Set<String>? {
        do {
            return try await pool.withConnection { connection -> Set<String>? in
                let db = DatabaseSession.lent(connection, logger: self.logger)
                let clock: Int64 = try await db.rows("SELECT last_value FROM fleetsync.lamport", context: "looking for new shore events")[0].value(0)
                let known = self.marks.withLock { $0 }
                let moved = known.clock != clock || known.backlog
                var start = known.position
                if let from { start = min(start ?? from, from) }
                guard moved || from != nil else { return nil }
                guard let after = start else {
                    // First look with nothing to compare: remember where the outbox is.
                    let last: Int64 = try await db.rows("SELECT last_pos FROM fleetsync.outbox_counter", context: "reading the outbox position")[0].value(0)
                    self.marks.withLock { $0 = Marks(clock: clock, position: last) }
                    return nil
                }
                var backlog = false
                if moved { backlog = try await OutboxReader(session: db).sequence(chunk: Self.sequencingChunk).full }
                var binds = PostgresBindings()
                binds.append(after)
                let rows = try await db.rows("""
                    SELECT vessel, (SELECT last_pos FROM fleetsync.outbox_counter)
                    FROM fleetsync.outbox WHERE pos > $1 AND vessel IS NOT NULL GROUP BY 1
                    """, binds, context: "reading which vessels have new events")
                var vessels = Set<String>()
                var last = after
                for row in rows {
                    let (vessel, position) = try row.decode((String, Int64).self)
                    vessels.insert(vessel)
                    last = max(last, position)
                }
                if rows.isEmpty {
                    last = try await db.rows("SELECT last_pos FROM fleetsync.outbox_counter", context: "reading the outbox position")[0].value(0)
                }
                self.marks.withLock { $0 = Marks(clock: clock, position: max(last, known.position ?? last), backlog: backlog) }
                return vessels
            }
        } catch {
            logger.warning("long poll: cannot look for new shore events; waiting vessels are answered when their time is up", metadata: ["error": "\(error)"])
            return nil
        }
    }
}

extension ShoreExchange {
    /// Holds a parked long poll until something arrives for its vessel (its queue is read again,
    /// through a pooled connection taken only then) or its time is up, and gives its answer.
    public func hold(_ parked: Parked, hub: LongPollHub, pool: PostgresClient, timeoutSeconds: Int) async -> (status: Int, body: [UInt8]) {
        let deadline = ContinuousClock.now + .seconds(parked.seconds)
        var seen = parked.seen
        while true {
            guard await hub.wait(vessel: parked.vessel, seen: seen, until: deadline) == .woken else { return emptyAnswer(parked) }
            let logger = self.logger
            let checked: (answer: (status: Int, body: [UInt8])?, seen: Int64)? = await withDeadline(seconds: timeoutSeconds, {
                do {
                    return try await pool.withConnection { connection -> (answer: (status: Int, body: [UInt8])?, seen: Int64) in
                        try await self.recheck(parked, session: DatabaseSession.lent(connection, logger: logger))
                    }
                } catch {
                    logger.warning("long poll: cannot read the vessel's queue again", metadata: ["vessel": "\(parked.vessel)", "error": "\(error)"])
                    return nil
                }
            }, onTimeout: { nil })
            if let answer = checked?.answer { return answer }
            if let checked { seen = checked.seen }
            if ContinuousClock.now >= deadline { return emptyAnswer(parked) }
        }
    }
}
