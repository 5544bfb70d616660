import FleetSyncCore
import FleetSyncCrypto
import FleetSyncTestSupport
import FleetSyncTransport
import Foundation

/// One simulated vessel: a real protocol client (its own keys, enrolled on the shore; challenge,
/// ML-DSA proof and token; every request sealed with X-Wing HPKE) without a database of its own.
/// It keeps what a vessel keeps between exchanges (cursor, logical clock, outbox position,
/// catch-up progress, the ids of its partition's crew) and writes a few fields of its own rows
/// per exchange (`contact_number`, vessel-owned; `notes`, shared).
final class SimulatedVessel: @unchecked Sendable {
    let client: SealedClient
    let writesPerExchange: Int
    private var token: [UInt8] = []
    private var tokenTakenAt = Date.distantPast
    private var cursor: Int64 = 0
    private var clock: Int64 = 0
    private var position: Int64 = 0
    private var catchUp: [String: JSONValue]?
    private var crew: [UUID] = []
    private var known: Set<UUID> = []

    init(client: SealedClient, writesPerExchange: Int) {
        self.client = client
        self.writesPerExchange = writesPerExchange
    }

    var vessel: String { client.vessel }

    /// One outcome of an exchange attempt, as the recorder counts it. A long poll's answer is
    /// `polled` (its time includes the wait, so it is kept out of the latency figures); a poll
    /// ended by a local write before its answer is `abandoned`.
    enum Outcome: Sendable {
        case ok(seconds: Double, sent: Int, received: Int, more: Bool)
        case polled(seconds: Double, received: Int, more: Bool)
        case abandoned
        case failed(kind: String, seconds: Double)
    }

    /// One exchange: a fresh token when needed (challenge and proof), then the sealed request
    /// with this vessel's writes, then what the answer changes (cursor, clock, crew).
    /// `writing`: false for an exchange that only fetches (more to come). `poll`: a long poll as the daemon sends when it has nothing to send (no writes, the shore
    /// may hold the answer that many seconds), abandoned at `abandonAt` (a local write commits:
    /// the daemon cancels the request and exchanges at once; the answer is dropped).
    func exchange(writing: Bool = true, poll: Int? = nil, abandonAt: ContinuousClock.Instant? = nil) async -> Outcome {
        let start = ContinuousClock.now
        func seconds() -> Double {
            let d = ContinuousClock.now - start
            return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }
        do {
            if Date().timeIntervalSince(tokenTakenAt) > Double(AccessToken.lifetimeSeconds) / 2 {
                token = try await client.token()
                tokenTakenAt = Date()
            }
            let events = writing && poll == nil ? writes() : []
            // As the daemon: it reads catch-up pages in bulk form and says so in every request.
            var status: [String: JSONValue] = ["pending": .number("\(events.count)"),
                                               CatchUpBulkPage.statusKey: .number("\(CatchUpBulkPage.version)")]
            if let catchUp { status["catch_up"] = .object(catchUp) }
            var request = ExchangeRequest(vesselID: vessel, cursor: cursor, events: events, upTo: position, clock: clock, status: status)
            request.waitSeconds = poll ?? 0
            guard let response = try await send(request, abandonAt: abandonAt) else { return .abandoned }
            take(response)
            let more = response.more || response.catchUp != nil
            if poll != nil { return .polled(seconds: seconds(), received: response.events.count, more: more) }
            return .ok(seconds: seconds(), sent: events.count, received: response.events.count, more: more)
        } catch let error as WireError {
            // The writes are sent again next time (a real vessel keeps them in its outbox);
            // an expired or refused token is taken anew.
            if error.code == .tokenExpired || error.code == .unauthenticated { tokenTakenAt = .distantPast }
            return .failed(kind: "\(error.code)", seconds: seconds())
        } catch let error as TransportError {
            let text = error.description
            let kind = text.contains("did not answer") ? "transport: no answer in time" : text.contains("cannot reach") ? "transport: cannot reach" : "transport"
            return .failed(kind: kind, seconds: seconds())
        } catch {
            return .failed(kind: "\(type(of: error))", seconds: seconds())
        }
    }

    /// The request sent, or nil when `abandonAt` came first (the request is cancelled, as the
    /// daemon's is).
    private func send(_ request: ExchangeRequest, abandonAt: ContinuousClock.Instant?) async throws -> ExchangeResponse? {
        let client = self.client, token = self.token
        guard let abandonAt else { return try await client.exchange(request, token: token) }
        return try await withThrowingTaskGroup(of: ExchangeResponse?.self) { group in
            group.addTask { try await client.exchange(request, token: token) }
            group.addTask {
                try await Task.sleep(until: abandonAt, clock: .continuous)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
    }

    /// This exchange's writes: `writesPerExchange` fields of rows of the vessel's partition, each
    /// with the next clock of the vessel and the next outbox position.
    private func writes() -> [ChangeEvent] {
        guard !crew.isEmpty, catchUp == nil else { return [] }
        var events: [ChangeEvent] = []
        for i in 0..<min(writesPerExchange, crew.count) {
            clock += 1
            position += 1
            let column = i % 2 == 0 ? "contact_number" : "notes"
            let row = crew[Int.random(in: 0..<crew.count)]
            events.append(ChangeEvent(table: "seafarer", rowID: row,
                                      fields: [column: FieldChange(value: .string("\(vessel) write \(position)"), clock: FieldClock(counter: clock, node: vessel))],
                                      origin: vessel, originPosition: position))
        }
        return events
    }

    /// What a vessel keeps of an answer: its new cursor and catch-up progress, its clock moved
    /// past every clock received (Lamport), and which crew rows its partition now has (from
    /// events, and from a bulk catch-up page's rows).
    private func take(_ response: ExchangeResponse) {
        cursor = response.cursor
        catchUp = response.catchUp
        for section in response.bulk?.sections ?? [] where section.table == "seafarer" {
            if let highest = Self.highestCounter(section.clocks), highest > clock, highest - clock < 1 << 40 { clock = highest }
            for (row, deleted) in zip(section.ids, section.deleted) {
                if deleted {
                    if known.remove(row) != nil { crew.removeAll { $0 == row } }
                } else if known.insert(row).inserted {
                    crew.append(row)
                }
            }
        }
        for event in response.events where event.table == "seafarer" {
            if let highest = event.maximumClock?.counter, highest > clock, highest - clock < 1 << 40 { clock = highest }
            if event.offboard || event.isTombstone {
                if known.remove(event.rowID) != nil { crew.removeAll { $0 == event.rowID } }
            } else if known.insert(event.rowID).inserted {
                crew.append(event.rowID)
            }
        }
    }

    /// The highest counter in a bulk page's clock objects (`{"name": [counter, "node"], ...}`,
    /// one per line): each counter is the number after a `[`.
    static func highestCounter(_ clocks: [UInt8]) -> Int64? {
        var highest: Int64?
        var i = 0
        while i < clocks.count {
            defer { i += 1 }
            guard clocks[i] == UInt8(ascii: "[") else { continue }
            var n: Int64 = 0, digits = 0
            while i + 1 < clocks.count, clocks[i + 1] >= UInt8(ascii: "0"), clocks[i + 1] <= UInt8(ascii: "9"), digits < 18 {
                i += 1
                n = n * 10 + Int64(clocks[i] - UInt8(ascii: "0"))
                digits += 1
            }
            if digits > 0 { highest = max(highest ?? n, n) }
        }
        return highest
    }
}
