import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import PostgresNIO

/// One exchange on the shore: apply the vessel's events idempotently, acknowledge them, and
/// answer with the vessel's pending shore events. Stateless: everything lives in PostgreSQL, and
/// one vessel's concurrent exchanges (through any number of server processes) are serialized by
/// an advisory lock on its id.
public struct ShoreExchange: Sendable {
    public var configuration: FleetSyncConfiguration
    public var schema: LocalSchema
    public var limits: WireLimits
    public var logger: Logger

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, logger: Logger) {
        self.configuration = configuration
        self.schema = schema
        self.logger = logger
        var limits = WireLimits()
        limits.maximumEvents = configuration.limits.batchEvents
        limits.maximumBodyBytes = Self.maximumBodyBytes(configuration.limits)
        limits.maximumStringBytes = max(limits.maximumStringBytes, configuration.limits.maximumChangeBytes)
        self.limits = limits
    }

    /// The largest request body (decompressed) the shore reads: a full batch, or one change of up
    /// to `max_change_bytes` alone (its text may take up to three times its stored size: numbers
    /// are stored in binary), with room for the request around it.
    public static func maximumBodyBytes(_ limits: Limits) -> Int {
        max(limits.batchBytes * 4, limits.maximumChangeBytes * 3 + 1_048_576)
    }

    /// Handles one framed request; every failure becomes a framed error with its code and the
    /// HTTP status that goes with it.
    public func handle(_ bytes: [UInt8], session: DatabaseSession, telemetry: TelemetryWriter) async -> (status: Int, body: [UInt8]) {
        switch decode(bytes) {
        case .failure(let refusal): return refusal.answer
        case .success(let request): return await respond(to: request, session: session, telemetry: telemetry)
        }
    }

    /// Decodes a framed request with the shore's limits, before any database work: a refusal
    /// comes back as the framed answer to send.
    public func decode(_ bytes: [UInt8]) -> Result<ExchangeRequest, Refusal> {
        do {
            return .success(try MessageFraming.decodeRequest(bytes, limits: limits))
        } catch {
            logger.warning("exchange refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
            return .failure(Refusal(answer: (Self.httpStatus(error.code), MessageFraming.encode(error))))
        }
    }

    /// A request refused before any database work, with its framed answer.
    public struct Refusal: Error, Sendable {
        public var answer: (status: Int, body: [UInt8])
    }

    /// Answers a decoded request on `session`; every failure becomes a framed error.
    public func respond(to request: ExchangeRequest, session: DatabaseSession, telemetry: TelemetryWriter) async -> (status: Int, body: [UInt8]) {
        do {
            let response = try await exchange(request, session: session, telemetry: telemetry)
            return (200, MessageFraming.encode(response))
        } catch let error as WireError {
            logger.warning("exchange refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
            return (Self.httpStatus(error.code), MessageFraming.encode(error))
        } catch {
            logger.error("exchange failed", metadata: ["error": "\(error)"])
            return (500, MessageFraming.encode(WireError(.internalError, "the shore could not complete the exchange; retry later")))
        }
    }

    /// The HTTP status of a refusal, so that proxies and dashboards can tell them apart.
    static func httpStatus(_ code: WireError.Code) -> Int {
        switch code {
        case .tooLarge, .batchTooLarge: return 413
        case .unknownVessel: return 403
        case .cursorFromTheFuture, .mustRebootstrap, .positionsWentBack: return 409
        case .busy: return 503
        case .internalError: return 500
        default: return 400
        }
    }

    func exchange(_ request: ExchangeRequest, session db: DatabaseSession, telemetry: TelemetryWriter) async throws -> ExchangeResponse {
        let vessel = request.vesselID
        var binds = PostgresBindings()
        binds.append(vessel)
        guard !(try await db.rows("SELECT 1 FROM fleetsync.vessel WHERE vessel_id = $1", binds, context: "looking up vessel \(vessel)")).isEmpty else {
            throw WireError(.unknownVessel, "vessel \(vessel) is not enrolled on this shore (fleetsync enroll --vessel \(vessel))")
        }
        // One exchange of a vessel at a time, across server processes; another one arriving
        // meanwhile (a retry racing its original) is answered at once rather than queued on the
        // lock, holding a connection.
        let answer = try await db.withLockIfFree("fleetsync.vessel:" + vessel, context: "serializing exchanges of \(vessel)") {
            try await exchangeLocked(request, db: db, telemetry: telemetry)
        }
        guard let answer else {
            throw WireError(.busy, "an exchange of vessel \(vessel) is already in progress; retry in a few seconds")
        }
        return answer
    }

    private func exchangeLocked(_ request: ExchangeRequest, db: DatabaseSession, telemetry: TelemetryWriter) async throws -> ExchangeResponse {
        let vessel = request.vesselID
        let counter = try await db.rows("SELECT last_pos, pruned_below FROM fleetsync.outbox_counter", context: "reading the outbox position")
        let (last, prunedBelow) = try counter[0].decode((Int64, Int64).self)
        guard request.cursor <= last else {
            throw WireError(.cursorFromTheFuture, "cursor \(request.cursor) is beyond the shore's last position \(last); this vessel's state does not come from this shore")
        }
        guard request.cursor >= prunedBelow else {
            throw WireError(.mustRebootstrap, "events after position \(request.cursor) were pruned (retention \(configuration.shore?.retentionDays ?? 0) days); re-bootstrap this vessel from a snapshot")
        }
        var binds = PostgresBindings()
        binds.append(vessel)
        try await db.execute("INSERT INTO fleetsync.sync_state (peer) VALUES ($1) ON CONFLICT DO NOTHING", binds, context: "registering contact with \(vessel)")
        let stored = try await db.rows("SELECT max_clock, acknowledged FROM fleetsync.sync_state WHERE peer = $1", binds, context: "reading \(vessel)'s state")
        let (clockFloor, seen) = try stored[0].decode((Int64, Int64).self)
        // A vessel whose clock is below the clocks it already sent was restored from a backup:
        // its new writes may carry clocks the shore holds for other values. Nothing is applied;
        // the answer names the floor, and the vessel moves its pending changes' clocks past it.
        if request.clock < clockFloor {
            logger.warning("vessel clock went back: restored from a backup? its changes wait until it moves its clocks", metadata: [
                "vessel": "\(vessel)", "clock": "\(request.clock)", "floor": "\(clockFloor)"])
            await telemetry.record(kind: "vessel_clock_went_back", detail: .object([
                "vessel": .string(vessel), "clock": .number(String(request.clock)), "floor": .number(String(clockFloor))]))
            return ExchangeResponse(shore: configuration.nodeID, acknowledged: 0, events: [], cursor: request.cursor, more: true,
                                    clockFloor: clockFloor, maximumChangeBytes: Int64(configuration.limits.maximumChangeBytes))
        }
        // Every event is applied, resent or not: applying is idempotent (clocks decide), so no
        // position the vessel claims can make the shore skip a change. The acknowledgement is
        // the request's own upTo, which the vessel checks against what it sent.
        if !request.events.isEmpty {
            // Transfers made since the last exchange are sequenced first: their offboardings say
            // which rows left this vessel after its cursor.
            try await OutboxReader(session: db).sequence()
            // A vessel's writes are judged against the partition it had seen: its cursor, never
            // below what it reported before.
            let partition = try await PartitionGuard(configuration: configuration).check(request.events, vessel: vessel, seen: max(request.cursor, seen), on: db)
            for rejection in partition.rejected { await telemetry.record(kind: "rejected_change", detail: rejection) }
            let applier = Applier(schema: schema, session: db, telemetry: telemetry)
            let report = try await applier.apply(partition.admitted, from: vessel, cursor: request.upTo, routes: partition.routes)
            try await Self.offboard(partition.offboardAfterwards, from: vessel, on: db)
            // Only clocks the shore accepted count: one refused as beyond the bound (``ClockBound``)
            // must not raise the floor this vessel is held to.
            let accepted = try await ClockRecoveryBound.lamport(on: db)
            var highest = PostgresBindings()
            highest.append(vessel)
            highest.append(Self.highestClock(of: vessel, in: partition.admitted, atMost: accepted))
            try await db.execute("UPDATE fleetsync.sync_state SET max_clock = greatest(max_clock, $2) WHERE peer = $1", highest, context: "recording \(vessel)'s clock")
            logger.info("applied vessel events", metadata: [
                "vessel": "\(vessel)", "events": "\(request.events.count)", "rows": "\(report.appliedRows)",
                "dead_letters": "\(report.deadLettered)", "waiting": "\(report.waiting)", "rejected": "\(report.rejectedFields)"])
        }
        var state = PostgresBindings()
        state.append(vessel)
        state.append(request.cursor)
        state.append(JSONValue.object(request.status).serialized)
        try await db.execute("""
            UPDATE fleetsync.sync_state SET acknowledged = greatest(acknowledged, $2), last_success = now(), status = $3::jsonb
            WHERE peer = $1
            """, state, context: "recording contact with \(vessel)")
        let acknowledged = request.upTo
        try await OutboxReader(session: db).sequence()
        // The vessel has more of its own to send: nothing of the shore's this time.
        if request.holdIncoming {
            return ExchangeResponse(shore: configuration.nodeID, acknowledged: acknowledged, events: [], cursor: request.cursor, more: false,
                                    clockFloor: max(clockFloor, Self.highestClock(of: vessel, in: request.events, atMost: try await ClockRecoveryBound.lamport(on: db))),
                                    maximumChangeBytes: Int64(configuration.limits.maximumChangeBytes))
        }
        // Another vessel's exchange may have pruned since the check above (this vessel, silent
        // past retention, did not hold the horizon back until its contact was recorded): the
        // queue is read in one snapshot with the pruning mark, so that it never skips what was
        // pruned after this vessel's cursor.
        let configuration = self.configuration
        let batch = try await db.transaction { tx in
            try await tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", context: "reading \(vessel)'s queue in one snapshot")
            let prunedBelow: Int64 = try await tx.rows("SELECT pruned_below FROM fleetsync.outbox_counter", context: "reading the pruning mark")[0].value(0)
            guard request.cursor >= prunedBelow else {
                throw WireError(.mustRebootstrap, "events after position \(request.cursor) were pruned (retention \(configuration.shore?.retentionDays ?? 0) days); re-bootstrap this vessel from a snapshot")
            }
            return try await VesselQueue(configuration: configuration, session: tx)
                .read(vessel: vessel, after: request.cursor, limit: configuration.limits.batchEvents, byteBudget: configuration.limits.batchBytes)
        }
        return ExchangeResponse(shore: configuration.nodeID, acknowledged: acknowledged, events: batch.events, cursor: batch.cursor, more: batch.more,
                                clockFloor: max(clockFloor, Self.highestClock(of: vessel, in: request.events, atMost: try await ClockRecoveryBound.lamport(on: db))),
                                maximumChangeBytes: Int64(configuration.limits.maximumChangeBytes))
    }

    /// Queues offboardings of `rows` for `vessel`: rows it created under a row that had already
    /// left it, which the shore applied and sent on to their vessel.
    static func offboard(_ rows: [(table: String, id: UUID)], from vessel: String, on db: DatabaseSession) async throws {
        guard !rows.isEmpty else { return }
        var binds = PostgresBindings()
        binds.append(rows.map(\.table))
        binds.append(rows.map(\.id))
        binds.append(vessel)
        try await db.execute("""
            INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta, vessel)
            SELECT nextval('fleetsync.lamport'), x.t, x.id, 'O', 0, 0, '{}', $3 FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS x(t, id, n) ORDER BY x.n DESC
            """, binds, context: "offboarding rows \(vessel) created under rows that had left it")
    }

    /// The highest clock counter among `events` that `vessel` wrote itself.
    static func highestClock(of vessel: String, in events: [ChangeEvent], atMost limit: Int64) -> Int64 {
        var highest: Int64 = 0
        for event in events {
            for change in event.fields.values where change.clock.node == vessel && change.clock.counter <= limit {
                highest = max(highest, change.clock.counter)
            }
        }
        return highest
    }
}

/// The shore's own logical clock, which every clock it accepted is at or below.
enum ClockRecoveryBound {
    static func lamport(on db: DatabaseSession) async throws -> Int64 {
        try await db.rows("SELECT last_value FROM fleetsync.lamport", context: "reading the logical clock")[0].value(0)
    }
}
