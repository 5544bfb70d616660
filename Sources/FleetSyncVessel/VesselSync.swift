import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import PostgresNIO

/// The shore answered with another node id than the one this vessel has synced with.
public struct ShoreMismatch: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// What one exchange did.
public struct ExchangeOutcome: Sendable {
    public var sent: Int
    public var received: Int
    /// More waits on either side: exchange again at once.
    public var pending: Bool
}

/// The vessel's side of an exchange: send compacted pending events with the cursor, drop what
/// the shore acknowledged, apply what it sent, all idempotent, so a lost request or response
/// costs nothing but a resend.
public struct VesselSync: Sendable {
    public var configuration: FleetSyncConfiguration
    public var schema: LocalSchema
    public var session: DatabaseSession
    public var telemetry: TelemetryWriter
    public var transport: any ExchangeTransport
    public var logger: Logger
    static let peer = "shore"

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, session: DatabaseSession, telemetry: TelemetryWriter, transport: any ExchangeTransport, logger: Logger) {
        self.configuration = configuration
        self.schema = schema
        self.session = session
        self.telemetry = telemetry
        self.transport = transport
        self.logger = logger
    }

    /// The vessel's pending events after `acknowledged`, merged per row (compaction).
    public func pendingEvents(after acknowledged: Int64) async throws -> (events: [ChangeEvent], upTo: Int64, more: Bool) {
        let reader = OutboxReader(session: session)
        try await reader.sequence()
        let limit = configuration.limits.batchEvents
        let changes = try await reader.read(after: acknowledged, limit: limit, byteBudget: configuration.limits.batchBytes)
        var byRow: [String: [UUID: ChangeEvent]] = [:]
        var order: [(String, UUID)] = []
        var bytes = 0
        var upTo = acknowledged
        var stoppedEarly = false
        for (change, size) in changes {
            if upTo > acknowledged && bytes + size > configuration.limits.batchBytes {
                stoppedEarly = true
                break
            }
            bytes += size
            upTo = change.position
            guard let table = configuration.table(named: change.table) else { continue }
            let event = change.event(node: configuration.nodeID, role: .vessel, table: table)
            if var existing = byRow[change.table]?[change.rowID] {
                var state = RowState(fields: existing.fields)
                state.merge(event.fields)
                existing.fields = state.fields
                existing.originPosition = event.originPosition
                byRow[change.table]![change.rowID] = existing
            } else {
                byRow[change.table, default: [:]][change.rowID] = event
                order.append((change.table, change.rowID))
            }
        }
        let events = order.map { byRow[$0.0]![$0.1]! }
        return (events, upTo, stoppedEarly || changes.count == limit)
    }

    /// The vessel's cursor, what the shore acknowledged, and the shore's node id once known.
    func state() async throws -> (cursor: Int64, acknowledged: Int64, shore: String?) {
        var binds = PostgresBindings()
        binds.append(Self.peer)
        try await session.execute("INSERT INTO fleetsync.sync_state (peer) VALUES ($1) ON CONFLICT DO NOTHING", binds, context: "registering the shore")
        let rows = try await session.rows("SELECT cursor, acknowledged, node_id FROM fleetsync.sync_state WHERE peer = $1", binds, context: "reading the sync state")
        return try rows[0].decode((Int64, Int64, String?).self)
    }

    /// One request/response with the shore. Exchanges of one vessel run one at a time (the
    /// daemon and a manual `fleetsync sync --once` may both try): a response applied after another
    /// exchange has moved past it could bring back a row an offboarding removed.
    public func exchangeOnce() async throws -> ExchangeOutcome {
        try await session.withLock(Self.exchangeLock, context: "holding this vessel's exchange lock") { try await exchangeHoldingTheLock() }
    }

    /// The advisory lock one exchange of the vessel holds.
    public static let exchangeLock = "fleetsync.exchange"

    private func exchangeHoldingTheLock() async throws -> ExchangeOutcome {
        let (cursor, acknowledged, knownShore) = try await state()
        let pending = try await pendingEvents(after: acknowledged)
        let status = try await VesselStatus.read(on: session)
        let request = ExchangeRequest(
            vesselID: configuration.nodeID, cursor: cursor, events: pending.events, upTo: pending.upTo,
            status: ["pending": .number(String(status.pendingEvents)), "dead_letters": .number(String(status.deadLetters)),
                     "quarantined": .number(String(status.quarantinedRows)), "transport": .string(transport.name)])
        let responseBytes = try await transport.send(MessageFraming.encode(request))
        let (response, received) = try MessageFraming.decodeResponseBatch(responseBytes)
        guard response.acknowledged <= max(pending.upTo, acknowledged) else {
            throw WireError(.malformed, "the shore acknowledged position \(response.acknowledged), beyond the \(pending.upTo) this vessel sent; refusing to drop unsent changes")
        }
        // The first shore to answer is this vessel's shore for life: another one (a wrong
        // shore_url, another fleet's shore) is refused before anything is dropped or applied.
        if let knownShore, knownShore != response.shore {
            throw ShoreMismatch(description: "the shore at \(configuration.vessel?.shoreURL ?? "?") answers as node \"\(response.shore)\", but this vessel syncs with shore \"\(knownShore)\"; refusing the exchange (check [vessel] shore_url)")
        } else if knownShore == nil {
            var pin = PostgresBindings()
            pin.append(Self.peer)
            pin.append(response.shore)
            try await session.execute("UPDATE fleetsync.sync_state SET node_id = $2 WHERE peer = $1", pin, context: "recording the shore's node id")
        }
        // Acknowledged events leave the outbox only now.
        var binds = PostgresBindings()
        binds.append(response.acknowledged)
        binds.append(Self.peer)
        try await session.transaction { tx in
            try await tx.execute("DELETE FROM fleetsync.outbox WHERE pos <= $1", binds, context: "dropping acknowledged events")
            try await tx.execute("UPDATE fleetsync.sync_state SET acknowledged = greatest(acknowledged, $1) WHERE peer = $2", binds, context: "recording the acknowledgement")
        }
        var applier = Applier(schema: schema, session: session, telemetry: telemetry)
        applier.shoreNode = response.shore
        let report = try await applier.apply(batch: received, from: Self.peer, cursor: response.cursor)
        var success = PostgresBindings()
        success.append(Self.peer)
        try await session.execute("UPDATE fleetsync.sync_state SET last_success = now(), last_error = NULL WHERE peer = $1", success, context: "recording success")
        logger.info("exchange done", metadata: [
            "sent": "\(pending.events.count)", "received": "\(received.count)", "applied": "\(report.appliedRows)",
            "cursor": "\(response.cursor)", "transport": "\(transport.name)"])
        return ExchangeOutcome(sent: pending.events.count, received: received.count, pending: pending.more || response.more)
    }

    /// Exchanges until nothing is pending on either side, or `maximumRounds` exchanges; `pending`
    /// says whether work was left when it stopped.
    public func syncUntilIdle(maximumRounds: Int = 10_000) async throws -> (sent: Int, received: Int, pending: Bool) {
        var sent = 0, received = 0
        for _ in 0..<maximumRounds {
            let outcome = try await exchangeOnce()
            sent += outcome.sent
            received += outcome.received
            if !outcome.pending { return (sent, received, false) }
        }
        return (sent, received, true)
    }

    /// Records a failed exchange for status.
    public func recordFailure(_ error: any Error) async {
        var binds = PostgresBindings()
        binds.append(Self.peer)
        binds.append(String(describing: error).prefix(2_000).description)
        try? await session.execute("""
            INSERT INTO fleetsync.sync_state (peer, last_error, last_error_at) VALUES ($1, $2, now())
            ON CONFLICT (peer) DO UPDATE SET last_error = $2, last_error_at = now()
            """, binds, context: "recording a failed exchange")
    }
}
