import FleetSyncCore
import FleetSyncCrypto
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
    /// Challenges, tokens and the shore's keys: every exchange is sealed and authenticated.
    public var authority: ShoreAuthority
    /// The outbox sequencer, run once for the exchanges of this process that need it at once.
    public var sequencer = SequencerGroup()

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, logger: Logger, keys: NodeKeys) {
        self.configuration = configuration
        self.schema = schema
        self.logger = logger
        self.authority = ShoreAuthority(shoreID: configuration.nodeID, keys: keys)
        var limits = WireLimits()
        limits.maximumEvents = max(configuration.limits.batchEvents, configuration.limits.maximumBatchEvents)
        limits.maximumBodyBytes = Self.maximumBodyBytes(configuration.limits)
        limits.maximumStringBytes = max(limits.maximumStringBytes, configuration.limits.maximumChangeBytes)
        self.limits = limits
    }

    /// The largest request body (decompressed) the shore reads: a full batch, or one change of up
    /// to `max_change_bytes` alone (its text may take up to three times its stored size: numbers
    /// are stored in binary), with room for the request around it.
    public static func maximumBodyBytes(_ limits: Limits) -> Int {
        max(max(limits.batchBytes, limits.maximumBatchBytes) * 4, limits.maximumChangeBytes * 3 + 1_048_576)
    }

    /// Handles one framed request; every failure becomes a framed error with its code and the
    /// HTTP status that goes with it.
    public func handle(_ bytes: [UInt8], session: DatabaseSession, telemetry: TelemetryWriter) async -> (status: Int, body: [UInt8]) {
        switch decode(bytes) {
        case .failure(let refusal): return refusal.answer
        case .success(let request): return await respond(to: request, session: session, telemetry: telemetry)
        }
    }

    /// The largest message the shore reads: a request body with its frame, the seal and a token.
    public var maximumMessageBytes: Int { limits.maximumBodyBytes + Self.sealingAllowance }
    static let sealingAllowance = 2 * WireEnvelope.headerSize + 64 + Sealing.overhead + AccessToken.maximumBytes + 16

    /// What arrived, once decoded (and, for an exchange, unsealed) without the database.
    public struct Incoming: Sendable {
        public enum Message: Sendable {
            case challengeRequest([UInt8])
            case tokenRequest([UInt8])
            /// A sealed exchange: its request, not yet authenticated (the token is checked, with
            /// the database, before anything else).
            case exchange(ExchangeRequest, ShoreAuthority.Unsealed)
        }
        public var message: Message
        /// The vessel the message claims to come from (for logs only: identity comes from the token).
        public var vesselID: String
    }

    /// Decodes a framed message with the shore's limits and opens its seal, before any database
    /// work: a refusal comes back as the framed answer to send. An unsealed request (protocol
    /// version 1, or a version 2 request without a seal) is refused: there is no unauthenticated
    /// mode.
    public func decode(_ bytes: [UInt8]) -> Result<Incoming, Refusal> {
        do throws(WireError) {
            var outer = limits
            outer.maximumBodyBytes = maximumMessageBytes
            let envelope = try WireEnvelope.decode(bytes, limits: outer)
            switch envelope.kind {
            case .challengeRequest:
                return .success(Incoming(message: .challengeRequest(envelope.body), vesselID: "?"))
            case .tokenRequest:
                return .success(Incoming(message: .tokenRequest(envelope.body), vesselID: "?"))
            case .sealedRequest:
                let unsealed = try authority.unseal(envelope.body)
                let request = try MessageFraming.decodeRequest(unsealed.inner, limits: limits)
                return .success(Incoming(message: .exchange(request, unsealed), vesselID: unsealed.vessel))
            case .request:
                throw WireError(.unauthenticated, "this shore accepts only sealed exchanges carrying an access token (protocol version \(WireCodec.version)); the request came unsealed. Fix: on the vessel, run fleetsync keygen, enroll its identity.pub on the shore, and set [vessel] shore_identity")
            default:
                throw WireError(.malformed, "a \(envelope.kind) message is not something a vessel sends")
            }
        } catch {
            logger.warning("exchange refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
            // A sender of an older version gets the refusal in its own version, so that it can read it.
            let version = WireEnvelope.version(of: bytes).map { $0 < WireCodec.version && $0 > 0 ? $0 : WireCodec.version } ?? WireCodec.version
            return .failure(Refusal(answer: (Self.httpStatus(error.code), MessageFraming.encode(error, version: version))))
        }
    }

    /// A request refused before any database work, with its framed answer.
    public struct Refusal: Error, Sendable {
        public var answer: (status: Int, body: [UInt8])
    }

    /// Answers a decoded message on `session`: a challenge, a token, or an exchange whose token
    /// is checked first. Every failure becomes a framed error, sealed to the vessel once it is
    /// authenticated; refusals of security checks are logged and recorded for `status`.
    public func respond(to incoming: Incoming, session: DatabaseSession, telemetry: TelemetryWriter) async -> (status: Int, body: [UInt8]) {
        switch await reply(to: incoming, session: session, telemetry: telemetry, longPollMaxSeconds: 0) {
        case .answer(let status, let body): return (status, body)
        case .park(let parked): return emptyAnswer(parked)
        }
    }

    /// What to do with a message: answer it, or (a long poll that found nothing for its vessel)
    /// hold it without a database connection until something arrives (``LongPollHub``).
    public enum Reply: Sendable {
        case answer(status: Int, body: [UInt8])
        case park(Parked)
    }

    /// A long poll whose exchange is done (its events applied, its answer empty), waiting.
    public struct Parked: Sendable {
        public var vessel: String
        public var seconds: Int
        /// The outbox position before the vessel's queue was read: events after it may be news.
        public var seen: Int64
        var cursor: Int64
        var response: ExchangeResponse
        var channel: ShoreAuthority.Opened
    }

    /// ``respond(to:session:telemetry:)``, parking a long poll of an empty exchange for up to
    /// `longPollMaxSeconds` (0: never).
    public func reply(to incoming: Incoming, session: DatabaseSession, telemetry: TelemetryWriter, longPollMaxSeconds: Int) async -> Reply {
        var opened: ShoreAuthority.Opened?
        do {
            switch incoming.message {
            case .challengeRequest(let body):
                return .answer(status: 200, body: try await authority.challenge(body, on: session))
            case .tokenRequest(let body):
                return .answer(status: 200, body: try await authority.token(body, on: session))
            case .exchange(let request, let unsealed):
                // The token, the vessel's standing, the exchange id and the vessel's lock: one statement.
                let channel = try await authority.authenticate(unsealed, on: session, lock: Self.lockKey(unsealed.vessel))
                opened = channel
                let seconds = request.events.isEmpty && !request.holdIncoming ? min(request.waitSeconds, longPollMaxSeconds) : 0
                let (response, seen) = try await Self.holding(channel, on: session) {
                    // The vessel is the token's; a payload naming another one is refused.
                    guard request.vesselID == channel.vessel else {
                        throw WireError(.forbidden, "the request names vessel \(request.vesselID) but its token is vessel \(channel.vessel)'s; a vessel acts only as itself")
                    }
                    try StatusBounds.check(request.status)
                    return try await exchange(request, as: channel.vessel, locked: channel.locked, session: session, telemetry: telemetry)
                }
                if seconds > 0, response.events.isEmpty, !response.more, response.catchUp == nil {
                    return .park(Parked(vessel: channel.vessel, seconds: seconds, seen: seen, cursor: request.cursor, response: response, channel: channel))
                }
                return .answer(status: 200, body: try authority.seal(MessageFraming.encode(response), for: channel))
            }
        } catch {
            let wire = error as? WireError ?? WireError(.internalError, "the shore could not complete the exchange; retry later")
            if error is WireError {
                logger.warning("exchange refused", metadata: ["code": "\(wire.code)", "reason": "\(wire.message)", "vessel": "\(opened?.vessel ?? incoming.vesselID)"])
            } else {
                logger.error("exchange failed", metadata: ["error": "\(error)"])
            }
            if [.unauthenticated, .replayed, .forbidden, .tooLarge].contains(wire.code) {
                try? await ShoreAuthority.record(vessel: opened?.vessel, kind: "\(wire.code)", detail: "claimed vessel \(incoming.vesselID): \(wire.message)", on: session)
            }
            let frame = MessageFraming.encode(wire)
            if let opened, let sealed = try? authority.seal(frame, for: opened) { return .answer(status: Self.httpStatus(wire.code), body: sealed) }
            return .answer(status: Self.httpStatus(wire.code), body: frame)
        }
    }

    /// A parked long poll's answer when its time is up or the server stops: the exchange's own
    /// (empty) answer. No database work.
    public func emptyAnswer(_ parked: Parked) -> (status: Int, body: [UInt8]) {
        do {
            return (200, try authority.seal(MessageFraming.encode(parked.response), for: parked.channel))
        } catch {
            return (500, MessageFraming.encode(WireError(.internalError, "the shore could not seal its answer; retry")))
        }
    }

    /// Reads a parked vessel's queue again after a wake: its answer when something is there (or
    /// when it now needs a catch-up: an empty answer saying more follows), else nil and the
    /// position read up to, to wait again.
    public func recheck(_ parked: Parked, session db: DatabaseSession) async throws -> (answer: (status: Int, body: [UInt8])?, seen: Int64) {
        // The queue, the last position and the pruning mark in one statement: everything up to
        // that position was looked at.
        let (read, seen) = try await VesselQueue(configuration: configuration, session: db)
            .readAtLastPosition(vessel: parked.vessel, cursor: parked.cursor, after: parked.cursor, limit: configuration.limits.batchEvents, byteBudget: configuration.limits.batchBytes)
        var response = parked.response
        if let batch = read {
            guard !batch.events.isEmpty || batch.more else { return (nil, seen) }
            (response.events, response.cursor, response.more) = (batch.events, batch.cursor, batch.more)
        } else {
            response.more = true
        }
        return ((200, try authority.seal(MessageFraming.encode(response), for: parked.channel)), seen)
    }

    /// The HTTP status of a refusal, so that proxies and dashboards can tell them apart.
    static func httpStatus(_ code: WireError.Code) -> Int {
        switch code {
        case .tooLarge, .batchTooLarge: return 413
        case .unknownVessel, .forbidden: return 403
        case .unauthenticated, .tokenExpired: return 401
        case .replayed: return 409
        case .cursorFromTheFuture, .mustRebootstrap, .positionsWentBack: return 409
        case .busy: return 503
        case .internalError: return 500
        default: return 400
        }
    }

    /// The name of the advisory lock that serializes a vessel's exchanges across server processes.
    static func lockKey(_ vessel: String) -> String { "fleetsync.vessel:" + vessel }

    /// Runs `body` for an authenticated request, then releases the vessel's lock if
    /// authentication took it (``ShoreAuthority/authenticate(_:on:lock:)``), however `body` ends.
    static func holding<T: Sendable>(_ channel: ShoreAuthority.Opened, on db: DatabaseSession, _ body: () async throws -> T) async throws -> T {
        guard channel.locked == true else { return try await body() }
        var binds = PostgresBindings()
        binds.append(lockKey(channel.vessel))
        do {
            let value = try await body()
            _ = try await db.rows(UnlockStatement.self, binds, context: "releasing the lock of \(channel.vessel)'s exchanges")
            return value
        } catch {
            _ = try? await db.rows(UnlockStatement.self, binds, context: "releasing the lock of \(channel.vessel)'s exchanges")
            throw error
        }
    }

    /// One exchange of `vessel`, the identity its token proved (the request names the same),
    /// its lock taken when authenticated (`locked` true; false: another exchange holds it; nil: taken
    /// here); with the outbox position read before the vessel's queue (events after it may be news
    /// for a long poll).
    func exchange(_ request: ExchangeRequest, as vessel: String, locked: Bool?, session db: DatabaseSession, telemetry: TelemetryWriter) async throws -> (ExchangeResponse, seen: Int64) {
        guard request.vesselID == vessel else { throw WireError(.forbidden, "the request names vessel \(request.vesselID), its token vessel \(vessel)") }
        // Enrolled and not revoked: its token's check (ShoreAuthority.authenticate) read that.
        // One exchange of a vessel at a time, across server processes; another one arriving
        // meanwhile (a retry racing its original) is answered at once rather than queued on the
        // lock, holding a connection.
        let busy = WireError(.busy, "an exchange of vessel \(vessel) is already in progress; retry in a few seconds")
        if let locked {
            guard locked else { throw busy }
            return try await exchangeLocked(request, db: db, telemetry: telemetry)
        }
        let answer = try await db.withLockIfFree(Self.lockKey(vessel), context: "serializing exchanges of \(vessel)") {
            try await exchangeLocked(request, db: db, telemetry: telemetry)
        }
        guard let answer else { throw busy }
        return answer
    }

    private func exchangeLocked(_ request: ExchangeRequest, db: DatabaseSession, telemetry: TelemetryWriter) async throws -> (ExchangeResponse, seen: Int64) {
        let vessel = request.vesselID
        let idle = request.events.isEmpty
        // The outbox's positions, the vessel's state (registered on first contact), its
        // catch-up, whether captured changes wait, and (without events) the contact: one
        // statement. A cursor beyond the last position is refused there.
        // A cursor below pruned_below is no error: the vessel is caught up from table state (CatchUp).
        let start = try await ExchangeStart.read(request, recordingContact: idle, on: db)
        let clockFloor = start.clockFloor
        // The floor this vessel is held to, raised by the clocks of its own writes accepted below.
        var floor = clockFloor
        // A vessel whose clock is below the clocks it already sent was restored from a backup:
        // its new writes may carry clocks the shore holds for other values. Nothing is applied;
        // the answer names the floor, and the vessel moves its pending changes' clocks past it.
        if request.clock < clockFloor {
            logger.warning("vessel clock went back: restored from a backup? its changes wait until it moves its clocks", metadata: [
                "vessel": "\(vessel)", "clock": "\(request.clock)", "floor": "\(clockFloor)"])
            await telemetry.record(kind: "vessel_clock_went_back", detail: .object([
                "vessel": .string(vessel), "clock": .number(String(request.clock)), "floor": .number(String(clockFloor))]))
            return (ExchangeResponse(shore: configuration.nodeID, acknowledged: 0, events: [], cursor: request.cursor, more: true,
                                     clockFloor: clockFloor, maximumChangeBytes: Int64(configuration.limits.maximumChangeBytes)), start.last)
        }
        // Every event is applied, resent or not: applying is idempotent (clocks decide), so no
        // position the vessel claims can make the shore skip a change. The acknowledgement is
        // the request's own upTo, which the vessel checks against what it sent.
        if !idle {
            // Transfers made since the last exchange are sequenced first: their offboardings say
            // which rows left this vessel after its cursor. (None waited when the exchange
            // started, after the request arrived: nothing to do.)
            if start.captured { try await sequencer.sequence(on: db) }
            // A vessel's writes are judged against the partition it had seen: its cursor, never
            // below what it reported before.
            let partition = try await PartitionGuard(configuration: configuration).check(request.events, vessel: vessel, seen: max(request.cursor, start.seen), on: db)
            for rejection in partition.rejected { await telemetry.record(kind: "rejected_change", detail: rejection) }
            let applier = Applier(schema: schema, session: db, telemetry: telemetry)
            let report = try await applier.apply(partition.admitted, from: vessel, cursor: request.upTo, routes: partition.routes)
            if !partition.rejected.isEmpty || report.rejectedFields > 0 {
                logger.warning("vessel changes rejected", metadata: ["vessel": "\(vessel)", "outside_partition": "\(partition.rejected.count)", "fields_not_owned": "\(report.rejectedFields)"])
                try? await ShoreAuthority.record(vessel: vessel, kind: "rejected_changes", detail: "\(partition.rejected.count) change(s) outside its partition, \(report.rejectedFields) field(s) it does not own", on: db)
            }
            try await Self.offboard(partition.offboardAfterwards, from: vessel, on: db)
            // Only clocks the shore accepted count: one refused as beyond the bound (``ClockBound``)
            // must not raise the floor this vessel is held to. With the contact, one statement.
            floor = max(floor, try await ExchangeStart.recordContact(request, clocks: ExchangeStart.ownClocks(of: vessel, in: partition.admitted), on: db))
            logger.info("applied vessel events", metadata: [
                "vessel": "\(vessel)", "events": "\(request.events.count)", "rows": "\(report.appliedRows)",
                "dead_letters": "\(report.deadLettered)", "waiting": "\(report.waiting)", "rejected": "\(report.rejectedFields)"])
        }
        let acknowledged = request.upTo
        // What was captured since (the vessel's relayed changes, shore writes) is moved into
        // the outbox, a chunk at a time: a large backlog goes a chunk per exchange (`more`).
        // An exchange without events whose start saw nothing captured has nothing to move.
        let size = batchSize(request)
        let backlog = idle && !start.captured ? false : try await sequencer.sequenceSome(on: db, chunk: Self.sequencingChunk(size.events))
        // The vessel has more of its own to send: nothing of the shore's this time.
        if request.holdIncoming {
            var response = ExchangeResponse(shore: configuration.nodeID, acknowledged: acknowledged, events: [], cursor: request.cursor, more: false,
                                            clockFloor: floor,
                                            maximumChangeBytes: Int64(configuration.limits.maximumChangeBytes))
            response.readAhead = terms(request, after: request.cursor)
            return (response, start.last)
        }
        // Past what the shore keeps, or never caught up: pages of table state instead of events.
        // (Whether a catch-up is unfinished or must start was read at the start: none, no statement.)
        let catchUp = CatchUp(configuration: configuration, schema: schema, logger: logger)
        let bulk = CatchUp.announcesBulk(request.status)
        if let answer = try await catchUp.answer(vessel: vessel, cursor: request.cursor, echo: request.status["catch_up"], bulk: bulk, force: false,
                                                 known: CatchUp.Known(prunedBelow: start.prunedBelow, inProgress: start.catchingUp), on: db) {
            return (try await catchUpResponse(answer, acknowledged: acknowledged, request: request, clockFloor: floor, db: db), start.last)
        }
        // Another vessel's exchange may have pruned since the start (this vessel, silent past
        // retention, did not hold the horizon back until its contact was recorded): the queue is
        // read in one statement with the pruning mark, so that it never skips what was pruned
        // after this vessel's cursor. A vessel that applies the batch it has meanwhile asks for
        // the one after it, and how large (within this shore's ceilings).
        let after = request.readAhead?.after ?? request.cursor
        let (read, _) = try await VesselQueue(configuration: configuration, session: db)
            .readAtLastPosition(vessel: vessel, cursor: request.cursor, after: after, limit: size.events, byteBudget: size.bytes)
        guard let batch = read else {
            let answer = try await catchUp.answer(vessel: vessel, cursor: request.cursor, echo: request.status["catch_up"], bulk: bulk, force: true, on: db)!
            return (try await catchUpResponse(answer, acknowledged: acknowledged, request: request, clockFloor: floor, db: db), start.last)
        }
        var response = ExchangeResponse(shore: configuration.nodeID, acknowledged: acknowledged, events: batch.events, cursor: batch.cursor, more: batch.more || backlog,
                                        clockFloor: floor,
                                        maximumChangeBytes: Int64(configuration.limits.maximumChangeBytes))
        response.readAhead = terms(request, after: after)
        return (response, start.last)
    }

    /// Captured changes an exchange moves into the outbox at most (``SequencerGroup/sequenceSome(on:chunk:)``):
    /// twice the batch it serves, so that sequencing keeps ahead of the vessel's reading.
    static func sequencingChunk(_ batchEvents: Int) -> Int { max(2 * batchEvents, 2_000) }

    /// The batch to serve: what the vessel asked for, within this shore's ceilings; without an
    /// ask, the configured batch.
    func batchSize(_ request: ExchangeRequest) -> (events: Int, bytes: Int) {
        let limits = configuration.limits
        guard let ask = request.readAhead else { return (limits.batchEvents, limits.batchBytes) }
        return (min(ask.events, max(limits.batchEvents, limits.maximumBatchEvents)), min(max(ask.bytes, 4_096), max(limits.batchBytes, limits.maximumBatchBytes)))
    }

    /// The terms that answer a request's ask (nil when it did not ask: a vessel before read-ahead
    /// would refuse them): where the events follow from and this shore's ceilings.
    func terms(_ request: ExchangeRequest, after: Int64) -> ReadAheadTerms? {
        guard request.readAhead != nil else { return nil }
        let limits = configuration.limits
        return ReadAheadTerms(after: after, maximumEvents: max(limits.batchEvents, limits.maximumBatchEvents), maximumBytes: max(limits.batchBytes, limits.maximumBatchBytes))
    }

    /// The response carrying one catch-up page (``CatchUp``): more always follows.
    private func catchUpResponse(_ answer: CatchUp.Answer, acknowledged: Int64, request: ExchangeRequest, clockFloor: Int64, db: DatabaseSession) async throws -> ExchangeResponse {
        var response = ExchangeResponse(shore: configuration.nodeID, acknowledged: acknowledged, events: answer.events, cursor: answer.cursor, more: true,
                                        clockFloor: clockFloor,
                                        maximumChangeBytes: Int64(configuration.limits.maximumChangeBytes), catchUp: answer.progress)
        response.readAhead = terms(request, after: request.cursor)
        response.bulk = answer.bulk
        return response
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
}

