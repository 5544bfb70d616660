import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import FleetSyncVessel
import Foundation

/// A test's hand-made vessel client speaking the sealed protocol piece by piece, so that tests
/// can send what a real vessel never would (forged ids, replays, flipped bits).
struct SealedClient {
    let vessel: String
    let keys: NodeKeys
    let shore: PublicIdentity
    let transport: HTTPExchangeTransport

    init(_ node: FleetNode, fleet: Fleet, keys: NodeKeys? = nil) throws {
        vessel = node.id
        self.keys = try keys ?? NodeKeys.load(directory: node.configuration.keysDirectory!)
        shore = try PublicIdentity.load(path: fleet.shore.configuration.keysDirectory! + "/identity.pub")
        transport = try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)")
    }

    /// The answer frame decoded: an error is thrown as its ``WireError``.
    static func check(_ answer: [UInt8]) throws -> WireEnvelope {
        let envelope = try WireEnvelope.decode(answer, limits: WireLimits())
        if envelope.kind == .error { _ = try MessageFraming.decodeResponse(answer) }
        return envelope
    }

    func challenge(claiming id: String? = nil) async throws -> [UInt8] {
        var w = WireWriter()
        w.string(id ?? vessel)
        let envelope = try Self.check(try await transport.send(MessageFraming.frameRaw(.challengeRequest, body: w.bytes)))
        return Array(envelope.body.prefix(ChallengeProof.nonceBytes))
    }

    func tokenRequest(nonce: [UInt8], claiming id: String? = nil, signer: NodeKeys? = nil) throws -> [UInt8] {
        let id = id ?? vessel
        let signature = try ChallengeProof.sign(shore: shore.node, vessel: id, nonce: nonce, with: (signer ?? keys).identity)
        var w = WireWriter()
        w.string(id)
        w.raw(nonce)
        w.varint(UInt64(signature.count))
        w.raw(signature)
        return MessageFraming.frameRaw(.tokenRequest, body: w.bytes)
    }

    /// Challenge, signature, token.
    func token() async throws -> [UInt8] {
        let frame = try tokenRequest(nonce: try await challenge())
        return try openToken(try await transport.send(frame))
    }

    func openToken(_ answer: [UInt8]) throws -> [UInt8] {
        let envelope = try Self.check(answer)
        let opened = try Sealing.open(envelope.body, direction: .token, with: keys.sealing)
        var r = WireReader(opened.plaintext)
        return try r.fixed(try r.count(limit: 200, what: "token"), what: "token")
    }

    /// A sealed request frame and the binding its answer carries.
    func seal(_ request: ExchangeRequest, token: [UInt8], headerVessel: String? = nil, to recipient: Data? = nil) throws -> (frame: [UInt8], binding: [UInt8]) {
        var plaintext = WireWriter()
        plaintext.varint(UInt64(token.count))
        plaintext.raw(token)
        plaintext.raw(MessageFraming.encode(request))
        let sealed = try Sealing.seal(plaintext.bytes, vessel: headerVessel ?? vessel, exchangeID: request.exchangeID, direction: .vesselToShore,
                                      to: recipient ?? shore.sealingKey)
        return (MessageFraming.frameRaw(.sealedRequest, body: sealed.body), sealed.answerBinding)
    }

    /// Opens the shore's answer to a sealed request: the response, or its error thrown.
    func openAnswer(_ answer: [UInt8], binding: [UInt8]) throws -> ExchangeResponse {
        let envelope = try Self.check(answer)
        let opened = try Sealing.open(envelope.body, direction: .shoreToVessel, with: keys.sealing, binding: binding)
        return try MessageFraming.decodeResponse(opened.plaintext)
    }

    /// Sends `request` sealed with `token` (a fresh one if nil) and opens the answer.
    func exchange(_ request: ExchangeRequest, token: [UInt8]? = nil) async throws -> ExchangeResponse {
        var chosen = token
        if chosen == nil { chosen = try await self.token() }
        let (frame, binding) = try seal(request, token: chosen!)
        return try openAnswer(try await transport.send(frame), binding: binding)
    }

    /// The error code an answer carries, or nil when it is a response.
    func code(_ answer: [UInt8], binding: [UInt8] = []) -> WireError.Code? {
        do {
            _ = try openAnswer(answer, binding: binding)
            return nil
        } catch let error as WireError {
            return error.code
        } catch {
            return .internalError
        }
    }

    func shutdown() async { await transport.shutdown() }
}
