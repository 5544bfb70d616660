import Foundation
import Synchronization

/// The operation did not finish in time.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public var seconds: Double
    public var description: String { "no answer within \(Int(seconds)) s (database or shore unresponsive)" }
}

/// Resumes a continuation exactly once, whichever of the racers gets there first.
private final class FirstResult<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>
    init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = Mutex(continuation) }

    /// Returns false when someone else already resumed it.
    @discardableResult
    func resume(with result: Result<T, any Error>) -> Bool {
        guard let waiting = continuation.withLock({ current -> CheckedContinuation<T, any Error>? in
            defer { current = nil }
            return current
        }) else { return false }
        waiting.resume(with: result)
        return true
    }
}

/// The operation's task, for the timer to cancel.
private final class RunningTask: Sendable {
    let task = Mutex<Task<Void, Never>?>(nil)
}

/// Runs `operation`, giving up after `seconds`. A structured task group would wait for a
/// stuck child even after cancelling it, so the operation runs in its own task that is cancelled
/// and left behind when the deadline passes: the daemon stays alive whatever a dependency does.
/// When the operation finishes first, the timer is cancelled at once: a timer left sleeping kept
/// every exchange's task (and what it held) alive for the whole deadline, so an idle daemon
/// exchanging every second grew by hundreds of them.
func withDeadline<T: Sendable>(seconds: Double, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let first = FirstResult(continuation)
        let running = RunningTask()
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            guard !Task.isCancelled else { return }
            if first.resume(with: .failure(DeadlineExceeded(seconds: seconds))) { running.task.withLock { $0 }?.cancel() }
        }
        let work = Task {
            defer { timer.cancel() }
            do { first.resume(with: .success(try await operation())) } catch { first.resume(with: .failure(error)) }
        }
        running.task.withLock { $0 = work }
    }
}
