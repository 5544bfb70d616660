import FleetSyncCore
import Foundation
import PostgresNIO

/// Computes verify digests in SQL (docs/PROTOCOL.md, *Digest exchange*): a row's hash is the
/// first 16 hexadecimal digits of the md5 of its text over the given columns and its tombstone
/// (`row(c1, ..., is_deleted)::text`, under fixed time zone, float, date and interval settings
/// so that both sides print values alike); a range's digest is the md5 of its rows' hashes in id
/// order. On the shore the rows are those of one vessel's partition; on a vessel, its tables.
public struct RangeDigester: Sendable {
    public var configuration: FleetSyncConfiguration
    public var schema: LocalSchema
    public var session: DatabaseSession
    /// On the shore: the vessel whose partition is compared. On a vessel: nil.
    public var vessel: String?

    public init(configuration: FleetSyncConfiguration, schema: LocalSchema, session: DatabaseSession, vessel: String?) {
        self.configuration = configuration
        self.schema = schema
        self.session = session
        self.vessel = vessel
    }

    /// Synced tables present here.
    public var tables: [String] { configuration.tables.map(\.name).filter { schema.tables[$0] != nil } }

    /// The synced columns of `table` present here, sorted by name.
    public func columns(of table: String) -> [String] {
        (schema.tables[table]?.syncedColumns.map(\.name) ?? []).sorted()
    }

    /// `wanted` columns that this side has, in the given order (the columns both sides have).
    public func common(_ table: String, _ wanted: [String]) -> [String] {
        let mine = Set(columns(of: table))
        return wanted.filter { mine.contains($0) }
    }

    func hash(_ columns: [String]) -> String {
        "left(md5(row(\((columns.map { "r.\(SQL.identifier($0))" } + ["r.is_deleted"]).joined(separator: ", ")))::text), 16)"
    }

    func source(_ table: String, binds: inout PostgresBindings) -> String {
        let p = schema.tables[table]!
        let from = "\(SQL.qualified(p.schema, p.name)) r"
        guard let vessel, let configuration = configuration.table(named: table) else { return "\(from) WHERE true" }
        binds.append(vessel)
        let reader = CatchUpReader(configuration: self.configuration, schema: schema, session: session)
        return "\(from) WHERE \(reader.partition(configuration, vessel: "$\(binds.count)"))"
    }

    /// Runs `body` in a read-only transaction with the settings that fix how values print.
    func pinned<T: Sendable>(_ body: (DatabaseSession) async throws -> T) async throws -> T {
        try await session.transaction { tx in
            try await tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", context: "starting a verify snapshot")
            try await tx.execute("SELECT set_config('TimeZone', 'UTC', true), set_config('extra_float_digits', '3', true), set_config('DateStyle', 'ISO, YMD', true), set_config('IntervalStyle', 'postgres', true), set_config('bytea_output', 'hex', true)",
                                 context: "fixing how values print for verify")
            return try await body(tx)
        }
    }

    /// The summary of each range (sorted, disjoint; checked by the caller), over `columns`.
    public func summaries(_ ranges: [DigestRange], columns: [String: [String]]) async throws -> [RangeSummary] {
        try await pinned { tx in
            var result = [RangeSummary?](repeating: nil, count: ranges.count)
            for (table, indices) in Dictionary(grouping: ranges.indices, by: { ranges[$0].table }) {
                var binds = PostgresBindings()
                binds.append(indices.map { ranges[$0].lowestID })
                binds.append(indices.map { ranges[$0].highestID })
                let from = source(table, binds: &binds)
                let rows = try await tx.rows("""
                    SELECT x.n, count(h.id), coalesce(left(md5(string_agg(h.hash, '' ORDER BY h.id)), 16), '')
                    FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS x(lo, hi, n)
                    LEFT JOIN LATERAL (SELECT r.id, \(hash(columns[table] ?? self.columns(of: table))) AS hash FROM \(from) AND r.id BETWEEN x.lo AND x.hi) h ON true
                    GROUP BY x.n ORDER BY x.n
                    """, binds, context: "computing verify digests of \(table)")
                for row in rows {
                    let (n, count, digest) = try row.decode((Int64, Int64, String).self)
                    result[indices[Int(n) - 1]] = RangeSummary(count: count, digest: digest)
                }
            }
            return result.map { $0 ?? RangeSummary(count: 0, digest: "") }
        }
    }

    /// The row hashes of each range, in id order, over `columns`.
    public func rows(_ ranges: [DigestRange], columns: [String: [String]]) async throws -> [[RowHash]] {
        try await pinned { tx in
            var result = [[RowHash]](repeating: [], count: ranges.count)
            for (table, indices) in Dictionary(grouping: ranges.indices, by: { ranges[$0].table }) {
                var binds = PostgresBindings()
                binds.append(indices.map { ranges[$0].lowestID })
                binds.append(indices.map { ranges[$0].highestID })
                let from = source(table, binds: &binds)
                let rows = try await tx.rows("""
                    SELECT x.n, r.id, \(hash(columns[table] ?? self.columns(of: table)))
                    FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS x(lo, hi, n)
                    JOIN LATERAL (SELECT r.* FROM \(from) AND r.id BETWEEN x.lo AND x.hi) r ON true
                    ORDER BY x.n, r.id
                    """, binds, context: "listing verify row hashes of \(table)")
                for row in rows {
                    let (n, id, hash) = try row.decode((Int64, UUID, String).self)
                    result[indices[Int(n) - 1]].append(RowHash(id: id, hash: hash))
                }
            }
            return result
        }
    }

    /// How many rows of `table` this side compares (a vessel: its table; the shore: the
    /// vessel's partition of it), for where a walk starts (``DigestWalk/startDepth(rows:)``).
    public func rowCount(of table: String) async throws -> Int64 {
        var binds = PostgresBindings()
        let from = source(table, binds: &binds)
        return try await session.rows("SELECT count(*) FROM \(from)", binds, context: "counting the rows of \(table) to verify")[0]
            .value(0, context: "counting the rows of \(table) to verify")
    }

    /// The current version of rows `ids` of `table` in the partition, with their field clocks
    /// (as a catch-up sends them); ids outside the partition are left out.
    public func fetch(table: String, ids: [UUID]) async throws -> [ChangeEvent] {
        guard let vessel, let configuration = configuration.table(named: table) else { return [] }
        return try await CatchUpReader(configuration: self.configuration, schema: schema, session: session)
            .rows(of: configuration, ids: ids, vessel: vessel)
    }
}
