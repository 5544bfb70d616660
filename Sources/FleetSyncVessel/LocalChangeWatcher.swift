import FleetSyncPostgres
import Foundation
import Logging
import Synchronization

/// Wakes the vessel daemon when a transaction that changed a synced table commits
/// (`[vessel] wake_on_change`). Every capture trigger writes to `fleetsync.capture_log`, which
/// each exchange empties (the sequencer moves its rows into the outbox), and the sync engine's
/// own applied writes are not captured: a committed row there is a local change not yet sent.
/// The watcher looks for one four times a second on a connection of its own (an index-free
/// table whose first visible row ends the scan), which costs the writers nothing: NOTIFY from
/// a statement trigger would serialize their commits (single-row UPDATEs at 0.64–0.80×,
/// `benchmarks/queue-and-wake.sh`). A
/// notification only sets a flag the daemon reads while it sleeps; if the database goes away,
/// the watcher reconnects, and the daemon's interval applies meanwhile.
public final class LocalChangeWatcher: Sendable {
    let url: String
    let logger: Logger
    let changed = Atomic<Bool>(false)
    let pollMilliseconds: Int

    public init(url: String, logger: Logger, pollMilliseconds: Int = 250) {
        self.url = url
        self.logger = logger
        self.pollMilliseconds = pollMilliseconds
    }

    /// Whether a local change was waiting since the last call.
    public func takeChange() -> Bool { changed.exchange(false, ordering: .relaxed) }

    /// Watches until the task is cancelled.
    public func run() async {
        while !Task.isCancelled {
            do {
                let session = try await DatabaseSession.connect(url: url, logger: logger)
                do {
                    while !Task.isCancelled {
                        let waiting: Bool = try await session.rows("SELECT EXISTS (SELECT 1 FROM fleetsync.capture_log)", context: "looking for local changes")[0].value(0)
                        if waiting { changed.store(true, ordering: .relaxed) }
                        try await Task.sleep(for: .milliseconds(pollMilliseconds))
                    }
                } catch {
                    if !Task.isCancelled { logger.debug("change watcher stopped; reconnecting", metadata: ["error": "\(error)"]) }
                }
                await session.close()
            } catch {
                logger.debug("change watcher cannot connect; retrying", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(5))
        }
    }
}
