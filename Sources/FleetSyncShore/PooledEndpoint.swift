import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Hummingbird
import Logging
import NIOCore
import PostgresNIO

/// A sealed POST endpoint beside the exchange (`/v1/verify`, `/v1/keys`) under the same bounds:
/// a body of at most `maximumBytes`, each request on a connection of the server's pool, answered
/// within `request_timeout_seconds` (past it, its connection is closed, as for exchanges:
/// ``HeldConnection``), never a hang.
enum PooledEndpoint {
    typealias Handler = @Sendable (_ body: [UInt8], _ session: DatabaseSession) async -> (status: Int, body: [UInt8])

    static func install(on router: Router<BasicRequestContext>, path: String, maximumBytes: Int, tooLarge: [UInt8],
                        pool: PostgresClient, timeoutSeconds: Int, logger: Logger, handle: @escaping Handler) {
        router.post(RouterPath(path)) { request, _ -> Response in
            var request = request
            guard let body = try? await request.collectBody(upTo: maximumBytes) else { return reply(413, tooLarge) }
            let bytes = Array(buffer: body)
            let held = HeldConnection()
            let answer: (status: Int, body: [UInt8]) = await withDeadline(seconds: timeoutSeconds, {
                do {
                    return try await pool.withConnection { connection -> (status: Int, body: [UInt8]) in
                        guard held.hold(connection) else { return (503, MessageFraming.encode(WireError(.busy, "the request ran out of time; retry"))) }
                        defer { held.release() }
                        return await handle(bytes, DatabaseSession.lent(connection, logger: logger))
                    }
                } catch {
                    return (503, MessageFraming.encode(WireError(.busy, "the shore database is unavailable; retry later")))
                }
            }, onTimeout: {
                logger.error("request ran out of time; its database connection is closed", metadata: ["path": "\(path)", "seconds": "\(timeoutSeconds)"])
                await held.abandon()
                return (500, MessageFraming.encode(WireError(.internalError, "the shore could not answer \(path) within \(timeoutSeconds) s; retry later")))
            })
            return reply(answer.status, answer.body)
        }
    }

    static func reply(_ status: Int, _ body: [UInt8]) -> Response {
        var headers: HTTPFields = [.contentType: "application/octet-stream"]
        if status == 503 { headers[.retryAfter] = "5" }
        return Response(status: HTTPResponse.Status(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
