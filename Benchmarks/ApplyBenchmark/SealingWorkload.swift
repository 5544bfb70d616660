// WORKLOAD=sealing (issue 17: the end-to-end rate may fall by at most 5 % with sealing on): in one
// release run, the crypto of one exchange at batch 1,000 (the vessel seals its request with its
// token, the shore opens it and checks the token, seals its answer, the vessel opens it) against
// the receiver's apply of the same 1,000 single-column updates alone, which is only part of an
// exchange: the ratio is an upper bound of the rate drop.
import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation

func sealingWorkload(rounds: Int) async throws {
    print("command: WORKLOAD=sealing ROUNDS=\(rounds) swift run -c release fleetsync-apply-benchmark")
    let shoreKeys = try NodeKeys.generate(), vesselKeys = try NodeKeys.generate()
    let shorePublic = shoreKeys.sealing.publicKey.rawRepresentation, vesselPublic = vesselKeys.sealing.publicKey.rawRepresentation
    let secret = secureRandomBytes(32)
    var events: [ChangeEvent] = []
    for i in 0..<1_000 {
        let counter = Int64(5_000 + i)
        let change = FieldChange(value: JSONValue.number(String(counter)), clock: FieldClock(counter: counter, node: "aurora"))
        events.append(ChangeEvent(table: "bench_item", rowID: UUID(), fields: ["hits": change], origin: "aurora", originPosition: counter, baseVersion: counter - 10))
    }
    let request = ExchangeRequest(vesselID: "aurora", cursor: 0, events: events, upTo: 6_000)
    let plain = MessageFraming.encode(request)
    let response = MessageFraming.encode(ExchangeResponse(shore: "shore", acknowledged: 6_000, events: events, cursor: 6_000, more: false))
    var limits = WireLimits()
    limits.maximumBodyBytes += 65_536
    func oneExchange() throws {
        let token = AccessToken(vessel: "aurora", issuedAt: Int64(Date().timeIntervalSince1970)).encoded(secret: secret)
        var w = WireWriter()
        w.varint(UInt64(token.count))
        w.raw(token)
        w.raw(plain)
        let sealed = try Sealing.seal(w.bytes, vessel: "aurora", exchangeID: request.exchangeID, direction: .vesselToShore, to: shorePublic)
        let frame = MessageFraming.frameRaw(.sealedRequest, body: sealed.body)
        let envelope = try WireEnvelope.decode(frame, limits: limits)
        let opened = try Sealing.open(envelope.body, direction: .vesselToShore, with: shoreKeys.sealing)
        var r = WireReader(opened.plaintext)
        _ = try AccessToken.verify(try r.fixed(try r.count(limit: 200, what: "token byte"), what: "token"), secret: secret, now: Int64(Date().timeIntervalSince1970))
        let answer = try Sealing.seal(response, vessel: "aurora", exchangeID: opened.header.exchangeID, direction: .shoreToVessel, to: vesselPublic, binding: opened.answerBinding)
        _ = try Sealing.open(answer.body, direction: .shoreToVessel, with: vesselKeys.sealing, binding: sealed.answerBinding)
    }
    try oneExchange()
    var crypto: [Double] = []
    for _ in 0..<rounds {
        let start = ContinuousClock.now
        for _ in 0..<20 { try oneExchange() }
        let elapsed = ContinuousClock.now - start
        crypto.append((Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15) / 20)
    }
    let cryptoMs = crypto.sorted()[rounds / 2]
    let applyMs = try await updatesApplyMilliseconds(rows: 100_000, batches: 10, rounds: rounds)
    print(String(format: "sealing: crypto of one exchange at batch 1,000 %.2f ms (median of %d); the receiver's apply of those 1,000 updates alone %.1f ms: rate drop at most %.2f %% (target <= 5 %%)",
                 cryptoMs, rounds, applyMs, cryptoMs / (applyMs + cryptoMs) * 100))
}
