import FleetSyncCore
import Foundation
import NIOCore
import PostgresNIO

/// Applies a bulk catch-up page (``CatchUpBulkPage``) on a vessel. The page is checked whole
/// first (``CatchUpBulkCheck``: refused, nothing applied, when it cannot be read as rows). Then,
/// when every section can be copied in as it is and the key range each covers holds no row
/// here, the rows are copied straight in (COPY, one transaction with the cursor), with each
/// row's clock object as the shore stored it. Otherwise (a row already here, which must merge
/// by the usual rules; a column or a type that differs from the shore's; a clock the event path
/// would refuse; a value COPY refuses) the page is applied as events through the ``Applier``,
/// exactly as a page of events would be.
public struct CatchUpBulkWriter: Sendable {
    public var schema: LocalSchema
    public var session: DatabaseSession
    public var telemetry: TelemetryWriter
    /// The shore's node id (its answers name it).
    public var shore: String
    /// The peer name the vessel keeps the shore's cursor under.
    public var sender: String

    public init(schema: LocalSchema, session: DatabaseSession, telemetry: TelemetryWriter, shore: String, sender: String) {
        self.schema = schema
        self.session = session
        self.telemetry = telemetry
        self.shore = shore
        self.sender = sender
    }

    /// What applying a page did: the report, and how many rows were copied straight in.
    public struct Outcome: Sendable {
        public var report: ApplyReport
        public var copied: Int
        /// Why the page went as events (nil: copied).
        public var asEvents: String?
    }

    /// A copy that found a row in its key range (or a row error): the page goes as events.
    private struct NotCopied: Error {
        var reason: String
    }

    /// Applies `page` and advances the cursor to `cursor`, in one transaction when copied.
    public func apply(_ page: CatchUpBulkPage, cursor: Int64) async throws -> Outcome {
        let ceiling = try await ClockBound.ceiling(on: session)
        let checked = try CatchUpBulkCheck(schema: schema, shore: shore, clockCeiling: ceiling).check(page)
        var reason = checked.first { !$0.copyable }.map { "table \($0.section.table): \($0.notCopyable!)" }
        if reason == nil {
            do {
                let copied = try await copy(checked, cursor: cursor)
                var applier = Applier(schema: schema, session: session, telemetry: telemetry)
                applier.shoreNode = shore
                var report = ApplyReport()
                report.appliedRows = copied
                if copied > 0 { report.waitingApplied = try await applier.retryWaiting() }
                return Outcome(report: report, copied: copied, asEvents: nil)
            } catch let error as NotCopied {
                reason = error.reason
            } catch let error as DatabaseError where Applier.isRowError(error) {
                reason = "a row was refused by COPY (\(error.message)); applied as events to isolate it"
            }
        }
        var applier = Applier(schema: schema, session: session, telemetry: telemetry)
        applier.shoreNode = shore
        let rows = try checked.flatMap { try events(of: $0) }
        let report = try await applier.apply(rows, from: sender, cursor: cursor)
        return Outcome(report: report, copied: 0, asEvents: reason)
    }

    /// Copies every section in, after one probe each that its key range holds no row here.
    private func copy(_ sections: [CatchUpBulkCheck.Section], cursor: Int64) async throws -> Int {
        let schema = self.schema, sender = self.sender
        return try await session.transaction { db in
            try await Applier.markApplying(on: db)
            for setting in CatchUpReader.pinnedSettings { try await db.execute(setting, context: "pinning the text of values for a bulk catch-up page") }
            var copied = 0
            var highest: Int64 = 0
            for checked in sections where checked.section.rows > 0 {
                let section = checked.section
                let physical = schema.tables[section.table]!
                let qualified = SQL.qualified(physical.schema, physical.name)
                var binds = PostgresBindings()
                binds.append(section.ids.first!)
                binds.append(section.ids.last!)
                let held = try await db.rows("SELECT 1 FROM \(qualified) t WHERE t.id >= $1 AND t.id <= $2 LIMIT 1", binds,
                                             context: "probing for local rows in a bulk catch-up page's key range of \(section.table)")
                guard held.isEmpty else { throw NotCopied(reason: "table \(section.table) holds rows in the page's key range; they merge as events") }
                try await Self.copy(checked, physical: physical, on: db)
                copied += section.rows
                highest = max(highest, checked.versions.max() ?? 0)
            }
            try await Applier.advanceClock(past: highest, on: db)
            try await Applier.advance(peer: sender, cursor: cursor, on: db)
            return copied
        }
    }

    /// The COPY of one section: each row's id, its values as sent, its version, tombstone and
    /// clock object, in pieces of about 1 MiB.
    static func copy(_ checked: CatchUpBulkCheck.Section, physical: PhysicalTable, on db: DatabaseSession) async throws {
        let section = checked.section
        let columns = ["id"] + section.columns.map(\.name) + ["sync_version", "is_deleted", "sync_clock"]
        try await db.copy(into: physical.schema, physical.name, columns: columns, context: "copying a bulk catch-up page into \(section.table)") { sink in
            var piece = ByteBuffer()
            piece.reserveCapacity(1 << 20 + 4_096)
            for row in 0..<section.rows {
                piece.writeString(section.ids[row].lowercasedText)
                piece.writeInteger(UInt8(0x09))
                section.values.withUnsafeBufferPointer { piece.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[checked.lines[row]])) }
                piece.writeInteger(UInt8(0x09))
                piece.writeString(String(checked.versions[row]))
                piece.writeString(checked.deleted[row] ? "\tt\t" : "\tf\t")
                var escaped: [UInt8] = []
                section.clocks.withUnsafeBufferPointer { CopyText.append(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[checked.clockLines[row]]), to: &escaped) }
                piece.writeBytes(escaped)
                piece.writeInteger(UInt8(0x0A))
                if piece.readableBytes >= 1 << 20 {
                    try await sink.write(piece)
                    piece.clear()
                }
            }
            if piece.readableBytes > 0 { try await sink.write(piece) }
        }
    }

    /// The section's rows as events, as the shore would have sent them: each column's value
    /// from its text (a JSON column's value wrapped as capture wraps it, any other as a string
    /// its type reads back), each field's clock from the row's clock object (a missing or
    /// malformed one: the shore's lowest, as the shore's reader gives it).
    func events(of checked: CatchUpBulkCheck.Section) throws -> [ChangeEvent] {
        let section = checked.section
        var clocks = ClockReader(fallback: shore)
        var events: [ChangeEvent] = []
        events.reserveCapacity(section.rows)
        for row in 0..<section.rows {
            let context = "reading row \(row + 1) of a bulk catch-up page of \(section.table)"
            let clockText = String(decoding: section.clocks[checked.clockLines[row]], as: UTF8.self)
            let members = try CatchUpReader.members(of: clockText, what: "clocks")
            let texts = try Self.fields(section.values[checked.lines[row]], table: section.table, row: row)
            var fields: [String: FieldChange] = [:]
            for (i, column) in section.columns.enumerated() {
                var value: JSONValue = .null
                if let text = texts[i] {
                    if ColumnCodec.isJSON(column.type) {
                        do { value = .array([try JSONParser.parse(text)]) } catch { throw DatabaseError(context: context, message: "column \(column.name) is not JSON: \(error)") }
                    } else {
                        value = .string(text)
                    }
                }
                fields[column.name] = FieldChange(value: value, clock: clocks.clock(members[column.name]))
            }
            if let tombstone = members[ChangeEvent.deletedField] {
                fields[ChangeEvent.deletedField] = FieldChange(value: .bool(section.deleted[row]), clock: clocks.clock(tombstone))
            }
            events.append(ChangeEvent(table: section.table, rowID: section.ids[row], fields: fields, origin: shore, originPosition: 0))
        }
        return events
    }

    /// A line's fields, unescaped (nil: NULL); the line was checked (``CatchUpBulkCheck/lines``).
    static func fields(_ line: ArraySlice<UInt8>, table: String, row: Int) throws(CatchUpBulkError) -> [String?] {
        var fields: [String?] = []
        var current: [UInt8] = []
        var null = false
        var i = line.startIndex
        func finish() throws(CatchUpBulkError) {
            if null {
                fields.append(nil)
            } else {
                guard let text = String(validating: current, as: UTF8.self) else {
                    throw CatchUpBulkError(table: table, row: row, reason: "a value is not valid UTF-8")
                }
                fields.append(text)
            }
            current.removeAll(keepingCapacity: true)
            null = false
        }
        while i < line.endIndex {
            let b = line[i]
            if b == 0x09 {
                try finish()
            } else if b == 0x5C {
                i += 1
                switch line[i] {
                case 0x4E: null = true
                case 0x74: current.append(0x09)
                case 0x6E: current.append(0x0A)
                case 0x72: current.append(0x0D)
                default: current.append(0x5C)
                }
            } else {
                current.append(b)
            }
            i += 1
        }
        try finish()
        return fields
    }
}
