import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import Foundation
import Logging
import PostgresNIO

/// The shore's side of the digest walk, over the link. The first answer fixes the columns both
/// sides hash (the shore lists those of the vessel's it has too); the local side uses the same.
final class RemoteDigestSide: DigestSide, @unchecked Sendable {
    let transport: HTTPVerifyTransport
    let vessel: String
    let wanted: [String: [String]]
    private let lock = NSLock()
    private var agreed: [String: [String]] = [:]

    init(transport: HTTPVerifyTransport, vessel: String, wanted: [String: [String]]) {
        self.transport = transport
        self.vessel = vessel
        self.wanted = wanted
    }

    var columns: [String: [String]] { lock.withLock { agreed } }

    func message(_ op: String, _ ranges: [DigestRange]) -> JSONValue {
        let tables = Set(ranges.map(\.table))
        return .object([
            "vessel": .string(vessel), "op": .string(op),
            "ranges": .array(ranges.map { .array([.string($0.table), .string($0.prefix)]) }),
            "columns": .object(Dictionary(uniqueKeysWithValues: tables.map { ($0, JSONValue.array((wanted[$0] ?? []).map(JSONValue.string))) })),
        ])
    }

    func record(_ answer: [String: JSONValue]) {
        guard let used = answer["columns"]?.objectValue else { return }
        lock.withLock {
            for (table, list) in used { agreed[table] = list.arrayValue?.compactMap(\.stringValue) ?? [] }
        }
    }

    func summaries(_ ranges: [DigestRange]) async throws -> [RangeSummary] {
        let answer = try await transport.post(message("summaries", ranges))
        record(answer)
        guard let items = answer["summaries"]?.arrayValue else { throw DigestProtocolError("the shore's answer has no summaries") }
        return try items.map { item in
            guard let pair = item.arrayValue, pair.count == 2, let count = pair[0].int64Value, let digest = pair[1].stringValue else {
                throw DigestProtocolError("the shore sent a summary that is not [count, digest]")
            }
            return RangeSummary(count: count, digest: digest)
        }
    }

    func rows(_ ranges: [DigestRange]) async throws -> [[RowHash]] {
        let answer = try await transport.post(message("rows", ranges))
        record(answer)
        guard let lists = answer["rows"]?.arrayValue else { throw DigestProtocolError("the shore's answer has no rows") }
        return try lists.map { list in
            try (list.arrayValue ?? []).map { item in
                guard let pair = item.arrayValue, pair.count == 2, let text = pair[0].stringValue, let id = UUID(uuidString: text), let hash = pair[1].stringValue else {
                    throw DigestProtocolError("the shore sent a row hash that is not [id, hash]")
                }
                return RowHash(id: id, hash: hash)
            }
        }
    }

    func fetch(table: String, ids: [UUID]) async throws -> [ChangeEvent] {
        var events: [ChangeEvent] = []
        var start = 0
        while start < ids.count {
            let chunk = Array(ids[start..<min(start + DigestRules.maximumFetch, ids.count)])
            start += chunk.count
            let answer = try await transport.post(.object([
                "vessel": .string(vessel), "op": .string("fetch"), "table": .string(table), "ids": .array(chunk.map { .string($0.lowercasedText) })]))
            for item in answer["events"]?.arrayValue ?? [] { events.append(try ChangeEvent(json: item)) }
        }
        return events
    }
}

/// This vessel's own side of the digest walk.
struct LocalDigestSide: DigestSide {
    var digester: RangeDigester
    var remote: RemoteDigestSide
    func summaries(_ ranges: [DigestRange]) async throws -> [RangeSummary] { try await digester.summaries(ranges, columns: remote.columns) }
    func rows(_ ranges: [DigestRange]) async throws -> [[RowHash]] { try await digester.rows(ranges, columns: remote.columns) }
}

/// What one verify found and did.
public struct VerifyOutcome: Sendable {
    public var differences: [RowDifference]
    /// Rows the repair changed here (applied from the shore, removed, or re-sent).
    public var repaired = 0
    /// Differing rows left alone: a change of this vessel not yet sent, for one.
    public var skipped: [RowDifference] = []
    public var bytesSent = 0
    public var bytesReceived = 0
    public var roundTrips = 0
    public var rows: Int64 = 0

    public var json: JSONValue {
        .object([
            "differing": .number(String(differences.count)), "repaired": .number(String(repaired)),
            "bytes_sent": .number(String(bytesSent)), "bytes_received": .number(String(bytesReceived)),
            "bytes": .number(String(bytesSent + bytesReceived)), "round_trips": .number(String(roundTrips)),
            "differences": .array(differences.map { .object(["table": .string($0.table), "id": .string($0.id.lowercasedText), "kind": .string($0.kind.rawValue)]) }),
            "skipped": .array(skipped.map { .object(["table": .string($0.table), "id": .string($0.id.lowercasedText), "kind": .string($0.kind.rawValue)]) }),
        ])
    }
}

/// `fleetsync verify` on a vessel: compares its partition with the shore's by the digest walk
/// (``DigestWalk``), and with `repair` makes them equal through the normal apply path.
public struct Verifier: Sendable {
    public var configuration: FleetSyncConfiguration
    public var schema: LocalSchema
    public var session: DatabaseSession
    public var telemetry: TelemetryWriter
    public var transport: HTTPVerifyTransport
    public var logger: Logger

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, session: DatabaseSession, telemetry: TelemetryWriter, transport: HTTPVerifyTransport, logger: Logger) {
        self.configuration = configuration
        self.schema = schema
        self.session = session
        self.telemetry = telemetry
        self.transport = transport
        self.logger = logger
        // Digests and rows cross the link sealed, with the vessel's token, like its exchanges.
        if transport.sealer == nil {
            transport.sealer = { body in
                try await VesselChannel(configuration: configuration, session: session, transport: transport).send(body, limits: WireLimits()).answer
            }
        }
    }

    /// - Parameter reason: why the daemon runs it (stored with the result); nil when run by hand.
    public func run(repair: Bool, reason: String? = nil) async throws -> VerifyOutcome {
        let digester = RangeDigester(configuration: configuration, schema: schema, session: session, vessel: nil)
        let wanted = Dictionary(uniqueKeysWithValues: digester.tables.map { ($0, digester.columns(of: $0)) })
        let remote = RemoteDigestSide(transport: transport, vessel: configuration.nodeID, wanted: wanted)
        let before = transport.counters
        var outcome: VerifyOutcome
        do {
            // A large table starts below its root: a difference then rehashes only its ranges.
            var depths: [String: Int] = [:]
            for table in digester.tables { depths[table] = DigestWalk.startDepth(rows: try await digester.rowCount(of: table)) }
            let result = try await DigestWalk(tables: digester.tables, startDepths: depths).run(local: LocalDigestSide(digester: digester, remote: remote), remote: remote)
            outcome = VerifyOutcome(differences: result.differences)
            if repair && !result.differences.isEmpty { try await self.repair(&outcome, remote: remote) }
        } catch {
            try? await record(.object(["error": .string("\(error)"), "reason": reason.map(JSONValue.string) ?? .null]))
            throw error
        }
        let after = transport.counters
        outcome.bytesSent = after.sent - before.sent
        outcome.bytesReceived = after.received - before.received
        outcome.roundTrips = after.roundTrips - before.roundTrips
        var stored = outcome.json.objectValue!
        stored["differences"] = nil
        stored["skipped"] = .number(String(outcome.skipped.count))
        stored["repair"] = .bool(repair)
        if let reason { stored["reason"] = .string(reason) }
        try await record(.object(stored))
        logger.info("verify done", metadata: [
            "differing": "\(outcome.differences.count)", "repaired": "\(outcome.repaired)", "bytes": "\(outcome.bytesSent + outcome.bytesReceived)",
            "round_trips": "\(outcome.roundTrips)"])
        return outcome
    }

    func record(_ result: JSONValue) async throws {
        var binds = PostgresBindings()
        binds.append(result.serialized)
        try await session.execute("INSERT INTO fleetsync.sync_state (peer) VALUES ('shore') ON CONFLICT DO NOTHING", context: "registering the shore")
        try await session.execute("UPDATE fleetsync.sync_state SET last_verify = $1::jsonb || jsonb_build_object('at', now()) WHERE peer = 'shore'", binds,
                                  context: "recording the verify result")
    }

    /// Differing rows are fetched from the shore with their field clocks and merged by the usual
    /// rules through the applier. Where clocks tie and values differ (a write that bypassed
    /// capture), the field's owner wins: a shore-owned or shared field takes the shore's value
    /// (this vessel's tied clock is dropped first, so the merge takes the shore's); a
    /// vessel-owned field keeps this vessel's value, re-clocked and captured so that it reaches
    /// the shore with the next exchange. A row the shore does not hold in this partition is
    /// removed here (as an offboarding), unless it has a change not yet sent.
    func repair(_ outcome: inout VerifyOutcome, remote: RemoteDigestSide) async throws {
        let shoreNode: String? = try await session.rows("SELECT node_id FROM fleetsync.sync_state WHERE peer = 'shore'", context: "reading the shore's id").first?.value(0)
        let reader = CatchUpReader(configuration: configuration, schema: schema, session: session)
        var events: [ChangeEvent] = []
        var recapture: [(table: String, id: UUID, fields: [String])] = []
        var dropClocks: [(table: String, id: UUID, fields: [String])] = []
        for (table, differences) in Dictionary(grouping: outcome.differences, by: \.table).sorted(by: { $0.key < $1.key }) {
            guard let tableConfiguration = configuration.table(named: table) else { continue }
            let wanted = differences.filter { $0.kind != .missingOnShore }.map(\.id)
            let theirs = try await remote.fetch(table: table, ids: wanted)
            let ours = Dictionary(uniqueKeysWithValues: try await reader.rows(of: tableConfiguration, ids: wanted, vessel: nil).map { ($0.rowID, $0) })
            for event in theirs {
                var drop: [String] = [], keep: [String] = []
                if let local = ours[event.rowID] {
                    for (name, change) in event.fields {
                        guard let mine = local.fields[name], mine.clock == change.clock, mine.value != change.value else { continue }
                        if tableConfiguration.owner(of: name) == .vessel && name != ChangeEvent.deletedField { keep.append(name) } else { drop.append(name) }
                    }
                }
                if !drop.isEmpty { dropClocks.append((table, event.rowID, drop)) }
                if !keep.isEmpty { recapture.append((table, event.rowID, keep)) }
                var incoming = event
                for name in keep { incoming.fields[name] = nil }
                events.append(incoming)
            }
            for difference in differences where difference.kind == .missingOnShore {
                var binds = PostgresBindings()
                binds.append(table)
                binds.append(difference.id)
                let pending: Int64 = try await session.rows("""
                    SELECT (SELECT count(*) FROM fleetsync.outbox WHERE table_name = $1 AND row_id = $2) + (SELECT count(*) FROM fleetsync.capture_log WHERE table_name = $1 AND row_id = $2)
                    """, binds, context: "looking for unsent changes of a row")[0].value(0)
                if pending > 0 {
                    outcome.skipped.append(difference)
                    continue
                }
                events.append(ChangeEvent(table: table, rowID: difference.id, fields: [:], origin: shoreNode ?? "shore", offboard: true))
            }
        }
        try await session.transaction { tx in
            try await tx.execute("SET LOCAL fleetsync.applying = 'on'", context: "repairing without capture")
            for (table, id, fields) in dropClocks {
                let p = schema.tables[table]!
                var binds = PostgresBindings()
                binds.append(id)
                binds.append(fields)
                try await tx.execute("UPDATE \(SQL.qualified(p.schema, p.name)) SET sync_clock = sync_clock - $2::text[] WHERE id = $1", binds,
                                     context: "dropping tied clocks of \(table) \(id.lowercasedText) so that the owner's value wins")
            }
        }
        var applier = Applier(schema: schema, session: session, telemetry: telemetry)
        applier.shoreNode = shoreNode
        let report = try await applier.apply(events, from: "shore", cursor: nil)
        for (table, id, fields) in recapture { try await self.recapture(table: table, id: id, fields: fields) }
        // One log entry and one count per repaired row.
        var resent: [String: [String]] = [:]
        for (table, id, fields) in recapture { resent[table + "/" + id.lowercasedText] = fields }
        for event in events {
            if let fields = resent[event.table + "/" + event.rowID.lowercasedText] {
                try await log(table: event.table, id: event.rowID, kind: "repair_resent", detail: .object([
                    "kept_and_resent": .array(fields.map(JSONValue.string)), "applied": .array(event.fields.keys.sorted().map(JSONValue.string))]))
            } else {
                try await log(table: event.table, id: event.rowID, kind: event.offboard ? "repair_removed" : "repair_applied",
                              detail: .object(["fields": .array(event.fields.keys.sorted().map(JSONValue.string))]))
            }
        }
        outcome.repaired = events.count
        await telemetry.record(kind: "verify_repair", detail: .object([
            "rows": .number(String(outcome.repaired)), "dead_letters": .number(String(report.deadLettered)), "waiting": .number(String(report.waiting))]))
    }

    /// Gives `fields` of a row a fresh clock of this vessel and captures them, as a write would.
    func recapture(table: String, id: UUID, fields: [String]) async throws {
        let p = schema.tables[table]!
        let columns = p.syncedColumns.filter { fields.contains($0.name) }
        try await session.transaction { tx in
            try await tx.execute("SET LOCAL fleetsync.applying = 'on'", context: "re-sending a vessel-owned value")
            var binds = PostgresBindings()
            binds.append(id)
            binds.append(configuration.nodeID)
            binds.append(table)
            try await tx.execute("""
                WITH v AS (SELECT nextval('fleetsync.lamport') AS v), old AS (SELECT sync_version FROM \(SQL.qualified(p.schema, p.name)) WHERE id = $1),
                changed AS (
                  UPDATE \(SQL.qualified(p.schema, p.name)) r SET sync_version = v.v,
                    sync_clock = r.sync_clock || \(SQL.jsonObject(columns.map { "\(SQL.literal($0.name)), jsonb_build_array(v.v, $2::text)" }))
                  FROM v WHERE r.id = $1 RETURNING r.*, v.v AS fleetsync_v
                )
                INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta)
                SELECT r.fleetsync_v, $3, r.id, 'U', r.fleetsync_v, (SELECT sync_version FROM old), \(ColumnCodec.captureObject(columns, row: "r")) FROM changed r
                """, binds, context: "re-sending vessel-owned values of \(table) \(id.lowercasedText)")
        }
    }

    func log(table: String, id: UUID, kind: String, detail: JSONValue) async throws {
        var binds = PostgresBindings()
        binds.append(kind)
        binds.append(table)
        binds.append(id)
        binds.append(detail.serialized)
        try await session.execute("INSERT INTO fleetsync.verify_log (kind, table_name, row_id, detail) VALUES ($1, $2, $3, $4::jsonb)", binds, context: "logging a repair")
        logger.notice("verify repaired a row", metadata: ["table": "\(table)", "row": "\(id.lowercasedText)", "kind": "\(kind)"])
    }
}
