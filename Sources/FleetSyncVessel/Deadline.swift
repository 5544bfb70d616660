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

/// Runs `operation`, giving up after `seconds`. A structured task group would wait for a
/// stuck child even after cancelling it, so the operation runs in its own task that is cancelled
/// and left behind when the deadline passes: the daemon stays alive whatever a dependency does.
func withDeadline<T: Sendable>(seconds: Double, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let first = FirstResult(continuation)
        let work = Task {
            do { first.resume(with: .success(try await operation())) } catch { first.resume(with: .failure(error)) }
        }
        Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            if first.resume(with: .failure(DeadlineExceeded(seconds: seconds))) { work.cancel() }
        }
    }
}
