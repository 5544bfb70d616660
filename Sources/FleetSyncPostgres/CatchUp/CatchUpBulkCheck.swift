import FleetSyncCore
import Foundation

/// Why a bulk catch-up page (``CatchUpBulkPage``) was refused: nothing of it was applied.
public struct CatchUpBulkError: Error, Sendable, CustomStringConvertible {
    public var table: String
    public var row: Int?
    public var reason: String
    public var description: String {
        "bulk catch-up page refused, nothing applied: table \(table.prefix(100))\(row.map { ", row \($0 + 1)" } ?? ""): \(reason); the shore's page does not fit the protocol (docs/PROTOCOL.md, Bulk catch-up pages): check the shore's version and logs"
    }
}

/// The vessel's check of a bulk catch-up page, before anything is applied. It refuses the page
/// (``CatchUpBulkError``) when it cannot be read as rows at all: a row with more or fewer
/// fields than columns, an escape COPY would read otherwise than as one value (`\.` ends a copy),
/// a raw carriage return or NUL byte, keys out of order or repeated, a tracking column named as a
/// column, a clock object that is not JSON. It also decides whether the section can be copied
/// in as it is (``Section/copyable``): its table and columns are this node's synced columns with
/// the same types, and every row's clocks are complete, name valid nodes, stay within the clock
/// bound, and are fields the shore may send (``OwnershipPolicy``). A section that cannot is
/// applied as events through the usual path, with the usual checks and their usual outcomes
/// (fields not owned rejected, clocks past the bound refused, values set aside).
struct CatchUpBulkCheck {
    let schema: LocalSchema
    let shore: String
    let clockCeiling: Int64

    /// One section after the check.
    struct Section {
        var section: CatchUpBulkPage.Section
        /// Per row: its values' byte range in `section.values` (without the newline), its clock
        /// object's in `section.clocks`.
        var lines: [Range<Int>]
        var clockLines: [Range<Int>]
        /// Why the section is applied as events, or nil when it is copied in.
        var notCopyable: String?
        /// Per row, when copyable: its `sync_version` and whether it counts as deleted.
        var versions: [Int64] = []
        var deleted: [Bool] = []
        var copyable: Bool { notCopyable == nil }
    }

    func check(_ page: CatchUpBulkPage) throws(CatchUpBulkError) -> [Section] {
        try page.sections.map { section throws(CatchUpBulkError) in try check(section) }
    }

    func check(_ section: CatchUpBulkPage.Section) throws(CatchUpBulkError) -> Section {
        func refuse(_ reason: String, row: Int? = nil) -> CatchUpBulkError { CatchUpBulkError(table: section.table, row: row, reason: reason) }
        guard Identifiers.isValidSQLName(section.table) else { throw refuse("the table name is not a valid name") }
        guard !section.columns.isEmpty else { throw refuse("a section has no columns") }
        var names = Set<String>()
        for column in section.columns {
            guard Identifiers.isValidSQLName(column.name) else { throw refuse("column name \"\(column.name.prefix(64))\" is not a valid name") }
            guard !FleetSyncConfiguration.trackingColumns.contains(column.name) else { throw refuse("\(column.name) is a tracking column only FleetSync writes") }
            guard names.insert(column.name).inserted else { throw refuse("column \(column.name) appears twice") }
        }
        let rows = section.ids.count
        guard section.deleted.count == rows else { throw refuse("\(section.deleted.count) tombstone flags for \(rows) rows") }
        for i in section.ids.indices.dropFirst() where !Self.ascending(section.ids[i - 1], section.ids[i]) {
            throw refuse("row keys are not in ascending order without repeats", row: i)
        }
        let lines = try Self.lines(section.values, rows: rows, fields: section.columns.count, table: section.table)
        let clockLines = try Self.clockLines(section.clocks, rows: rows, table: section.table)
        var checked = Section(section: section, lines: lines, clockLines: clockLines)
        checked.notCopyable = copyRefusal(section)
        if checked.copyable { try checkClocks(&checked) }
        return checked
    }

    /// Why the section's columns cannot be copied in as they are, or nil.
    func copyRefusal(_ section: CatchUpBulkPage.Section) -> String? {
        guard schema.configuration.table(named: section.table) != nil, schema.tables[section.table] != nil else {
            return "table \(section.table) is not synced here"
        }
        let local = schema.writableColumns(of: section.table)
        for column in section.columns {
            guard let mine = local[column.name] else { return "column \(column.name) is not a synced column here" }
            guard mine.type == column.type else { return "column \(column.name) is \(mine.type) here, \(column.type) on the shore" }
        }
        return nil
    }

    /// Reads every row's clocks (``ClockText``): a row whose clocks are incomplete, name an
    /// invalid node, pass the bound or are not the shore's to send makes the section go as
    /// events. Sets the rows' versions and tombstones.
    private func checkClocks(_ checked: inout Section) throws(CatchUpBulkError) {
        let section = checked.section
        let table = schema.configuration.table(named: section.table)!
        let policy = OwnershipPolicy(table: table, shoreID: shore)
        let owners = section.columns.map { table.owner(of: $0.name) }
        var parser = ClockText(columns: section.columns.map(\.name), shore: shore)
        checked.versions.reserveCapacity(section.rows)
        checked.deleted.reserveCapacity(section.rows)
        for row in 0..<section.rows {
            let parsed: ClockText.Row
            do {
                parsed = try section.clocks.withUnsafeBufferPointer { try parser.parse(UnsafeBufferPointer(rebasing: $0[checked.clockLines[row]])) }
            } catch {
                checked.notCopyable = "row \(row + 1)'s clocks: \((error as? ClockText.Failure)?.reason ?? "\(error)")"
                return
            }
            var version: Int64 = 0
            for (i, clock) in parsed.clocks.enumerated() {
                guard let clock else {
                    checked.notCopyable = "row \(row + 1) has no clock for \(section.columns[i].name)"
                    return
                }
                if let refusal = ownershipRefusal(owners[i], clock: clock) {
                    checked.notCopyable = "row \(row + 1), \(section.columns[i].name): \(refusal)"
                    return
                }
                version = max(version, clock.counter)
            }
            var deleted = false
            if let tombstone = parsed.tombstone {
                let change = FieldChange(value: .bool(section.deleted[row]), clock: tombstone)
                let otherWrites = parsed.clocks.contains { $0?.node == tombstone.node && $0?.counter != 0 }
                if let refusal = policy.deletionRefusal(change, routedVessel: nil, otherWrites: otherWrites) {
                    checked.notCopyable = "row \(row + 1)'s tombstone: \(refusal)"
                    return
                }
                version = max(version, tombstone.counter)
                deleted = section.deleted[row] && RowState(fields: parsed.fields(section.columns.map(\.name), tombstone: change)).isDeleted(table.tombstone)
            }
            guard version <= clockCeiling else {
                checked.notCopyable = "row \(row + 1): " + ClockBound.refusal(counter: version, ceiling: clockCeiling)
                return
            }
            checked.versions.append(version)
            checked.deleted.append(deleted)
        }
    }

    /// What ``OwnershipPolicy`` says of a field the shore sends (nil: accepted).
    private func ownershipRefusal(_ owner: FieldOwner, clock: FieldClock) -> String? {
        guard clock.counter != 0 else { return nil }
        switch owner {
        case .shared: return nil
        case .shore: return clock.node == shore ? nil : "field is owned by the shore"
        case .vessel: return clock.node == shore ? "field is owned by the vessel the row is routed to, not the shore" : nil
        }
    }

    /// UUIDs in PostgreSQL's order (bytes, unsigned), strictly ascending.
    static func ascending(_ a: UUID, _ b: UUID) -> Bool {
        withUnsafeBytes(of: a.uuid) { x in
            withUnsafeBytes(of: b.uuid) { y in
                for i in 0..<16 where x[i] != y[i] { return x[i] < y[i] }
                return false
            }
        }
    }

    /// The byte ranges of `rows` lines of `fields` tab-separated COPY fields each, refusing
    /// anything COPY would read otherwise: escapes other than `\\`, `\t`, `\n`, `\r` and a whole
    /// `\N`, raw carriage returns, NUL bytes, a missing final newline or extra bytes.
    static func lines(_ text: [UInt8], rows: Int, fields: Int, table: String) throws(CatchUpBulkError) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(rows)
        var error: CatchUpBulkError?
        text.withUnsafeBufferPointer { bytes in
            var i = 0
            let n = bytes.count
            while ranges.count < rows {
                let start = i
                var tabs = 0
                var fieldStart = i
                while i < n {
                    let b = bytes[i]
                    if b == 0x0A { break }
                    if b == 0x09 {
                        tabs += 1
                        i += 1
                        fieldStart = i
                        continue
                    }
                    if b == 0x0D || b == 0 {
                        error = CatchUpBulkError(table: table, row: ranges.count, reason: b == 0 ? "a NUL byte in a value" : "a raw carriage return in a value")
                        return
                    }
                    if b == 0x5C {
                        guard i + 1 < n else { break }
                        let e = bytes[i + 1]
                        if e == 0x4E {  // \N: NULL, only as a whole field
                            let end = i + 2
                            guard i == fieldStart, end == n || bytes[end] == 0x09 || bytes[end] == 0x0A else {
                                error = CatchUpBulkError(table: table, row: ranges.count, reason: "\\N inside a value")
                                return
                            }
                        } else if e != 0x5C && e != 0x74 && e != 0x6E && e != 0x72 {
                            error = CatchUpBulkError(table: table, row: ranges.count, reason: "an escape other than \\\\, \\t, \\n, \\r or \\N")
                            return
                        }
                        i += 2
                        continue
                    }
                    i += 1
                }
                guard i < n, bytes[i] == 0x0A else {
                    error = CatchUpBulkError(table: table, row: ranges.count, reason: "the values end before row \(rows)'s newline")
                    return
                }
                guard tabs == fields - 1 else {
                    error = CatchUpBulkError(table: table, row: ranges.count, reason: "\(tabs + 1) values for \(fields) columns")
                    return
                }
                ranges.append(start..<i)
                i += 1
            }
            if i != n { error = CatchUpBulkError(table: table, row: nil, reason: "\(n - i) bytes after the last row's values") }
        }
        if let error { throw error }
        return ranges
    }

    /// The byte ranges of `rows` newline-terminated clock objects.
    static func clockLines(_ text: [UInt8], rows: Int, table: String) throws(CatchUpBulkError) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(rows)
        var start = 0
        for (i, b) in text.enumerated() where b == 0x0A {
            guard ranges.count < rows else { throw CatchUpBulkError(table: table, row: nil, reason: "more clock objects than rows") }
            ranges.append(start..<i)
            start = i + 1
        }
        guard ranges.count == rows, start == text.count else {
            throw CatchUpBulkError(table: table, row: nil, reason: "\(ranges.count) clock objects for \(rows) rows")
        }
        return ranges
    }
}
