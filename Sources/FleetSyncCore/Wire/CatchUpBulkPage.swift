import Foundation

/// A whole-partition catch-up page in bulk form (docs/PROTOCOL.md, *Bulk catch-up pages*): the
/// rows of each table as PostgreSQL's COPY text, with each row's field clocks as the text of its
/// stored clock object, instead of one event (a dictionary of fields) per row. Only a vessel that
/// announces it (``statusKey`` in its request's status) receives it; the vessel checks it whole
/// (``CatchUpBulkCheck`` on the vessel) before anything of it is applied.
public struct CatchUpBulkPage: Sendable, Equatable {
    /// A column of a section: its name and its type as the shore's catalog spells it (`format_type`).
    public struct Column: Sendable, Equatable {
        public var name: String
        public var type: String
        public init(name: String, type: String) {
            self.name = name
            self.type = type
        }
    }

    /// The rows of one table, in key order.
    public struct Section: Sendable, Equatable {
        public var table: String
        public var columns: [Column]
        public var ids: [UUID]
        /// Per row: `is_deleted` as stored (it counts only where the clocks hold a tombstone).
        public var deleted: [Bool]
        /// Per row, the text of its clock object (`{"name": [counter, "node"], ...}`), each
        /// followed by a newline.
        public var clocks: [UInt8]
        /// Per row, its values in COPY text format (the columns in order, tab-separated, `\N` for
        /// NULL, backslash escapes for backslash, tab, newline and carriage return), each
        /// followed by a newline.
        public var values: [UInt8]

        public init(table: String, columns: [Column], ids: [UUID] = [], deleted: [Bool] = [], clocks: [UInt8] = [], values: [UInt8] = []) {
            self.table = table
            self.columns = columns
            self.ids = ids
            self.deleted = deleted
            self.clocks = clocks
            self.values = values
        }

        public var rows: Int { ids.count }
    }

    public var sections: [Section]

    public init(sections: [Section]) { self.sections = sections }

    public var rows: Int { sections.reduce(0) { $0 + $1.rows } }

    /// The key under which a vessel announces, in its request's status, the bulk form it reads
    /// (its value: ``version``). Shores before it ignore the key; a vessel that does not send it
    /// gets catch-up pages as events.
    public static let statusKey = "catch_up_bulk"
    public static let version = 1
    /// Tables in one page, at most.
    public static let maximumSections = 4_096
    /// Bytes of one column type's name, at most.
    public static let maximumTypeBytes = 1_024

    func encode(into w: inout WireWriter) {
        w.varint(UInt64(sections.count))
        for section in sections {
            w.string(section.table)
            w.varint(UInt64(section.columns.count))
            for column in section.columns {
                w.string(column.name)
                w.string(column.type)
            }
            w.varint(UInt64(section.ids.count))
            for id in section.ids { w.uuid(id) }
            for deleted in section.deleted { w.byte(deleted ? 1 : 0) }
            w.varint(UInt64(section.clocks.count))
            w.raw(section.clocks)
            w.varint(UInt64(section.values.count))
            w.raw(section.values)
        }
    }

    /// Reads a page, checking its structure and sizes (the rows' contents are checked by the
    /// vessel against its own catalog before anything is applied).
    static func decode(_ r: inout WireReader, limits: WireLimits) throws(WireError) -> CatchUpBulkPage {
        let count = try r.count(limit: maximumSections, what: "bulk page section")
        var sections: [Section] = []
        var rows = 0
        for _ in 0..<count {
            let table = try r.string(limit: limits.maximumNameBytes, what: "bulk page table name")
            let columnCount = try r.count(limit: limits.maximumFieldsPerEvent, what: "bulk page column")
            var columns: [Column] = []
            for _ in 0..<columnCount {
                columns.append(Column(name: try r.string(limit: limits.maximumNameBytes, what: "bulk page column name"),
                                      type: try r.string(limit: maximumTypeBytes, what: "bulk page column type")))
            }
            let rowCount = try r.count(limit: limits.maximumEvents, what: "bulk page row")
            rows += rowCount
            guard rows <= limits.maximumEvents else {
                throw WireError(.batchTooLarge, "bulk page of more than \(limits.maximumEvents) rows; send smaller pages")
            }
            guard r.remaining >= rowCount * 17 else { throw WireError(.truncated, "bulk page section of \(rowCount) rows is cut off") }
            var ids: [UUID] = []
            ids.reserveCapacity(rowCount)
            for _ in 0..<rowCount { ids.append(try r.uuid()) }
            var deleted: [Bool] = []
            deleted.reserveCapacity(rowCount)
            for _ in 0..<rowCount {
                let flag = try r.byte()
                guard flag <= 1 else { throw WireError(.malformed, "bulk page tombstone flag is \(flag)") }
                deleted.append(flag == 1)
            }
            let clocks = try r.fixed(try r.count(limit: limits.maximumBodyBytes, what: "bulk page clock byte"), what: "bulk page clocks")
            let values = try r.fixed(try r.count(limit: limits.maximumBodyBytes, what: "bulk page value byte"), what: "bulk page values")
            sections.append(Section(table: table, columns: columns, ids: ids, deleted: deleted, clocks: clocks, values: values))
        }
        return CatchUpBulkPage(sections: sections)
    }
}
