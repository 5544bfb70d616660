import Dispatch
import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import Synchronization

/// `fleetsync run`: exchanges while anything is pending, otherwise every `interval_seconds`;
/// backs off exponentially with jitter while the shore is unreachable; stops between exchanges
/// on SIGTERM or SIGINT. When idle it verifies its partition against the shore's (``Verifier``)
/// after every catch-up from table state, after a detected restore and every
/// `verify_interval_seconds` (``VerifySchedule``), repairing what it finds if `verify_repair`.
public final class VesselDaemon: Sendable {
    /// Opens what an exchange needs (database session, schema, transport) and a way to close it.
    public typealias Connector = @Sendable () async throws -> (sync: VesselSync, close: @Sendable () async -> Void)

    let connect: Connector
    let logger: Logger
    let intervalSeconds: Int
    /// Longest one connect or exchange may take before the daemon gives up on it and reconnects.
    let deadlineSeconds: Double
    let stopRequested = Atomic<Bool>(false)
    /// When set, a committed local change ends an idle sleep at once.
    let watcher: LocalChangeWatcher?
    /// How the daemon verifies by itself; nil: it does not.
    let verifying: DaemonVerify?
    /// The longest long poll (docs/PROTOCOL.md); 0: the idle daemon sleeps its interval instead.
    let longPollSeconds: Int

    /// The daemon's own verifies: how often, whether they repair, and a fresh transport for each.
    public struct DaemonVerify: Sendable {
        public var intervalSeconds: Int
        public var repair: Bool
        public var makeTransport: @Sendable () throws -> HTTPVerifyTransport
        public init(intervalSeconds: Int, repair: Bool, makeTransport: @escaping @Sendable () throws -> HTTPVerifyTransport) {
            self.intervalSeconds = intervalSeconds
            self.repair = repair
            self.makeTransport = makeTransport
        }
    }

    /// - Parameter connect: called before the first exchange and again after any failed one, so
    ///   that a restarted local database or a broken connection heals by itself.
    ///   `longPollSeconds`: when idle, hold an exchange open that long instead of sleeping (0: sleep).
    public init(intervalSeconds: Int, deadlineSeconds: Double, logger: Logger, watcher: LocalChangeWatcher? = nil, verifying: DaemonVerify? = nil,
                longPollSeconds: Int = 0, connect: @escaping Connector) {
        self.longPollSeconds = longPollSeconds
        self.watcher = watcher
        self.verifying = verifying
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
        let listening = watcher.map { watcher in Task { await watcher.run() } }
        defer { listening?.cancel() }
        var random = SystemRandomNumberGenerator()
        var schedule: VerifySchedule?
        // Set when the next exchange is a long poll of this many seconds.
        var polling: Int?
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
                    // An idle daemon's exchange waits at the shore (a long poll) until shore
                    // changes arrive; a local change to send or a stop ends the wait.
                    let poll = polling.map { seconds in
                        VesselSync.LongPoll(seconds: seconds) {
                            self.stopRequested.load(ordering: .relaxed) || self.watcher?.takeChange() == true
                        }
                    }
                    polling = nil
                    let outcome = try await withDeadline(seconds: deadlineSeconds) { try await sync.exchangeOnce(longPoll: poll) }
                    action = loop.succeeded(pending: outcome.pending)
                    if let verifying {
                        if schedule == nil { schedule = VerifySchedule(intervalSeconds: verifying.intervalSeconds, last: try await Self.lastVerify(on: sync)) }
                        schedule!.exchanged(caughtUp: outcome.caughtUp, restored: outcome.restoreDetected)
                        if !outcome.pending, let reason = schedule!.due(at: Date()) {
                            let succeeded = await verify(sync, verifying, reason: reason)
                            schedule!.ran(at: Date(), succeeded: succeeded)
                        }
                        if case .sleep(let seconds) = action, let wait = schedule!.secondsUntilDue(at: Date()) {
                            action = .sleep(seconds: max(0.1, min(seconds, wait)))
                        }
                    }
                    if !outcome.pending, let close = current?.close {
                        // Idle: hold no connection while sleeping, so that a restarted or
                        // dropped local database costs nothing; the next exchange reconnects.
                        _ = try? await withDeadline(seconds: 10) { await close() }
                        current = nil
                    }
                } catch is LongPollAbandoned {
                    logger.debug("a local change ended the long poll")
                    action = .exchange
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
                // An idle sleep ends when a local change commits; a back-off does not (the
                // shore is unreachable: the change waits for the back-off like the rest).
                let idle = loop.state == .idle
                if idle, longPollSeconds > 0, seconds >= 1 {
                    polling = min(longPollSeconds, Int(seconds))
                    action = loop.woke()
                    continue
                }
                if await sleep(seconds, wakingOnChange: idle) { logger.debug("a local change woke the daemon") }
                action = loop.woke()
            }
        }
    }

    /// One verify of the partition, bounded by the daemon's deadline (twice: a repair follows the
    /// walk); its result is stored for `status` by the verifier, failures included.
    private func verify(_ sync: VesselSync, _ verifying: DaemonVerify, reason: VerifySchedule.Reason) async -> Bool {
        logger.info("verifying the partition against the shore's", metadata: ["reason": "\(reason.rawValue)", "repair": "\(verifying.repair)"])
        do {
            let transport = try verifying.makeTransport()
            defer { Task { await transport.shutdown() } }
            let verifier = Verifier(configuration: sync.configuration, schema: sync.schema, session: sync.session, telemetry: sync.telemetry,
                                    transport: transport, logger: logger)
            let outcome = try await withDeadline(seconds: deadlineSeconds * 2) { try await verifier.run(repair: verifying.repair, reason: reason.rawValue) }
            if !outcome.differences.isEmpty {
                logger.warning("verify found rows that differ from the shore's", metadata: [
                    "differing": "\(outcome.differences.count)", "repaired": "\(outcome.repaired)", "left_alone": "\(outcome.skipped.count)"])
            }
            return true
        } catch {
            logger.warning("verify failed; retrying later", metadata: ["error": "\(error)", "reason": "\(reason.rawValue)"])
            return false
        }
    }

    /// When the last verify ran, as stored for `status` (nil: never).
    static func lastVerify(on sync: VesselSync) async throws -> Date? {
        let rows = try await sync.session.rows("SELECT (last_verify->>'at')::timestamptz FROM fleetsync.sync_state WHERE peer = 'shore'",
                                               context: "reading when the last verify ran")
        return try rows.first?.decode(Date?.self)
    }

    /// Sleeps in short steps so that a stop request (and, when `wakingOnChange`, a committed
    /// local change) ends the sleep promptly; returns whether a change ended it.
    private func sleep(_ seconds: Double, wakingOnChange: Bool) async -> Bool {
        if !wakingOnChange { _ = watcher?.takeChange() }
        var left = seconds
        while left > 0 && !stopRequested.load(ordering: .relaxed) {
            if wakingOnChange, watcher?.takeChange() == true { return true }
            let step = min(left, 0.1)
            try? await Task.sleep(for: .milliseconds(Int(step * 1000)))
            left -= step
        }
        return false
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
