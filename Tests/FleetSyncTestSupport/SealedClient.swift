import FleetSyncCore
import FleetSyncCrypto
import FleetSyncTransport
import Foundation

/// A vessel client made by hand, speaking the sealed protocol piece by piece with the wire codec:
/// challenge, ML-DSA proof, token, X-Wing sealed requests. Tests use it to send what a real
/// vessel never would (forged ids, replays, flipped bits); the fleet load generator
/// (`Benchmarks/FleetLoad`) uses it for simulated vessels that need no database of their own.
public struct SealedClient: Sendable {
    public let vessel: String
    public let keys: NodeKeys
    public let shore: PublicIdentity
    public let transport: HTTPExchangeTransport

    public init(vessel: String, keys: NodeKeys, shore: PublicIdentity, transport: HTTPExchangeTransport) {
        self.vessel = vessel
        self.keys = keys
        self.shore = shore
        self.transport = transport
    }

    /// A client of the fleet's shore for `node`, with its own HTTP connection.
    public init(_ node: FleetNode, fleet: Fleet, keys: NodeKeys? = nil) throws {
        self.init(vessel: node.id, keys: try keys ?? NodeKeys.load(directory: node.configuration.keysDirectory!),
                  shore: try PublicIdentity.load(path: fleet.shore.configuration.keysDirectory! + "/identity.pub"),
                  transport: try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)"))
    }

    /// The answer frame decoded: an error is thrown as its ``WireError``.
    public static func check(_ answer: [UInt8]) throws -> WireEnvelope {
        let envelope = try WireEnvelope.decode(answer, limits: WireLimits())
        if envelope.kind == .error { _ = try MessageFraming.decodeResponse(answer) }
        return envelope
    }

    public func challenge(claiming id: String? = nil) async throws -> [UInt8] {
        var w = WireWriter()
        w.string(id ?? vessel)
        let envelope = try Self.check(try await transport.send(MessageFraming.frameRaw(.challengeRequest, body: w.bytes)))
        return Array(envelope.body.prefix(ChallengeProof.nonceBytes))
    }

    public func tokenRequest(nonce: [UInt8], claiming id: String? = nil, signer: NodeKeys? = nil) throws -> [UInt8] {
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
    public func token() async throws -> [UInt8] {
        let frame = try tokenRequest(nonce: try await challenge())
        return try openToken(try await transport.send(frame))
    }

    public func openToken(_ answer: [UInt8]) throws -> [UInt8] {
        let envelope = try Self.check(answer)
        let opened = try Sealing.open(envelope.body, direction: .token, with: keys.sealing)
        var r = WireReader(opened.plaintext)
        return try r.fixed(try r.count(limit: 200, what: "token"), what: "token")
    }

    /// A sealed request frame and the binding its answer carries.
    public func seal(_ request: ExchangeRequest, token: [UInt8], headerVessel: String? = nil, to recipient: Data? = nil) throws -> (frame: [UInt8], binding: [UInt8]) {
        var plaintext = WireWriter()
        plaintext.varint(UInt64(token.count))
        plaintext.raw(token)
        plaintext.raw(MessageFraming.encode(request))
        let sealed = try Sealing.seal(plaintext.bytes, vessel: headerVessel ?? vessel, exchangeID: request.exchangeID, direction: .vesselToShore,
                                      to: recipient ?? shore.sealingKey)
        return (MessageFraming.frameRaw(.sealedRequest, body: sealed.body), sealed.answerBinding)
    }

    /// Opens the shore's answer to a sealed request: the response, or its error thrown.
    public func openAnswer(_ answer: [UInt8], binding: [UInt8]) throws -> ExchangeResponse {
        let envelope = try Self.check(answer)
        let opened = try Sealing.open(envelope.body, direction: .shoreToVessel, with: keys.sealing, binding: binding)
        return try MessageFraming.decodeResponse(opened.plaintext)
    }

    /// Sends `request` sealed with `token` (a fresh one if nil) and opens the answer.
    public func exchange(_ request: ExchangeRequest, token: [UInt8]? = nil) async throws -> ExchangeResponse {
        var chosen = token
        if chosen == nil { chosen = try await self.token() }
        let (frame, binding) = try seal(request, token: chosen!)
        return try openAnswer(try await transport.send(frame), binding: binding)
    }

    /// The error code an answer carries, or nil when it is a response.
    public func code(_ answer: [UInt8], binding: [UInt8] = []) -> WireError.Code? {
        do {
            _ = try openAnswer(answer, binding: binding)
            return nil
        } catch let error as WireError {
            return error.code
        } catch {
            return .internalError
        }
    }

    public func shutdown() async { await transport.shutdown() }
}
