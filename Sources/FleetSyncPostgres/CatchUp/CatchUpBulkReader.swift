import FleetSyncCore
import Foundation
import NIOCore
import PostgresNIO

/// Reads a whole-partition catch-up page in bulk form (``CatchUpBulkPage``): each column's value
/// as PostgreSQL's own text of it, escaped for COPY as it streams in, and each row's clock
/// object as its stored text. No event, no JSON value and no dictionary is built per row or per
/// field: the bytes the database sends are the bytes the vessel copies in.
///
/// The text of some types depends on session settings (dates, intervals, floating point,
/// bytea); the page is read in a transaction that pins them (``pinnedSettings``), and the vessel
/// copies with the same ones, so that every value reads back exactly.
extension CatchUpReader {
    /// `SET LOCAL` statements that fix the text of values on both sides of a bulk page.
    public static let pinnedSettings = [
        "SET LOCAL DateStyle = 'ISO, YMD'", "SET LOCAL IntervalStyle = 'postgres'", "SET LOCAL extra_float_digits = 1",
        "SET LOCAL bytea_output = 'hex'", "SET LOCAL TimeZone = 'UTC'",
    ]

    /// The next page of a whole partition after `start` in bulk form: at most `limit` rows and
    /// about `byteBudget` bytes of row text (the first row goes whatever its size).
    public func bulkPage(vessel: String, from start: CatchUpPosition, limit: Int, byteBudget: Int) async throws -> Page {
        try await session.transaction { tx in
            for setting in Self.pinnedSettings { try await tx.execute(setting, context: "pinning the text of values for a bulk catch-up page") }
            let reader = CatchUpReader(configuration: configuration, schema: schema, session: tx)
            return try await reader.bulkPageInTransaction(vessel: vessel, from: start, limit: limit, byteBudget: byteBudget)
        }
    }

    private func bulkPageInTransaction(vessel: String, from start: CatchUpPosition, limit: Int, byteBudget: Int) async throws -> Page {
        var page = Page(next: start.phase == 0 ? CatchUpPosition(phase: 1, rank: 0, id: nil) : start)
        var sections: [CatchUpBulkPage.Section] = []
        var bytes = 0
        var rows = 0
        while !page.next.isEnd && rows < limit && (rows == 0 || bytes < byteBudget) {
            let here = page.next
            guard here.rank < tables.count else {
                page.next = .end
                continue
            }
            let table = self.table(at: here.rank, phase: 1)
            let (section, size, exhausted) = try await bulkRows(of: table, vessel: vessel, after: here.id, limit: limit - rows,
                                                              budget: byteBudget - bytes, alone: rows == 0)
            if section.rows > 0 { sections.append(section) }
            rows += section.rows
            bytes += size
            page.next = exhausted ? CatchUpPosition(phase: 1, rank: here.rank + 1, id: nil) : CatchUpPosition(phase: 1, rank: here.rank, id: section.ids.last ?? here.id)
            if !exhausted { break }
        }
        page.rows = rows
        page.bulk = CatchUpBulkPage(sections: sections)
        return page
    }

    /// Rows of `table` in the partition after `id` as one section; `exhausted` when the table
    /// has no more. The database builds the section whole, in one result row: the ids (16
    /// bytes each), the tombstone flags, the clock objects and the COPY lines, each aggregated
    /// in key order, so that no row or field passes through this process one by one (decoding
    /// 50,000 rows of cells was most of the shore's own work for a page).
    func bulkRows(of table: TableConfiguration, vessel: String, after id: UUID?, limit: Int, budget: Int, alone: Bool) async throws
        -> (section: CatchUpBulkPage.Section, bytes: Int, exhausted: Bool) {
        let columns = schema.tables[table.name]!.syncedColumns
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(id)
        binds.append(Int64(limit + 1))
        binds.append(Int64(max(budget, 0)))
        binds.append(Int64(limit))
        binds.append(alone)
        // COPY text of one value: backslash, tab, newline and carriage return escaped, NULL as \N.
        func escaped(_ value: String) -> String {
            "coalesce(replace(replace(replace(replace(\(value), '\\', '\\\\'), E'\\t', '\\t'), E'\\n', '\\n'), E'\\r', '\\r'), '\\N')"
        }
        let values = columns.map { "r.\(SQL.identifier($0.name))::text" }
        let line = "concat_ws(E'\\t', \(values.map(escaped).joined(separator: ", ")))"
        let sizes = "octet_length(t.line) + octet_length(t.clocks) + 19"
        let sql = """
            SELECT count(*), count(*) FILTER (WHERE take), coalesce(sum(bytes) FILTER (WHERE take), 0)::bigint,
                   string_agg(uuid_send(id), ''::bytea) FILTER (WHERE take),
                   string_agg(CASE WHEN deleted THEN '\\x01'::bytea ELSE '\\x00'::bytea END, ''::bytea) FILTER (WHERE take),
                   string_agg(clocks || E'\\n', '') FILTER (WHERE take),
                   string_agg(line || E'\\n', '') FILTER (WHERE take)
            FROM (
              SELECT q.*, n <= $5 AND ((n = 1 AND $6) OR before + bytes <= $4) AS take FROM (
                SELECT t.*, row_number() OVER w AS n, sum(\(sizes)) OVER w - (\(sizes)) AS before, (\(sizes))::bigint AS bytes FROM (
                  SELECT r.id, \(line) AS line, r.is_deleted AS deleted, coalesce(r.sync_clock::text, '{}') AS clocks
                  FROM \(qualified(table)) r
                  WHERE ($2::uuid IS NULL OR r.id > $2::uuid) AND \(partition(table, vessel: "$1"))
                  ORDER BY r.id LIMIT $3
                ) t WINDOW w AS (ORDER BY t.id ROWS UNBOUNDED PRECEDING)
              ) q ORDER BY q.id
            ) z
            """
        var section = CatchUpBulkPage.Section(table: table.name, columns: columns.map { CatchUpBulkPage.Column(name: $0.name, type: $0.type) })
        let context = "reading a bulk catch-up section of \(table.name) for \(vessel)"
        let rows = try await session.rows(sql, binds, context: context)
        let row = rows[0]
        let fetched: Int64 = try row.value(0, context: context)
        let taken: Int64 = try row.value(1, context: context)
        let bytes: Int64 = try row.value(2, context: context)
        let cells = Array(row)
        func bytesOf(_ index: Int) -> [UInt8] {
            guard var buffer = cells[index].bytes else { return [] }
            return buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        let ids = bytesOf(3), flags = bytesOf(4)
        section.clocks = bytesOf(5)
        section.values = bytesOf(6)
        guard ids.count == Int(taken) * 16, flags.count == Int(taken) else {
            throw DatabaseError(context: context, message: "the section's ids or flags do not match its \(taken) rows")
        }
        section.ids.reserveCapacity(Int(taken))
        ids.withUnsafeBytes { raw in
            for i in 0..<Int(taken) {
                var uuid: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                withUnsafeMutableBytes(of: &uuid) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[i * 16..<(i + 1) * 16])) }
                section.ids.append(UUID(uuid: uuid))
            }
        }
        section.deleted = flags.map { $0 == 1 }
        // The aggregates follow the ordered subquery; a section out of key order would be refused
        // by the vessel: say so here instead.
        for i in section.ids.indices.dropFirst() where !CatchUpBulkCheck.ascending(section.ids[i - 1], section.ids[i]) {
            throw DatabaseError(context: context, message: "the section's rows did not come in key order")
        }
        return (section, Int(bytes), fetched == taken && fetched <= Int64(limit))
    }
}

/// PostgreSQL's COPY text format, byte by byte.
public enum CopyText {
    /// Appends one field's text (nil: SQL NULL, `\N`), escaping backslash, tab, newline and
    /// carriage return.
    public static func append(_ value: ByteBuffer?, to out: inout [UInt8]) {
        guard let value else {
            out.append(0x5C)
            out.append(0x4E)
            return
        }
        value.withUnsafeReadableBytes { raw in append(raw, to: &out) }
    }

    public static func append(_ raw: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        if !raw.contains(where: { $0 == 0x5C || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            out.append(contentsOf: raw)
            return
        }
        for byte in raw {
            switch byte {
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x09: out.append(0x5C); out.append(0x74)
            case 0x0A: out.append(0x5C); out.append(0x6E)
            case 0x0D: out.append(0x5C); out.append(0x72)
            default: out.append(byte)
            }
        }
    }
}
