import AsyncHTTPClient
import FleetSyncCore
import Foundation
import NIOCore
import NIOSSL

/// The body of a digest-exchange message (docs/PROTOCOL.md, *Digest exchange*): a JSON object,
/// zlib-compressed, after a 4-byte big-endian length of the JSON text.
public enum VerifyFraming {
    /// The largest JSON text a verify message may inflate to.
    public static let maximumBytes = 16 * 1_048_576

    public static func encode(_ message: JSONValue) -> [UInt8] {
        let text = Array(message.serialized.utf8)
        let n = UInt32(text.count)
        return [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + Compression.deflate(text)
    }

    public static func decode(_ bytes: [UInt8]) throws -> [String: JSONValue] {
        guard bytes.count >= 4 else { throw DigestProtocolError("a verify message is shorter than its 4-byte length") }
        let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
        guard length <= maximumBytes else { throw DigestProtocolError("a verify message of \(length) bytes is larger than the \(maximumBytes) accepted") }
        guard let text = Compression.inflate(Array(bytes[4...]), expectedLength: length), let string = String(bytes: text, encoding: .utf8) else {
            throw DigestProtocolError("a verify message does not inflate to its stated length of UTF-8 text")
        }
        guard case .object(let object) = try JSONParser.parse(string) else { throw DigestProtocolError("a verify message is not a JSON object") }
        return object
    }
}

/// Posts digest-exchange messages to `{shore_url}/v1/verify`, counting bytes both ways.
public final class HTTPVerifyTransport: ExchangeTransport, @unchecked Sendable {
    public let endpoint: String
    let timeout: TimeAmount
    private let client: HTTPClient
    private let lock = NSLock()
    private var sent = 0, received = 0, trips = 0

    public init(shoreURL: String, timeoutSeconds: Int = 120, trustedCertificates: String? = nil) throws {
        let timeout = TimeAmount.seconds(Int64(timeoutSeconds))
        endpoint = shoreURL.hasSuffix("/") ? shoreURL + "v1/verify" : shoreURL + "/v1/verify"
        self.timeout = timeout
        client = try HTTPExchangeTransport.makeClient(timeout: timeout, trustedCertificates: trustedCertificates)
    }

    /// Bytes sent and received and requests made so far (bodies only).
    public var counters: (sent: Int, received: Int, roundTrips: Int) {
        lock.withLock { (sent, received, trips) }
    }

    public var name: String { "http verify" }

    /// Seals a message and opens the answer (the vessel's `VesselChannel`: the same token and
    /// HPKE sealing as its exchanges). Set before the first `post`; without it, messages go
    /// unsealed, which the shore refuses.
    public var sealer: (@Sendable ([UInt8]) async throws -> [UInt8])?

    /// Sends one message; a refusal from the shore (`{"error": ...}`) is thrown.
    public func post(_ message: JSONValue) async throws -> [String: JSONValue] {
        let body = VerifyFraming.encode(message)
        let answer: [UInt8]
        if let sealer { answer = try await sealer(body) } else { answer = try await send(body) }
        let decoded: [String: JSONValue]
        do {
            decoded = try VerifyFraming.decode(answer)
        } catch {
            // A refusal before the vessel was known comes as a framed error.
            do { _ = try MessageFraming.decodeResponse(answer) } catch let refusal as WireError { throw refusal } catch {}
            throw TransportError("the shore at \(endpoint) answered without a verify message: \(error)")
        }
        if let error = decoded["error"]?.stringValue { throw DigestProtocolError("the shore refused the verify request: \(error)") }
        return decoded
    }

    /// Posts raw bytes to the verify endpoint and returns the answer's bytes, counted.
    public func send(_ body: [UInt8]) async throws -> [UInt8] {
        var http = HTTPClientRequest(url: endpoint)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/octet-stream")
        http.body = .bytes(ByteBuffer(bytes: body))
        let response: HTTPClientResponse
        let answer: ByteBuffer
        do {
            response = try await client.execute(http, deadline: .now() + timeout)
            answer = try await response.body.collect(upTo: VerifyFraming.maximumBytes + 1_024)
        } catch {
            throw TransportError("cannot reach the shore at \(endpoint): \(error)")
        }
        lock.withLock {
            sent += body.count
            received += answer.readableBytes
            trips += 1
        }
        _ = response
        return Array(buffer: answer)
    }

    public func shutdown() async { try? await client.shutdown() }
}
