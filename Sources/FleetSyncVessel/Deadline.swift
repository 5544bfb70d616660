import Foundation
import FleetSyncPostgres
import Synchronization

/// The operation did not finish in time.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public var seconds: Double
    public var description: String { "no answer within \(Int(seconds)) s (database or shore unresponsive)" }
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
            if first.resume(with: .failure(DeadlineExceeded(seconds: seconds))) { running.cancel() }
        }
        let work = Task {
            defer { timer.cancel() }
            do { first.resume(with: .success(try await operation())) } catch { first.resume(with: .failure(error)) }
        }
        running.set(work)
    }
}
