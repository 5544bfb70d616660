import Crypto
import FleetSyncCore
import Foundation

/// End-to-end sealing of exchange payloads with HPKE (RFC 9180, base mode),
/// `XWingMLKEM768X25519_SHA256_AES_GCM_256`: a fresh AES-256-GCM key per message, encapsulated
/// to the recipient's X-Wing (ML-KEM-768 + X25519) public key.
///
/// Body of a sealed message (the frame's body, kinds 4, 5 and 9):
/// ```
/// vessel id string | exchange id uuid | recipient key id (8 bytes) | encapsulated key (1,120) | ciphertext (+16-byte tag)
/// ```
/// The associated data is a domain label, the direction, every clear byte before the
/// encapsulated key, and for an answer the binding exported from the request's HPKE context: only
/// the holder of the shore's private key could derive it, so an answer that opens came from the
/// shore that opened this very request.
public enum Sealing {
    public enum Direction: UInt8, Sendable {
        case vesselToShore = 1, shoreToVessel = 2, token = 3
    }

    public static let ciphersuite = HPKE.Ciphersuite.XWingMLKEM768X25519_SHA256_AES_GCM_256
    public static let encapsulatedKeyBytes = 1_120
    public static let tagBytes = 16
    public static let keyIDBytes = 8
    static let info = Data("FleetSync exchange sealing, protocol 2".utf8)
    static let label = Array("FleetSync sealed v2".utf8)
    static let bindingContext = Data("FleetSync answer binding".utf8)

    /// What travels in clear in front of the encapsulated key.
    public struct Header: Sendable, Equatable {
        public var vessel: String
        public var exchangeID: UUID
        public var recipientKeyID: [UInt8]
        public init(vessel: String, exchangeID: UUID, recipientKeyID: [UInt8]) {
            self.vessel = vessel
            self.exchangeID = exchangeID
            self.recipientKeyID = recipientKeyID
        }
    }

    /// The first 8 bytes of SHA-256 of a sealing public key: names which key a message is sealed to.
    public static func keyID(_ publicKey: Data) -> [UInt8] { Array(SHA256.hash(data: publicKey).prefix(keyIDBytes)) }

    public static func keyIDText(_ id: [UInt8]) -> String { id.map { String(format: "%02x", $0) }.joined() }

    /// Bytes a sealed message adds to its plaintext besides the vessel id and the frame header.
    public static let overhead = 16 + keyIDBytes + encapsulatedKeyBytes + tagBytes

    static func clearPrefix(_ header: Header) -> [UInt8] {
        var w = WireWriter(capacity: 96)
        w.string(header.vessel)
        w.uuid(header.exchangeID)
        w.raw(header.recipientKeyID)
        return w.bytes
    }

    static func associatedData(_ direction: Direction, prefix: [UInt8], binding: [UInt8]) -> [UInt8] {
        label + [direction.rawValue] + prefix + binding
    }

    /// Seals `plaintext` to `recipient` (raw X-Wing public key). Returns the body and, for a
    /// request, the binding its answer must carry.
    public static func seal(_ plaintext: [UInt8], vessel: String, exchangeID: UUID, direction: Direction, to recipient: Data, binding: [UInt8] = []) throws -> (body: [UInt8], answerBinding: [UInt8]) {
        let key = try XWingMLKEM768X25519.PublicKey(rawRepresentation: recipient)
        let prefix = clearPrefix(Header(vessel: vessel, exchangeID: exchangeID, recipientKeyID: keyID(recipient)))
        var sender = try HPKE.Sender(recipientKey: key, ciphersuite: ciphersuite, info: info)
        let ciphertext = try sender.seal(plaintext, authenticating: associatedData(direction, prefix: prefix, binding: binding))
        let exported = try sender.exportSecret(context: bindingContext, outputByteCount: 32).withUnsafeBytes { Array($0) }
        var body = prefix
        body.reserveCapacity(prefix.count + sender.encapsulatedKey.count + ciphertext.count)
        body += sender.encapsulatedKey
        body += ciphertext
        return (body, exported)
    }

    /// Reads the clear header of a sealed body.
    public static func header(of body: [UInt8]) throws(WireError) -> (Header, prefixLength: Int) {
        var r = WireReader(body)
        let vessel = try r.string(limit: 63, what: "vessel id")
        guard Identifiers.isValidNodeID(vessel) else { throw WireError(.malformed, "sealed message names vessel id \"\(vessel.prefix(64))\", which is not a valid node id") }
        let exchangeID = try r.uuid()
        let keyID = try r.fixed(keyIDBytes, what: "recipient key id")
        let prefixLength = r.offset
        guard r.remaining >= encapsulatedKeyBytes + tagBytes else {
            throw WireError(.truncated, "sealed message is cut off: \(r.remaining) bytes after its header, at least \(encapsulatedKeyBytes + tagBytes) needed (encapsulated key and tag)")
        }
        return (Header(vessel: vessel, exchangeID: exchangeID, recipientKeyID: keyID), prefixLength)
    }

    /// Opens a sealed body with `key`; any altered, truncated or mis-addressed byte fails here,
    /// before anything is decoded. Returns the header, the plaintext and, for a request, the
    /// binding its answer carries.
    public static func open(_ body: [UInt8], direction: Direction, with key: XWingMLKEM768X25519.PrivateKey, binding: [UInt8] = []) throws(WireError) -> (header: Header, plaintext: [UInt8], answerBinding: [UInt8]) {
        let (header, prefixLength) = try header(of: body)
        let ownID = keyID(key.publicKey.rawRepresentation)
        guard header.recipientKeyID == ownID else {
            throw WireError(.sealBroken, "the message is sealed to key \(keyIDText(header.recipientKeyID)), not to this node's sealing key \(keyIDText(ownID)): the sender pins another or an older identity of this node")
        }
        let encapsulated = Data(body[prefixLength..<prefixLength + encapsulatedKeyBytes])
        let ciphertext = body[(prefixLength + encapsulatedKeyBytes)...]
        do {
            var recipient = try HPKE.Recipient(privateKey: key, ciphersuite: ciphersuite, info: info, encapsulatedKey: encapsulated)
            let plaintext = try recipient.open(ciphertext, authenticating: associatedData(direction, prefix: Array(body[..<prefixLength]), binding: binding))
            let exported = try recipient.exportSecret(context: bindingContext, outputByteCount: 32).withUnsafeBytes { Array($0) }
            return (header, Array(plaintext), exported)
        } catch {
            throw WireError(.sealBroken, "the sealed message does not open (\(direction == .vesselToShore ? "request" : "answer") of vessel \(header.vessel), exchange \(header.exchangeID.uuidString.lowercased())): altered, truncated, replayed against another exchange, or sealed with other associated data; nothing was read from it")
        }
    }
}
