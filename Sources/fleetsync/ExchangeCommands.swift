import ArgumentParser
import FleetSyncCore
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTransport
import FleetSyncVessel
import Foundation
import Logging

func requireRole(_ configuration: FleetSyncConfiguration, _ role: NodeRole, _ command: String) throws {
    guard configuration.role == role else {
        throw ValidationError("fleetsync \(command) runs on the \(role.rawValue); this configuration is for a \(configuration.role.rawValue) (node.role)")
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "(shore) Run the exchange server until SIGTERM.")
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let configuration = try options.load()
        try requireRole(configuration, .shore, "serve")
        let logger = makeLogger("fleetsync.shore", defaultLevel: .info)
        await drainQuarantineAtBoot(configuration, logger: logger)
        try await ShoreServer(configuration: configuration, logger: logger).run { port in
            FileHandle.standardOutput.write(Data("fleetsync serve: listening on port \(port)\n".utf8))
        }
    }
}

/// Opens the vessel's database and transport and hands a `VesselSync` to `body`.
func withVesselSync<T: Sendable>(_ configuration: FleetSyncConfiguration, defaultLogLevel logLevel: Logger.Level, _ body: @Sendable (VesselSync) async throws -> T) async throws -> T {
    try requireRole(configuration, .vessel, "run/sync")
    var vesselLogger = makeLogger("fleetsync.vessel", defaultLevel: logLevel)
    vesselLogger[metadataKey: "vessel"] = "\(configuration.nodeID)"
    let logger = vesselLogger
    let transport = try HTTPExchangeTransport(
        shoreURL: configuration.vessel!.shoreURL, timeout: .seconds(Int64(configuration.vessel!.requestTimeoutSeconds)),
        trustedCertificates: configuration.vessel!.tlsCA)
    do {
        let value = try await withApplier(configuration) { applier in
            try await body(VesselSync(configuration: configuration, schema: applier.schema, session: applier.session,
                                      telemetry: applier.telemetry, transport: transport, logger: logger))
        }
        await transport.shutdown()
        return value
    } catch {
        await transport.shutdown()
        throw error
    }
}

/// At boot a node reads its physical schema; quarantined values whose columns now exist are
/// applied (respecting clocks) before anything else.
func drainQuarantineAtBoot(_ configuration: FleetSyncConfiguration, logger: Logger) async {
    do {
        let result = try await withApplier(configuration) { try await QuarantineVault.drain(applier: $0) }
        if result.drained > 0 || result.remaining > 0 {
            logger.info("quarantine drained at boot", metadata: ["drained": "\(result.drained)", "remaining": "\(result.remaining)"])
        }
    } catch {
        logger.warning("quarantine drain at boot failed; retry with fleetsync quarantine drain", metadata: ["error": "\(error)"])
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "(vessel) Run the sync daemon until SIGTERM.")
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let configuration = try options.load()
        try requireRole(configuration, .vessel, "run")
        // Keys and the pinned shore identity are checked before the daemon starts: a private key
        // others can read, or none, stops it here with the fix (not a backoff loop).
        do {
            _ = try VesselChannel.credentials(configuration)
        } catch {
            throw CommandFailure(description: "\(error)")
        }
        var daemonLogger = makeLogger("fleetsync.vessel", defaultLevel: .info)
        daemonLogger[metadataKey: "vessel"] = "\(configuration.nodeID)"
        let logger = daemonLogger
        await drainQuarantineAtBoot(configuration, logger: logger)
        let vessel = configuration.vessel!
        let transport = try HTTPExchangeTransport(
            shoreURL: vessel.shoreURL, timeout: .seconds(Int64(vessel.requestTimeoutSeconds)), trustedCertificates: vessel.tlsCA)
        let watcher = vessel.wakeOnChange ? LocalChangeWatcher(url: configuration.databaseURL, logger: logger) : nil
        let verifying = VesselDaemon.DaemonVerify(intervalSeconds: vessel.verifyIntervalSeconds, repair: vessel.verifyRepair) {
            try HTTPVerifyTransport(shoreURL: vessel.shoreURL, timeoutSeconds: vessel.requestTimeoutSeconds, trustedCertificates: vessel.tlsCA)
        }
        // Batch sizes learnt by one connection serve the next (the daemon reconnects after idling).
        let sizing = BatchSizing(configuration)
        let daemon = VesselDaemon(intervalSeconds: vessel.intervalSeconds, deadlineSeconds: Double(vessel.requestTimeoutSeconds) * 2 + 30, logger: logger,
                                  watcher: watcher, verifying: verifying, longPollSeconds: Self.longPollSeconds(vessel)) {
            let session = try await DatabaseSession.connect(url: configuration.databaseURL, logger: makeLogger("fleetsync.db"))
            let telemetry = TelemetryWriter(url: configuration.databaseURL, logger: logger)
            do {
                let schema = try await LocalSchema.load(configuration: configuration, session: session)
                var sync = VesselSync(configuration: configuration, schema: schema, session: session, telemetry: telemetry, transport: transport, logger: logger)
                sync.sizing = sizing
                return (sync, { await telemetry.close(); await session.close() })
            } catch {
                await telemetry.close()
                await session.close()
                throw error
            }
        }
        await daemon.run()
        await transport.shutdown()
    }

    /// How long an idle daemon's long poll lasts: its interval, so that an idle link carries no
    /// more exchanges than with plain polling, and well inside the request timeout.
    static func longPollSeconds(_ vessel: VesselConfiguration) -> Int {
        vessel.longPoll ? max(0, min(vessel.intervalSeconds, vessel.requestTimeoutSeconds - 10)) : 0
    }
}

struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync", abstract: "(vessel) Exchange with the shore until nothing is pending on either side, then exit.",
        discussion: """
            Prints one line per exchange. Exit status: 0 nothing pending and nothing held back; \
            3 stopped after --max-exchanges with changes still pending; 4 idle, but changes were \
            dead-lettered in this run or wait for a row they reference (fleetsync status, fleetsync dlq list).
            """)
    @OptionGroup var options: ConfigOption
    @Flag(help: "Accepted for scripts written for earlier versions: sync always runs once, to idle.") var once = false
    @Option(name: .customLong("max-exchanges"), help: "Stop after this many exchanges (1 to 1000000); exits 3 if changes are still pending then.")
    var maxExchanges = 10_000

    /// Exit statuses scripts can rely on.
    static let stoppedWithWorkPending: Int32 = 3
    static let changesHeldBack: Int32 = 4

    func run() async throws {
        guard (1...1_000_000).contains(maxExchanges) else {
            throw ValidationError("--max-exchanges \(maxExchanges) is out of range: give 1 to 1000000")
        }
        let configuration = try options.load()
        try requireRole(configuration, .vessel, "sync")
        await drainQuarantineAtBoot(configuration, logger: makeLogger("fleetsync.vessel"))
        let (result, deadLettered, waiting) = try await withVesselSync(configuration, defaultLogLevel: .warning) { sync in
            do {
                var deadLettered = 0
                let result = try await sync.syncUntilIdle(maximumRounds: maxExchanges) { round, o in
                    deadLettered += o.deadLettered
                    var line = "exchange \(round): sent \(o.sent), received \(o.received), waiting \(o.waiting), dead-lettered \(o.deadLettered), "
                        + "bytes \(o.bytesSent) up / \(o.bytesReceived) down"
                    if o.readAheads > 0 { line += ", \(o.readAheads) more batch(es) read ahead" }
                    if o.sentAhead > 0 { line += ", \(o.sentAhead) more batch(es) sent ahead" }
                    if o.waitingApplied > 0 { line += ", \(o.waitingApplied) waiting change(s) applied" }
                    if o.reclocked > 0 { line += ", \(o.reclocked) pending change(s) re-clocked past the shore's floor (restored database?)" }
                    print(line)
                }
                let waiting = try await WaitingRoom.count(on: sync.session)
                return (result, deadLettered, waiting)
            } catch {
                await sync.recordFailure(error)
                throw error
            }
        }
        guard !result.pending else {
            print("sync stopped after \(maxExchanges) exchange(s): sent \(result.sent) event(s), received \(result.received); changes are still pending, run it again")
            throw ExitCode(Self.stoppedWithWorkPending)
        }
        if deadLettered > 0 || waiting > 0 {
            print("sync idle: sent \(result.sent) event(s), received \(result.received); \(deadLettered) change(s) dead-lettered in this run, \(waiting) waiting for a row they reference (fleetsync status; fleetsync dlq list)")
            throw ExitCode(Self.changesHeldBack)
        }
        print("sync done: sent \(result.sent) event(s), received \(result.received); nothing pending")
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show this node's sync status.")
    @OptionGroup var options: ConfigOption
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() async throws {
        let configuration = try options.load()
        switch configuration.role {
        case .vessel:
            let status = try await withDatabase(configuration) { try await VesselStatus.read(on: $0) }
            if json { print(status.json.serialized); return }
            print("vessel \(configuration.nodeID)")
            print("  pending events:  \(status.pendingEvents)")
            print("  shore cursor:    \(status.cursor)")
            print("  last success:    \(status.lastSuccess.map { "\($0)" } ?? "never")")
            print("  last error:      \(status.lastError ?? "none")")
            print("  dead letters:    \(status.deadLetters)")
            print("  waiting:         \(status.waiting) change(s) for a row they reference")
            print("  quarantined:     \(status.quarantinedRows) row(s)")
            print("  catch-up:        \(status.catchUp.map(CatchUpProgress.describe) ?? "none")")
            print("  last verify:     \(status.lastVerify.map(VerifyReport.describeStored) ?? "never")")
            printKeyStatus(configuration, vessel: status)
        case .shore:
            let (status, refusals) = try await withDatabase(configuration) { db in
                (try await FleetStatus.read(on: db), try await ShoreAuthority.refusals(on: db))
            }
            if json {
                guard case .object(var members) = status.json else { print(status.json.serialized); return }
                members["authentication"] = .string("required")
                members["refused_requests"] = .object(refusals.mapValues { .number(String($0)) })
                print(JSONValue.object(members).serialized)
                return
            }
            print(ShoreAuthority.statusLine)
            if let unattributed = refusals[""] { print("refused requests that proved no identity: \(unattributed)") }
            printKeyStatus(configuration, vessel: nil)
            print("shore \(configuration.nodeID): last position \(status.lastPosition), pruned below \(status.prunedBelow), \(status.unsequenced) event(s) waiting for the next exchange to be sequenced")
            for v in status.vessels {
                let contact = v.lastContact.map { "\($0)" } ?? "never"
                let note = v.catchUpNote(prunedBelow: status.prunedBelow)
                print("  \(v.id): last contact \(contact), \(v.lagEvents) event(s) not yet confirmed applied, \(refusals[v.id] ?? 0) refused request(s) or rejected change batch(es), reported \(v.reported)\(note)\(v.keyNote)")
            }
        }
    }
}
