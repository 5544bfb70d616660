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
    /// Opens what an exchange needs (database session, schema, transport) and a way to close it.
    public typealias Connector = @Sendable () async throws -> (sync: VesselSync, close: @Sendable () async -> Void)

    let connect: Connector
    let logger: Logger
    let intervalSeconds: Int
    /// Longest one connect or exchange may take before the daemon gives up on it and reconnects.
    let deadlineSeconds: Double
    let stopRequested = Atomic<Bool>(false)

    /// - Parameter connect: called before the first exchange and again after any failed one, so
    ///   that a restarted local database or a broken connection heals by itself.
    public init(intervalSeconds: Int, deadlineSeconds: Double, logger: Logger, connect: @escaping Connector) {
        self.intervalSeconds = intervalSeconds
        self.deadlineSeconds = deadlineSeconds
        self.logger = logger
        self.connect = connect
    }

    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    public func run() async {
        var loop = ExchangeLoop(intervalSeconds: Double(intervalSeconds))
        var action = loop.start()
        var current: (sync: VesselSync, close: @Sendable () async -> Void)?
        let signals = installSignalHandlers()
        defer { signals.forEach { $0.cancel() } }
        var random = SystemRandomNumberGenerator()
        while true {
            if stopRequested.load(ordering: .relaxed) { action = loop.stop() }
            switch action {
            case .stop:
                if let close = current?.close { _ = try? await withDeadline(seconds: 10) { await close() } }
                logger.info("daemon stopped")
                return
            case .exchange:
                do {
                    if current == nil {
                        let connect = self.connect
                        current = try await withDeadline(seconds: deadlineSeconds) { try await connect() }
                    }
                    let sync = current!.sync
                    let outcome = try await withDeadline(seconds: deadlineSeconds) { try await sync.exchangeOnce() }
                    action = loop.succeeded(pending: outcome.pending)
                    if !outcome.pending, let close = current?.close {
                        // Idle: hold no connection while sleeping, so that a restarted or
                        // dropped local database costs nothing; the next exchange reconnects.
                        _ = try? await withDeadline(seconds: 10) { await close() }
                        current = nil
                    }
                } catch {
                    if let sync = current?.sync {
                        _ = try? await withDeadline(seconds: 10) { await sync.recordFailure(error) }
                    }
                    // Start afresh next time: the failure may have been the connection itself.
                    if let close = current?.close { _ = try? await withDeadline(seconds: 10) { await close() } }
                    current = nil
                    action = loop.failed(jitter: Double.random(in: 0..<1, using: &random))
                    if case .sleep(let seconds) = action {
                        logger.warning("exchange failed; backing off", metadata: ["error": "\(error)", "retry_in_s": "\(Int(seconds))"])
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
                self?.logger.info("stop requested; finishing the current exchange")
                self?.requestStop()
            }
            source.resume()
            return source
        }
    }
}
