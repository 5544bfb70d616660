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
    /// has no more.
    func bulkRows(of table: TableConfiguration, vessel: String, after id: UUID?, limit: Int, budget: Int, alone: Bool) async throws
        -> (section: CatchUpBulkPage.Section, bytes: Int, exhausted: Bool) {
        let columns = schema.tables[table.name]!.syncedColumns
        var binds = PostgresBindings()
        binds.append(vessel)
        binds.append(id)
        binds.append(Int64(limit + 1))
        binds.append(Int64(max(budget, 0)))
        let values = columns.indices.map { "r.\(SQL.identifier(columns[$0].name))::text AS c\($0)" }
        let sizes = columns.indices.map { "coalesce(octet_length(t.c\($0)), 2) + 1" } + ["coalesce(octet_length(t.clocks), 2) + 18"]
        let output = ["id"] + columns.indices.map { "c\($0)" } + ["deleted", "clocks", "bytes"]
        let sql = """
            SELECT \(output.joined(separator: ", ")) FROM (
              SELECT q.*, row_number() OVER w AS n, sum(q.bytes) OVER w - q.bytes AS before FROM (
                SELECT t.*, (\(sizes.joined(separator: " + ")))::bigint AS bytes FROM (
                  SELECT \((["r.id"] + values + ["r.is_deleted AS deleted", "r.sync_clock::text AS clocks"]).joined(separator: ", "))
                  FROM \(qualified(table)) r
                  WHERE ($2::uuid IS NULL OR r.id > $2::uuid) AND \(partition(table, vessel: "$1"))
                  ORDER BY r.id LIMIT $3
                ) t
              ) q WINDOW w AS (ORDER BY q.id ROWS UNBOUNDED PRECEDING)
            ) z WHERE n <= 2 OR before <= $4 ORDER BY id
            """
        var section = CatchUpBulkPage.Section(table: table.name, columns: columns.map { CatchUpBulkPage.Column(name: $0.name, type: $0.type) })
        var bytes = 0
        var stopped = false
        var count = 0
        let sizeIndex = columns.count + 3
        do {
            let stream = try await session.connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: session.logger)
            for try await row in stream {
                count += 1
                // The rest of the stream is read, not decoded (ending it early would leave the
                // connection with a query in flight).
                if stopped { continue }
                let context = "reading a bulk catch-up row of \(table.name)"
                let size = Int(try row.value(sizeIndex, as: Int64.self, context: context))
                if section.rows == limit || ((!alone || section.rows > 0) && bytes + size > budget) {
                    stopped = true
                    continue
                }
                var index = 0
                for cell in row {
                    defer { index += 1 }
                    if index == 0 {
                        section.ids.append(try row.value(0, as: UUID.self, context: context))
                    } else if index <= columns.count {
                        if index > 1 { section.values.append(0x09) }
                        CopyText.append(cell.bytes, to: &section.values)
                    } else if index == columns.count + 1 {
                        section.deleted.append(try row.value(index, as: Bool.self, context: context))
                    } else if index == columns.count + 2 {
                        // A row's clock object is JSON text from jsonb: no raw newline in it.
                        if var clocks = cell.bytes { section.clocks.append(contentsOf: clocks.readBytes(length: clocks.readableBytes) ?? []) }
                        section.clocks.append(0x0A)
                    }
                }
                section.values.append(0x0A)
                bytes += size
            }
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(error, context: "reading \(table.name) rows for \(vessel)'s bulk catch-up")
        }
        return (section, bytes, !stopped && count <= limit)
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
