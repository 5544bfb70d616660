import AsyncHTTPClient
import FleetSyncCore
import Foundation
import NIOCore
import NIOSSL

/// Carries one framed exchange request to the shore and brings back the framed answer. The
/// vessel always opens the connection. HTTP/1.1 and HTTP/2 (cleartext or TLS) sit behind this
/// interface now; HTTP/3 comes behind the same one.
public protocol ExchangeTransport: Sendable {
    /// What the transport is, for logs and status (e.g. "http/1.1").
    var name: String { get }
    func send(_ request: [UInt8]) async throws -> [UInt8]
}

/// The shore could not be reached or answered with something that is not a FleetSync message.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// HTTP/1.1 or HTTP/2 (negotiated over TLS by ALPN) to `POST {shore_url}/v1/exchange`.
public final class HTTPExchangeTransport: ExchangeTransport {
    public let endpoint: String
    public let timeout: TimeAmount
    public let maximumResponseBytes: Int
    private let client: HTTPClient

    public var name: String { endpoint.hasPrefix("https") ? "https (http/2 or http/1.1)" : "http/1.1" }

    /// - Parameter trustedCertificates: PEM file of certificates to trust instead of the system's.
    /// - Parameter path: the endpoint under `shoreURL` (the key rotation message goes to `v1/keys`).
    public init(shoreURL: String, timeout: TimeAmount = .seconds(120), maximumResponseBytes: Int = 64 * 1_048_576, trustedCertificates: String? = nil,
                path: String = "v1/exchange") throws {
        self.endpoint = shoreURL.hasSuffix("/") ? shoreURL + path : shoreURL + "/" + path
        self.timeout = timeout
        self.maximumResponseBytes = maximumResponseBytes
        self.client = try Self.makeClient(timeout: timeout, trustedCertificates: trustedCertificates)
    }

    /// An HTTP client whose connect timeout is min(10 s, `timeout`) and read timeout `timeout`,
    /// trusting the certificates in `trustedCertificates` (PEM) instead of the system's if given.
    static func makeClient(timeout: TimeAmount, trustedCertificates: String?) throws -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(min(10, max(1, timeout.nanoseconds / 1_000_000_000))), read: timeout)
        if let trustedCertificates {
            var tls = TLSConfiguration.makeClientConfiguration()
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(trustedCertificates))
            } catch {
                throw TransportError("cannot read trusted certificates from \(trustedCertificates): \(error)")
            }
            configuration.tlsConfiguration = tls
        }
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Sends the request and reads the whole answer within `timeout`: the deadline covers the
    /// body too, not only the wait for the response head (a shore or a middlebox that sends the
    /// head and then a byte now and then would otherwise hold the exchange for hours).
    public func send(_ request: [UInt8]) async throws -> [UInt8] {
        let deadline = NIODeadline.now() + timeout
        var http = HTTPClientRequest(url: endpoint)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/octet-stream")
        http.body = .bytes(ByteBuffer(bytes: request))
        let response: HTTPClientResponse
        do {
            response = try await client.execute(http, deadline: deadline)
        } catch {
            throw TransportError("cannot reach the shore at \(endpoint): \(error)")
        }
        let limit = maximumResponseBytes
        let remaining = max(0, (deadline - NIODeadline.now()).nanoseconds)
        let body = try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await response.body.collect(upTo: limit) }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(remaining))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let body = first else {
                throw TransportError("the shore at \(endpoint) did not answer in full within \(timeout.nanoseconds / 1_000_000_000) s (request_timeout_seconds)")
            }
            return body
        }
        guard body.readableBytes >= WireEnvelope.headerSize else {
            throw TransportError("the shore answered HTTP \(response.status.code) without a FleetSync message")
        }
        return Array(buffer: body)
    }

    public func shutdown() async {
        try? await client.shutdown()
    }
}
