import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle

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
        // The shore's private keys: a key file others can read stops the server here.
        let keys = try Self.loadKeys(configuration)
        let setup = try await DatabaseSession.connect(url: configuration.databaseURL, logger: logger)
        let schema: LocalSchema
        do {
            schema = try await LocalSchema.load(configuration: configuration, session: setup)
            await setup.close()
        } catch {
            await setup.close()
            throw error
        }
        let exchange = ShoreExchange(configuration: configuration, schema: schema, logger: logger, keys: keys)
        let maximumBody = exchange.maximumMessageBytes
        let configuration = self.configuration
        let logger = self.logger
        let pool = PostgresClient(configuration: try Self.poolConfiguration(configuration.databaseURL, shore), backgroundLogger: logger)
        let gate = ExchangeGate(limit: shore.concurrentExchanges, queueLength: shore.exchangeQueueLength, queueSeconds: shore.exchangeQueueSeconds)
        let bodies = ByteBudget(maximumMessage: maximumBody)
        let memory = MemoryGiveBack()
        let retention = RetentionSchedule()
        // Long polls wait here, without a database connection (docs/PROTOCOL.md, *Long poll*).
        let probe = ShoreWorkProbe(pool: pool, logger: logger)
        let longPoll = LongPollHub(maximumWaiters: shore.longPollMaxWaiters, logger: logger) { await probe($0) }
        let router = Router()
        router.post(RouterPath(Self.exchangePath)) { request, _ -> Response in
            var request = request
            // A declared length over the limit is refused before any of the body is read.
            if let declared = request.headers[.contentLength].flatMap(Int.init), declared > maximumBody {
                return Self.answer((413, MessageFraming.encode(WireError(.tooLarge, "request body of \(declared) bytes exceeds the limit of \(maximumBody)"))))
            }
            // Bodies read at once stay within a memory budget; past it, busy before reading.
            let reserved = request.headers[.contentLength].flatMap(Int.init) ?? maximumBody
            guard bodies.reserve(reserved) else {
                return Self.busy("the shore is reading \(bodies.bytes / 1_048_576) MiB of request bodies, its limit; retry in a few seconds", retryAfter: 2)
            }
            defer { bodies.release(reserved) }
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: maximumBody)
            } catch let error as HTTPError where error.status == .contentTooLarge {
                return Self.answer((413, MessageFraming.encode(WireError(.tooLarge, "request body exceeds \(maximumBody) bytes"))))
            } catch {
                // The client stopped sending (or the connection broke) before the body ended.
                return Self.answer((400, MessageFraming.encode(WireError(.truncated, "the request body ended before its declared length"))))
            }
            // At most `concurrent_exchanges` at once, a bounded queue waiting briefly for a
            // place; past that, an answer the vessel retries.
            guard await gate.enter() else {
                return Self.busy("the shore is at its limit of \(gate.limit) exchanges in progress and \(gate.queueLength) waiting (for up to \(gate.queueSeconds) s); retry in a few seconds", retryAfter: 2)
            }
            // A parked long poll leaves the gate: it holds no database connection while it waits.
            var inGate = true
            defer { if inGate { gate.leave() } }
            // The memory a large request used is given back once it is answered.
            defer { memory.afterRequest(bodyBytes: body.readableBytes) }
            // Decoded and checked before any database connection is taken.
            let decoded: ShoreExchange.Incoming
            switch exchange.decode(Array(buffer: body)) {
            case .failure(let refusal): return Self.answer(refusal.answer)
            case .success(let request): decoded = request
            }
            let held = HeldConnection()
            let result: ShoreExchange.Reply = await withDeadline(seconds: shore.requestTimeoutSeconds, {
                do {
                    return try await pool.withConnection { connection -> ShoreExchange.Reply in
                        guard held.hold(connection) else { return .answer(status: 503, body: MessageFraming.encode(WireError(.busy, "the exchange ran out of time; retry"))) }
                        defer { held.release() }
                        let session = DatabaseSession.lent(connection, logger: logger)
                        let telemetry = TelemetryWriter(url: configuration.databaseURL, logger: logger)
                        let result = await exchange.reply(to: decoded, session: session, telemetry: telemetry, longPollMaxSeconds: shore.longPollMaxSeconds)
                        if case .answer(200, _) = result, retention.claim(othersInProgress: gate.counts.inFlight > 1, vessel: decoded.vesselID) {
                            _ = try? await Retention.prune(retentionDays: shore.retentionDays, maxEvents: shore.retentionMaxEvents, on: session)
                            retention.done()
                        }
                        await telemetry.close()
                        return result
                    }
                } catch {
                    logger.error("database unavailable", metadata: ["error": "\(error)"])
                    return .answer(status: 503, body: MessageFraming.encode(WireError(.busy, "the shore database is unavailable; retry later")))
                }
            }, onTimeout: {
                // The database did not answer in time (stopping, say): the connection is closed,
                // which fails the query in flight, and the vessel gets an answer now.
                logger.error("exchange ran out of time; its database connection is closed", metadata: [
                    "vessel": "\(decoded.vesselID)", "seconds": "\(shore.requestTimeoutSeconds)"])
                await held.abandon()
                return ShoreExchange.Reply.answer(status: 500, body: MessageFraming.encode(WireError(.internalError, "the shore could not finish the exchange within \(shore.requestTimeoutSeconds) s; retry later")))
            })
            switch result {
            case .answer(let status, let body):
                return Self.answer((status, body))
            case .park(let parked):
                gate.leave()
                inGate = false
                return Self.answer(await exchange.hold(parked, hub: longPoll, pool: pool, timeoutSeconds: shore.requestTimeoutSeconds))
            }
        }
        // Other methods on the endpoints: 405 with the one that is allowed.
        for method in [HTTPRequest.Method.get, .put, .delete, .patch] {
            router.on(RouterPath(Self.exchangePath), method: method) { _, _ -> Response in
                Response(status: .methodNotAllowed, headers: [.allow: "POST", .contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "use POST\n")))
            }
        }
        router.get("/health") { _, _ -> String in "ok" }
        VerifyEndpoint(configuration: configuration, schema: schema, logger: logger, authority: exchange.authority).install(on: router, pool: pool, timeoutSeconds: shore.requestTimeoutSeconds)
        ShoreKeyRotation(authority: exchange.authority, logger: logger).install(on: router, pool: pool, timeoutSeconds: shore.requestTimeoutSeconds)
        let (host, port) = try Self.split(shore.listen)
        // Idle or silent client connections (a half-sent request, say) are closed after the idle timeout.
        let idle = TimeAmount.seconds(Int64(shore.idleTimeoutSeconds))
        // A request's body must arrive within the request timeout, and each slice of an answer
        // be taken within it; HTTP/1.0 connections close after their answer (ConnectionBounds.swift).
        let bodySeconds = Int64(shore.requestTimeoutSeconds)
        var server = HTTPServerBuilder { responder in
            BoundedHTTP1Channel(inner: HTTP1Channel(responder: responder, configuration: .init(idleTimeout: idle)),
                                bodySeconds: bodySeconds, answerSeconds: bodySeconds)
        }
        if let certificate = shore.tlsCertificate, let key = shore.tlsKey {
            do {
                let tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
                server = try .http2Upgrade(tlsConfiguration: tls, configuration: .init(
                    idleTimeout: .seconds(shore.idleTimeoutSeconds), streamConfiguration: .init(idleTimeout: idle)))
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
        // SIGTERM: requests in flight get `shutdown_timeout_seconds` to finish, then are cancelled.
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: pool), .init(service: app, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger))
        try await Self.runBounded(group, shutdownSeconds: shore.shutdownTimeoutSeconds, logger: logger, onSignal: {
            longPoll.stop()
            gate.stop()
        })
    }

    /// Runs the server's services; once a shutdown signal arrives, the process ends within
    /// `shutdownSeconds` (plus a second) even if a request in flight never finishes.
    static func runBounded(_ group: ServiceGroup, shutdownSeconds: Int, logger: Logger, onSignal: @escaping @Sendable () -> Void = {}) async throws {
        let signals = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        signals.setEventHandler {
            onSignal()
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(shutdownSeconds + 1)) {
                logger.error("requests still in flight after the shutdown timeout; exiting", metadata: ["seconds": "\(shutdownSeconds)"])
                exit(0)
            }
        }
        signals.resume()
        defer { signals.cancel() }
        try await group.run()
    }

    /// The pool of database connections: `database_connections` at most, each opened within 10 s.
    static func poolConfiguration(_ url: String, _ shore: ShoreConfiguration) throws -> PostgresClient.Configuration {
        let endpoint = try PostgresEndpoint(url: url)
        var configuration = PostgresClient.Configuration(host: endpoint.host, port: endpoint.port, username: endpoint.user, password: endpoint.password, database: endpoint.database, tls: .disable)
        configuration.options.maximumConnections = shore.databaseConnections
        configuration.options.minimumConnections = 0
        configuration.options.connectTimeout = .seconds(10)
        // Bounds the database keeps itself: no statement outlives the request's deadline, and a
        // backend whose client went away (an abandoned exchange) notices within a second, so the
        // locks it holds (the vessel's exchange lock) are released.
        let timeout = String(shore.requestTimeoutSeconds * 1_000)
        configuration.options.additionalStartupParameters = [
            ("statement_timeout", timeout), ("idle_in_transaction_session_timeout", timeout),
            ("client_connection_check_interval", "1000"), ("application_name", "fleetsync serve"),
        ] + PostgresEndpoint.sessionSettings
        return configuration
    }

    static func answer(_ result: (status: Int, body: [UInt8])) -> Response {
        var headers: HTTPFields = [.contentType: "application/octet-stream"]
        if result.status == 503 { headers[.retryAfter] = "5" }
        return Response(status: HTTPResponse.Status(code: result.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: result.body)))
    }

    static func busy(_ message: String, retryAfter: Int) -> Response {
        Response(status: .serviceUnavailable, headers: [.contentType: "application/octet-stream", .retryAfter: "\(retryAfter)"],
                 body: .init(byteBuffer: ByteBuffer(bytes: MessageFraming.encode(WireError(.busy, message)))))
    }

    /// The shore's keys from `[keys] directory` (fleetsync keygen), refused when others can read them.
    static func loadKeys(_ configuration: FleetSyncConfiguration) throws -> NodeKeys {
        guard let directory = configuration.keysDirectory else {
            throw ShoreError("serve needs the shore's keys: set [keys] directory and run fleetsync keygen --config FILE (every exchange is sealed and authenticated; there is no unauthenticated mode)")
        }
        do {
            return try NodeKeys.loadShore(directory: directory)
        } catch {
            throw ShoreError("\(error)")
        }
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
