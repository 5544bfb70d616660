import Dispatch
import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import Synchronization

/// `fleetsync run`: exchanges while anything is pending, otherwise every `interval_seconds`;
/// backs off exponentially with jitter while the shore is unreachable; stops between exchanges
/// on SIGTERM or SIGINT.
public final class VesselDaemon: Sendable {
    let sync: VesselSync
    let stopRequested = Atomic<Bool>(false)

    public init(sync: VesselSync) { self.sync = sync }

    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    public func run() async {
        var loop = ExchangeLoop(intervalSeconds: Double(sync.configuration.vessel?.intervalSeconds ?? 30))
        var action = loop.start()
        let signals = installSignalHandlers()
        defer { signals.forEach { $0.cancel() } }
        var random = SystemRandomNumberGenerator()
        while true {
            if stopRequested.load(ordering: .relaxed) { action = loop.stop() }
            switch action {
            case .stop:
                sync.logger.info("daemon stopped")
                return
            case .exchange:
                do {
                    let outcome = try await sync.exchangeOnce()
                    action = loop.succeeded(pending: outcome.pending)
                } catch {
                    await sync.recordFailure(error)
                    action = loop.failed(jitter: Double.random(in: 0..<1, using: &random))
                    if case .sleep(let seconds) = action {
                        sync.logger.warning("exchange failed; backing off", metadata: ["error": "\(error)", "retry_in_s": "\(Int(seconds))"])
                    }
                }
            case .sleep(let seconds):
                await sleep(seconds)
                action = loop.woke()
            }
        }
    }

    /// Sleeps in short steps so that a stop request ends the sleep promptly.
    private func sleep(_ seconds: Double) async {
        var left = seconds
        while left > 0 && !stopRequested.load(ordering: .relaxed) {
            let step = min(left, 0.2)
            try? await Task.sleep(for: .milliseconds(Int(step * 1000)))
            left -= step
        }
    }

    private func installSignalHandlers() -> [any DispatchSourceSignal] {
        [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in
                self?.sync.logger.info("stop requested; finishing the current exchange")
                self?.requestStop()
            }
            source.resume()
            return source
        }
    }
}
