import FleetSyncCore
import FleetSyncCrypto
import FleetSyncTransport
import Foundation
import XCTest

/// Issue 17's wire and crypto figures (a benchmark, not a timed test: only the byte budget is
/// asserted). `swift test -c release --filter SealingBenchmarkTests` prints them; recorded in
/// docs/BENCHMARKS.md.
final class SealingBenchmarkTests: XCTestCase {
    func testSealedWireBytesAndCryptoTimePerExchange() throws {
        var events: [ChangeEvent] = []
        for i in 0..<1000 {
            let value = JSONValue.string("+351 91\(i % 10) 000 \(1000 + i)")
            let clock = FieldClock(counter: Int64(5000 + i), node: "aurora")
            events.append(ChangeEvent(table: "seafarer", rowID: UUID(), fields: ["contact_number": FieldChange(value: value, clock: clock)],
                                      origin: "aurora", originPosition: Int64(5000 + i), baseVersion: Int64(4990 + i)))
        }
        let shoreKeys = try NodeKeys.generate(), vesselKeys = try NodeKeys.generate()
        let shorePublic = shoreKeys.sealing.publicKey.rawRepresentation, vesselPublic = vesselKeys.sealing.publicKey.rawRepresentation
        let secret = secureRandomBytes(32)
        let token = AccessToken(vessel: "aurora", issuedAt: Int64(Date().timeIntervalSince1970)).encoded(secret: secret)
        let request = ExchangeRequest(vesselID: "aurora", cursor: 0, events: events, upTo: 6000)
        let plain = MessageFraming.encode(request)
        let response = MessageFraming.encode(ExchangeResponse(shore: "shore", acknowledged: 6000, events: [], cursor: 0, more: false))

        func sealedRequest() throws -> (frame: [UInt8], binding: [UInt8]) {
            var w = WireWriter()
            w.varint(UInt64(token.count))
            w.raw(token)
            w.raw(plain)
            let sealed = try Sealing.seal(w.bytes, vessel: "aurora", exchangeID: request.exchangeID, direction: .vesselToShore, to: shorePublic)
            return (MessageFraming.frameRaw(.sealedRequest, body: sealed.body), sealed.answerBinding)
        }
        let (frame, _) = try sealedRequest()
        let sealedAnswer = try Sealing.seal(response, vessel: "aurora", exchangeID: request.exchangeID, direction: .shoreToVessel, to: vesselPublic, binding: [])
        let answerFrame = MessageFraming.frameRaw(.sealedResponse, body: sealedAnswer.body)

        // Crypto time of one exchange: the vessel seals, the shore opens and checks the token and
        // seals its answer, the vessel opens it.
        let rounds = 50
        let started = Date()
        for _ in 0..<rounds {
            let (frame, binding) = try sealedRequest()
            let envelope = try WireEnvelope.decode(frame, limits: { var l = WireLimits(); l.maximumBodyBytes += 4_096; return l }())
            let opened = try Sealing.open(envelope.body, direction: .vesselToShore, with: shoreKeys.sealing)
            var r = WireReader(opened.plaintext)
            _ = try AccessToken.verify(try r.fixed(try r.count(limit: 200, what: "t"), what: "t"), secret: secret, now: Int64(Date().timeIntervalSince1970))
            XCTAssertEqual(opened.answerBinding, binding)
            let answer = try Sealing.seal(response, vessel: "aurora", exchangeID: opened.header.exchangeID, direction: .shoreToVessel, to: vesselPublic, binding: opened.answerBinding)
            _ = try Sealing.open(answer.body, direction: .shoreToVessel, with: vesselKeys.sealing, binding: binding)
        }
        let perExchange = Date().timeIntervalSince(started) / Double(rounds) * 1_000
        // Authentication (once per token): the vessel signs a challenge, the shore verifies.
        let nonce = secureRandomBytes(32)
        let authStarted = Date()
        for _ in 0..<rounds {
            let signature = try ChallengeProof.sign(shore: "shore", vessel: "aurora", nonce: nonce, with: vesselKeys.identity)
            XCTAssertTrue(ChallengeProof.verify(signature, shore: "shore", vessel: "aurora", nonce: nonce, signingKey: vesselKeys.identity.publicKey.rawRepresentation))
        }
        let perAuthentication = Date().timeIntervalSince(authStarted) / Double(rounds) * 1_000

        let requestOverhead = frame.count - plain.count, answerOverhead = answerFrame.count - response.count
        print("sealing: token \(token.count) bytes; request +\(requestOverhead) bytes, response +\(answerOverhead) bytes, \(requestOverhead + answerOverhead) bytes added per exchange")
        print("sealing: wire bytes per single-column update at batch 1,000, compressed and sealed: \(Double(frame.count) / 1000) (unsealed \(Double(plain.count) / 1000))")
        print(String(format: "sealing: crypto time per exchange %.2f ms (seal, open, token check, seal answer, open answer); per authentication %.2f ms (ML-DSA-65 sign + verify)", perExchange, perAuthentication))
        XCTAssertLessThanOrEqual(Double(frame.count) / 1000, 40, "the brief's wire budget")
    }
}
