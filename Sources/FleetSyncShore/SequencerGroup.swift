import FleetSyncPostgres
import Synchronization

/// The outbox sequencer shared by the exchanges of one server process, like a group commit.
///
/// Every exchange sequences what has committed before it reads a vessel's queue, and the
/// sequencer runs under one lock for the whole shore (`OutboxReader.sequence`). On a busy shore
/// most exchanges found the lock taken and waited for it holding a pooled connection (in the
/// fleet-load benchmark, 73 % of PostgreSQL's statement time was that wait), then each ran a
/// transaction of its own that moved a handful of events. Here one exchange of the process runs
/// the sequencer while the others that arrive meanwhile wait without a statement of their own;
/// when it finishes, the first of them runs it once for all of them (a run that starts after
/// they arrived covers everything committed before they asked), and so on. Across processes
/// the database lock still serializes runs.
public final class SequencerGroup: Sendable {
    enum Turn: Sendable {
        /// Run the sequencer on your connection, then answer these.
        case lead([CheckedContinuation<Turn, Never>])
        /// A run that started after you asked has finished.
        case done
        /// That run failed: run it yourself.
        case runYourself
    }

    struct State {
        var running = false
        var waiting: [CheckedContinuation<Turn, Never>] = []
        /// The last chunked run stopped at its chunk: more captured changes may wait.
        var backlog = false
    }

    let state = Mutex(State())

    public init() {}

    /// Returns once everything committed before the call is sequenced: by a run on `db`, or by
    /// one that another exchange of this process started after the call.
    public func sequence(on db: DatabaseSession) async throws {
        let leads = state.withLock { s -> Bool in
            if s.running { return false }
            s.running = true
            return true
        }
        if leads { return try await run(answering: [], on: db) }
        let turn = await withCheckedContinuation { (continuation: CheckedContinuation<Turn, Never>) in
            let leadsNow = state.withLock { s -> Bool in
                if s.running {
                    s.waiting.append(continuation)
                    return false
                }
                s.running = true
                return true
            }
            if leadsNow { continuation.resume(returning: .lead([])) }
        }
        switch turn {
        case .done: return
        case .runYourself: _ = try await OutboxReader(session: db).sequence()
        case .lead(let followers): try await run(answering: followers, on: db)
        }
    }

    /// Moves at most `chunk` captured changes into the outbox, unless a run is already in
    /// progress (then it does not wait for it); returns whether more may wait (this run, or the
    /// last one, stopped at its chunk). For an exchange about to read a vessel's queue: what is
    /// not sequenced yet comes in a later exchange (the answer says `more`), so a large backlog
    /// is moved a chunk per exchange, while the vessel applies the batch before (read-ahead),
    /// instead of all at once before the first batch.
    public func sequenceSome(on db: DatabaseSession, chunk: Int) async throws -> Bool {
        let leads = state.withLock { s -> Bool in
            if s.running { return false }
            s.running = true
            return true
        }
        guard leads else { return state.withLock { $0.backlog } }
        var failure: (any Error)?
        var full = false
        do {
            full = try await OutboxReader(session: db).sequence(chunk: chunk).full
        } catch {
            failure = error
        }
        // Those who came meanwhile wait for everything: the first of them runs a whole sequencing.
        passTurn(backlog: failure == nil ? full : nil)
        if let failure { throw failure }
        return full
    }

    /// One run for the caller and `followers`, then the turn passes to those who came meanwhile.
    private func run(answering followers: [CheckedContinuation<Turn, Never>], on db: DatabaseSession) async throws {
        var failure: (any Error)?
        do {
            _ = try await OutboxReader(session: db).sequence()
        } catch {
            failure = error
        }
        followers.forEach { $0.resume(returning: failure == nil ? .done : .runYourself) }
        passTurn(backlog: failure == nil ? false : nil)
        if let failure { throw failure }
    }

    /// Ends a run: records whether a backlog is left (nil: unknown, the run failed) and passes
    /// the turn to those who came meanwhile, the first leading a run for the others.
    private func passTurn(backlog: Bool?) {
        let next = state.withLock { s -> [CheckedContinuation<Turn, Never>] in
            if let backlog { s.backlog = backlog }
            let next = s.waiting
            s.waiting = []
            if next.isEmpty { s.running = false }
            return next
        }
        if let first = next.first { first.resume(returning: .lead(Array(next.dropFirst()))) }
    }
}
