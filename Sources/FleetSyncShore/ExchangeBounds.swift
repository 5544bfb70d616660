import Foundation
import PostgresNIO

/// The bounds one `fleetsync serve` process keeps whatever its clients do: a limited number of
/// exchanges in progress, and a deadline per exchange after which the answer goes out whatever
/// the database is doing.
///
/// A request arriving while `limit` exchanges are in progress waits its turn in a FIFO queue of
/// at most `queueLength` requests, each for at most `queueSeconds` (a burst, such as every
/// vessel's catch-up pages at once, is smoothed instead of answered busy); past either bound it
/// is answered `busy` with a time to retry. A queued request is a continuation in this queue
/// (plus the HTTP connection and the body it already holds): no database connection, no task
/// of its own; its time limit is one timer.
final class ExchangeGate: @unchecked Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Bool, Never>
    }

    private let lock = NSLock()
    private var inFlight = 0
    private var waiters: [Waiter] = []
    private var nextID: UInt64 = 0
    /// Requests between the decision to wait and their continuation's queueing, and whether
    /// they were cancelled (their connection closed) meanwhile.
    private var arriving: [UInt64: Bool] = [:]
    private var stopped = false
    let limit: Int
    let queueLength: Int
    let queueSeconds: Double

    init(limit: Int, queueLength: Int = 0, queueSeconds: Double = 0) {
        self.limit = limit
        self.queueLength = queueLength
        self.queueSeconds = queueSeconds
    }

    /// Exchanges in progress and requests waiting, for tests and logs.
    var counts: (inFlight: Int, queued: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (inFlight, waiters.count)
    }

    /// Takes a place, waiting in the queue when all are taken; false when the queue is full, the
    /// wait passed `queueSeconds`, the request was cancelled, or the server is stopping.
    func enter() async -> Bool {
        enum First { case entered, refused, wait(UInt64) }
        let first: First = lock.withLock {
            if inFlight < limit {
                inFlight += 1
                return .entered
            }
            guard !stopped, queueSeconds > 0, waiters.count < queueLength else { return .refused }
            let id = nextID
            nextID += 1
            arriving[id] = false
            return .wait(id)
        }
        guard case .wait(let id) = first else {
            if case .entered = first { return true }
            return false
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                lock.lock()
                let cancelled = arriving.removeValue(forKey: id) ?? false
                let now: Bool?
                if cancelled {
                    now = false
                } else if inFlight < limit {
                    inFlight += 1
                    now = true
                } else if stopped || waiters.count >= queueLength {
                    now = false
                } else {
                    waiters.append(Waiter(id: id, continuation: continuation))
                    now = nil
                }
                lock.unlock()
                if let now { return continuation.resume(returning: now) }
                DispatchQueue.global().asyncAfter(deadline: .now() + queueSeconds) { [self] in remove(id) }
            }
        } onCancel: {
            remove(id)
        }
    }

    /// Ends the wait of request `id` with false, if it still waits (or is about to).
    private func remove(_ id: UInt64) {
        lock.lock()
        guard let index = waiters.firstIndex(where: { $0.id == id }) else {
            if arriving[id] != nil { arriving[id] = true }
            lock.unlock()
            return
        }
        let waiter = waiters.remove(at: index)
        lock.unlock()
        waiter.continuation.resume(returning: false)
    }

    /// Gives the place back: to the first request waiting, if any.
    func leave() {
        lock.lock()
        guard !waiters.isEmpty else {
            inFlight -= 1
            lock.unlock()
            return
        }
        let next = waiters.removeFirst()
        lock.unlock()
        next.continuation.resume(returning: true)
    }

    /// The server is stopping: every waiting request is answered busy now, and none waits again.
    func stop() {
        lock.lock()
        stopped = true
        let all = waiters
        waiters.removeAll()
        lock.unlock()
        all.forEach { $0.continuation.resume(returning: false) }
    }
}

/// The database connection an exchange holds, so that a deadline can close it: the query in
/// flight then fails at once, and the pool drops the connection.
final class HeldConnection: @unchecked Sendable {
    private let lock = NSLock()
    private var connection: PostgresConnection?
    private var abandoned = false

    /// Records the connection; false when the deadline already passed (the caller stops).
    func hold(_ connection: PostgresConnection) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        self.connection = connection
        return !abandoned
    }

    func release() {
        lock.lock()
        connection = nil
        lock.unlock()
    }

    /// Closes the connection held, if any, and makes later `hold`s fail.
    func abandon() async {
        try? await take()?.close()
    }

    private func take() -> PostgresConnection? {
        lock.lock()
        defer { lock.unlock() }
        abandoned = true
        return connection
    }
}

/// Runs `work` and returns its result, or, when `seconds` pass first, the result of `onTimeout`
/// without waiting any longer for `work` (which `onTimeout` is expected to make fail, by closing
/// its connection). The answer to a client is therefore bounded by `seconds` plus `onTimeout`.
func withDeadline<T: Sendable>(seconds: Int, _ work: @escaping @Sendable () async -> T, onTimeout: @escaping @Sendable () async -> T) async -> T {
    let once = Once()
    return await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        let timer = Task {
            try? await Task.sleep(for: .seconds(seconds))
            guard !Task.isCancelled, once.claim() else { return }
            continuation.resume(returning: await onTimeout())
        }
        Task {
            let value = await work()
            timer.cancel()
            if once.claim() { continuation.resume(returning: value) }
        }
    }
}

/// Lets exactly one of several racers through.
final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false

    func claim() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if done { return false }
        done = true
        return true
    }
}

/// Bytes of request bodies being read at once, reserved before reading (the declared length, or
/// the largest message when none is declared): past the budget, a request is answered busy
/// before any of its body is read, so that many large bodies at once cannot take the memory
/// (issue 16). The budget is twice the largest message, and at least 64 MiB.
final class ByteBudget: @unchecked Sendable {
    private let lock = NSLock()
    private var used = 0
    let bytes: Int

    init(maximumMessage: Int) { bytes = max(2 * maximumMessage, 64 * 1_048_576) }

    func reserve(_ n: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard used + n <= bytes || used == 0 else { return false }
        used += n
        return true
    }

    func release(_ n: Int) {
        lock.lock()
        used -= n
        lock.unlock()
    }
}


/// Gives freed heap memory back to the system after large requests (issue 16 item 5): glibc
/// keeps what a request freed in its arenas, and `malloc_trim` returns it. At most once per
/// `interval` seconds, off the request's path; nothing where the C library has no such call.
final class MemoryGiveBack: @unchecked Sendable {
    private typealias Trim = @convention(c) (Int) -> Int32
    private let trim: Trim? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim").map { unsafeBitCast($0, to: Trim.self) }
    private let lock = NSLock()
    private var pending = false
    let interval: TimeInterval
    /// A request whose body is at least this large asks for a trim once it is answered.
    static let largeBody = 256 * 1_024

    init(interval: TimeInterval = 1) { self.interval = interval }

    /// Trims within `interval`, unless a trim is already due.
    func afterRequest(bodyBytes: Int) {
        guard bodyBytes >= Self.largeBody, let trim else { return }
        lock.lock()
        defer { lock.unlock() }
        guard !pending else { return }
        pending = true
        DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + interval) { [self] in
            lock.lock()
            pending = false
            lock.unlock()
            _ = trim(0)
        }
    }
}
