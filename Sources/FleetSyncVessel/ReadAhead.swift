import FleetSyncCore
import FleetSyncTransport
import Foundation
import Logging
import Synchronization

/// The sizes of the batches a vessel sends (upload) and asks for (download), each a
/// ``BatchSizer`` fed by what its exchanges took. Shared by the copies of one `VesselSync`.
public final class BatchSizing: Sendable {
    private let sizers: Mutex<(upload: BatchSizer, download: BatchSizer)>

    public init(_ configuration: FleetSyncConfiguration) {
        let limits = configuration.limits
        let sizer = BatchSizer(events: limits.batchEvents, bytes: limits.batchBytes, maximumEvents: limits.maximumBatchEvents,
                               maximumBytes: limits.maximumBatchBytes, adaptive: configuration.vessel?.adaptiveBatch ?? true)
        sizers = Mutex((sizer, sizer))
    }

    public var upload: BatchSizer { sizers.withLock { $0.upload } }
    public var download: BatchSizer { sizers.withLock { $0.download } }
    func sent(seconds: Double, full: Bool) { sizers.withLock { $0.upload.observe(seconds: seconds, full: full) } }
    func received(seconds: Double, full: Bool) { sizers.withLock { $0.download.observe(seconds: seconds, full: full) } }
    func failed() { sizers.withLock { $0.upload.failed(); $0.download.failed() } }
    func limit(_ terms: ReadAheadTerms) {
        sizers.withLock {
            $0.upload.limit(events: terms.maximumEvents, bytes: terms.maximumBytes)
            $0.download.limit(events: terms.maximumEvents, bytes: terms.maximumBytes)
        }
    }
}

/// A read-ahead could not be sent without the database (its token needs renewing): the next
/// ordinary exchange does it.
public struct ReadAheadUnavailable: Error, Sendable {
    public var reason: String
}

/// Read-ahead (docs/PROTOCOL.md, *Read-ahead and batch size*): while a backlog drains and the
/// vessel has nothing to send, the request for the next batch goes out while the vessel applies
/// the batch it has, so that the link, the shore's queue read and the vessel's apply overlap.
/// The request carries the cursor the vessel has applied (what the shore records and judges its
/// writes by) and asks for the events after the batch in hand. An answer that is not exactly the
/// batch after it (another shore, a catch-up, a restore, a failure) is dropped before anything
/// of it is applied: the next ordinary exchange asks again.
struct ReadAhead: Sendable {
    let sync: VesselSync
    /// The exchange's own request: a read-ahead is a copy with no events.
    let request: ExchangeRequest
    let clock: Int64
    /// The cursor applied so far: the batch being applied is not yet.
    var durableCursor: Int64
    var channel: VesselChannel.Prepared?

    /// How long one exchange keeps reading ahead before it ends (the daemon's deadline bounds
    /// the whole), at most a quarter of the request timeout.
    var budgetSeconds: Double {
        min(15, Double(sync.configuration.vessel?.requestTimeoutSeconds ?? 120) / 4)
    }

    init(sync: VesselSync, request: ExchangeRequest, clock: Int64, durableCursor: Int64) {
        self.sync = sync
        self.request = request
        self.clock = clock
        self.durableCursor = durableCursor
    }

    /// The request for the batch after `response`'s, ready to send without the database, when
    /// reading ahead is worth it and allowed; nil otherwise. Reads the token now, before the
    /// session is busy applying.
    mutating func plan(after response: ExchangeResponse, elapsed: Double) async throws -> Plan? {
        guard response.more, response.catchUp == nil, response.readAhead != nil, response.clockFloor <= clock, elapsed < budgetSeconds else { return nil }
        // A local change committed meanwhile goes first: the vessel applies nothing newer while
        // a write it made earlier is unsent (its cursor says which partition it had seen).
        guard try await !localChangesWait() else { return nil }
        if channel == nil {
            channel = try await VesselChannel(configuration: sync.configuration, session: sync.session, transport: sync.transport).prepared()
        }
        guard let channel else { return nil }
        var next = request
        next.exchangeID = UUID()
        next.cursor = durableCursor
        next.events = []
        next.holdIncoming = false
        next.waitSeconds = 0
        let size = sync.sizing.download
        next.readAhead = ReadAheadAsk(after: response.cursor, events: size.events, bytes: size.bytes)
        return Plan(channel: channel, frame: MessageFraming.encode(next), after: response.cursor, limits: sync.responseLimits, logger: sync.logger)
    }

    /// ``plan(after:elapsed:)``, with a failure (the keys or the token unreadable) ending the
    /// read-ahead rather than the exchange: the answer in hand is applied all the same.
    mutating func planOrNone(after response: ExchangeResponse, elapsed: Double) async -> Plan? {
        do {
            return try await plan(after: response, elapsed: elapsed)
        } catch {
            sync.logger.debug("no read-ahead", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Whether this vessel has changes of its own waiting to be sent (captured or sequenced):
    /// the exchange began with none, and acknowledged ones have left the outbox.
    func localChangesWait() async throws -> Bool {
        try await sync.session.rows("""
            SELECT EXISTS (SELECT 1 FROM fleetsync.capture_log) OR EXISTS (SELECT 1 FROM fleetsync.outbox)
            """, context: "looking for local changes to send")[0].value(0)
    }

    /// A read-ahead request, sealed and sent by ``fetch()``.
    struct Plan: Sendable {
        var channel: VesselChannel.Prepared
        var frame: [UInt8]
        var after: Int64
        var limits: WireLimits
        var logger: Logger

        /// Sends the request and decodes the answer; nil on any failure (logged by the caller's
        /// next exchange, which asks again).
        func fetch() async -> Answer? {
            let started = ContinuousClock.now
            do {
                let (bytes, sent, received) = try await channel.send(frame, limits: limits)
                let (response, batch) = try MessageFraming.decodeResponseBatch(bytes, limits: limits)
                return Answer(response: response, received: batch, sent: sent, receivedBytes: received, started: started)
            } catch {
                logger.debug("read-ahead failed; the next exchange asks again", metadata: ["after": "\(after)", "error": "\(error)"])
                return nil
            }
        }
    }

    static func fetch(_ plan: Plan?) async -> Answer? {
        await plan?.fetch()
    }

    struct Answer: Sendable {
        var response: ExchangeResponse
        var received: WireEventBatch
        var sent: Int
        var receivedBytes: Int
        var started: ContinuousClock.Instant
    }

    /// The answer, once `applied` (the batch before it) is applied, when it is exactly the batch
    /// after it; nil (dropped, nothing applied) otherwise.
    mutating func accept(_ answer: Answer?, after applied: ExchangeResponse) -> Answer? {
        guard let answer else { return nil }
        let response = answer.response
        guard response.readAhead?.after == applied.cursor, response.catchUp == nil, response.shore == applied.shore,
              response.acknowledged <= request.upTo, response.clockFloor <= clock, response.cursor >= applied.cursor else {
            sync.logger.debug("a read-ahead answer was not the batch after the one applied; dropped", metadata: ["after": "\(applied.cursor)"])
            return nil
        }
        if let terms = response.readAhead { sync.sizing.limit(terms) }
        durableCursor = applied.cursor
        return answer
    }
}

extension ContinuousClock.Instant {
    /// Seconds from this instant to now.
    var secondsElapsed: Double {
        let elapsed = duration(to: .now).components
        return Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
    }
}
