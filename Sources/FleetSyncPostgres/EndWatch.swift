import NIOCore
import PostgresNIO
import Synchronization

/// Resumes a continuation exactly once, whichever of several racers gets there first.
package final class FirstResult<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>
    package init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = Mutex(continuation) }

    /// Returns false when someone else already resumed it.
    @discardableResult
    package func resume(with result: Result<T, any Error>) -> Bool {
        guard let waiting = continuation.withLock({ current -> CheckedContinuation<T, any Error>? in
            defer { current = nil }
            return current
        }) else { return false }
        waiting.resume(with: result)
        return true
    }
}

/// A task started on behalf of a caller, for the caller's cancellation to reach it (whether the
/// cancellation comes before or after the task exists).
package final class RunningTask: Sendable {
    private let state = Mutex<(task: Task<Void, Never>?, cancelled: Bool)>((nil, false))
    package init() {}

    package func set(_ task: Task<Void, Never>) {
        let cancelled = state.withLock { state in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    package func cancel() {
        state.withLock { state in
            state.cancelled = true
            return state.task
        }?.cancel()
    }
}

/// Fails the statements still waiting on a connection once it has ended.
///
/// PostgresNIO (1.33) writes a statement to its channel without asking to hear whether the write
/// happened; on a channel that has just closed the write fails silently and the statement is
/// never answered (``DatabaseSession/requireOpen(_:)``). Checking `isClosed` first leaves a gap:
/// a statement that passes the check in the instant the server ends the connection (a terminated
/// backend right after the statement before it failed) waited for the caller's deadline, 34 s in
/// ExchangeFailureTests. So each statement waits here, in a task of its own that the caller does
/// not have to wait for: when the connection's close future completes, PostgresNIO has already
/// failed every statement it knew of; what still waits a grace period later was never sent and
/// fails with `ended`. The grace lets an answer that arrived just before the end (a COMMIT that
/// succeeded) win over the end.
final class EndWatch: Sendable {
    static let grace: TimeAmount = .milliseconds(500)

    private struct State {
        var ended = false
        var next = 0
        var waiting: [Int: @Sendable () -> Void] = [:]
    }

    private let state = Mutex(State())

    private init(_ connection: PostgresConnection) {
        let loop = connection.eventLoop, key = ObjectIdentifier(connection)
        connection.closeFuture.whenComplete { [weak self] _ in
            loop.scheduleTask(in: Self.grace) {
                guard let self else { return }
                self.end()
                Self.watches.withLock { watches in
                    if watches[key]?.watch === self { watches[key] = nil }
                }
            }
        }
    }

    private struct Entry {
        weak var connection: PostgresConnection?
        var watch: EndWatch
    }

    /// One watch per open connection: a pooled connection is lent to a new session for every
    /// exchange, and a watch per session would add a callback to the connection's close future
    /// each time, kept until the connection closes.
    private static let watches = Mutex<[ObjectIdentifier: Entry]>([:])

    /// The watch of `connection`, made on first use.
    static func of(_ connection: PostgresConnection) -> EndWatch {
        let key = ObjectIdentifier(connection)
        if let entry = watches.withLock({ $0[key] }), entry.connection === connection { return entry.watch }
        let made = EndWatch(connection)
        return watches.withLock { watches in
            if let entry = watches[key], entry.connection === connection { return entry.watch }
            watches[key] = Entry(connection: connection, watch: made)
            return made
        }
    }

    /// Whether `connection` has a watch now (tests).
    static func isWatched(_ connection: PostgresConnection) -> Bool {
        watches.withLock { $0[ObjectIdentifier(connection)]?.connection === connection }
    }

    /// How many statements wait now (tests).
    var waiting: Int { state.withLock { $0.waiting.count } }

    private func end() {
        let failures = state.withLock { state in
            state.ended = true
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for fail in failures { fail() }
    }

    /// Runs `operation` and answers with its result, or with `ended()` once the connection has
    /// ended and the operation has not answered within the grace period. The operation's task is
    /// cancelled when the caller is, and left behind (its statement will never be answered) when
    /// the connection ends first.
    func run<T: Sendable>(ended: @escaping @Sendable () -> any Error, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let running = RunningTask()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let first = FirstResult(continuation)
                let id: Int? = state.withLock { state in
                    guard !state.ended else { return nil }
                    state.next += 1
                    state.waiting[state.next] = { first.resume(with: .failure(ended())) }
                    return state.next
                }
                guard let id else {
                    first.resume(with: .failure(ended()))
                    return
                }
                running.set(Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await operation()) } catch { result = .failure(error) }
                    _ = self.state.withLock { $0.waiting.removeValue(forKey: id) }
                    first.resume(with: result)
                })
            }
        } onCancel: {
            running.cancel()
        }
    }
}
