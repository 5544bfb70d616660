import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import PostgresNIO

/// The shore answered with another node id than the one this vessel has synced with.
public struct ShoreMismatch: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// A long poll ended by the daemon before its answer came (a local change to send, a stop).
public struct LongPollAbandoned: Error, Sendable {}

/// What one exchange did.
public struct ExchangeOutcome: Sendable {
    public var sent: Int
    public var received: Int
    /// More waits on either side: exchange again at once.
    public var pending: Bool
    public var bytesSent = 0
    public var bytesReceived = 0
    /// Received changes that wait for a row they reference, and that went to the dead-letter queue.
    public var waiting = 0
    public var deadLettered = 0
    /// Earlier waiting changes that applied after this exchange.
    public var waitingApplied = 0
    /// Pending changes re-clocked because the shore knew higher clocks of this vessel (a restore).
    public var reclocked = 0
    /// This exchange brought the last page of a catch-up from table state.
    public var caughtUp = false
    /// Batches that were asked for while the one before applied (read-ahead), each one more
    /// exchange with the shore inside this one.
    public var readAheads = 0
    /// Batches of this vessel's own changes read while the one before was at the shore and sent
    /// after it (send-ahead), each one more exchange with the shore inside this one.
    public var sentAhead = 0
    /// The shore knew clocks of this vessel above its own: its database went back (a restore).
    public var restoreDetected = false

    mutating func add(received count: Int, report: ApplyReport, caughtUp done: Bool) {
        received += count
        waiting += report.waiting
        deadLettered += report.deadLettered
        waitingApplied += report.waitingApplied
        caughtUp = caughtUp || done
    }
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
    /// The batch sizes this vessel sends and asks for (``BatchSizing``); a daemon keeps one
    /// across its reconnections.
    public var sizing: BatchSizing
    static let peer = "shore"

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, session: DatabaseSession, telemetry: TelemetryWriter, transport: any ExchangeTransport, logger: Logger) {
        self.sizing = BatchSizing(configuration)
        self.configuration = configuration
        self.schema = schema
        self.session = session
        self.telemetry = telemetry
        self.transport = transport
        self.logger = logger
    }

    /// The vessel's pending events after `acknowledged`, merged per row (compaction). A change
    /// larger than the batch budget goes alone; one larger than the shore accepts
    /// (`shoreMaximumChangeBytes`, from its answers) cannot ever be delivered and goes to the
    /// dead-letter queue instead of blocking every change behind it.
    public func pendingEvents(after acknowledged: Int64, shoreMaximumChangeBytes: Int64 = 0, limit: Int? = nil, byteBudget: Int? = nil) async throws -> (events: [ChangeEvent], upTo: Int64, more: Bool, setAside: Int) {
        let reader = OutboxReader(session: session)
        let limit = limit ?? configuration.limits.batchEvents
        // A chunk at a time, ahead of what is read: a backlog of 100,000 captured changes no
        // longer waits whole before its first batch goes.
        let sequenced = try await reader.sequence(chunk: max(2 * limit, 2_000))
        let budget = byteBudget ?? configuration.limits.batchBytes
        var changes = try await reader.read(after: acknowledged, limit: limit, byteBudget: budget)
        var setAside = 0
        while let first = changes.first, shoreMaximumChangeBytes > 0, first.bytes > Self.largestSendable(shoreMaximumChangeBytes) {
            try await self.setAside(first.change, bytes: first.bytes, shoreLimit: shoreMaximumChangeBytes)
            setAside += 1
            changes = try await reader.read(after: acknowledged, limit: limit, byteBudget: budget)
        }
        var byRow: [String: [UUID: ChangeEvent]] = [:]
        var order: [(String, UUID)] = []
        var bytes = 0
        var upTo = acknowledged
        var stoppedEarly = false
        for (change, size) in changes {
            if upTo > acknowledged && bytes + size > budget {
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
        return (events, upTo, stoppedEarly || changes.count == limit || sequenced.full, setAside)
    }

    /// The largest change (its text, as the outbox reader measures it) that fits a request the
    /// shore accepts: the shore reads one change of up to three times its stored limit.
    static func largestSendable(_ shoreLimit: Int64) -> Int { Int(shoreLimit) * 3 }

    /// Moves an outgoing change the shore can never accept out of the outbox, into the
    /// dead-letter queue with the reason (it stays applied here; `dlq list` shows it).
    func setAside(_ change: CapturedChange, bytes: Int, shoreLimit: Int64) async throws {
        guard let table = configuration.table(named: change.table) else { return }
        let event = change.event(node: configuration.nodeID, role: .vessel, table: table)
        let error = DatabaseError(context: "sending a change to the shore", message: "change of \(bytes) bytes exceeds what the shore accepts (\(shoreLimit) bytes, [limits] max_change_bytes on the shore); it stays applied on this vessel but cannot be delivered: raise the shore's limit and retry, or discard")
        var binds = PostgresBindings()
        binds.append(change.position)
        try await session.transaction { tx in
            try await DeadLetterQueue.add(event, sender: configuration.nodeID, error: error, on: tx)
            try await tx.execute("DELETE FROM fleetsync.outbox WHERE pos = $1", binds, context: "removing an undeliverable change from the outbox")
        }
        await telemetry.record(kind: "undeliverable_change", detail: .object([
            "table": .string(change.table), "row_id": .string(change.rowID.lowercasedText), "bytes": .number(String(bytes)),
            "shore_limit": .number(String(shoreLimit))]))
        logger.error("a change larger than the shore accepts went to the dead-letter queue", metadata: [
            "table": "\(change.table)", "row": "\(change.rowID.lowercasedText)", "bytes": "\(bytes)", "shore_limit": "\(shoreLimit)"])
    }

    /// The vessel's cursor, what the shore acknowledged, the shore's node id once known and the
    /// largest change it accepts (0 until it has answered).
    func state() async throws -> (cursor: Int64, acknowledged: Int64, shore: String?, maximumChangeBytes: Int64) {
        var binds = PostgresBindings()
        binds.append(Self.peer)
        try await session.execute("INSERT INTO fleetsync.sync_state (peer) VALUES ($1) ON CONFLICT DO NOTHING", binds, context: "registering the shore")
        let rows = try await session.rows("SELECT cursor, acknowledged, node_id, max_change_bytes FROM fleetsync.sync_state WHERE peer = $1", binds, context: "reading the sync state")
        return try rows[0].decode((Int64, Int64, String?, Int64).self)
    }

    /// Bounds for decoding the shore's answers: a change of up to this node's own
    /// `max_change_bytes` must fit.
    var responseLimits: WireLimits {
        var limits = WireLimits()
        limits.maximumStringBytes = max(limits.maximumStringBytes, configuration.limits.maximumChangeBytes)
        limits.maximumBodyBytes = max(limits.maximumBodyBytes, configuration.limits.maximumChangeBytes * 3 + 1_048_576)
        return limits
    }

    /// One request/response with the shore. Exchanges of one vessel run one at a time (the
    /// daemon and a manual `fleetsync sync --once` may both try): a response applied after another
    /// exchange has moved past it could bring back a row an offboarding removed.
    ///
    /// With `longPoll`, an exchange that has nothing to send asks the shore to hold its answer
    /// until something arrives for this vessel (or `seconds`); `abandon`, checked ten times a
    /// second while the answer is awaited, ends the wait (a local change to send, a stop) with
    /// ``LongPollAbandoned`` before anything was applied: the shore's answer is dropped and
    /// everything in it comes again.
    ///
    /// While a backlog drains, the exchange reads ahead (``ReadAhead``): up to
    /// `maximumReadAheads` further batches, each asked for while the one before applies.
    public func exchangeOnce(longPoll: LongPoll? = nil, maximumReadAheads: Int = .max) async throws -> ExchangeOutcome {
        try await session.withLock(Self.exchangeLock, context: "holding this vessel's exchange lock") {
            try await exchangeHoldingTheLock(longPoll: longPoll, maximumReadAheads: maximumReadAheads)
        }
    }

    /// A long poll's bounds (docs/PROTOCOL.md, *Long poll*).
    public struct LongPoll: Sendable {
        public var seconds: Int
        public var abandon: @Sendable () -> Bool
        public init(seconds: Int, abandon: @escaping @Sendable () -> Bool) {
            self.seconds = seconds
            self.abandon = abandon
        }
    }

    /// The advisory lock one exchange of the vessel holds.
    public static let exchangeLock = "fleetsync.exchange"

    /// Drops the events the shore acknowledged up to $1 (binds: that position, the peer), in the
    /// transaction that records the acknowledgement: only those after the acknowledgement
    /// recorded before, which took every event up to it. `pos <= $1` alone read the position
    /// index from its start, through the entries of every event dropped since the last vacuum,
    /// and visited each one's row, since a snapshot older than those deletes (any session's
    /// running transaction) keeps PostgreSQL from marking them dead: each exchange's delete cost
    /// as much as all before it, 18.7 ms an exchange while a 100,000-event backlog drained, as
    /// long as sequencing it (docs/BENCHMARKS.md, *Outbox deletes*; `min(pos)` as the lower
    /// bound walks the same entries).
    public static let dropAcknowledgedSQL = """
        DELETE FROM fleetsync.outbox WHERE pos > (SELECT coalesce(max(acknowledged), 0) FROM fleetsync.sync_state WHERE peer = $2) AND pos <= $1
        """

    /// One upload's request, read from the outbox and encoded before it is sent.
    struct Upload: Sendable {
        var pending: (events: [ChangeEvent], upTo: Int64, more: Bool, setAside: Int)
        var clock: Int64
        var request: ExchangeRequest
        var bytes: [UInt8]
        /// The shore's change size limit the batch was read under.
        var shoreMaximumChangeBytes: Int64
        /// The status this request reports, less the events it sends: what a batch sent ahead
        /// reports (``prepareUpload(cursor:after:shoreMaximumChangeBytes:longPoll:status:)``).
        var statusAfter: VesselStatus? = nil
    }

    /// The request for the pending events after `acknowledged`; `longPoll` only when it sends
    /// nothing. `status`: what the request reports, when read already (a batch sent ahead reports
    /// its exchange's status less what went before it: counting a backlog's pending events took
    /// a scan of the outbox and the capture log, 19 ms for every batch of a 100,000-change backlog).
    func prepareUpload(cursor: Int64, after acknowledged: Int64, shoreMaximumChangeBytes: Int64, longPoll: LongPoll?, status known: VesselStatus? = nil) async throws -> (Upload, poll: LongPoll?) {
        var pending = try await pendingEvents(after: acknowledged, shoreMaximumChangeBytes: shoreMaximumChangeBytes, limit: sizing.upload.events, byteBudget: sizing.upload.bytes)
        // A change larger than a batch, before the shore has said how large a change it takes:
        // this exchange asks (sends nothing) so that the next one knows.
        if shoreMaximumChangeBytes == 0, pending.events.count == 1, try await firstChangeIsLarge(after: acknowledged) {
            pending = ([], acknowledged, true, 0)
        }
        let clock = try await ClockRecovery.current(on: session)
        let status: VesselStatus
        if let known { status = known } else { status = try await VesselStatus.read(on: session) }
        var statusAfter = status
        statusAfter.pendingEvents = max(0, status.pendingEvents - (pending.upTo - acknowledged))
        var request = ExchangeRequest(
            vesselID: configuration.nodeID, cursor: cursor, events: pending.events, upTo: pending.upTo, clock: clock, holdIncoming: pending.more,
            status: ["pending": .number(String(status.pendingEvents)), "dead_letters": .number(String(status.deadLetters)),
                     "quarantined": .number(String(status.quarantinedRows)), "waiting": .number(String(status.waiting)),
                     "transport": .string(transport.name)].merging(CatchUpProgress.bulkAnnouncement) { a, _ in a }.merging(status.catchUp.map { ["catch_up": $0] } ?? [:]) { a, _ in a }
                .merging(status.lastVerify.map { ["last_verify": VerifyReport.reported($0)] } ?? [:]) { a, _ in a })
        // The batch this vessel takes (docs/PROTOCOL.md, *Read-ahead and batch size*).
        let download = sizing.download
        request.readAhead = ReadAheadAsk(after: cursor, events: download.events, bytes: download.bytes)
        let poll = pending.events.isEmpty && !pending.more ? longPoll.flatMap { $0.seconds > 0 ? $0 : nil } : nil
        request.waitSeconds = poll?.seconds ?? 0
        return (Upload(pending: pending, clock: clock, request: request, bytes: MessageFraming.encode(request), shoreMaximumChangeBytes: shoreMaximumChangeBytes,
                       statusAfter: statusAfter), poll)
    }

    private func exchangeHoldingTheLock(longPoll: LongPoll?, maximumReadAheads: Int) async throws -> ExchangeOutcome {
        let initial = try await state()
        let cursor = initial.cursor
        var (acknowledged, knownShore, shoreMaximumChangeBytes) = (initial.acknowledged, initial.shore, initial.maximumChangeBytes)
        var (upload, poll) = try await prepareUpload(cursor: cursor, after: acknowledged, shoreMaximumChangeBytes: shoreMaximumChangeBytes, longPoll: longPoll)
        // Sealed to the pinned shore, with this vessel's token (VesselChannel).
        let channel = try VesselChannel(configuration: configuration, session: session, transport: transport)
        let wire = WireCount()
        let responseLimits = self.responseLimits
        var sent = 0, setAside = 0, sentAhead = 0
        // While more of this vessel's own changes wait than one batch holds, the next batch is
        // read and encoded while the shore applies this one, and goes out once this one is
        // acknowledged (SendAhead.swift).
        let maySendAhead = configuration.vessel?.sendAhead ?? true
        while true {
            let started = ContinuousClock.now
            let ahead = maySendAhead && upload.pending.more && sentAhead < maximumReadAheads ? await SendAhead.channel(channel, logger: logger) : nil
            let answered: ([UInt8], ExchangeResponse, WireEventBatch)
            let following: Upload?
            let (sentUpTo, limit, abandon, statusAfter) = (upload.pending.upTo, shoreMaximumChangeBytes, poll?.abandon, upload.statusAfter)
            do {
                (answered, following) = try await SendAhead.send(upload.bytes, through: ahead, preparing: { [cursor] in
                    try await prepareUpload(cursor: cursor, after: sentUpTo, shoreMaximumChangeBytes: limit, longPoll: nil, status: statusAfter).0
                }, otherwise: { bytes in
                    try await Self.abandoning(abandon) {
                        try await sendRetryingBusy(bytes, via: { try await channel.send($0, limits: $1) }, counting: wire, limits: responseLimits)
                    }
                }, counting: wire, limits: responseLimits, sync: self)
            } catch let error where !(error is LongPollAbandoned) {
                sizing.failed()
                throw error
            }
            let (responseBytes, response, received) = answered
            let pending = upload.pending
            let clock = upload.clock
            let request = upload.request
            let requestBytes = upload.bytes
            if !pending.events.isEmpty { sizing.sent(seconds: started.secondsElapsed, full: pending.more) }
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
                knownShore = response.shore
            }
            if response.maximumChangeBytes != shoreMaximumChangeBytes {
                var limit = PostgresBindings()
                limit.append(Self.peer)
                limit.append(response.maximumChangeBytes)
                try await session.execute("UPDATE fleetsync.sync_state SET max_change_bytes = $2 WHERE peer = $1", limit, context: "recording the shore's change size limit")
                shoreMaximumChangeBytes = response.maximumChangeBytes
            }
            if let terms = response.readAhead { sizing.limit(terms) }
            // The shore holds clocks of this vessel's writes above its clock: the database went back
            // (a restore). The shore applied nothing; pending changes get clocks past the floor and
            // go again.
            var reclocked = 0
            if response.clockFloor > clock {
                logger.warning("the shore knows clocks of this vessel above its own: restored from a backup? moving the clocks of pending changes past them", metadata: [
                    "clock": "\(clock)", "floor": "\(response.clockFloor)"])
                reclocked = try await ClockRecovery(schema: schema, session: session, nodeID: configuration.nodeID)
                    .moveClocks(past: response.clockFloor, pendingAfter: acknowledged)
                await telemetry.record(kind: "clock_moved_past_shore_floor", detail: .object([
                    "clock": .number(String(clock)), "floor": .number(String(response.clockFloor)), "reclocked": .number(String(reclocked))]))
            }
            // Acknowledged events leave the outbox only now.
            var binds = PostgresBindings()
            binds.append(response.acknowledged)
            binds.append(Self.peer)
            try await session.transaction { tx in
                try await tx.execute(Self.dropAcknowledgedSQL, binds, context: "dropping acknowledged events")
                try await tx.execute("UPDATE fleetsync.sync_state SET acknowledged = greatest(acknowledged, $1) WHERE peer = $2", binds, context: "recording the acknowledgement")
            }
            sent += pending.events.count
            setAside += pending.setAside
            // The batch read meanwhile goes next when this one was taken whole and nothing
            // else came back; otherwise it is dropped (its events stay in the outbox) and read again.
            if reclocked == 0, let next = following, SendAhead.follows(next, upload, answer: response, received: received.count, shoreMaximumChangeBytes: shoreMaximumChangeBytes) {
                acknowledged = response.acknowledged
                upload = next
                poll = nil
                sentAhead += 1
                logger.info("batch sent", metadata: [
                    "sent": "\(pending.events.count)", "bytes_sent": "\(wire.sent)", "request_bytes": "\(requestBytes.count)", "send_ahead": "\(sentAhead)"])
                continue
            }
            var outcome = ExchangeOutcome(sent: sent, received: 0, pending: pending.more || reclocked > 0)
            outcome.sentAhead = sentAhead
            outcome.reclocked = reclocked
            outcome.restoreDetected = response.clockFloor > clock
            return try await receive(outcome: outcome, response: response, received: received, responseBytes: responseBytes, request: request, requestBytes: requestBytes,
                                     clock: clock, cursor: cursor, started: started, wire: wire, setAside: setAside, maximumReadAheads: maximumReadAheads - sentAhead)
        }
    }

    /// The shore's answer to the last request of an exchange: applied, with the batches read
    /// ahead after it (``ReadAhead``).
    private func receive(outcome: ExchangeOutcome, response: ExchangeResponse, received: WireEventBatch, responseBytes: [UInt8], request: ExchangeRequest, requestBytes: [UInt8],
                         clock: Int64, cursor: Int64, started: ContinuousClock.Instant, wire: WireCount, setAside: Int, maximumReadAheads: Int) async throws -> ExchangeOutcome {
        var outcome = outcome
        let pending = (events: request.events, more: request.holdIncoming)
        let reclocked = outcome.reclocked
        // While the shore has more and this vessel nothing to send, the next batch is asked for
        // while this one applies (ReadAhead); otherwise this one is applied alone.
        var ahead = ReadAhead(sync: self, request: request, clock: clock, durableCursor: cursor)
        let mayReadAhead = configuration.vessel?.readAhead ?? true
        var current = (response: response, received: received, started: started)
        while true {
            let plan = mayReadAhead && outcome.readAheads < maximumReadAheads && pending.events.isEmpty && !pending.more && reclocked == 0 ? await ahead.planOrNone(after: current.response, elapsed: started.secondsElapsed) : nil
            async let fetched = ReadAhead.fetch(plan)
            let report = try await applyAnswer(current.response, current.received)
            if current.response.events.count > 0 || current.response.more { sizing.received(seconds: current.started.secondsElapsed, full: current.response.more) }
            outcome.add(received: current.received.count + (current.response.bulk?.rows ?? 0), report: report, caughtUp: current.response.catchUp?["done"] == .bool(true))
            logger.info("exchange done", metadata: [
                "sent": "\(outcome.sent)", "received": "\(current.received.count + (current.response.bulk?.rows ?? 0))", "applied": "\(report.appliedRows)",
                "waiting": "\(report.waiting)", "dead_letters": "\(report.deadLettered)",
                "bytes_sent": "\(wire.sent)", "bytes_received": "\(wire.received)", "request_bytes": "\(requestBytes.count)", "response_bytes": "\(responseBytes.count)",
                "cursor": "\(current.response.cursor)", "transport": "\(transport.name)", "read_ahead": "\(outcome.readAheads)"])
            guard let answer = ahead.accept(await fetched, after: current.response) else {
                outcome.pending = outcome.pending || current.response.more
                break
            }
            outcome.readAheads += 1
            wire.sent += answer.sent
            wire.received += answer.receivedBytes
            current = (answer.response, answer.received, answer.started)
        }
        outcome.bytesSent = wire.sent
        outcome.bytesReceived = wire.received
        outcome.deadLettered += setAside
        return outcome
    }

    /// Applies one answer's events with its cursor, keeps its catch-up progress and records the
    /// success.
    func applyAnswer(_ response: ExchangeResponse, _ received: WireEventBatch) async throws -> ApplyReport {
        var applier = Applier(schema: schema, session: session, telemetry: telemetry)
        applier.shoreNode = response.shore
        let report: ApplyReport
        if let bulk = response.bulk {
            report = try await CatchUpProgress.applyBulk(bulk, events: received.count, response: response, schema: schema, session: session, telemetry: telemetry, peer: Self.peer, logger: logger)
        } else {
            report = try await applier.apply(batch: received, from: Self.peer, cursor: response.cursor)
        }
        if let progress = response.catchUp { try await CatchUpProgress.record(progress, on: session) }
        var success = PostgresBindings()
        success.append(Self.peer)
        try await session.execute("UPDATE fleetsync.sync_state SET last_success = now(), last_error = NULL WHERE peer = $1", success, context: "recording success")
        return report
    }

    /// Sends a request and decodes the answer. A `busy` answer (the shore at its bound, or another
    /// exchange of this vessel in progress there: a retry racing its original) is retried with
    /// the same request a little later, a few times.
    func sendRetryingBusy(_ requestBytes: [UInt8], via send: @Sendable ([UInt8], WireLimits) async throws -> (answer: [UInt8], sent: Int, received: Int),
                          counting wire: WireCount, limits responseLimits: WireLimits) async throws -> ([UInt8], ExchangeResponse, WireEventBatch) {
        var attempt = 0
        while true {
            let (bytes, sent, received) = try await send(requestBytes, responseLimits)
            wire.sent += sent
            wire.received += received
            do {
                let (response, received) = try MessageFraming.decodeResponseBatch(bytes, limits: responseLimits)
                return (bytes, response, received)
            } catch {
                guard error.code == .busy, attempt < 3 else { throw error }
            }
            try await Task.sleep(for: .milliseconds(200 << attempt))
            attempt += 1
        }
    }

    /// Runs `work`, ended early with ``LongPollAbandoned`` when `abandon` says so (checked every
    /// 100 ms): the work is cancelled, which cancels the HTTP request in flight.
    static func abandoning<T: Sendable>(_ abandon: (@Sendable () -> Bool)?, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        guard let abandon else { return try await work() }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await work() }
            group.addTask {
                while !abandon() { try await Task.sleep(for: .milliseconds(100)) }
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            guard let value = first else { throw LongPollAbandoned() }
            return value
        }
    }

    /// Whether the first pending change is larger than the batch budget.
    func firstChangeIsLarge(after acknowledged: Int64) async throws -> Bool {
        let first = try await OutboxReader(session: session).read(after: acknowledged, limit: 1, byteBudget: nil)
        return (first.first?.bytes ?? 0) > configuration.limits.batchBytes
    }

    /// Exchanges until nothing is pending on either side, or `maximumRounds` exchanges (read-ahead
    /// ones included); `pending` says whether work was left when it stopped. `each` sees every
    /// exchange's outcome.
    public func syncUntilIdle(maximumRounds: Int = 10_000, each: (Int, ExchangeOutcome) -> Void = { _, _ in }) async throws -> (sent: Int, received: Int, pending: Bool) {
        var sent = 0, received = 0
        var pending = true
        var exchanges = 0
        for round in 0..<maximumRounds {
            guard exchanges < maximumRounds else { break }
            let outcome = try await exchangeOnce(maximumReadAheads: maximumRounds - exchanges - 1)
            exchanges += 1 + outcome.readAheads + outcome.sentAhead
            each(round + 1, outcome)
            sent += outcome.sent
            received += outcome.received
            pending = outcome.pending
            // The shore learns what this vessel applied from its next request: after an exchange
            // that brought changes, one more (usually empty) confirms them, so that the shore's
            // status and retention do not wait for the next sync.
            if !outcome.pending && outcome.received == 0 { break }
        }
        return (sent, received, pending)
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
