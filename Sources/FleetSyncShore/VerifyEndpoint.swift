import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import Hummingbird
import NIOCore
import PostgresNIO

/// The shore's side of the digest exchange (`POST /v1/verify`, docs/PROTOCOL.md): summaries and
/// row hashes of key ranges of one vessel's partition, and the current rows (with their field
/// clocks) that a repair needs. Read-only. A request that does not fit the protocol is refused
/// with a clear error, counted in `fleetsync.verify_log`, and nothing is read. Every message is
/// sealed and carries the vessel's access token, like an exchange (``ShoreAuthority``): the
/// vessel is the token's, a message naming another vessel is refused, and answers are sealed
/// to the vessel.
public struct VerifyEndpoint: Sendable {
    public var configuration: FleetSyncConfiguration
    public var schema: LocalSchema
    public var logger: Logger
    public var authority: ShoreAuthority?

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, logger: Logger, authority: ShoreAuthority? = nil) {
        self.authority = authority
        self.configuration = configuration
        self.schema = schema
        self.logger = logger
    }

    public static let path = "/v1/verify"

    /// Answers one framed message: (HTTP status, framed answer).
    /// - Parameter authenticated: the vessel the message's token proved; the message must name it.
    public func handle(_ body: [UInt8], session: DatabaseSession, authenticated: String? = nil) async -> (status: Int, body: [UInt8]) {
        var vessel: String?
        do {
            let request = try VerifyFraming.decode(body)
            guard let id = request["vessel"]?.stringValue, Identifiers.isValidNodeID(id) else {
                throw DigestProtocolError("the request names no valid vessel id")
            }
            if let authenticated, authenticated != id {
                return try await refuse(403, "the request names vessel \(id) but its token is vessel \(authenticated)'s; a vessel verifies only its own partition", vessel: authenticated, session: session)
            }
            vessel = id
            var binds = PostgresBindings()
            binds.append(id)
            guard !(try await session.rows("SELECT 1 FROM fleetsync.vessel WHERE vessel_id = $1", binds, context: "looking up vessel \(id)")).isEmpty else {
                return try await refuse(403, "vessel \(id) is not enrolled on this shore (fleetsync enroll --vessel \(id))", vessel: id, session: session)
            }
            let answer = try await answer(request, vessel: id, session: session)
            return (200, VerifyFraming.encode(.object(answer)))
        } catch let error as DigestProtocolError {
            return (try? await refuse(400, error.description, vessel: vessel, session: session)) ?? (400, VerifyFraming.encode(.object(["error": .string(error.description)])))
        } catch {
            logger.error("verify request failed", metadata: ["vessel": "\(vessel ?? "?")", "error": "\(error)"])
            return (500, VerifyFraming.encode(.object(["error": .string("the shore could not answer the verify request; retry later")])))
        }
    }

    func refuse(_ status: Int, _ message: String, vessel: String?, session: DatabaseSession) async throws -> (status: Int, body: [UInt8]) {
        logger.warning("verify request refused", metadata: ["vessel": "\(vessel ?? "?")", "reason": "\(message)"])
        var binds = PostgresBindings()
        binds.append(JSONValue.object(["vessel": vessel.map(JSONValue.string) ?? .null, "reason": .string(message)]).serialized)
        try? await session.execute("INSERT INTO fleetsync.verify_log (kind, detail) VALUES ('refused_request', $1::jsonb)", binds, context: "counting a refused verify request")
        return (status, VerifyFraming.encode(.object(["error": .string(message)])))
    }

    static func ranges(_ value: JSONValue?) throws -> [DigestRange] {
        guard case .array(let items)? = value else { throw DigestProtocolError("\"ranges\" must be an array of [table, prefix] pairs") }
        guard items.count <= DigestRules.maximumRanges else {
            throw DigestProtocolError("\(items.count) ranges in one request; at most \(DigestRules.maximumRanges) are accepted")
        }
        return try items.map { item in
            guard case .array(let pair) = item, pair.count == 2, let table = pair[0].stringValue, let prefix = pair[1].stringValue else {
                throw DigestProtocolError("a range must be [table, prefix]")
            }
            return DigestRange(table: table, prefix: prefix)
        }
    }

    func answer(_ request: [String: JSONValue], vessel: String, session: DatabaseSession) async throws -> [String: JSONValue] {
        let digester = RangeDigester(configuration: configuration, schema: schema, session: session, vessel: vessel)
        let tables = Set(digester.tables)
        switch request["op"]?.stringValue {
        case "summaries", "rows":
            let ranges = try Self.ranges(request["ranges"])
            try DigestRules.validate(ranges, tables: tables)
            // The columns both sides have: those the vessel lists that the shore has too.
            var columns: [String: [String]] = [:]
            let wanted = request["columns"]?.objectValue ?? [:]
            for table in Set(ranges.map(\.table)) {
                let listed = wanted[table]?.arrayValue?.compactMap(\.stringValue) ?? digester.columns(of: table)
                columns[table] = digester.common(table, listed)
            }
            let used: JSONValue = .object(columns.mapValues { .array($0.map(JSONValue.string)) })
            if request["op"]?.stringValue == "summaries" {
                let summaries = try await digester.summaries(ranges, columns: columns)
                return ["summaries": .array(summaries.map { .array([.number(String($0.count)), .string($0.digest)]) }), "columns": used]
            }
            let rows = try await digester.rows(ranges, columns: columns)
            return ["rows": .array(rows.map { list in .array(list.map { .array([.string($0.id.lowercasedText), .string($0.hash)]) }) }), "columns": used]
        case "fetch":
            guard let table = request["table"]?.stringValue, tables.contains(table) else {
                throw DigestProtocolError("\"table\" must name a synced table")
            }
            guard case .array(let items)? = request["ids"], items.count <= DigestRules.maximumFetch else {
                throw DigestProtocolError("\"ids\" must be an array of at most \(DigestRules.maximumFetch) row ids")
            }
            let ids = try items.map { item -> UUID in
                guard let text = item.stringValue, let id = UUID(uuidString: text) else { throw DigestProtocolError("\"ids\" holds something that is not a row id") }
                return id
            }
            let events = try await digester.fetch(table: table, ids: ids)
            return ["events": .array(events.map(\.json))]
        default:
            throw DigestProtocolError("\"op\" must be summaries, rows or fetch")
        }
    }
}

extension VerifyEndpoint {
    /// Opens a sealed message (token checked, replay refused), answers it and seals the answer.
    /// Refusals before the vessel is known are plain framed errors, as for exchanges.
    func sealedHandle(_ body: [UInt8], session: DatabaseSession) async -> (status: Int, body: [UInt8]) {
        guard let authority else {
            return (503, MessageFraming.encode(WireError(.unauthenticated, "this shore has no keys: verify needs fleetsync keygen on the shore")))
        }
        let opened: ShoreAuthority.Opened
        let inner: [UInt8]
        do {
            let sealedOnly = WireError(.unauthenticated, "this shore answers only sealed verify messages carrying an access token (protocol version \(WireCodec.version))")
            guard let envelope = try? WireEnvelope.decode(body, limits: WireLimits()) else { throw sealedOnly }
            switch envelope.kind {
            case .sealedRequest: break
            // The vessel's channel authenticates where it sends: challenge and token as for exchanges.
            case .challengeRequest: return (200, try await authority.challenge(envelope.body, on: session))
            case .tokenRequest: return (200, try await authority.token(envelope.body, on: session))
            default: throw sealedOnly
            }
            let unsealed = try authority.unseal(envelope.body)
            opened = try await authority.authenticate(unsealed, on: session)
            inner = unsealed.inner
        } catch let error as WireError {
            logger.warning("verify request refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
            return (ShoreExchange.httpStatus(error.code), MessageFraming.encode(error))
        } catch {
            logger.error("verify request failed", metadata: ["error": "\(error)"])
            return (500, MessageFraming.encode(WireError(.internalError, "the shore could not check the verify request; retry later")))
        }
        let answer = await handle(inner, session: session, authenticated: opened.vessel)
        do {
            return (answer.status, try authority.seal(answer.body, for: opened))
        } catch {
            return (500, MessageFraming.encode(WireError(.internalError, "the shore could not seal its verify answer")))
        }
    }

    /// Adds `POST /v1/verify` to the shore's router, under the server's bounds (``PooledEndpoint``:
    /// `database_connections` and `request_timeout_seconds`, as for exchanges).
    public func install(on router: Router<BasicRequestContext>, pool: PostgresClient, timeoutSeconds: Int) {
        let endpoint = self
        PooledEndpoint.install(on: router, path: Self.path, maximumBytes: VerifyFraming.maximumBytes,
                               tooLarge: VerifyFraming.encode(.object(["error": .string("verify request larger than \(VerifyFraming.maximumBytes) bytes")])),
                               pool: pool, timeoutSeconds: timeoutSeconds, logger: logger) { body, session in
            await endpoint.sealedHandle(body, session: session)
        }
    }
}
