import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOCore

/// `fleetsync serve`: the exchange endpoint over HTTP (Hummingbird), stateless.
public struct ShoreServer: Sendable {
    public var configuration: FleetSyncConfiguration
    public var logger: Logger

    public init(configuration: FleetSyncConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The path of the exchange endpoint.
    public static let exchangePath = "/v1/exchange"

    /// Runs until SIGTERM or SIGINT, then finishes the requests in flight and stops.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        guard let shore = configuration.shore else { throw ShoreError("serve needs a [shore] section; this configuration is for a \(configuration.role.rawValue)") }
        let setup = try await DatabaseSession.connect(url: configuration.databaseURL, logger: logger)
        let schema: LocalSchema
        do {
            schema = try await LocalSchema.load(configuration: configuration, session: setup)
            await setup.close()
        } catch {
            await setup.close()
            throw error
        }
        let exchange = ShoreExchange(configuration: configuration, schema: schema, logger: logger)
        let maximumBody = exchange.limits.maximumBodyBytes + WireEnvelope.headerSize
        let configuration = self.configuration
        let logger = self.logger
        let router = Router()
        router.post(RouterPath(Self.exchangePath)) { request, _ -> Response in
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: maximumBody)
            } catch {
                let refusal = MessageFraming.encode(WireError(.tooLarge, "request body exceeds \(maximumBody) bytes"))
                return Response(status: .contentTooLarge, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: refusal)))
            }
            let session: DatabaseSession
            do {
                session = try await DatabaseSession.connect(url: configuration.databaseURL, logger: logger)
            } catch {
                logger.error("database unavailable", metadata: ["error": "\(error)"])
                let busy = MessageFraming.encode(WireError(.busy, "the shore database is unavailable; retry later"))
                return Response(status: .serviceUnavailable, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: busy)))
            }
            let telemetry = TelemetryWriter(url: configuration.databaseURL, logger: logger)
            let result = await exchange.handle(Array(buffer: body), session: session, telemetry: telemetry)
            if result.status == 200 { try? await Retention.prune(retentionDays: shore.retentionDays, on: session) }
            await telemetry.close()
            await session.close()
            return Response(status: HTTPResponse.Status(code: result.status), headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: result.body)))
        }
        router.get("/health") { _, _ -> String in "ok" }
        let (host, port) = try Self.split(shore.listen)
        var server: HTTPServerBuilder = .http1()
        if let certificate = shore.tlsCertificate, let key = shore.tlsKey {
            do {
                let tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
                server = try .http2Upgrade(tlsConfiguration: tls)
            } catch {
                throw ShoreError("cannot load TLS certificate \(certificate) or key \(key): \(error)")
            }
        }
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: "fleetsync"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: logger)
        try await app.runService()
    }

    static func split(_ listen: String) throws -> (String, Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            throw ShoreError("shore.listen \"\(listen)\" is not HOST:PORT")
        }
        return (String(listen[..<colon]), port)
    }
}

public struct ShoreError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
